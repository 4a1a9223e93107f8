"""Result files -> the study's tables: mutual information and R^2 of a score against overlap.

A result file (docs/protocol.md section 3) is recognised by its header, never by its name:

    similarity          seed,metric,frac_overlap,metric_<probe>[,metric_<probe>...]
    accuracy            seed,frac_overlap,model_idx,acc
    loss                seed,frac_overlap,model_idx,val_loss            (text models)
    partition           seed,metric,partition,model0,model1,<probe>[,<probe>...]
    partition_accuracy  seed,partition,model,acc
    transfer            seed,frac_overlap,normal_asr,transfer_asr       (v2: transfer attacks)
    jailbreak           seed,frac_overlap,transfer_asr,normal_asr       (v2: Llama jailbreaks)

For one metric, every value column gets (docs/protocol.md section 4): the mutual information with
the overlap (scikit-learn's `mutual_info_regression`, X = the overlap as a 2-D array,
random_state=42, rows in the file's order: its jitter depends on the order), the R^2 of the
least-squares line, its slope and intercept, the number of rows used, Spearman's rho with a
permutation p-value, and a bootstrap 95% interval of the slope (both seeded). Rows whose
value is -1 (an empty probe set, or no shared class for an accuracy) are left out of that
column's fit. Partition files use x = 0, 0.5, 1 for partitions 1, 2, 3 (standardised for
the MI estimate).

Run metadata: a JSON file beside the CSV with the same stem (`<stem>.json`) may name the
file's "arch", "dataset", "kind" and "model"; the measurement code writes it. Without it, the
dataset, architecture and model are read from the file name (the study's names: one of the
eight timm models, a Llama-3.2 model, `diffusion`, `nanogpt`).

`--study v2` (`v2_rule`, `analyze_v2`): the table the study's v2 notebook made for a file
(docs/protocol.md section 6.7): its metric (cknna for the diffusion files), its probe column(s) and
its rows, its slips included. docs/v2_analysis.md lists every difference from the default
rules above and its effect on the numbers.
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

from .atomic import atomic_write_text
from .errors import UserError
from .results import (  # noqa: F401  (re-exported: readers have used analysis.EMPTY etc.)
    ACCURACY_COLUMNS,
    CALIBRATED_KINDS,
    DIFFUSION_PROBE,
    EMPTY,
    LLM_OOD_ONE_PROBE,
    LOSS_COLUMNS,
    OOD_ONE_PROBE,
    PARTITION_ACC_COLUMNS,
    PARTITION_KEYS,
    PARTITION_PROBES,
    PARTITION_VAL_PROBE,
    PARTITION_X,
    SCHEMAS,
    SIMILARITY_KEYS,
    TASK_PROBES,
    TEXT_TASK_PROBES,
    TRANSFER_ASR,
    TRANSFER_KINDS,
    calibrated_name,
    calibrated_probes,
)

# Columns of the tables this module and repr_sim.summary write: a file carrying one of
# them is an output of ours, not a result file.
OUTPUT_MARKERS = ("mutual_information", "r_squared")

MI_SEED = 42  # docs/protocol.md section 4: random_state of mutual_info_regression
N_PERMUTATIONS = 9999
N_BOOTSTRAP = 2000

TABLE_COLUMNS = ("mutual_information", "r_squared", "slope", "intercept", "n",
                 "spearman_rho", "spearman_p", "slope_ci_low", "slope_ci_high", "title")

DATASET_TITLES = {
    "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tinyimagenet": "TinyImageNet",
    "mnist": "MNIST", "svhn": "SVHN", "shakespeare": "Shakespeare",
    "shakespeare_all": "Shakespeare", "tinystories": "TinyStories", "wikitext": "WikiText",
    "tinycodes": "TinyCodes", "tinytextbooks": "TinyTextbooks", "tinywebtext": "TinyWebText",
    "shapes": "Shapes", "shapes_color": "Shapes by colour", "digits": "scikit-learn digits", "sklearn_digits": "scikit-learn digits",
    "patches": "Image patches", "sample_patches": "Image patches",
    "partition": "ColorShapeDigit", "colorshapedigit": "ColorShapeDigit",
    "colorshapedigit800k": "ColorShapeDigit", "csd": "ColorShapeDigit",
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
    "transfer_asr": "Transfer attack success",
    "normal_asr": "On the attacked model",
}

# The study's names for the three kinds of overlap (docs/protocol.md section 4), by split kind.
OVERLAP_NAMES = {"dataset": "Dataset Overlap", "partition": "Task Overlap",
                 "task": "Task + Dataset Overlap"}

ARCH_TITLES = {"resnet": "ResNet-18", "vae": "VAE", "gpt": "nanoGPT", "vit": "ViT",
               "llama": "Llama-3.2", "unet": "Diffusion UNet"}

# A file-name token -> architecture (matched at the token's start). "gpt" must not match
# "gpt5" (the study's GPT-5 judge files are Llama jailbreaks).
ARCH_TOKENS = (("resnet", r"resnet"), ("vae", r"vae"), ("gpt", r"(nanogpt|gpt2?)$"),
               ("vit", r"vit"), ("llama", r"llama"), ("unet", r"(diffusion|unet)"))

# The study's v2 models (docs/protocol.md sections 6.1 and 6.5), as their file names write them, and
# their titles in tables and figures (in size order).
MODEL_TITLES = {
    "resnet18": "ResNet-18", "resnet50": "ResNet-50", "resnet101": "ResNet-101",
    "resnet152": "ResNet-152", "vit_tiny_patch16_224": "ViT-T", "vit_small_patch32_224": "ViT-S",
    "vit_base_patch32_224": "ViT-B", "vit_large_patch32_224": "ViT-L",
    "Llama-3.2-1B-Instruct": "Llama-3.2 1B", "Llama-3.2-3B-Instruct": "Llama-3.2 3B",
    "Llama-3.2-11B-Vision-Instruct": "Llama-3.2 11B",
}


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
        if self.kind in ("similarity", "similarity_calibrated"):
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

    def xy(self, column: str, metric: str | None = None, *, keep_empty: bool = False,
           drop_x: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """x and y of one value column in the file's order, -1 rows left out (keep_empty:
        kept, as the study's v2 tables did), rows at overlap `drop_x` left out."""
        rows = self.rows(metric)
        x, y = self.x_values(rows), rows[column].to_numpy(dtype=np.float64)
        keep = np.ones(x.size, dtype=bool)
        if not keep_empty:
            keep &= ~np.isclose(y, EMPTY, rtol=0.0, atol=1e-9)
        if drop_x is not None:
            keep &= ~np.isclose(x, drop_x, rtol=0.0, atol=1e-9)
        return x[keep], y[keep]

    @property
    def model(self) -> str | None:
        """The study's model name (e.g. 'resnet50'), from metadata or the file name."""
        if self.meta.get("model"):
            return str(self.meta["model"])
        return model_from_name(self.path)


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


_SCHEMAS = tuple((sc.kind, sc.keys, sc.exact, sc.description) for sc in SCHEMAS)


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
                        f"'{header[0]}'; expected 'seed' then the columns of docs/protocol.md section 3)")
    candidates = [s for s in scores if s[0] == best]
    complete = [s for s in candidates if best == len(s[2])]
    if not complete:  # every candidate stops at column `best`
        pos = best
        got = f"'{header[pos]}'" if pos < len(header) else "nothing"
        wants = " or ".join(f"'{s[2][pos]}' ({s[4]})" for s in candidates)
        raise UserError(f"{path}: column {pos + 1} is {got}, expected {wants}; "
                        f"header: {','.join(header)}")
    # a calibrated companion has its similarity kind's keys, then probe triples C, C_p, C_tau
    triples = [s for s in complete
               if s[1] in CALIBRATED_KINDS and calibrated_probes(header[len(s[2]):])]
    plain = [s for s in complete if s[1] not in CALIBRATED_KINDS]
    _, kind, keys, exact, what = (triples or plain or complete)[0]
    rest = tuple(header[len(keys):])
    if kind in CALIBRATED_KINDS:
        rest = calibrated_probes(rest) or rest
    if exact:
        if rest:
            raise UserError(f"{path}: unexpected column '{rest[0]}' in a {what} "
                            f"(expected {','.join(keys)})")
        if kind in TRANSFER_KINDS:  # the transfer success first, whatever the column order
            return kind, (TRANSFER_ASR, *(k for k in keys[2:] if k != TRANSFER_ASR))
        return kind, (keys[-1],)
    if not rest:
        raise UserError(f"{path}: {what} without probe columns (header: {','.join(header)})")
    if kind in ("similarity", "similarity_calibrated"):
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
    if kind in ("partition", "partition_calibrated"):  # the study's four headline probes first
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
    """'resnet18_cifar' -> 'resnet', 'nanogpt' -> 'gpt', 'vae' -> 'vae', 'vit_base_patch32_224'
    -> 'vit', 'meta-llama/Llama-3.2-1B' -> 'llama', 'diffusion' -> 'unet'; others as given."""
    low = str(text).lower()
    for arch in ("resnet", "vae", "gpt"):
        if arch in low:
            return arch
    for arch, pattern in ARCH_TOKENS[3:]:
        if re.search(pattern.rstrip("$"), low):
            return arch
    return low


def arch_from_name(path: Path | str) -> str | None:
    for token in name_tokens(path):
        for arch, pattern in ARCH_TOKENS:
            if re.match(pattern, token):
                return arch
    return None


def architecture(result: ResultFile) -> tuple[str | None, str]:
    """(architecture, where it came from): the run metadata first, then the file name."""
    if result.meta.get("arch"):
        return normalize_arch(result.meta["arch"]), "metadata"
    arch = arch_from_name(result.path)
    return (arch, "file name") if arch else (None, "unknown")


_MODEL_RE = re.compile("|".join(re.escape(m) for m in sorted(MODEL_TITLES, key=len, reverse=True)))


def model_from_name(path: Path | str) -> str | None:
    """The study's model name in a file name: 'ds_platonic_ffcv_resnet50_cifar100' ->
    'resnet50' (the longest name that fits, so resnet152 is not resnet15...)."""
    found = _MODEL_RE.search(Path(path).stem)
    return found.group(0) if found else None


def model_title(model: str | None) -> str | None:
    return MODEL_TITLES.get(model, model) if model else None


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


# ---- null-calibrated companions (docs/calibration.md) ----------------------------------------
DEFAULT_ALPHA = 0.05
SIGNIFICANCE_COLUMNS = ("overlap", "n", "significant", "fraction")
FDR_COLUMNS = ("significant_fdr", "fraction_fdr")


def read_calibrated(path: Path | str) -> ResultFile:
    """The calibrated companion of a similarity or partition file (beside it, named by
    results.calibrated_name), or the companion itself when given."""
    path = Path(path)
    if path.is_file() and not is_output_header(read_header(path)):
        kind, _ = detect_kind(read_header(path), path)
        if kind in CALIBRATED_KINDS:
            return read_result(path)
        if kind not in CALIBRATED_KINDS.values():
            raise UserError(f"{path}: a {kind} file has no calibrated companion (give a "
                            "similarity file or its platonic_calibrated*.csv)")
    companion = path.with_name(calibrated_name(path.name))
    if not companion.is_file():
        raise UserError(f"{path}: no calibrated companion {companion.name} beside it "
                        "(measure with `reprsim measure --calibrate`)")
    result = read_result(companion)
    if result.kind not in CALIBRATED_KINDS:
        raise UserError(f"{companion}: not a calibrated companion (a {result.kind} file)")
    return result


def calibration_alpha(result: ResultFile) -> float:
    """The alpha the companion was measured with (its sidecar), else DEFAULT_ALPHA."""
    alpha = (result.meta.get("calibration") or {}).get("alpha")
    return float(alpha) if alpha is not None else DEFAULT_ALPHA


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
        raise UserError(f"--alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def bh_adjust(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (float64): q_(i) = min over j >= i of
    p_(j) m / j, at most 1, in the input's order."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1, dtype=np.float64)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


# Realised overlaps within this of the smallest one of a level are one level: a task split
# of classes of unequal size realises 0.2415, 0.2447, ... for the requested 0.25 (docs/
# protocol.md section 1.6), which the figures and per-level counts treat as one fraction. The
# study's sweeps step by 0.1 or more.
LEVEL_GAP = 0.05


def overlap_levels(values) -> np.ndarray:
    """The sorted overlap levels of some realised overlaps: each the median of a run of
    values spanning at most LEVEL_GAP."""
    values = np.sort(np.unique(np.round(np.asarray(values, dtype=np.float64), 6)))
    levels, run = [], []
    for v in values:
        if run and v - run[0] > LEVEL_GAP:
            levels.append(float(np.median(run)))
            run = []
        run.append(v)
    if run:
        levels.append(float(np.median(run)))
    return np.asarray(levels, dtype=np.float64)


def level_of(x, levels) -> np.ndarray:
    """Each realised overlap in `x` replaced by its nearest level."""
    x, levels = np.asarray(x, dtype=np.float64), np.asarray(levels, dtype=np.float64)
    if levels.size == 0:
        return x.copy()
    return levels[np.abs(x[:, None] - levels[None, :]).argmin(axis=1)]


def significance(result: ResultFile, metric: str | None = "cka", *, alpha: float | None = None,
                 fdr: bool = False, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per probe column and overlap level: the pairs with a p-value (empty probes, -1, left
    out), how many are significant (p <= alpha) and their fraction; with `fdr` also after
    the Benjamini-Hochberg adjustment over all pairs of the column (every overlap level of
    the metric: one family per metric and probe). Index (probe, overlap)."""
    if result.kind not in CALIBRATED_KINDS:
        raise UserError(f"{result.path}: not a calibrated companion")
    alpha = check_alpha(calibration_alpha(result) if alpha is None else alpha)
    rows = result.rows(check_metric(metric))
    x = result.x_values(rows)
    out = []
    for column in columns or result.value_columns:
        p = rows[f"{column}_p"].to_numpy(dtype=np.float64)
        keep = ~np.isclose(p, EMPTY, rtol=0.0, atol=1e-9) & ~np.isnan(p)
        xs, ps = level_of(x[keep], overlap_levels(x)), p[keep]
        q = bh_adjust(ps) if fdr else None
        for level in np.unique(xs):
            at = xs == level
            hits = int(np.sum(ps[at] <= alpha))
            row = {"probe": column, "overlap": float(level), "n": int(at.sum()),
                   "significant": hits, "fraction": hits / int(at.sum())}
            if fdr:
                hits_q = int(np.sum(q[at] <= alpha))
                row.update(significant_fdr=hits_q, fraction_fdr=hits_q / int(at.sum()))
            out.append(row)
    names = [*SIGNIFICANCE_COLUMNS, *(FDR_COLUMNS if fdr else ())]
    table = pd.DataFrame(out, columns=["probe", *names]).set_index(["probe", "overlap"])
    table.attrs.update(alpha=alpha, fdr=fdr)
    return table


def cli_analyze_calibrated(args) -> int:
    if getattr(args, "study", None):
        raise UserError("--calibrated and --study v2 do not go together")
    alpha = None if args.alpha is None else check_alpha(args.alpha)
    result = read_calibrated(args.csv)
    metric = check_metric(args.metric or "cka")
    if args.all_metrics:
        table = analyze_all_metrics(result)
        print(describe(result, None) + ", all metrics, calibrated scores")
    else:
        table = analyze(result, metric)
        print(describe(result, metric) + ", calibrated scores")
    print(format_table(table))
    sig = significance(result, metric, alpha=alpha, fdr=args.fdr)
    how = " (and after Benjamini-Hochberg, one family per probe)" if args.fdr else ""
    print(f"\nPairs significant at alpha {sig.attrs['alpha']:g} (p <= alpha){how}, "
          f"metric {metric}:")
    print(sig.to_string(float_format=lambda v: f"{v:.4g}"))
    if args.out:
        out = Path(args.out)
        print(f"wrote {write_table(table, out)}")
        print(f"wrote {write_table(sig, out.with_name(out.stem + '_significance.csv'))}")
    return 0


# ---- the study's v2 tables (docs/protocol.md section 6.7) -----------------------------------------
STUDIES = ("v2",)


@dataclass(frozen=True)
class V2Rule:
    """What the v2 notebook put in one file's table."""

    metric: str | None             # None: the file has no metric column
    columns: tuple[str, ...]       # probe columns, in the table's order
    index: tuple[str, ...]         # the table's row names for them
    drop_x: float | None = None    # rows at this overlap left out (the study's filter)
    why: str = ""                  # the rule in words (listings, docs)


def in_distribution_column(result: ResultFile) -> str:
    """The probe of the training data: metric_<dataset> (v2 timm files probe three datasets),
    else the v1 image/VAE name, the diffusion name, or the only probe column."""
    columns = result.value_columns
    if result.dataset and f"metric_{result.dataset}" in columns:
        return f"metric_{result.dataset}"
    for column in ("metric_overlap", DIFFUSION_PROBE):
        if column in columns:
            return column
    if len(columns) == 1:
        return columns[0]
    raise UserError(f"{result.path}: cannot tell which probe is in-distribution (no dataset in "
                    f"the name or in {result.path.stem}.json; columns: {', '.join(columns)})")


def _v2_task_column(result: ResultFile) -> str:
    for column in (OOD_ONE_PROBE, LLM_OOD_ONE_PROBE):
        if column in result.value_columns:
            return column
    raise UserError(f"{result.path}: a task-overlap file without '{OOD_ONE_PROBE}' or "
                    f"'{LLM_OOD_ONE_PROBE}', the probe of the study's v2 task tables")


# The Llama tables name their row after the probe set, not the column.
V2_INDEX = {"metric_tinycodes": "Tiny-Codes", LLM_OOD_ONE_PROBE: "OOD"}


def v2_rule(result: ResultFile) -> V2Rule:
    """The v2 notebook's choice of metric, columns and rows for this file (by its header,
    with the architecture from metadata or name). The -1 rows always stay in: the notebook
    never filtered on -1, only on overlap."""
    arch, _ = architecture(result)
    if result.kind == "partition":
        col = PARTITION_VAL_PROBE
        if col not in result.value_columns:
            raise UserError(f"{result.path}: label-partition file without '{col}'")
        return V2Rule("cka", (col,), (col,), None, "partition_metric; x = 0, 0.5, 1")
    if result.kind in TRANSFER_KINDS:
        drop = 0.0 if result.kind == "transfer" and result.split == "task" else None
        why = "transfer_asr" + ("; overlap 0 (no shared class) left out" if drop == 0.0 else "")
        return V2Rule(None, (TRANSFER_ASR,), (TRANSFER_ASR,), drop, why)
    if result.kind != "similarity":
        raise UserError(f"{result.path}: the v2 study makes no table of {result.kind} files "
                        "(their values enter the accuracy table: reprsim summary --study v2)")
    metric = "cknna" if arch == "unet" else "cka"
    if arch == "gpt":  # the three v1 files, unchanged: every probe, every row
        cols = result.value_columns
        return V2Rule(metric, cols, cols, None, "every probe column, -1 rows kept")
    if result.split == "task":
        col = _v2_task_column(result)
        return V2Rule(metric, (col,), (V2_INDEX.get(col, col),), 1.0,
                      f"{col}; overlap 1 left out")
    col = in_distribution_column(result)
    return V2Rule(metric, (col,), (V2_INDEX.get(col, col),), None, f"{col} (in-distribution)")


def analyze_v2(result: ResultFile | Path | str, metric: str | None = None, *,
               n_perm: int = N_PERMUTATIONS, n_boot: int = N_BOOTSTRAP,
               seed: int = 0) -> pd.DataFrame:
    """The table the study's v2 notebook wrote for this file (index: its row names; the
    columns of TABLE_COLUMNS). `metric` overrides the study's choice."""
    if not isinstance(result, ResultFile):
        result = read_result(result)
    rule = v2_rule(result)
    metric = rule.metric if metric is None or not result.has_metrics else check_metric(metric)
    rows = []
    for column, name in zip(rule.columns, rule.index, strict=True):
        x, y = result.xy(column, metric, keep_empty=True, drop_x=rule.drop_x)
        what = f"{result.path}: column '{column}'" + (f" (metric {metric})" if metric else "")
        stats = fit(x, y, what=what, n_perm=n_perm, n_boot=n_boot, seed=seed,
                    standardize_x=result.x_column == "partition")
        stats["title"] = probe_title(column, dataset=result.dataset, split=result.split)
        rows.append(pd.Series(stats, name=name))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table["n"] = table["n"].astype(int)
    table.index.name = "probe"
    table.attrs.update(metric=metric, rule=rule.why)
    return table


def analyze_study(result: ResultFile, metric: str | None, study: str | None, **kwargs):
    """The default rules' table (study None) or the named study's."""
    if study is None:
        return analyze(result, metric or "cka", **kwargs)
    if study not in STUDIES:
        raise UserError(f"unknown study '{study}' (choose one of: {', '.join(STUDIES)})")
    return analyze_v2(result, metric, **kwargs)


# ---- output -----------------------------------------------------------------------------
def format_table(table: pd.DataFrame) -> str:
    """The table as aligned text (numbers with 4 significant decimals)."""
    shown = table.drop(columns=["title"], errors="ignore")
    return shown.to_string(float_format=lambda v: f"{v:.4f}")


def write_table(table: pd.DataFrame, path: Path | str) -> Path:
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
    if getattr(args, "calibrated", False):
        return cli_analyze_calibrated(args)
    if getattr(args, "fdr", False) or getattr(args, "alpha", None) is not None:
        raise UserError("--fdr and --alpha go with --calibrated")
    result = read_result(args.csv)
    study = getattr(args, "study", None)
    if args.metric is not None or study is None:
        check_metric(args.metric or "cka")
    if study is not None:
        if args.all_metrics:
            raise UserError("--all-metrics and --study v2 do not go together (the study's "
                            "table is of one metric)")
        table = analyze_study(result, args.metric, study)
        print(f"{describe(result, table.attrs['metric'])}, study {study} rules: "
              f"{table.attrs['rule']}")
    elif args.all_metrics and result.has_metrics:
        table = analyze_all_metrics(result)
        print(describe(result, None) + ", all metrics")
    else:
        table = analyze(result, args.metric or "cka")
        print(describe(result, args.metric or "cka"))
    print(format_table(table))
    if args.out:
        print(f"wrote {write_table(table, args.out)}")
    return 0
