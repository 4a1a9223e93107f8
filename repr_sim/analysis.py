"""Result files -> the study's tables: mutual information and R^2 of a score against overlap.

A result file (PROTOCOL section 3) is recognised by its header, never by its name:

    similarity          seed,metric,frac_overlap,metric_<probe>[,metric_<probe>...]
    accuracy            seed,frac_overlap,model_idx,acc
    loss                seed,frac_overlap,model_idx,val_loss            (text models)
    partition           seed,metric,partition,model0,model1,<probe>[,<probe>...]
    partition_accuracy  seed,partition,model,acc

For one metric, every value column gets (PROTOCOL section 4): the mutual information with
the overlap (scikit-learn's `mutual_info_regression`, X = the overlap as a 2-D array,
random_state=42, rows in the file's order: its jitter depends on the order), the R^2 of the
least-squares line, its slope and intercept, the number of rows used, Spearman's rho with a
permutation p-value, and a bootstrap 95% interval of the slope (both seeded). Rows whose
value is -1 (an empty probe set, or no shared class for an accuracy) are left out of that
column's fit. Partition files use x = 0, 0.5, 1 for partitions 1, 2, 3 (standardised for
the MI estimate).

Run metadata: a JSON file beside the CSV with the same stem (`<stem>.json`) may name the
file's "arch", "dataset" and "kind"; the measurement code writes it. Without it, the dataset
and architecture are read from the file name.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import UserError

EMPTY = -1.0  # the value written for an empty probe set (and for "no shared class")

SIMILARITY_KEYS = ("seed", "metric", "frac_overlap")
PARTITION_KEYS = ("seed", "metric", "partition", "model0", "model1")
ACCURACY_COLUMNS = ("seed", "frac_overlap", "model_idx", "acc")
LOSS_COLUMNS = ("seed", "frac_overlap", "model_idx", "val_loss")
PARTITION_ACC_COLUMNS = ("seed", "partition", "model", "acc")

# The label-partition table of the study uses these probe columns (PROTOCOL section 4).
PARTITION_PROBES = ("partition_metric", "cifar10", "mnist", "svhn")
PARTITION_X = {"partition1": 0.0, "partition2": 0.5, "partition3": 1.0}

# Probe columns that only exist in task-overlap files (the probe sets depend on which
# classes or corpora the two models share).
TEXT_TASK_PROBES = ("metric_common", "metric_OOD_for_one", "metric_OOD_for_all")
TASK_PROBES = ("metric_ood_one", *TEXT_TASK_PROBES)

# Columns of the tables this module and repr_sim.summary write: a file carrying one of
# them is an output of ours, not a result file.
OUTPUT_MARKERS = ("mutual_information", "r_squared")

MI_SEED = 42  # PROTOCOL section 4: random_state of mutual_info_regression
N_PERMUTATIONS = 9999
N_BOOTSTRAP = 2000

TABLE_COLUMNS = ("mutual_information", "r_squared", "slope", "intercept", "n",
                 "spearman_rho", "spearman_p", "slope_ci_low", "slope_ci_high", "title")

DATASET_TITLES = {
    "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tinyimagenet": "TinyImageNet",
    "mnist": "MNIST", "svhn": "SVHN", "shakespeare": "Shakespeare",
    "shakespeare_all": "Shakespeare", "tinystories": "TinyStories", "wikitext": "WikiText",
    "tinycodes": "TinyCodes", "tinytextbooks": "TinyTextbooks", "tinywebtext": "TinyWebText",
    "shapes": "Shapes", "digits": "scikit-learn digits", "sklearn_digits": "scikit-learn digits",
    "patches": "Image patches", "sample_patches": "Image patches",
    "partition": "ColorShapeDigit", "colorshapedigit": "ColorShapeDigit",
    "colorshapedigit800k": "ColorShapeDigit",
}

PROBE_TITLES = {
    "metric_ood_one": "Classes of one model",
    "metric_common": "Common corpora",
    "metric_OOD_for_one": "Corpora of one model",
    "metric_OOD_for_all": "Corpora of neither model",
    "partition_metric": "ColorShapeDigit (val)",
    "digit": "Digit-only images",
    "shape": "Shape-only images",
    "acc": "Test accuracy",
    "val_loss": "Validation loss",
}

# The study's names for the three kinds of overlap (PROTOCOL section 4), by split kind.
OVERLAP_NAMES = {"dataset": "Dataset Overlap", "partition": "Task Overlap",
                 "task": "Task + Dataset Overlap"}

ARCH_TITLES = {"resnet": "ResNet-18", "vae": "VAE", "gpt": "nanoGPT"}


def known_metrics() -> tuple[str, ...]:
    """The eight metric names, from the one place that defines them."""
    from .metrics import METRICS

    return tuple(METRICS)


# ---- reading ----------------------------------------------------------------------------
@dataclass
class ResultFile:
    """One result CSV, validated: its kind, its rows (file order) and its value columns."""

    path: Path
    kind: str
    data: pd.DataFrame
    value_columns: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def x_column(self) -> str:
        return "partition" if self.kind.startswith("partition") else "frac_overlap"

    @property
    def has_metrics(self) -> bool:
        return "metric" in self.data.columns

    @property
    def split(self) -> str | None:
        """'dataset', 'task' or 'partition' where the header (or metadata) tells; else None."""
        if self.kind.startswith("partition"):
            return "partition"
        if self.kind == "similarity":
            return "task" if any(c in TASK_PROBES for c in self.value_columns) else "dataset"
        return split_from_meta(self.meta) or split_from_name(self.path)

    @property
    def dataset(self) -> str | None:
        """Registry-style dataset name (e.g. 'cifar10') from metadata, else from the file name."""
        if self.meta.get("dataset"):
            return str(self.meta["dataset"])
        if self.kind.startswith("partition"):
            return "partition"
        return dataset_from_name(self.path)

    def metrics(self) -> list[str]:
        """The metrics present in the file, in the canonical order."""
        if not self.has_metrics:
            return []
        present = set(self.data["metric"])
        return [m for m in known_metrics() if m in present]

    def rows(self, metric: str | None = None) -> pd.DataFrame:
        """The rows of one metric (all rows for files without a metric column), file order."""
        if not self.has_metrics:
            return self.data
        check_metric(metric)
        rows = self.data[self.data["metric"] == metric]
        if rows.empty:
            raise UserError(f"{self.path}: no rows for metric '{metric}' "
                            f"(the file has: {', '.join(self.metrics())})")
        return rows

    def x_values(self, rows: pd.DataFrame) -> np.ndarray:
        if self.x_column == "partition":
            return rows["partition"].map(PARTITION_X).to_numpy(dtype=np.float64)
        return rows["frac_overlap"].to_numpy(dtype=np.float64)

    def xy(self, column: str, metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """x and y of one value column, -1 rows left out, in the file's order."""
        rows = self.rows(metric)
        x, y = self.x_values(rows), rows[column].to_numpy(dtype=np.float64)
        keep = ~np.isclose(y, EMPTY, rtol=0.0, atol=1e-9)
        return x[keep], y[keep]


def check_metric(metric: str | None) -> str:
    names = known_metrics()
    if metric not in names:
        raise UserError(f"unknown metric '{metric}' (choose one of: {', '.join(names)})")
    return metric


def read_header(path: Path) -> list[str]:
    """The stripped column names of a CSV's first line; an empty file is a UserError."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            first = next(csv.reader(f), None)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file") from None
    if first is None:
        raise UserError(f"{path}: empty file")
    return [c.strip() for c in first]


def is_output_header(header: list[str]) -> bool:
    """True for the tables that `reprsim analyze` and `reprsim summary` write."""
    markers = (*OUTPUT_MARKERS, *OVERLAP_NAMES.values())
    return any(c in markers for c in header) or header[:2] == ["architecture", "dataset"]


_SCHEMAS = (  # kind, leading columns, exact (no further columns), description
    ("similarity", SIMILARITY_KEYS, False, "similarity file"),
    ("partition", PARTITION_KEYS, False, "label-partition similarity file"),
    ("accuracy", ACCURACY_COLUMNS, True, "accuracy file"),
    ("loss", LOSS_COLUMNS, True, "text loss file"),
    ("partition_accuracy", PARTITION_ACC_COLUMNS, True, "label-partition accuracy file"),
)


def _leading_match(header: list[str], keys: tuple[str, ...]) -> int:
    n = 0
    for have, want in zip(header, keys, strict=False):
        if have != want:
            break
        n += 1
    return n


def detect_kind(header: list[str], path: Path | str = "file") -> tuple[str, tuple[str, ...]]:
    """(kind, value columns) of a header; a wrong or missing column is a UserError naming it."""
    if len(set(header)) != len(header):
        dup = next(c for c in header if header.count(c) > 1)
        raise UserError(f"{path}: column '{dup}' appears twice in the header")
    scores = [(_leading_match(header, keys), kind, keys, exact, what)
              for kind, keys, exact, what in _SCHEMAS]
    best = max(s[0] for s in scores)
    if best == 0:
        raise UserError(f"{path}: not a result file of a known kind (header starts with "
                        f"'{header[0]}'; expected 'seed' then the columns of PROTOCOL section 3)")
    candidates = [s for s in scores if s[0] == best]
    complete = [s for s in candidates if best == len(s[2])]
    if not complete:  # every candidate stops at column `best`
        pos = best
        got = f"'{header[pos]}'" if pos < len(header) else "nothing"
        wants = " or ".join(f"'{s[2][pos]}' ({s[4]})" for s in candidates)
        raise UserError(f"{path}: column {pos + 1} is {got}, expected {wants}; "
                        f"header: {','.join(header)}")
    _, kind, keys, exact, what = complete[0]
    rest = tuple(header[len(keys):])
    if exact:
        if rest:
            raise UserError(f"{path}: unexpected column '{rest[0]}' in a {what} "
                            f"(expected {','.join(keys)})")
        return kind, (keys[-1],)
    if not rest:
        raise UserError(f"{path}: {what} without probe columns (header: {','.join(header)})")
    if kind == "similarity":
        bad = [c for c in rest if not c.startswith("metric_")]
        if bad:
            raise UserError(f"{path}: column '{bad[0]}' is not a probe column "
                            f"(probe columns of a similarity file start with 'metric_')")
    return kind, rest


def _numeric(frame: pd.DataFrame, column: str, path: Path, *, integer: bool = False) -> pd.Series:
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
    if integer:
        bad |= ~bad & (values.fillna(0) % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        text = raw.iloc[i]
        what = "missing value" if text == "" else f"non-numeric value '{text}'"
        if not values.isna().iloc[i]:
            what = f"value '{text}' is not {'an integer' if integer else 'finite'}"
        raise UserError(f"{path}: {what} in column '{column}' (line {i + 2})")
    return values.astype(np.int64 if integer else np.float64)


def _text(frame: pd.DataFrame, column: str, path: Path, allowed=None) -> pd.Series:
    values = frame[column].astype(str).str.strip()
    for i, v in enumerate(values):
        if v == "":
            raise UserError(f"{path}: missing value in column '{column}' (line {i + 2})")
        if allowed is not None and v not in allowed:
            raise UserError(f"{path}: unknown {column} '{v}' (line {i + 2}; "
                            f"expected one of: {', '.join(allowed)})")
    return values


def read_meta(path: Path) -> dict:
    """The run metadata beside a result file (`<stem>.json`), or {} when there is none."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{side}: expected a JSON object")
    return meta


def read_result(path: Path | str) -> ResultFile:
    """Read and validate a result CSV of any kind (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a result CSV")
    header = read_header(path)
    if is_output_header(header):
        raise UserError(f"{path}: a table written by reprsim, not a result file")
    kind, value_columns = detect_kind(header, path)
    if kind == "partition":  # the study's four headline probes first
        value_columns = (tuple(c for c in PARTITION_PROBES if c in value_columns)
                         + tuple(c for c in value_columns if c not in PARTITION_PROBES))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as e:
        raise UserError(f"{path}: malformed CSV ({str(e).strip()})") from None
    frame = frame.fillna("")  # short rows: their missing fields are reported as missing
    frame.columns = header
    if frame.empty:
        raise UserError(f"{path}: header but no rows")
    data = pd.DataFrame(index=frame.index)
    for column in header:
        if column in ("seed", "model_idx"):
            data[column] = _numeric(frame, column, path, integer=True)
        elif column == "metric":
            data[column] = _text(frame, column, path, allowed=known_metrics())
        elif column == "partition":
            data[column] = _text(frame, column, path, allowed=tuple(PARTITION_X))
        elif column in ("model0", "model1", "model"):
            data[column] = _text(frame, column, path)
        else:
            data[column] = _numeric(frame, column, path)
    if "frac_overlap" in data:
        outside = ~data["frac_overlap"].between(0.0, 1.0)
        if outside.any():
            i = int(np.flatnonzero(outside.to_numpy())[0])
            raise UserError(f"{path}: frac_overlap {data['frac_overlap'].iloc[i]} is outside "
                            f"[0, 1] (line {i + 2})")
    return ResultFile(path=path, kind=kind, data=data, value_columns=value_columns,
                      meta=read_meta(path))


# ---- names ------------------------------------------------------------------------------
def name_tokens(path: Path | str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", Path(path).stem.lower()) if t]


def dataset_from_name(path: Path | str) -> str | None:
    tokens = name_tokens(path)
    for t in tokens:
        if t in DATASET_TITLES and t != "partition":
            return t
    return "partition" if "partition" in tokens else None


def split_from_name(path: Path | str) -> str | None:
    tokens = name_tokens(path)
    if "partition" in tokens:
        return "partition"
    if "task" in tokens:
        return "task"
    if "ds" in tokens or "dataset" in tokens:
        return "dataset"
    return None


def split_from_meta(meta: dict) -> str | None:
    kind = str(meta.get("split") or meta.get("kind") or "").lower()
    return {"dataset": "dataset", "ds": "dataset", "chunk": "dataset", "task": "task",
            "corpus": "task", "partition": "partition"}.get(kind)


def normalize_arch(text: str) -> str:
    """'resnet18_cifar' -> 'resnet', 'nanogpt' -> 'gpt', 'vae' -> 'vae'; others as given."""
    low = str(text).lower()
    for arch in ("resnet", "vae", "gpt"):
        if arch in low:
            return arch
    return low


def architecture(result: ResultFile) -> tuple[str | None, str]:
    """(architecture, where it came from): the run metadata first, then the file name."""
    if result.meta.get("arch"):
        return normalize_arch(result.meta["arch"]), "metadata"
    for token in name_tokens(result.path):
        arch = normalize_arch(token)
        if arch in ARCH_TITLES:
            return arch, "file name"
    return None, "unknown"


def dataset_title(name: str | None) -> str | None:
    if not name:
        return None
    return DATASET_TITLES.get(name.lower(), name)


def _words(name: str) -> str:
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def probe_title(column: str, *, dataset: str | None = None, split: str | None = None) -> str:
    """A probe column's title in words, e.g. metric_ood_all_mnist -> 'MNIST (OOD)'."""
    if column in PROBE_TITLES:
        return PROBE_TITLES[column]
    ds = dataset_title(dataset) if dataset != "partition" else None
    if column == "metric_overlap":
        if split == "task":
            return f"Shared classes ({ds})" if ds else "Shared classes"
        return ds or "In-distribution"
    if split == "partition" and column.lower() in DATASET_TITLES:
        return f"{DATASET_TITLES[column.lower()]} (OOD)"
    if column.startswith("metric_ood_all_"):
        probe = column[len("metric_ood_all_"):]
        return f"{DATASET_TITLES.get(probe.lower(), _words(probe))} (OOD)"
    base = column[len("metric_"):] if column.startswith("metric_") else column
    if base.lower() in DATASET_TITLES:
        title = DATASET_TITLES[base.lower()]
        same = dataset and DATASET_TITLES.get(dataset.lower()) == title
        return f"{title} (in-distribution)" if same else title
    return _words(base)


# ---- statistics -------------------------------------------------------------------------
def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """The study's estimate: kNN MI of y with x (x as one feature), random_state=42."""
    from sklearn.feature_selection import mutual_info_regression

    x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    return float(mutual_info_regression(x, np.asarray(y, dtype=np.float64),
                                        random_state=MI_SEED)[0])


def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of the least-squares line of y on x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    slope = float(dx @ dy) / sxx
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (intercept + slope * x)
    # R^2 of a constant column is undefined (0/0): NaN, not a made-up 0 or 1.
    r2 = 1.0 - float(resid @ resid) / syy if syy > 0 else float("nan")
    return slope, intercept, r2


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def spearman(x: np.ndarray, y: np.ndarray, *, n_perm: int = N_PERMUTATIONS,
             seed: int = 0) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value ((1 + hits) / (1 + n_perm))."""
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if norm == 0:
        return float("nan"), float("nan")
    rho = float(rx @ ry) / norm
    if n_perm <= 0:
        return rho, float("nan")
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 1000):  # chunks keep the memory small on long files
        m = min(1000, n_perm - start)
        perm = rng.permuted(np.broadcast_to(ry, (m, ry.size)), axis=1)
        hits += int(np.sum(np.abs(perm @ rx) / norm >= abs(rho) - 1e-12))
    return rho, (1 + hits) / (1 + n_perm)


def bootstrap_slope(x: np.ndarray, y: np.ndarray, *, n_boot: int = N_BOOTSTRAP,
                    seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the OLS slope (rows resampled with replacement)."""
    if n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    bx, by = x[idx], y[idx]
    dx = bx - bx.mean(axis=1, keepdims=True)
    sxx = np.einsum("ij,ij->i", dx, dx)
    sxy = np.einsum("ij,ij->i", dx, by - by.mean(axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = np.where(sxx > 0, sxy / sxx, np.nan)  # a resample with one x has no slope
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(slopes, [tail, 100 - tail])
    return float(low), float(high)


def fit(x: np.ndarray, y: np.ndarray, *, what: str = "column", n_perm: int = N_PERMUTATIONS,
        n_boot: int = N_BOOTSTRAP, seed: int = 0, standardize_x: bool = False) -> dict:
    """Every number of the table for one column (x, y already cleaned of -1 rows)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 4:
        raise UserError(f"{what}: {x.size} usable rows; the MI estimate needs at least 4")
    if np.unique(x).size < 2:
        raise UserError(f"{what}: the overlap takes a single value ({x[0]:g}); "
                        "nothing to regress on")
    x_mi = (x - x.mean()) / x.std() if standardize_x else x
    slope, intercept, r2 = ols(x, y)
    rho, p = spearman(x, y, n_perm=n_perm, seed=seed)
    low, high = bootstrap_slope(x, y, n_boot=n_boot, seed=seed)
    return {"mutual_information": mutual_information(x_mi, y), "r_squared": r2,
            "slope": slope, "intercept": intercept, "n": int(x.size), "spearman_rho": rho,
            "spearman_p": p, "slope_ci_low": low, "slope_ci_high": high}


def analyze(result: ResultFile | Path | str, metric: str | None = "cka", *,
            columns: tuple[str, ...] | None = None, n_perm: int = N_PERMUTATIONS,
            n_boot: int = N_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """The study's table for one metric: one row per value column (index 'probe')."""
    if not isinstance(result, ResultFile):
        result = read_result(result)
    if not result.has_metrics:
        metric = None
    else:
        check_metric(metric)
    rows = []
    for column in columns or result.value_columns:
        x, y = result.xy(column, metric)
        what = f"{result.path}: column '{column}'" + (f" (metric {metric})" if metric else "")
        stats = fit(x, y, what=what, n_perm=n_perm, n_boot=n_boot, seed=seed,
                    standardize_x=result.x_column == "partition")
        stats["title"] = probe_title(column, dataset=result.dataset, split=result.split)
        rows.append(pd.Series(stats, name=column))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table["n"] = table["n"].astype(int)
    table.index.name = "probe"
    return table


def analyze_all_metrics(result: ResultFile | Path | str, **kwargs) -> pd.DataFrame:
    """One table over every metric of the file (index: metric, probe)."""
    if not isinstance(result, ResultFile):
        result = read_result(result)
    if not result.has_metrics:
        raise UserError(f"{result.path}: a {result.kind} file has no metric column "
                        "(analyze it without --all-metrics)")
    tables = {m: analyze(result, m, **kwargs) for m in result.metrics()}
    return pd.concat(tables, names=["metric", "probe"])


# ---- output -----------------------------------------------------------------------------
def format_table(table: pd.DataFrame) -> str:
    """The table as aligned text (numbers with 4 significant decimals)."""
    shown = table.drop(columns=["title"], errors="ignore")
    return shown.to_string(float_format=lambda v: f"{v:.4f}")


def write_table(table: pd.DataFrame, path: Path | str) -> Path:
    from .runs import atomic_write_text

    path = Path(path)
    atomic_write_text(path, table.to_csv())
    return path


def describe(result: ResultFile, metric: str | None) -> str:
    bits = [result.kind]
    if result.split:
        bits.append(OVERLAP_NAMES[result.split])
    if result.dataset:
        bits.append(dataset_title(result.dataset))
    if metric and result.has_metrics:
        bits.append(f"metric {metric}")
    return f"{result.path.name} ({', '.join(bits)})"


def cli_analyze(args) -> int:
    result = read_result(args.csv)
    check_metric(args.metric)
    if args.all_metrics and result.has_metrics:
        table = analyze_all_metrics(result)
        print(describe(result, None) + ", all metrics")
    else:
        table = analyze(result, args.metric)
        print(describe(result, args.metric))
    print(format_table(table))
    if args.out:
        print(f"wrote {write_table(table, args.out)}")
    return 0
