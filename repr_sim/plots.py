"""The study's figures: box plots of a score against overlap, accuracy plots.

Similarity files: one panel per probe column, one box per overlap fraction (at its true x
position, so the least-squares line is drawn on the same axis; x ticks at the file's
fractions only), the dashed OLS line with its equation, R^2 and MI in the legend.
Label-partition files: the same with partitions 1, 2, 3 on the x axis. Accuracy, loss and
transfer-attack files: the same for their values; partition accuracies: one box per label
set. The study's v2 figures (`plot_model_sizes`): one panel per model size, each file's v2
table. Consequences (`plot_consequences`): transfer success against similarity, coloured by
overlap.

Sized for a paper: panels about 1.9 in wide with 8-9 pt text, so a four-panel figure
printed at full text width (~7 in) keeps its fonts near their nominal size. Colours are
from the Okabe-Ito palette (safe for the common colour-vision deficiencies) and the fit
line is also dashed, so nothing depends on colour alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import analysis
from .errors import UserError

BLUE, SKY, VERMILLION = "#0072B2", "#56B4E9", "#D55E00"
PARTITION_COLOURS = ("#E69F00", "#009E73", "#CC79A7")  # Okabe-Ito orange, green, purple
FORMATS = (".pdf", ".png", ".svg")

METRIC_TITLES = {
    "cka": "CKA", "unbiased_cka": "Unbiased CKA", "cknna": "CKNNA", "svcca": "SVCCA",
    "mutual_knn": "Mutual kNN", "cycle_knn": "Cycle kNN", "lcs_knn": "LCS kNN",
    "edit_distance_knn": "Edit-distance kNN",
}

PANEL_H = 1.7  # inches: the axes of one panel (the width: AXES_W below)
STYLE = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8.5, "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5, "legend.fontsize": 7.5, "figure.titlesize": 9.5,
    "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.8,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by journals
}


def _pyplot():
    # Imported here: `reprsim analyze` never pays for matplotlib. Without a display,
    # matplotlib picks a non-interactive backend by itself.
    import matplotlib.pyplot as plt

    return plt


def metric_title(metric: str | None) -> str:
    return METRIC_TITLES.get(metric or "", metric or "")


def _fraction_label(v: float) -> str:
    if abs(v * 10 - round(v * 10)) < 1e-6:
        return f"{v:g}"
    if abs(v * 3 - round(v * 3)) < 1e-4:  # the text task split's thirds (0.33333 in v2)
        return f"{round(v * 3)}/3"
    return f"{v:.2g}"


def _groups(x: np.ndarray, y: np.ndarray, fractions=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Box positions (the overlap levels of `fractions`, default x: realised overlaps a
    little apart are one box, analysis.overlap_levels) and the y values of each."""
    keys = analysis.level_of(x, analysis.overlap_levels(x if fractions is None else fractions))
    positions = np.unique(keys)
    return positions, [y[keys == p] for p in positions]


def _box_width(positions: np.ndarray) -> float:
    if positions.size < 2:
        return 0.3
    return 0.7 * float(np.min(np.diff(positions)))


def _draw_boxes(ax, positions, groups, *, colours=None, width=None):
    width = width or _box_width(positions)
    colours = colours or [SKY] * len(groups)
    parts = ax.boxplot(groups, positions=positions, widths=width, patch_artist=True,
                       manage_ticks=False,
                       medianprops={"color": "black", "linewidth": 1.2},
                       whiskerprops={"color": "#333333", "linewidth": 0.8},
                       capprops={"color": "#333333", "linewidth": 0.8},
                       flierprops={"marker": "o", "markersize": 2.5, "markerfacecolor": "none",
                                   "markeredgecolor": "#555555", "markeredgewidth": 0.6},
                       boxprops={"linewidth": 0.8})
    for patch, colour in zip(parts["boxes"], colours, strict=True):
        patch.set_facecolor(colour)
        patch.set_alpha(0.75)
        patch.set_edgecolor(BLUE if colour == SKY else "#333333")
    return width


def _signed(v: float) -> str:
    v = 0.0 if abs(v) < 1e-12 else v  # a flat fit's rounding noise (-3.1e-19) reads as 0
    return f"{v:.3g}".replace("-", "\u2212")


def _fit_label(row, scale: float = 1.0) -> str:
    slope, intercept = scale * row["slope"], scale * row["intercept"]
    sign = "+" if intercept >= 0 else "\u2212"
    return (f"y = {_signed(slope)}x {sign} {abs(intercept):.3g}\n"
            f"R\u00b2 = {row['r_squared']:.2f}, MI = {row['mutual_information']:.2f}")


def _draw_fit(ax, row, lo: float, hi: float, scale: float = 1.0):
    xs = np.array([lo, hi])
    ys = scale * (row["intercept"] + row["slope"] * xs)
    (line,) = ax.plot(xs, ys, linestyle=(0, (4, 2)), color=VERMILLION, linewidth=1.6,
                      zorder=5, label=_fit_label(row, scale))
    ax.legend(handles=[line], loc="upper center", bbox_to_anchor=(0.5, -0.16),
              frameon=False, handlelength=2.2, borderaxespad=0.0)


MAX_TICK_LABELS = 6  # more fractions than this: every other tick keeps its label


def fraction_ticks(fractions) -> tuple[np.ndarray, list[str]]:
    """Tick positions and labels of an overlap axis: a tick at each fraction of the file and
    nowhere else (ticks between the boxes made labels collide: "0 0.20.40.60.8 1"); with many
    fractions (steps of 0.1) every other label is left blank, ends kept."""
    ticks = analysis.overlap_levels(fractions)
    step = 2 if ticks.size > MAX_TICK_LABELS else 1
    labels = [_fraction_label(v) if (i % step == 0 or i == ticks.size - 1) else ""
              for i, v in enumerate(ticks)]
    if step == 2 and ticks.size % 2 == 0:  # the last label beside an odd one: drop that one
        labels[-2] = ""
    return ticks, labels


def _fraction_axis(ax, positions: np.ndarray, width: float, fractions=None):
    # Ticks at the file's fractions (all panels of a figure share them, so panels with and
    # without the empty-probe fractions line up).
    ticks, labels = fraction_ticks(positions if fractions is None else fractions)
    ax.set_xticks(ticks, labels)
    ax.set_xlim(min(0.0, ticks.min()) - width, max(1.0, ticks.max()) + width)


def _grid(n: int, max_cols: int = 4):
    cols = n if n <= max_cols else (3 if n in (5, 6, 9) else max_cols)
    rows = -(-n // cols)
    return rows, cols


# Fixed margins, in inches (cheaper than a layout engine, and the same on every figure):
# room for the y tick labels and label, the panel titles, and below each panel its tick
# labels and two-line legend.
AXES_W, AXES_W_ALONE = 1.45, 2.6
LEFT, RIGHT, WGAP = 0.62, 0.12, 0.52
SUPTITLE, TITLE, BELOW, XLABEL = 0.28, 0.26, 0.66, 0.26


def _wrap(title: str, width_in: float) -> str:
    """Break a long figure title at its middle ' \u00b7 ' so that it fits the figure."""
    if len(title) * 0.085 <= width_in:  # ~0.085 in per character at 9.5 pt
        return title
    parts = title.split(" \u00b7 ")
    cut = min(range(1, len(parts)), default=1,
              key=lambda i: abs(len(" \u00b7 ".join(parts[:i])) - len(title) / 2))
    return " \u00b7 ".join(parts[:cut]) + "\n" + " \u00b7 ".join(parts[cut:])


def _figure(n_panels: int, suptitle: str, *, titles: bool = True, extra_right: float = 0.0):
    rows, cols = _grid(n_panels)
    aw = AXES_W if n_panels > 1 else AXES_W_ALONE
    title = TITLE if titles else 0.05
    width = LEFT + cols * aw + (cols - 1) * WGAP + RIGHT + extra_right
    suptitle = _wrap(suptitle, width)
    top = SUPTITLE + 0.17 * suptitle.count("\n")
    height = top + rows * (title + PANEL_H + BELOW) + XLABEL
    fig, axes = _pyplot().subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=LEFT / width, right=1 - (RIGHT + extra_right) / width,
                        top=1 - (top + title) / height,
                        bottom=(BELOW + XLABEL) / height, wspace=WGAP / aw,
                        hspace=(BELOW + title) / PANEL_H)
    fig.suptitle(suptitle, y=1 - 0.04 / height, va="top")
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _style_axes(ax):
    ax.tick_params(width=0.8, length=3)
    ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
    ax.set_axisbelow(True)


def _suptitle(result: analysis.ResultFile, what: str) -> str:
    arch, _ = analysis.architecture(result)
    model = analysis.model_title(result.model)
    bits = [model or (analysis.ARCH_TITLES.get(arch, arch) if arch else None),
            analysis.dataset_title(result.dataset) if result.dataset != "partition" else
            "ColorShapeDigit label partitions",
            analysis.OVERLAP_NAMES.get(result.split or ""), what]
    return " \u00b7 ".join(b for b in bits if b)


def _x_label(result: analysis.ResultFile) -> str:
    if result.split == "partition":
        return "Partition: attributes per label set (x = 0, 0.5, 1 in the fit)"
    if result.split == "task":
        text = (any(c in analysis.TEXT_TASK_PROBES for c in result.value_columns)
                or analysis.architecture(result)[0] in ("gpt", "llama"))
        return f"Overlap fraction (shared {'corpora' if text else 'classes'})"
    return "Overlap fraction"


def plot_scores(result: analysis.ResultFile, metric: str | None = "cka", table=None):
    """Box plots of one metric (similarity and partition files) or of accuracy/loss."""
    if table is None:
        table = analysis.analyze(result, metric)
    if not result.has_metrics:
        metric = None
    columns = list(result.value_columns)
    scale = 100.0 if result.kind == "accuracy" else 1.0
    # Own y range per panel: an in-distribution CKA moving within 0.90-0.93 would be a flat
    # line on the axis of an OOD probe spanning 0.3-0.7.
    what = metric_title(metric) if metric else _value_label(result).replace(" (%)", "").lower()
    calibrated = result.kind in analysis.CALIBRATED_KINDS  # a null-calibrated companion
    if calibrated:
        what = f"calibrated {what}"
    titled = result.has_metrics or len(columns) > 1  # (a lone panel says it on its y axis)
    fig, axes = _figure(len(columns), _suptitle(result, what), titles=titled)
    fractions = result.x_values(result.rows(metric))  # every panel gets the same ticks
    for i, (ax, column) in enumerate(zip(axes, columns, strict=True)):
        x, y = result.xy(column, metric)
        positions, groups = _groups(x, y * scale, None if result.split == "partition" else fractions)
        width = _draw_boxes(ax, positions, groups)
        lo, hi = float(positions.min()), float(positions.max())
        _draw_fit(ax, table.loc[column], lo, hi, scale)
        if result.split == "partition":
            ax.set_xticks(sorted(analysis.PARTITION_X.values()), ["1", "2", "3"])
            ax.set_xlim(-0.3, 1.3)
        else:
            _fraction_axis(ax, positions, width, fractions)
        if titled:
            ax.set_title(table.loc[column, "title"])
        if i % _grid(len(columns))[1] == 0:
            ax.set_ylabel((f"Calibrated {metric_title(metric)}" if calibrated else
                           metric_title(metric)) if metric else _value_label(result))
        _style_axes(ax)
    fig.supxlabel(_x_label(result), y=0.04 / fig.get_figheight(), va="bottom",
                  fontsize=STYLE["axes.labelsize"])
    return fig


def _value_label(result: analysis.ResultFile) -> str:
    if result.kind in analysis.TRANSFER_KINDS:
        return "Attack success rate"
    return "Validation loss" if result.kind == "loss" else "Test accuracy (%)"


def _label_set(model: str) -> str:
    """'all0' and 'all1' are two models of one label set."""
    return re.sub(r"\d+$", "", model)


def plot_partition_accuracy(result: analysis.ResultFile):
    """One box per label set, coloured by partition (docs/protocol.md section 2)."""
    rows = result.data[~np.isclose(result.data["acc"], analysis.EMPTY)]
    order = []  # label sets in partition order, then by first appearance
    for part in sorted(analysis.PARTITION_X):
        for model in rows.loc[rows["partition"] == part, "model"]:
            key = (part, _label_set(model))
            if key not in order:
                order.append(key)
    groups = [100 * rows.loc[(rows["partition"] == p) &
                             (rows["model"].map(_label_set) == s), "acc"].to_numpy()
              for p, s in order]
    colours = [PARTITION_COLOURS[sorted(analysis.PARTITION_X).index(p) % 3] for p, _ in order]
    fig, ax = _pyplot().subplots(figsize=(max(3.2, 0.55 * len(order) + 1.2), 2.6),
                                 layout="constrained")
    positions = np.arange(len(order), dtype=float)
    _draw_boxes(ax, positions, groups, colours=colours, width=0.6)
    ax.set_xticks(positions, [s.replace("_", "+") for _, s in order], rotation=30, ha="right")
    ax.set_ylabel("Validation accuracy (%)")
    ax.set_xlabel("Label set")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c, alpha=0.75, edgecolor="#333333", label=f"Partition {i + 1}")
               for i, c in enumerate(PARTITION_COLOURS)]
    ax.legend(handles=handles, loc="lower left", frameon=False)
    _style_axes(ax)
    fig.suptitle(_suptitle(result, "accuracy per label set"))
    return fig


def plot_result(result: analysis.ResultFile | Path | str, metric: str | None = "cka", *,
                table=None):
    """The figure for any result file (kind from its header)."""
    if not isinstance(result, analysis.ResultFile):
        result = analysis.read_result(result)
    with _pyplot().rc_context(STYLE):  # every artist is created with the paper-size style
        if result.kind == "partition_accuracy":
            return plot_partition_accuracy(result)
        return plot_scores(result, metric, table)


# ---- the study's v2 figures ------------------------------------------------------------------
def _model_key(result: analysis.ResultFile) -> int:
    titles = list(analysis.MODEL_TITLES)
    return titles.index(result.model) if result.model in titles else len(titles)


def _panel(ax, result: analysis.ResultFile, rule, metric, study, fractions):
    """One file's box plot of its rule's first column (the study's model-size panels)."""
    column = rule.columns[0]
    keep_empty = study is not None  # the study's filter is by overlap only
    drop_x = rule.drop_x if study is not None else None
    x, y = result.xy(column, metric, keep_empty=keep_empty, drop_x=drop_x)
    stats = analysis.fit(x, y, what=f"{result.path}: column '{column}'", n_perm=0, n_boot=0,
                         standardize_x=result.x_column == "partition")
    positions, groups = _groups(x, y, None if result.x_column == "partition" else fractions)
    width = _draw_boxes(ax, positions, groups)
    _draw_fit(ax, stats, float(positions.min()), float(positions.max()))
    if result.x_column == "partition":
        ax.set_xticks(sorted(analysis.PARTITION_X.values()), ["1", "2", "3"])
        ax.set_xlim(-0.3, 1.3)
    else:
        _fraction_axis(ax, positions, width, fractions)
    ax.set_title(analysis.model_title(result.model) or result.path.stem)
    _style_axes(ax)


def plot_model_sizes(results, metric: str | None = None, *, study: str | None = "v2"):
    """One figure, one panel per model size (the study's v2 figures): each file's box plot
    of the probe (and rows) of its v2 table, the OLS line, R^2 and MI in the legend."""
    results = sorted(results, key=_model_key)
    if not results:
        raise UserError("no result files to plot")
    first = results[0]
    rule = analysis.v2_rule(first)
    metric = metric or rule.metric
    arch, _ = analysis.architecture(first)
    family = {"resnet": "ResNet", "vit": "ViT"}.get(arch, analysis.ARCH_TITLES.get(arch, arch))
    what = metric_title(metric) if metric else _value_label(first)
    probe = analysis.probe_title(rule.columns[0], dataset=first.dataset, split=first.split)
    if first.kind in analysis.TRANSFER_KINDS:
        what, probe = probe, None
    data = (analysis.dataset_title(first.dataset) if first.dataset != "partition"
            else "ColorShapeDigit label partitions")
    bits = [family, data, analysis.OVERLAP_NAMES.get(first.split or ""),
            f"{what} ({probe})" if probe else what]
    with _pyplot().rc_context(STYLE):
        fig, axes = _figure(len(results), " \u00b7 ".join(b for b in bits if b))
        cols = _grid(len(results))[1]
        for i, (ax, result) in enumerate(zip(axes, results, strict=True)):
            fractions = result.x_values(result.rows(metric))
            _panel(ax, result, analysis.v2_rule(result), metric, study, fractions)
            if i % cols == 0:
                ax.set_ylabel(what)
        fig.supxlabel(_x_label(first), y=0.04 / fig.get_figheight(), va="bottom",
                      fontsize=STYLE["axes.labelsize"])
    return fig


COLOURBAR_W = 0.85  # inches on the right of a scatter figure: the bar and its labels


def plot_consequences(joined, table, metric: str = "cka", title: str = ""):
    """Transfer success against similarity, one panel per probe, coloured by overlap (a
    sequential colormap, with a colour bar: readable without telling hues apart)."""
    plt = _pyplot()
    probes = list(table.index)
    what = f"transfer attack success against {metric_title(metric)}"
    suptitle = f"{title} \u00b7 {what}" if title else what[:1].upper() + what[1:]
    with plt.rc_context(STYLE):
        fig, axes = _figure(len(probes), suptitle, extra_right=COLOURBAR_W)
        overlap = joined["frac_overlap"].to_numpy(dtype=np.float64)
        scatter = None
        for i, (ax, probe) in enumerate(zip(axes, probes, strict=True)):
            keep = joined[f"keep_{probe}"].to_numpy(dtype=bool)
            scatter = ax.scatter(joined[probe][keep], joined["transfer_asr"][keep],
                                 c=overlap[keep], cmap="viridis", vmin=0.0, vmax=1.0, s=14,
                                 edgecolors="#333333", linewidths=0.4)
            row = table.loc[probe]
            (handle,) = ax.plot([], [], linestyle="none", marker="none",
                                label=f"\u03c1 = {row['spearman_rho']:.2f}, partial "
                                      f"{row['partial_rho']:.2f}\nMI = "
                                      f"{row['mutual_information']:.2f}")
            ax.legend(handles=[handle], loc="upper center", bbox_to_anchor=(0.5, -0.16),
                      frameon=False, handlelength=0)
            ax.set_title(row.get("title", probe))
            ax.set_xlabel(metric_title(metric))
            if i % _grid(len(probes))[1] == 0:
                ax.set_ylabel("Transfer attack success")
            _style_axes(ax)
        # the colour bar in the room reserved on the right, as tall as the first row of panels
        box = axes[0].get_position()
        width = fig.get_figwidth()
        cax = fig.add_axes([1 - (COLOURBAR_W - 0.12) / width, box.y0, 0.1 / width, box.height])
        bar = fig.colorbar(scatter, cax=cax)
        bar.set_label("Overlap fraction")
    return fig


def save_figure(fig, out: Path | str, *, dpi: int = 200) -> Path:
    """Write the figure atomically; the format follows the suffix (.pdf, .png, .svg)."""
    from .atomic import atomic_path

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"{out}: unknown figure format '{out.suffix}' "
                        f"(use one of {', '.join(FORMATS)})")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lower()[1:], dpi=dpi,
                    metadata={"Creator": "reprsim"} if out.suffix.lower() != ".svg" else None)
    return out


def close(fig) -> None:
    _pyplot().close(fig)


def cli_plot(args) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in FORMATS:  # before any work
        raise UserError(f"{out}: unknown figure format '{out.suffix}' "
                        f"(use one of {', '.join(FORMATS)})")
    paths = args.csv if isinstance(args.csv, list) else [args.csv]
    if args.metric is not None:
        analysis.check_metric(args.metric)
    if getattr(args, "calibrated", False):  # the companions beside the files (or given)
        if len(paths) > 1 or getattr(args, "study", None):
            raise UserError("--calibrated draws one file (without --study)")
        results = [analysis.read_calibrated(paths[0])]
    else:
        results = [analysis.read_result(p) for p in paths]
    if len(results) > 1 or getattr(args, "study", None):
        fig = plot_model_sizes(results, args.metric)  # the study's v2 figures
    else:
        fig = plot_result(results[0], args.metric or "cka")
    save_figure(fig, out)
    close(fig)
    print(f"wrote {out}")
    return 0
