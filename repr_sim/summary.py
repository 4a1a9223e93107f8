"""A folder of result files -> the headline tables (PROTOCOL section 4), and the notebook's loop.

The headline MI table: "Dataset Overlap" = every dataset-split similarity file (ResNet, VAE,
GPT), "Task Overlap" = the label-partition file, "Task + Dataset Overlap" = every task-split
file. A file's MI (and R^2) is the mean over its probe columns (the partition file: the four
columns of PROTOCOL section 4), then the mean over the files of one architecture, then the
plain mean over the architectures. The accuracy table: mean +- sample std (x100) of every
accuracy file, per label set for the partition file; validation losses of text models as
they are.

A file's kind comes from its header; its architecture from the run metadata
(`<stem>.json` with an "arch" key) or else its name (resnet, vae, gpt/nanogpt); a file
whose architecture neither tells is averaged as an architecture of its own, "unknown",
and says so. Tables that reprsim itself wrote into the folder are skipped.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis
from .analysis import OVERLAP_NAMES, ResultFile
from .errors import UserError

HEADLINE = ("Dataset Overlap", "Task Overlap", "Task + Dataset Overlap")
ACCURACY_TABLE = "accuracy table"
ACC_COLUMNS = ("architecture", "dataset", "overlap", "label_set", "quantity", "n", "mean",
               "std", "value", "file")


@dataclass
class Summary:
    mi: pd.DataFrame        # index mutual_information, r_squared; columns HEADLINE
    by_arch: pd.DataFrame   # the same per architecture (rows: architecture x statistic)
    acc: pd.DataFrame       # ACC_COLUMNS
    files: pd.DataFrame     # one row per CSV: where it went and why


# ---- finding the files ------------------------------------------------------------------
def scan(folder: Path | str, *, exclude: tuple[str, ...] = ()) -> tuple[list[ResultFile], list]:
    """(result files, [(name, reason)] skipped): every *.csv in the folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    results, skipped = [], []
    for path in sorted(folder.glob("*.csv")):
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in exclude):
            skipped.append((path.name, "excluded (--exclude)"))
            continue
        header = analysis.read_header(path)
        if analysis.is_output_header(header):
            skipped.append((path.name, "a table written by reprsim"))
            continue
        results.append(analysis.read_result(path))
    return results, skipped


def _companion_stem(stem: str) -> str:
    """resnet_cifar10_ds_platonic_acc -> resnet_cifar10_ds_platonic; platonic_acc_ffcv ->
    platonic_ffcv; platonic_loss -> platonic."""
    return re.sub(r"_(acc|loss)(?=_|$)", "", stem)


def split_of(result: ResultFile, by_stem: dict[str, ResultFile]) -> str | None:
    """The split kind; an accuracy file without metadata borrows its similarity file's."""
    if result.kind in ("similarity", "partition", "partition_accuracy"):
        return result.split
    from_meta = analysis.split_from_meta(result.meta)
    if from_meta:
        return from_meta
    companion = by_stem.get(_companion_stem(result.path.stem))
    if companion is not None and companion is not result and companion.kind == "similarity":
        return companion.split
    return analysis.split_from_name(result.path)


# ---- the MI table -----------------------------------------------------------------------
def file_scores(result: ResultFile, metric: str = "cka") -> tuple[float, float, tuple[str, ...]]:
    """(mean MI, mean R^2, columns used) of one similarity or partition file."""
    columns = result.value_columns
    if result.kind == "partition":
        missing = [c for c in analysis.PARTITION_PROBES if c not in columns]
        if missing:
            raise UserError(f"{result.path}: label-partition file lacks column '{missing[0]}' "
                            "that the headline table uses")
        columns = analysis.PARTITION_PROBES
    # The headline needs only MI and R^2: no permutations, no bootstrap.
    table = analysis.analyze(result, metric, columns=columns, n_perm=0, n_boot=0)
    return (float(table["mutual_information"].mean()), float(table["r_squared"].mean()),
            tuple(columns))


def _mean_over_arches(rows: pd.DataFrame, value: str) -> float:
    per_arch = rows.groupby("architecture", sort=True)[value].mean()
    return float(per_arch.mean()) if len(per_arch) else float("nan")


def headline(files: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the headline table, the same per architecture) from the placed files."""
    mi = pd.DataFrame(index=["mutual_information", "r_squared"], columns=list(HEADLINE),
                      dtype=float)
    arch_rows = {}
    for column in HEADLINE:
        rows = files[files["placed_in"] == column]
        mi.loc["mutual_information", column] = _mean_over_arches(rows, "mutual_information")
        mi.loc["r_squared", column] = _mean_over_arches(rows, "r_squared")
        for arch, group in rows.groupby("architecture", sort=True):
            for stat in ("mutual_information", "r_squared"):
                arch_rows.setdefault((arch, stat), {})[column] = float(group[stat].mean())
    by_arch = pd.DataFrame.from_dict(arch_rows, orient="index", columns=list(HEADLINE))
    if len(by_arch):
        by_arch.index = pd.MultiIndex.from_tuples(by_arch.index,
                                                  names=["architecture", "statistic"])
    return mi, by_arch


# ---- the accuracy table -----------------------------------------------------------------
def _stat_row(values: np.ndarray, *, scale: float, decimals: int) -> dict:
    values = scale * np.asarray(values, dtype=np.float64)
    std = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    mean = float(values.mean())
    return {"n": int(values.size), "mean": mean, "std": std,
            "value": f"{mean:.{decimals}f} \u00b1 {std:.{decimals}f}"}


def accuracy_rows(result: ResultFile, arch: str, overlap: str) -> list[dict]:
    """Rows of the accuracy table for one accuracy, loss or partition-accuracy file."""
    data = result.data
    column = result.value_columns[0]
    data = data[~np.isclose(data[column], analysis.EMPTY, rtol=0.0, atol=1e-9)]
    if data.empty:
        raise UserError(f"{result.path}: every row is -1; nothing to average")
    base = {"architecture": arch, "dataset": analysis.dataset_title(result.dataset) or "",
            "overlap": overlap, "label_set": "", "file": result.name}
    if result.kind == "loss":
        return [{**base, "quantity": "validation loss",
                 **_stat_row(data[column], scale=1.0, decimals=3)}]
    quantity = "accuracy (%)"
    if result.kind == "accuracy":
        return [{**base, "quantity": quantity, **_stat_row(data[column], scale=100.0,
                                                           decimals=2)}]
    rows = []  # partition accuracy: one row per label set, partitions in order
    label_sets = data["model"].map(lambda m: re.sub(r"\d+$", "", m))
    for part in sorted(analysis.PARTITION_X):
        in_part = data["partition"] == part
        for label_set in dict.fromkeys(label_sets[in_part]):
            chosen = data[in_part & (label_sets == label_set)]
            rows.append({**base, "label_set": f"{part}: {label_set}", "quantity": quantity,
                         **_stat_row(chosen[column], scale=100.0, decimals=2)})
    return rows


# ---- everything together ----------------------------------------------------------------
def summarize(folder: Path | str, *, metric: str = "cka",
              exclude: tuple[str, ...] = ()) -> Summary:
    analysis.check_metric(metric)
    results, skipped = scan(folder, exclude=exclude)
    if not results:
        raise UserError(f"{folder}: no result files (*.csv with a header of PROTOCOL "
                        "section 3) in this folder")
    by_stem = {r.path.stem: r for r in results}
    placed, acc_rows = [], []
    for result in results:
        arch, source = analysis.architecture(result)
        arch = arch or "unknown"
        split = split_of(result, by_stem)
        overlap = OVERLAP_NAMES.get(split or "", "")
        row = {"file": result.name, "kind": result.kind, "overlap": overlap or "unknown split",
               "architecture": arch, "arch_from": source,
               "dataset": analysis.dataset_title(result.dataset) or "",
               "mutual_information": np.nan, "r_squared": np.nan, "columns": ""}
        if result.kind in ("similarity", "partition"):
            mi, r2, columns = file_scores(result, metric)
            row.update(placed_in=overlap, mutual_information=mi, r_squared=r2,
                       columns=" ".join(columns))
        else:
            row["placed_in"] = ACCURACY_TABLE
            acc_rows.extend(accuracy_rows(result, arch, row["overlap"]))
        placed.append(row)
    for name, reason in skipped:
        placed.append({"file": name, "kind": "", "overlap": "", "architecture": "",
                       "arch_from": "",
                       "dataset": "", "placed_in": f"skipped: {reason}",
                       "mutual_information": np.nan, "r_squared": np.nan, "columns": ""})
    files = pd.DataFrame(placed)
    mi, by_arch = headline(files)
    acc = pd.DataFrame(acc_rows, columns=list(ACC_COLUMNS))
    return Summary(mi=mi, by_arch=by_arch, acc=acc, files=files)


# ---- output -----------------------------------------------------------------------------
def format_files(files: pd.DataFrame) -> str:
    lines = []
    order = [*HEADLINE, ACCURACY_TABLE]
    groups = [*order, *sorted(set(files["placed_in"]) - set(order))]
    for group in groups:
        rows = files[files["placed_in"] == group]
        if rows.empty and group in order:
            lines.append(f"{group}: no files")
            continue
        if rows.empty:
            continue
        lines.append(f"{group}:")
        for _, r in rows.sort_values(["architecture", "file"]).iterrows():
            text = f"  {r['file']}"
            if r["architecture"]:
                text += f"  [{r['architecture']}, from {r['arch_from']}]"
            if not np.isnan(r["mutual_information"]):
                text += f"  MI {r['mutual_information']:.3f}  R^2 {r['r_squared']:.3f}"
            elif group == ACCURACY_TABLE:
                text += f"  -> {r['dataset'] or '?'}, {r['overlap']}"
            if r["architecture"] == "unknown":
                text += ("  (no <stem>.json with an 'arch' key and no resnet/vae/gpt in the "
                         "name: averaged as an architecture of its own)")
            lines.append(text)
    return "\n".join(lines)


def format_summary(summary: Summary, metric: str = "cka") -> str:
    mi = summary.mi.to_string(float_format=lambda v: f"{v:.3f}")
    parts = ["Files:", format_files(summary.files), "",
             f"Headline table ({metric}; mean over probe columns, then files of an "
             "architecture, then architectures):", mi]
    if len(summary.by_arch):
        parts += ["", "Per architecture:",
                  summary.by_arch.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")]
    if len(summary.acc):
        shown = summary.acc[["architecture", "dataset", "overlap", "label_set", "quantity",
                             "n", "value"]]
        parts += ["", "Accuracy table (mean \u00b1 sample std):", shown.to_string(index=False)]
    return "\n".join(parts)


def _tex(text) -> str:
    """Text made safe for a LaTeX table cell."""
    text = str(text).replace("\\", "\0")  # placeholder: its replacement contains braces
    for char in "&%_#${}":
        text = text.replace(char, "\\" + char)
    return text.replace("\0", r"\textbackslash{}")


def _tabular(header: list[str], rows: list[list[str]], align: str) -> str:
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def latex_mi(mi: pd.DataFrame) -> str:
    names = {"mutual_information": "Mutual information", "r_squared": "$R^2$"}
    rows = [[names[i]] + ["--" if np.isnan(v) else f"{v:.3f}" for v in mi.loc[i]]
            for i in mi.index]
    return _tabular([""] + [_tex(c) for c in mi.columns], rows, "l" + "r" * len(mi.columns))


def latex_acc(acc: pd.DataFrame) -> str:
    rows = []
    for _, r in acc.iterrows():
        value = r["value"].replace("\u00b1", r"\pm")
        rows.append([_tex(r["architecture"]), _tex(r["dataset"]), _tex(r["overlap"]),
                     _tex(r["label_set"]), _tex(r["quantity"]), f"${value}$"])
    return _tabular(["Architecture", "Dataset", "Overlap", "Label set", "Quantity", "Value"],
                    rows, "lllllr")


def write_summary(summary: Summary, out: Path | str, *, latex: bool = False) -> list[Path]:
    from .runs import atomic_write_text

    out = Path(out)
    written = [out / "summary_mi.csv", out / "summary_acc.csv"]
    atomic_write_text(written[0], summary.mi.to_csv())
    atomic_write_text(written[1], summary.acc.to_csv(index=False))
    if latex:
        written += [out / "summary_mi.tex", out / "summary_acc.tex"]
        atomic_write_text(written[2], latex_mi(summary.mi) + "\n")
        atomic_write_text(written[3], latex_acc(summary.acc) + "\n")
    return written


# ---- the notebook's loop ----------------------------------------------------------------
def render_folder(folder: Path | str, *, metric: str = "cka",
                  formats: tuple[str, ...] = (".png", ".pdf")) -> list[dict]:
    """Table and figure(s) beside every result file of a folder; one dict per file."""
    from . import plots

    done = []
    results, _ = scan(folder)
    for result in results:
        stem = result.path.with_suffix("")
        tag = f"_{metric}" if result.has_metrics else ""
        table = analysis.analyze(result, metric)
        table_path = analysis.write_table(table, f"{stem}{tag}_table.csv")
        fig = plots.plot_result(result, metric, table=table)
        figures = [plots.save_figure(fig, f"{stem}{tag}{suffix}") for suffix in formats]
        plots.close(fig)
        done.append({"result": result, "table": table, "table_path": table_path,
                     "figures": figures})
    return done


def cli_summary(args) -> int:
    metric = getattr(args, "metric", "cka")
    summary = summarize(args.results_dir, metric=metric,
                        exclude=tuple(getattr(args, "exclude", None) or ()))
    print(format_summary(summary, metric))
    written = write_summary(summary, args.out or args.results_dir, latex=args.latex)
    if args.latex:
        print("\n" + latex_mi(summary.mi) + "\n\n" + latex_acc(summary.acc))
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0
