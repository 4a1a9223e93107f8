"""Consequences: does the similarity of a pair predict how well an attack transfers between
its two models? (Beyond the study: its v2 notebook plots transfer success against overlap only.)

A similarity file and its transfer file (docs/protocol.md section 6.3: `seed,frac_overlap,
normal_asr,transfer_asr`; the Llama jailbreak files have the last two columns swapped) are
joined on (seed, frac_overlap). The jailbreak files hold two rows per pair (presumably the
two directions); they are averaged, as the pair has one similarity. Then, per metric and
probe column, over the rows where neither value is -1 (an empty probe set, no shared class):

- Spearman's rho of transfer_asr with the similarity, two-sided permutation p-value;
- the partial rank correlation controlling for overlap: the ranks of both, each
  residualised on the ranks of the overlap by least squares, correlated; its p-value from
  permutations *within each overlap level* (the null: given the overlap, similarity tells
  nothing about transfer), so what overlap explains cannot make it significant;
- the mutual information of transfer_asr with the similarity (`mutual_info_regression`,
  random_state=42, as the study's tables);
- for reference, Spearman's rho of transfer_asr with the overlap itself.

`summary_lines` puts the numbers of one metric and probe column in a few plain lines (the
demo's summary; the transfer files of pairs trained here come from `reprsim attack`,
repr_sim.attack).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis
from .errors import UserError
from .results import EMPTY, OVERLAP_PROBE, TRANSFER_ASR, TRANSFER_KINDS

TABLE_COLUMNS = ("n", "spearman_rho", "spearman_p", "partial_rho", "partial_p",
                 "mutual_information", "overlap_rho", "title")
KEY_DECIMALS = 6  # frac_overlap is written with up to 6 decimals (or %g) on both sides


# ---- reading and joining ----------------------------------------------------------------
def read_pair(sim_path, asr_path) -> tuple[analysis.ResultFile, analysis.ResultFile]:
    """The two files, checked: a similarity file and a transfer file of the same models."""
    sim, asr = analysis.read_result(sim_path), analysis.read_result(asr_path)
    if sim.kind in TRANSFER_KINDS and asr.kind == "similarity":
        raise UserError(f"{sim.path}: a {sim.kind} file given first; the order is "
                        "SIM_FILE ASR_FILE")
    if sim.kind != "similarity":
        raise UserError(f"{sim.path}: a {sim.kind} file, expected a similarity file "
                        "(seed,metric,frac_overlap,metric_...)")
    if asr.kind not in TRANSFER_KINDS:
        raise UserError(f"{asr.path}: a {asr.kind} file, expected a transfer-attack file "
                        "(seed,frac_overlap,normal_asr,transfer_asr)")
    for what, a, b in (("model", sim.model, asr.model), ("split", sim.split, asr.split)):
        if a and b and a != b:
            raise UserError(f"{asr.path}: no matching similarity file: it is for {what} {b}, "
                            f"{sim.path.name} for {a}")
    return sim, asr


def _keys(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(frac_overlap=frame["frac_overlap"].round(KEY_DECIMALS))


def join(sim: analysis.ResultFile, asr: analysis.ResultFile, metric: str) -> pd.DataFrame:
    """One row per pair of the similarity file (file order) that has a transfer value:
    seed, frac_overlap, the probe columns, transfer_asr, and keep_<probe> (neither -1)."""
    rows = _keys(sim.rows(metric))[["seed", "frac_overlap", *sim.value_columns]]
    attack = _keys(asr.data).groupby(["seed", "frac_overlap"], as_index=False)[TRANSFER_ASR]
    attack = attack.mean()  # jailbreak files: two rows (directions) per pair
    joined = rows.merge(attack, on=["seed", "frac_overlap"], how="inner", validate="m:1")
    if joined.empty:
        raise UserError(f"{asr.path}: no matching similarity file: no (seed, frac_overlap) in "
                        f"common with {sim.path.name}")
    empty_asr = np.isclose(joined[TRANSFER_ASR], EMPTY, rtol=0.0, atol=1e-9)
    for probe in sim.value_columns:
        empty = np.isclose(joined[probe], EMPTY, rtol=0.0, atol=1e-9)
        joined[f"keep_{probe}"] = ~(empty | empty_asr)
    return joined


# ---- statistics -------------------------------------------------------------------------
def _ranks(a) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(np.asarray(a, dtype=np.float64))


def _residuals(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """y minus its least-squares line on z (just centred when z is constant)."""
    dz, dy = z - z.mean(), y - y.mean()
    szz = float(dz @ dz)
    return dy - (float(dz @ dy) / szz) * dz if szz > 0 else dy


def _level_permutations(levels: np.ndarray, n_perm: int, rng) -> np.ndarray:
    """n_perm index arrays, each a permutation within every level of `levels`."""
    idx = np.broadcast_to(np.arange(levels.size), (n_perm, levels.size)).copy()
    for level in np.unique(levels):
        where = np.flatnonzero(levels == level)
        if where.size > 1:
            idx[:, where] = rng.permuted(np.broadcast_to(where, (n_perm, where.size)), axis=1)
    return idx


def partial_rank_correlation(x, y, z, *, n_perm: int = analysis.N_PERMUTATIONS,
                             seed: int = 0) -> tuple[float, float]:
    """(partial Spearman of x and y given z, permutation p-value with x permuted within
    each level of z: (1 + hits) / (1 + n_perm), two-sided)."""
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    rz = _ranks(z)
    ex, ey = _residuals(_ranks(x), rz), _residuals(_ranks(y), rz)
    norm = float(np.sqrt((ex @ ex) * (ey @ ey)))
    if norm < 1e-12:
        return float("nan"), float("nan")
    rho = float(ex @ ey) / norm
    if n_perm <= 0:
        return rho, float("nan")
    # Permuting x within a level of z leaves its line on z unchanged (the level's sums
    # stay), so the permuted residuals are the residuals permuted.
    rng = np.random.default_rng(seed)
    levels = np.round(z, KEY_DECIMALS)
    hits = 0
    for start in range(0, n_perm, 1000):  # chunks keep the memory small
        idx = _level_permutations(levels, min(1000, n_perm - start), rng)
        hits += int(np.sum(np.abs(ex[idx] @ ey) / norm >= abs(rho) - 1e-12))
    return rho, (1 + hits) / (1 + n_perm)


def probe_stats(x, y, overlap, *, n_perm: int, seed: int = 0) -> dict:
    """Every number of the table for one probe column (rows already cleaned of -1)."""
    rho, p = analysis.spearman(x, y, n_perm=n_perm, seed=seed)
    partial, partial_p = partial_rank_correlation(x, y, overlap, n_perm=n_perm, seed=seed)
    mi = analysis.mutual_information(x, y) if x.size >= 4 else float("nan")
    return {"n": int(x.size), "spearman_rho": rho, "spearman_p": p, "partial_rho": partial,
            "partial_p": partial_p, "mutual_information": mi,
            "overlap_rho": analysis.spearman(overlap, y, n_perm=0)[0]}


def kept_values(joined: pd.DataFrame, probe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(similarity, transfer_asr, overlap) of the joined rows where neither value is -1."""
    keep = joined[f"keep_{probe}"].to_numpy()
    return tuple(joined.loc[keep, c].to_numpy(dtype=np.float64)
                 for c in (probe, TRANSFER_ASR, "frac_overlap"))


def check_probes(sim: analysis.ResultFile, probes) -> None:
    unknown = [p for p in probes if p not in sim.value_columns]
    if unknown:
        raise UserError(f"{sim.path}: no probe column '{unknown[0]}' (it has "
                        f"{', '.join(sim.value_columns)})")


def consequences(sim: analysis.ResultFile, asr: analysis.ResultFile, *,
                 metrics: tuple[str, ...] | None = None, probes: tuple[str, ...] | None = None,
                 n_perm: int = analysis.N_PERMUTATIONS, seed: int = 0) -> pd.DataFrame:
    """The table: index (metric, probe), columns TABLE_COLUMNS (`probes`: only these)."""
    check_probes(sim, probes or ())
    rows = {}
    for metric in metrics or sim.metrics():
        joined = join(sim, asr, metric)
        for probe in probes or sim.value_columns:
            x, y, overlap = kept_values(joined, probe)
            if x.size < 4 and not probes:  # every column asked for: leave out the short ones
                continue
            if x.size < 4:
                raise UserError(f"{sim.path}: column '{probe}' (metric {metric}): {x.size} "
                                f"rows with a transfer value; at least 4 are needed")
            stats = probe_stats(x, y, overlap, n_perm=n_perm, seed=seed)
            stats["title"] = analysis.probe_title(probe, dataset=sim.dataset, split=sim.split)
            rows[(metric, probe)] = stats
    if not rows:
        raise UserError(f"{sim.path}: no probe column has 4 rows with a transfer value")
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(TABLE_COLUMNS))
    table.index = pd.MultiIndex.from_tuples(table.index, names=["metric", "probe"])
    table["n"] = table["n"].astype(int)
    return table


def summary_lines(sim_path, asr_path, *, metric: str = "cka", probe: str = OVERLAP_PROBE,
                  n_perm: int = analysis.N_PERMUTATIONS, seed: int = 0) -> list[str]:
    """A few plain lines on one similarity file and its transfer file (the demo's summary):
    the transfer success, its Spearman rho with overlap and with `metric` on `probe`, and
    the partial rank correlation with the similarity given overlap (`consequences`)."""
    sim, asr = read_pair(sim_path, asr_path)
    check_probes(sim, (probe,))
    _, y, overlap = kept_values(join(sim, asr, metric), probe)
    head = f"  transfer attack success (split_0 -> split_1), {y.size} pairs"
    if y.size < 4:
        return [f"{head}: at least 4 with {metric} on {probe} are needed for the correlations"]
    row = consequences(sim, asr, metrics=(metric,), probes=(probe,), n_perm=n_perm,
                       seed=seed).loc[(metric, probe)]
    rho, p = analysis.spearman(overlap, y, n_perm=n_perm, seed=seed)
    return [f"{head}: mean {y.mean():.3f} ({y.min():.3f} to {y.max():.3f})",
            f"  transfer success against overlap: Spearman rho {rho:+.3f} (p {p:.3g})",
            f"  against {metric} ({probe}): Spearman rho {row['spearman_rho']:+.3f} "
            f"(p {row['spearman_p']:.3g}); given overlap: partial rho {row['partial_rho']:+.3f} "
            f"(p {row['partial_p']:.3g})"]


def transfer_sentence(sim_path, asr_path, *, metric: str = "cka", probe: str = OVERLAP_PROBE,
                      alpha: float = 0.05, n_perm: int = analysis.N_PERMUTATIONS) -> str:
    """One sentence on a transfer file: how often an attack on one model fools the other,
    and whether that follows the overlap, and `metric` beyond the overlap (partial rho)."""
    sim, asr = read_pair(sim_path, asr_path)
    _, y, overlap = kept_values(join(sim, asr, metric), probe)
    if y.size < 4:
        return f"In {asr.path.name}, fewer than 4 pairs have a transfer rate and a {metric}."
    row = consequences(sim, asr, metrics=(metric,), probes=(probe,), n_perm=n_perm).loc[(metric, probe)]
    rho, p = analysis.spearman(overlap, y, n_perm=n_perm)

    def verdict(r, q):
        return f"rises (rho {r:+.2f}, p {q:.2g})" if q < alpha and r > 0 else (
            f"falls (rho {r:+.2f}, p {q:.2g})" if q < alpha else f"shows no trend (rho {r:+.2f}, p {q:.2g})")

    return (f"In {asr.path.name}, attacks crafted on one model fool the other on "
            f"{100 * y.mean():.1f}% of images on average; the rate {verdict(rho, p)} with overlap, "
            f"and given the overlap it {verdict(row['partial_rho'], row['partial_p'])} with "
            f"{metric}.")


# ---- a folder: every transfer file with its similarity file --------------------------------
def _identity(result: analysis.ResultFile) -> tuple:
    return (result.split, result.model, result.dataset)


def find_pairs(results: list[analysis.ResultFile]) -> list[tuple]:
    """[(similarity file, transfer file)] for every transfer file among `results`, matched
    by split, model and dataset (metadata or the study's names); none found: a UserError."""
    sims = [r for r in results if r.kind == "similarity"]
    pairs = []
    for asr in (r for r in results if r.kind in TRANSFER_KINDS):
        found = [s for s in sims if _identity(s) == _identity(asr)]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)} candidate"
            split, model, dataset = _identity(asr)
            raise UserError(f"{asr.path}: {what} matching similarity file (split {split}, "
                            f"model {model}, dataset {dataset})")
        pairs.append((found[0], asr))
    return pairs


def folder_table(results: list[analysis.ResultFile], *, metrics=None,
                 n_perm: int = analysis.N_PERMUTATIONS, seed: int = 0) -> pd.DataFrame:
    """One table over every transfer file of a folder (index: file, metric, probe), with
    model, dataset and kind of overlap as columns."""
    tables = {}
    for sim, asr in find_pairs(results):
        table = consequences(sim, asr, metrics=metrics, n_perm=n_perm, seed=seed)
        table.insert(0, "model", analysis.model_title(sim.model) or "")
        table.insert(1, "overlap", analysis.OVERLAP_NAMES.get(sim.split or "", ""))
        tables[asr.path.name] = table
    if not tables:
        raise UserError("no transfer-attack files (seed,frac_overlap,normal_asr,transfer_asr)")
    return pd.concat(tables, names=["file", "metric", "probe"])


# ---- output -----------------------------------------------------------------------------
def format_table(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["title"], errors="ignore")
    return shown.to_string(float_format=lambda v: f"{v:.4f}")


def scan_folder(folder: Path | str) -> list[analysis.ResultFile]:
    """Every result file under a folder (recursively), tables written by reprsim left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: give SIM_FILE ASR_FILE, or one results folder")
    paths = sorted(folder.rglob("*.csv"))
    return [analysis.read_result(p) for p in paths
            if not analysis.is_output_header(analysis.read_header(p))]


def pair_title(sim: analysis.ResultFile) -> str:
    """'ResNet-18 · TinyImageNet · Dataset Overlap' (what the name or metadata tell)."""
    arch, _ = analysis.architecture(sim)
    bits = [analysis.model_title(sim.model) or analysis.ARCH_TITLES.get(arch or "", arch),
            analysis.dataset_title(sim.dataset), analysis.OVERLAP_NAMES.get(sim.split or "")]
    return " \u00b7 ".join(b for b in bits if b)


def cli_consequences(args) -> int:
    from . import plots

    if args.metric is not None:
        analysis.check_metric(args.metric)
    if len(args.paths) not in (1, 2):
        raise UserError("give SIM_FILE ASR_FILE, or one results folder")
    if args.plot and len(args.paths) != 2:
        raise UserError("--plot needs SIM_FILE ASR_FILE (one pair of files)")
    if args.plot and Path(args.plot).suffix.lower() not in plots.FORMATS:
        raise UserError(f"{args.plot}: unknown figure format (use one of "
                        f"{', '.join(plots.FORMATS)})")
    metrics = (args.metric,) if args.metric else None
    if len(args.paths) == 1:
        table = folder_table(scan_folder(args.paths[0]), metrics=metrics,
                             n_perm=args.permutations)
    else:
        sim, asr = read_pair(*args.paths)
        table = consequences(sim, asr, metrics=metrics, n_perm=args.permutations)
        joined = join(sim, asr, table.index[0][0])
        print(f"{asr.path.name} with {sim.path.name}: {len(joined)} pairs joined on "
              "(seed, frac_overlap)")
    print(format_table(table))
    if args.out:
        print(f"wrote {analysis.write_table(table, args.out)}")
    if args.plot:
        metric = args.metric or "cka"
        print(f"wrote {save_plot(sim, asr, table.xs(metric, level='metric'), metric, args.plot)}")
    return 0


def save_plot(sim: analysis.ResultFile, asr: analysis.ResultFile, table: pd.DataFrame,
              metric: str, path) -> Path:
    """The scatter of transfer success against `metric` (one panel per probe of `table`,
    a `consequences` table of that metric), written to `path`."""
    from . import plots

    fig = plots.plot_consequences(join(sim, asr, metric), table, metric, title=pair_title(sim))
    try:
        return plots.save_figure(fig, path)
    finally:
        plots.close(fig)


def render_pair(sim_path, asr_path, out, *, metric: str = "cka", probe: str = OVERLAP_PROBE,
                n_perm: int = analysis.N_PERMUTATIONS) -> list[Path]:
    """The demo's figure of one experiment: transfer success against `metric` on `probe`,
    as `out` with .png and .pdf (nothing when fewer than 4 pairs have both values)."""
    sim, asr = read_pair(sim_path, asr_path)
    if kept_values(join(sim, asr, metric), probe)[0].size < 4:
        return []
    table = consequences(sim, asr, metrics=(metric,), probes=(probe,), n_perm=n_perm)
    return [save_plot(sim, asr, table.xs(metric, level="metric"), metric, Path(out).with_suffix(s))
            for s in (".png", ".pdf")]
