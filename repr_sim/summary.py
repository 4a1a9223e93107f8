"""A folder of result files -> the headline tables (docs/protocol.md section 4), and the notebook's loop.

The headline MI table: "Dataset Overlap" = every dataset-split similarity file (ResNet, VAE,
GPT), "Task Overlap" = the label-partition file, "Task + Dataset Overlap" = every task-split
file. A file's MI (and R^2) is the mean over its probe columns (the partition file: the four
columns of docs/protocol.md section 4), then the mean over the files of one architecture, then the
plain mean over the architectures. The accuracy table: mean +- sample std (x100) of every
accuracy file, per label set for the partition file; validation losses of text models as
they are.

A file's kind comes from its header; its architecture from the run metadata
(`<stem>.json` with an "arch" key) or else its name (resnet, vae, gpt/nanogpt, vit, llama,
diffusion); a file whose architecture neither tells is averaged as an architecture of its
own, "unknown", and says so. Tables that reprsim itself wrote into the folder are skipped.
The folder is searched recursively (the study's v2 layout has `different_model_size_*/` and
`llm_*/` subfolders); transfer-attack and jailbreak files are listed but enter no table
(`reprsim consequences` reads them).

`study="v2"`: each file's MI and R^2 come from the table the study's v2 notebook made for it
(analysis.v2_rule: one probe column for most files, cknna for the diffusion files, the -1
rows of the nanoGPT task file kept); the rest is the same two-level mean (docs/protocol.md
section 6.7). Beside the long accuracy table, `acc_by_model` lays the accuracies out as the
study did: per model, rows = datasets and label sets, columns = kinds of overlap.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis, results
from .analysis import OVERLAP_NAMES, ResultFile
from .atomic import atomic_write_text, json_bytes, read_json, write_if_changed
from .errors import UserError

HEADLINE = ("Dataset Overlap", "Task Overlap", "Task + Dataset Overlap")
ACCURACY_TABLE = "accuracy table"
ACC_COLUMNS = ("architecture", "dataset", "overlap", "label_set", "quantity", "n", "mean",
               "std", "value", "file")


# Folders of the study's v2 layout that its notebook does not read: copies of the v1
# from-scratch ResNet-18 files (docs/protocol.md section 6.9); reading them would count them twice.
SKIPPED_FOLDERS = {"pretrain_resnet18": "v1 ResNet-18 copies the study's notebook does not read",
                   "resnet_train_from_scratch": "v1 ResNet-18 copies the study's notebook does "
                                                "not read"}
TRANSFER_NOTE = "transfer success (enters no table; see reprsim consequences)"
CALIBRATED_NOTE = "calibrated companion (enters summary_mi_calibrated.csv)"
CALIBRATED_MI_CSV = "summary_mi_calibrated.csv"


@dataclass
class Summary:
    mi: pd.DataFrame        # index mutual_information, r_squared; columns HEADLINE
    by_arch: pd.DataFrame   # the same per architecture (rows: architecture x statistic)
    acc: pd.DataFrame       # ACC_COLUMNS
    files: pd.DataFrame     # one row per CSV: where it went and why
    acc_by_model: pd.DataFrame = None  # the study's v2 layout (acc_by_model); may be empty
    study: str | None = None
    # the headline table on the null-calibrated companions (rows mutual_information,
    # r_squared, significant_fraction), None when the folder has none (docs/calibration.md)
    mi_calibrated: pd.DataFrame | None = None


# ---- finding the files ------------------------------------------------------------------
def label(path: Path, folder: Path) -> str:
    """A file's name in listings: its path under the results folder."""
    return path.relative_to(folder).as_posix()


def _csv_files(folder: Path) -> tuple[list[Path], list]:
    """Every *.csv under the folder (sorted by relative path) and the folders left out."""
    paths, skipped = [], []
    for path in sorted(folder.rglob("*.csv"), key=lambda p: label(p, folder)):
        parts = path.relative_to(folder).parts[:-1]
        if any(part.startswith(".") for part in parts):
            continue
        hit = next((part for part in parts if part in SKIPPED_FOLDERS), None)
        if hit:
            skipped.append((label(path, folder), SKIPPED_FOLDERS[hit]))
            continue
        paths.append(path)
    return paths, skipped


def scan(folder: Path | str, *, exclude: tuple[str, ...] = ()) -> tuple[list[ResultFile], list]:
    """(result files, [(name, reason)] skipped): every *.csv under the folder (recursively),
    sorted by path. --exclude patterns match the file name or its path under the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    results = []
    paths, skipped = _csv_files(folder)
    for path in paths:
        name = label(path, folder)
        if any(fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(name, pattern)
               for pattern in exclude):
            skipped.append((name, "excluded (--exclude)"))
            continue
        header = analysis.read_header(path)
        if analysis.is_output_header(header):
            skipped.append((name, "a table written by reprsim"))
            continue
        results.append(analysis.read_result(path))
    return results, skipped


def _companion_stem(stem: str) -> str:
    """resnet_cifar10_ds_platonic_acc -> resnet_cifar10_ds_platonic; platonic_acc_ffcv ->
    platonic_ffcv; platonic_loss -> platonic."""
    return re.sub(r"_(acc|loss)(?=_|$)", "", stem)


def split_of(result: ResultFile, by_stem: dict[Path, ResultFile]) -> str | None:
    """The split kind; an accuracy file without metadata borrows its similarity file's."""
    if result.kind in ("similarity", "partition", "partition_accuracy",
                       *analysis.CALIBRATED_KINDS):
        return result.split
    from_meta = analysis.split_from_meta(result.meta)
    if from_meta:
        return from_meta
    companion = by_stem.get(result.path.with_name(_companion_stem(result.path.stem)))
    if companion is not None and companion is not result and companion.kind == "similarity":
        return companion.split
    return analysis.split_from_name(result.path)


# ---- the MI table -----------------------------------------------------------------------
def file_scores(result: ResultFile, metric: str | None = "cka", study: str | None = None
                ) -> tuple[float, float, tuple[str, ...]]:
    """(mean MI, mean R^2, columns used) of one similarity or partition file."""
    # The headline needs only MI and R^2: no permutations, no bootstrap.
    if study is not None:
        table = analysis.analyze_study(result, metric, study, n_perm=0, n_boot=0)
        columns = analysis.v2_rule(result).columns
        return (float(table["mutual_information"].mean()), float(table["r_squared"].mean()),
                tuple(columns))
    columns = result.value_columns
    if result.kind in ("partition", "partition_calibrated"):
        # the study's four probe columns (docs/protocol.md section 4); the v2 files have only the
        # first, which is required
        if analysis.PARTITION_VAL_PROBE not in columns:
            raise UserError(f"{result.path}: label-partition file lacks column "
                            f"'{analysis.PARTITION_VAL_PROBE}' that the headline table uses")
        columns = tuple(c for c in analysis.PARTITION_PROBES if c in columns)
    table = analysis.analyze(result, metric or "cka", columns=columns, n_perm=0, n_boot=0)
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


def accuracy_rows(result: ResultFile, arch: str, overlap: str, name: str = "") -> list[dict]:
    """Rows of the accuracy table for one accuracy, loss or partition-accuracy file."""
    data = result.data
    column = result.value_columns[0]
    data = data[~np.isclose(data[column], analysis.EMPTY, rtol=0.0, atol=1e-9)]
    if data.empty:
        raise UserError(f"{result.path}: every row is -1; nothing to average")
    base = {"architecture": arch, "dataset": analysis.dataset_title(result.dataset) or "",
            "overlap": overlap, "label_set": "", "file": name or result.name,
            "model": result.model or ""}
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


def _model_order(model: str) -> int:
    titles = list(analysis.MODEL_TITLES)
    return titles.index(model) if model in titles else len(titles)


def acc_by_model(acc: pd.DataFrame) -> pd.DataFrame:
    """The study's v2 accuracy table: per model (of the files that name one), a row per
    dataset and per label set, a column per kind of overlap ("mean \u00b1 std")."""
    rows = acc[(acc["model"] != "") & (acc["quantity"] == "accuracy (%)")]
    if rows.empty:
        return pd.DataFrame()
    row = np.where(rows["label_set"] != "", rows["label_set"], rows["dataset"])
    # datasets first, then the label sets in partition order (as the files list them)
    first = {r: (bool(ls), i) for i, (r, ls) in enumerate(zip(row, rows["label_set"],
                                                            strict=True))}
    rows = rows.assign(row=row, order=rows["model"].map(_model_order),
                       row_order=[first[r] for r in row])
    table = rows.pivot_table(index=["architecture", "order", "model", "row_order", "row"],
                             columns="overlap", values="value", aggfunc="first", sort=True)
    table = table.reindex(columns=[c for c in HEADLINE if c in table.columns]).fillna("")
    table = table.reset_index().drop(columns=["order", "row_order"])
    table.insert(2, "title", table["model"].map(analysis.model_title))
    table.columns.name = None
    return table


def _placed_row(result: ResultFile, name: str, by_stem, metric, study) -> tuple[dict, list]:
    """(the listing's row for one result file, its accuracy rows)."""
    arch, source = analysis.architecture(result)
    arch = arch or "unknown"
    overlap = OVERLAP_NAMES.get(split_of(result, by_stem) or "", "")
    row = {"file": name, "kind": result.kind, "overlap": overlap or "unknown split",
           "architecture": arch, "arch_from": source,
           "dataset": analysis.dataset_title(result.dataset) or "",
           "mutual_information": np.nan, "r_squared": np.nan, "columns": ""}
    if result.kind in ("similarity", "partition"):
        mi, r2, columns = file_scores(result, metric, study)
        row.update(placed_in=overlap, mutual_information=mi, r_squared=r2,
                   columns=" ".join(columns))
        return row, []
    if result.kind in analysis.TRANSFER_KINDS:
        row["placed_in"] = f"skipped: {TRANSFER_NOTE}"
        return row, []
    if result.kind in analysis.CALIBRATED_KINDS:
        row["placed_in"] = f"skipped: {CALIBRATED_NOTE}"
        return row, []
    row["placed_in"] = ACCURACY_TABLE
    return row, accuracy_rows(result, arch, row["overlap"], name)


def summarize(folder: Path | str, *, metric: str | None = None, exclude: tuple[str, ...] = (),
              study: str | None = None) -> Summary:
    """The headline tables of a results folder, under this project's rules (study None) or
    the study's v2 rules (study "v2"); metric None: cka (v2: the study's choice per file)."""
    if metric is not None:
        analysis.check_metric(metric)
    if study is not None and study not in analysis.STUDIES:
        raise UserError(f"unknown study '{study}' (choose one of: {', '.join(analysis.STUDIES)})")
    folder = Path(folder)
    results, skipped = scan(folder, exclude=exclude)
    if not results:
        raise UserError(f"{folder}: no result files (*.csv with a header of docs/protocol.md "
                        "section 3) in this folder")
    by_stem = {r.path.with_suffix(""): r for r in results}
    placed, acc_rows = [], []
    for result in results:
        row, rows = _placed_row(result, label(result.path, folder), by_stem, metric, study)
        placed.append(row)
        acc_rows.extend(rows)
    for name, reason in skipped:
        placed.append({"file": name, "kind": "", "overlap": "", "architecture": "",
                       "arch_from": "",
                       "dataset": "", "placed_in": f"skipped: {reason}",
                       "mutual_information": np.nan, "r_squared": np.nan, "columns": ""})
    files = pd.DataFrame(placed)
    mi, by_arch = headline(files)
    full = pd.DataFrame(acc_rows, columns=[*ACC_COLUMNS, "model"])
    companions = [r for r in results if r.kind in analysis.CALIBRATED_KINDS]
    mi_calibrated = (calibrated_headline(companions, by_stem, metric)
                     if companions and study is None else None)
    return Summary(mi=mi, by_arch=by_arch, acc=full[list(ACC_COLUMNS)], files=files,
                   acc_by_model=acc_by_model(full), study=study, mi_calibrated=mi_calibrated)


def calibrated_headline(companions: list[ResultFile], by_stem, metric: str | None
                        ) -> pd.DataFrame:
    """The headline table on calibrated companions (this project's rules, as `headline`):
    MI and R^2 of the calibrated scores, and the fraction of pairs significant at the
    measurement's alpha (mean over the file's columns and overlap levels' pairs), each the
    mean over files of an architecture, then over architectures."""
    rows = []
    for result in companions:
        mi, r2, columns = file_scores(result, metric)
        sig = analysis.significance(result, metric or "cka", columns=columns)
        per_column = sig.groupby(level="probe").sum()
        fraction = float((per_column["significant"] / per_column["n"]).mean())
        arch, _ = analysis.architecture(result)
        rows.append({"placed_in": OVERLAP_NAMES.get(split_of(result, by_stem) or "", ""),
                     "architecture": arch or "unknown", "mutual_information": mi,
                     "r_squared": r2, "significant_fraction": fraction})
    files = pd.DataFrame(rows)
    stats = ("mutual_information", "r_squared", "significant_fraction")
    table = pd.DataFrame(index=list(stats), columns=list(HEADLINE), dtype=float)
    for column in HEADLINE:
        placed = files[files["placed_in"] == column]
        for stat in stats:
            table.loc[stat, column] = _mean_over_arches(placed, stat)
    return table


def compare(project: Summary, study: Summary) -> pd.DataFrame:
    """Both headline tables side by side, overall and per architecture (rows: architecture,
    statistic, rules; 'difference' = study minus project)."""
    frames = []
    for arch, a, b in [("all", project.mi, study.mi),
                       *((x, _arch_rows(project, x), _arch_rows(study, x))
                         for x in sorted(set(_arches(project)) | set(_arches(study))))]:
        for stat in ("mutual_information", "r_squared"):
            pa = a.loc[stat] if stat in a.index else pd.Series(np.nan, index=list(HEADLINE))
            pb = b.loc[stat] if stat in b.index else pd.Series(np.nan, index=list(HEADLINE))
            for rules, values in (("project", pa), (f"study {study.study}", pb),
                                  ("difference", pb - pa)):
                frames.append({"architecture": arch, "statistic": stat, "rules": rules,
                               **{h: float(values.get(h, np.nan)) for h in HEADLINE}})
    return pd.DataFrame(frames).set_index(["architecture", "statistic", "rules"])


def _arches(summary: Summary) -> list[str]:
    return list(summary.by_arch.index.get_level_values(0).unique()) if len(summary.by_arch) \
        else []


def _arch_rows(summary: Summary, arch: str) -> pd.DataFrame:
    if arch not in _arches(summary):
        return pd.DataFrame(columns=list(HEADLINE))
    return summary.by_arch.xs(arch, level="architecture")


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
                text += ("  (no <stem>.json with an 'arch' key and no resnet/vae/gpt/vit/llama/"
                         "diffusion in the name: averaged as an architecture of its own)")
            lines.append(text)
    return "\n".join(lines)


def format_summary(summary: Summary, metric: str | None = "cka") -> str:
    mi = summary.mi.to_string(float_format=lambda v: f"{v:.3f}")
    if summary.study:
        how = (f"study {summary.study} rules: {metric or 'cka, cknna for diffusion'}; each "
               "file's table (docs/protocol.md section 6.7)")
    else:
        how = f"{metric or 'cka'}; mean over probe columns"
    parts = ["Files:", format_files(summary.files), "",
             f"Headline table ({how}, then files of an architecture, then architectures):", mi]
    if len(summary.by_arch):
        parts += ["", "Per architecture:",
                  summary.by_arch.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")]
    if len(summary.acc):
        shown = summary.acc[["architecture", "dataset", "overlap", "label_set", "quantity",
                             "n", "value"]]
        parts += ["", "Accuracy table (mean \u00b1 sample std):", shown.to_string(index=False)]
    if summary.acc_by_model is not None and len(summary.acc_by_model):
        shown = summary.acc_by_model.drop(columns=["model"])
        parts += ["", "Accuracy per model (%, mean \u00b1 sample std over both models, seeds "
                  "and overlaps):", shown.to_string(index=False)]
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


def latex_acc_by_model(table: pd.DataFrame) -> str:
    """One tabular per architecture: model, dataset or label set, a column per overlap."""
    columns = [c for c in HEADLINE if c in table.columns]
    parts = []
    for arch, rows in table.groupby("architecture", sort=True):
        body = [[_tex(r["title"]), _tex(r["row"]),
                 *(f"${r[c]}$".replace("\u00b1", r"\pm") if r[c] else "--" for c in columns)]
                for _, r in rows.iterrows()]
        parts.append(f"% {arch}\n" + _tabular(["Model", "Data"] + [_tex(c) for c in columns],
                                               body, "ll" + "r" * len(columns)))
    return "\n\n".join(parts)


def write_summary(summary: Summary, out: Path | str, *, latex: bool = False) -> list[Path]:
    out = Path(out)
    written = [out / "summary_mi.csv", out / "summary_acc.csv"]
    atomic_write_text(written[0], summary.mi.to_csv())
    atomic_write_text(written[1], summary.acc.to_csv(index=False))
    if summary.mi_calibrated is not None:
        written.append(out / CALIBRATED_MI_CSV)
        atomic_write_text(written[-1], summary.mi_calibrated.to_csv())
    by_model = summary.acc_by_model is not None and len(summary.acc_by_model)
    if by_model:
        written.append(out / "summary_acc_by_model.csv")
        atomic_write_text(written[-1], summary.acc_by_model.to_csv(index=False))
    if latex:
        written += [out / "summary_mi.tex", out / "summary_acc.tex"]
        atomic_write_text(written[-2], latex_mi(summary.mi) + "\n")
        atomic_write_text(written[-1], latex_acc(summary.acc) + "\n")
        if by_model:
            written.append(out / "summary_acc_by_model.tex")
            atomic_write_text(written[-1], latex_acc_by_model(summary.acc_by_model) + "\n")
    return written


def write_compare(table: pd.DataFrame, out: Path | str) -> Path:
    path = Path(out) / "summary_compare.csv"
    atomic_write_text(path, table.to_csv())
    return path


# ---- the notebook's loop ----------------------------------------------------------------
def render_folder(folder: Path | str, *, metric: str = "cka",
                  formats: tuple[str, ...] = (".png", ".pdf")) -> list[dict]:
    """Table and figure(s) beside every result file of a folder; one dict per file."""
    results, _ = scan(folder)
    return [render_result(result, metric=metric, formats=formats) for result in results]


def rendered_paths(path: Path, has_metrics: bool, *, metric: str = "cka",
                   formats: tuple[str, ...] = (".png", ".pdf"),
                   all_metrics: bool = False) -> list[Path]:
    """What render_result writes beside a result file: table, figures, all-metrics table."""
    stem = Path(path).with_suffix("")
    tag = f"_{metric}" if has_metrics else ""
    paths = [Path(f"{stem}{tag}_table.csv"), *(Path(f"{stem}{tag}{s}") for s in formats)]
    if all_metrics and has_metrics:
        paths.append(Path(f"{stem}_all_metrics_table.csv"))
    return paths


def render_result(result: ResultFile | Path | str, *, metric: str = "cka",
                  formats: tuple[str, ...] = (".png", ".pdf"),
                  all_metrics: bool = False) -> dict:
    """The analysis table and box plot(s) of one result file, written beside it (and, with
    `all_metrics`, the table over all eight metrics): what the notebook and the demo draw."""
    from . import plots

    if not isinstance(result, ResultFile):
        result = analysis.read_result(result)
    paths = rendered_paths(result.path, result.has_metrics, metric=metric, formats=formats,
                           all_metrics=all_metrics)
    table = analysis.analyze(result, metric if result.has_metrics else None)
    table_path = analysis.write_table(table, paths[0])
    fig = plots.plot_result(result, metric if result.has_metrics else None, table=table)
    figures = [plots.save_figure(fig, p) for p in paths[1:1 + len(formats)]]
    plots.close(fig)
    if all_metrics and result.has_metrics:
        analysis.write_table(analysis.analyze_all_metrics(result), paths[-1])
    return {"result": result, "table": table, "table_path": table_path, "figures": figures,
            "paths": paths}


# ---- the notebook's v2 section -------------------------------------------------------------
def v2_figure_groups(results: list[ResultFile]) -> dict[str, list[ResultFile]]:
    """The study's v2 figures: files of one family, dataset, kind of overlap and file kind
    (one panel per model size), e.g. 'resnet_cifar100_ds', 'vit_csd', 'resnet_tinyimagenet_
    task_transfer_asr'. Files without a model name (nanoGPT, diffusion) are left out."""
    groups: dict[str, list[ResultFile]] = {}
    short = {"dataset": "ds", "task": "task", "partition": "csd"}
    for r in results:
        if not r.model or r.kind not in ("similarity", "partition", "transfer", "jailbreak"):
            continue
        arch, _ = analysis.architecture(r)
        bits = [arch, r.dataset if r.kind != "partition" else None, short.get(r.split or "")]
        if r.kind in analysis.TRANSFER_KINDS:
            judge = "gpt5_judge" if "gpt5" in r.path.stem else None
            bits += [judge, "transfer_asr"]
        groups.setdefault("_".join(b for b in bits if b), []).append(r)
    return groups


def render_v2(folder: Path | str, out: Path | str, *, formats=(".png", ".pdf"),
              n_perm: int = 999) -> dict:
    """Everything the study's v2 notebook made, under its v2 rules, written to `out`: a
    table per file (tables/<stem>_regression_mi.csv), the headline and accuracy tables and
    the comparison with this project's rules, the model-size figures (figures/), and the
    consequences table with a scatter figure per pair (cka)."""
    from . import consequences, plots

    out = Path(out)
    results, _ = scan(folder)
    tables = {}
    for r in results:
        if r.kind in ("similarity", "partition", *analysis.TRANSFER_KINDS):
            table = analysis.analyze_v2(r, n_perm=0, n_boot=0)
            tables[r.path.stem] = analysis.write_table(
                table[["mutual_information", "r_squared"]],
                out / "tables" / f"{r.path.stem}_regression_mi.csv")
    v2 = summarize(folder, study="v2")
    written = write_summary(v2, out, latex=True)
    comparison = compare(summarize(folder), v2)
    written.append(write_compare(comparison, out))
    figures = []
    for name, group in v2_figure_groups(results).items():
        fig = plots.plot_model_sizes(group)
        figures += [plots.save_figure(fig, out / "figures" / f"{name}{f}") for f in formats]
        plots.close(fig)
    cons = None
    pairs = [p for p in consequences.find_pairs(results) if p[1].kind == "transfer"]
    if pairs:
        cons = consequences.folder_table([x for p in pairs for x in p], metrics=("cka",),
                                         n_perm=n_perm)
        written.append(analysis.write_table(cons, out / "consequences_cka.csv"))
        for sim, asr in pairs:
            table = consequences.consequences(sim, asr, metrics=("cka",), n_perm=0)
            fig = plots.plot_consequences(consequences.join(sim, asr, "cka"),
                                          table.xs("cka", level="metric"), "cka",
                                          title=consequences.pair_title(sim))
            figures.append(plots.save_figure(
                fig, out / "figures" / f"{asr.path.stem}_vs_cka{formats[0]}"))
            plots.close(fig)
    return {"summary": v2, "compare": comparison, "tables": tables, "written": written,
            "figures": figures, "consequences": cons}


# ---- one experiment in a few lines (the demo's report) ------------------------------------
def in_distribution_column(result: ResultFile) -> str:
    """The in-distribution probe column: metric_overlap (images), metric_common (text task
    overlap), metric_<trained corpus> (text dataset overlap)."""
    columns = result.value_columns
    for name in (results.OVERLAP_PROBE, results.TEXT_TASK_PROBES[0]):
        if name in columns:
            return name
    corpus = str(result.meta.get("dataset") or "")
    for column in columns:
        if corpus and column in (f"metric_{corpus}", f"metric_{corpus.split('_')[0]}"):
            return column
    return columns[0]


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return "n/a"
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return f"{values.mean():.4g} +- {std:.2g}"


def experiment_lines(sim_csv: Path, per_model_csv: Path, *, metric: str = "cka") -> list[str]:
    """Accuracy (or validation loss) of an experiment's models, and the fit of `metric` on
    its in-distribution probe against overlap (from the table render_result wrote)."""
    sim = analysis.read_result(sim_csv)
    per_model = analysis.read_result(per_model_csv)
    column = per_model.value_columns[0]  # acc or val_loss
    values = per_model.data[column]
    values = values[~values.round(9).eq(results.EMPTY)]  # -1: no shared class
    if column == "acc":
        what = "test accuracy" + (" on the shared classes" if sim.split == "task" else "")
        quantity = f"{what}: {_mean_std(100 * values)} % ({len(values)} models)"
    else:
        quantity = f"best validation loss: {_mean_std(values)} ({len(values)} models)"
    probe = in_distribution_column(sim)
    table = pd.read_csv(rendered_paths(sim_csv, True, metric=metric)[0], index_col="probe")
    row = table.loc[probe]
    return [f"  {quantity}",
            f"  {metric} on the in-distribution probe ({probe}) against overlap: "
            f"slope {row['slope']:+.4f}, R^2 {row['r_squared']:.3f}, Spearman rho "
            f"{row['spearman_rho']:+.3f} (p {row['spearman_p']:.3g}), n {int(row['n'])}"]


# ---- a results folder from experiment folders (what the demo does; docs: README) ----------
def undefined_as_missing(text: str) -> tuple[str, list[str]]:
    """The CSV text with undefined scores ('nan': a metric undefined on degenerate features,
    which the measurer warns about) written as -1, the files' "no value" marker, so that
    the analysis leaves them out of the fits instead of refusing the file; and a note
    "seed S frac F metric M column C" for each."""
    lines = text.splitlines()
    header = lines[0].split(",")
    notes = []
    for i, line in enumerate(lines[1:], start=1):
        cells = line.split(",")
        for j, cell in enumerate(cells):
            if cell.strip().lower() == "nan":
                cells[j] = "-1.000000"
                row = dict(zip(header, cells, strict=False))
                notes.append(f"seed {row.get('seed')} frac {row.get('frac_overlap')} metric "
                             f"{row.get('metric', '-')} column {header[j]}")
        lines[i] = ",".join(cells)
    return "\n".join(lines) + "\n", notes


def collect_results(exp_dir: Path, out: Path, outputs: list[tuple[str, str]], *,
                    extra_meta: dict | None = None) -> list[Path]:
    """Copy an experiment's result files into a results folder under the names the study
    gives them: `outputs` = [(name in exp_dir, name in out)], the similarity file first;
    sidecars too (with `extra_meta` and the source), and the similarity file's calibrated
    companion beside its copy. Written only when the bytes change. Returns the copies."""
    copied = []
    for name, new_name in outputs:
        src, dst = Path(exp_dir) / name, Path(out) / new_name
        if not src.is_file():
            raise UserError(f"the measurement wrote no {src}")
        text, undefined = undefined_as_missing(src.read_text(encoding="utf-8"))
        for where in undefined:
            print(f"{src}: undefined (NaN) score at {where}, written as -1 in {dst.name}")
        write_if_changed(dst, text.encode("utf-8"))
        side = src.with_suffix(".json")
        if side.is_file():
            meta = {**read_json(side), **(extra_meta or {}), "source": str(src)}
            if undefined:
                meta["undefined_written_as_-1"] = undefined
            write_if_changed(dst.with_suffix(".json"), json_bytes(meta))
        copied.append(dst)
    return copied + collect_calibrated(Path(exp_dir), outputs[0][0], copied[0])


def collect_calibrated(exp_dir: Path, sim_file: str, sim_copy: Path) -> list[Path]:
    """The similarity file's calibrated companion (and sidecar), beside its copy."""
    from .results import calibrated_name

    src = exp_dir / calibrated_name(sim_file)
    if not src.is_file():
        return []
    dst = sim_copy.with_name(calibrated_name(sim_copy.name))
    for a, b in ((src, dst), (src.with_suffix(".json"), dst.with_suffix(".json"))):
        if a.is_file():
            write_if_changed(b, a.read_bytes())
    return [dst]


def overlap_sentence(sim_csv: Path, *, metric: str = "cka", alpha: float = 0.05) -> str:
    """One sentence on what a similarity file shows: does `metric` on its in-distribution
    probe rise with the overlap (Spearman's permutation test at `alpha`)?"""
    sim = analysis.read_result(sim_csv)
    probe = in_distribution_column(sim)
    row = analysis.analyze(sim, metric, columns=(probe,)).loc[probe]
    what = {"dataset": "dataset overlap", "task": "task overlap (shared classes or corpora)",
            "partition": "task overlap"}.get(sim.split or "", "overlap")
    numbers = f"Spearman rho {row['spearman_rho']:+.2f}, p {row['spearman_p']:.2g}, " \
              f"{int(row['n'])} pairs"
    if row["spearman_p"] < alpha and row["spearman_rho"] > 0:
        return (f"In {sim.path.name}, {metric} rises with {what} ({numbers}): models that "
                f"share more of what they learn from end up more similar, as the study found.")
    if row["spearman_p"] < alpha:
        return (f"In {sim.path.name}, {metric} falls with {what} ({numbers}), against the "
                f"study's finding.")
    return (f"In {sim.path.name}, {metric} shows no significant trend with {what} ({numbers}): "
            f"at this scale the spread between seeds is as large as the effect.")


def calibrated_lines(sim_csv: Path, *, metrics=("cka", "mutual_knn")) -> list[str]:
    """Raw against null-calibrated scores on the in-distribution probe, per metric: the
    Spearman fit against overlap of each, and how many pairs are significant at the
    calibration's alpha per overlap level (nothing when the companion is missing)."""
    sim = analysis.read_result(sim_csv)
    try:
        cal = analysis.read_calibrated(sim_csv)
    except UserError:
        return []
    probe = in_distribution_column(sim)
    alpha = analysis.calibration_alpha(cal)
    lines = []
    for metric in metrics:
        raw = analysis.analyze(sim, metric, columns=(probe,)).loc[probe]
        calibrated = analysis.analyze(cal, metric, columns=(probe,)).loc[probe]
        sig = analysis.significance(cal, metric, alpha=alpha, columns=(probe,)).loc[probe]
        levels = ", ".join(f"{x:.2g}: {int(r.significant)}/{int(r.n)}" for x, r in sig.iterrows())
        lines.append(f"  {metric} ({probe}): raw rho {raw['spearman_rho']:+.3f} "
                     f"(p {raw['spearman_p']:.3g}), calibrated rho "
                     f"{calibrated['spearman_rho']:+.3f} (p {calibrated['spearman_p']:.3g}); "
                     f"significant at {alpha:g} by overlap {levels}")
    return lines


def cli_summary(args) -> int:
    metric = getattr(args, "metric", None)
    study = getattr(args, "study", None)
    exclude = tuple(getattr(args, "exclude", None) or ())
    summary = summarize(args.results_dir, metric=metric, exclude=exclude, study=study)
    out = args.out or args.results_dir
    print(format_summary(summary, metric))
    if summary.mi_calibrated is not None:
        print(f"\nCalibrated headline table ({metric or 'cka'} on the null-calibrated companions; "
              "significant_fraction: pairs with p <= the measurement's alpha):")
        print(summary.mi_calibrated.to_string(float_format=lambda v: f"{v:.3f}"))
    written = write_summary(summary, out, latex=args.latex)
    if args.latex:
        print("\n" + latex_mi(summary.mi) + "\n\n" + latex_acc(summary.acc))
    if getattr(args, "compare", False):
        other = summarize(args.results_dir, metric=metric, exclude=exclude,
                          study=None if study else "v2")
        project, v2 = (other, summary) if study else (summary, other)
        table = compare(project, v2)
        print("\nProject rules vs the study's v2 rules:")
        print(table.loc["all"].to_string(float_format=lambda v: f"{v:.3f}"))
        written.append(write_compare(table, out))
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0
