"""What every kind's measurer shares: options, log lines, probe subsets, scoring one probe
set, the rows of the result files, checkpoint reading.

The kinds' measure modules (repr_sim.kinds.<kind>.measure) import from here; the generic
`reprsim measure` flow (repr_sim.measure) drives them.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import runs
from .errors import UserError
from .results import EMPTY

FEATURES_DIR = "features"
TOPK = 10  # docs/protocol.md section 3: k nearest neighbours
PROBE_SEED = 20250519  # seeds the --probe-size subsets and the text probe windows
PROG = "reprsim measure"


class SkipPair(Exception):
    """A pair that cannot be measured for a reason that is a warning, not an error
    (a missing checkpoint): it is listed and skipped."""


@dataclass(frozen=True)
class Options:
    probe_size: int | None = None  # inputs per probe set (None: the measurer's default)
    batch_size: int = 500
    device: str = "cpu"
    force: bool = False
    save_features: bool = False
    topk: int = TOPK
    # feature precision on CUDA for the kinds that use autocast ("fp16", "bf16", "fp32");
    # None: each kind's own (the image kinds: fp16, as they train); metrics stay float32/64
    precision: str | None = None
    # null calibration (docs/calibration.md): a calibrated companion beside each similarity file
    calibrate: bool = True
    permutations: int = 200  # K, the permutations of one side per probe set
    alpha: float = 0.05
    calibration_seed: int = 0

    def calibration(self) -> dict | None:
        """What the calibration of a result depends on (None: not calibrated)."""
        if not self.calibrate:
            return None
        return {"permutations": int(self.permutations), "alpha": float(self.alpha),
                "seed": int(self.calibration_seed)}


# ---- log lines ------------------------------------------------------------------------------
def _write(line: str, stream) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=stream)
    stream.flush()


def note(line: str) -> None:
    _write(line, sys.stdout)


def warn(line: str) -> None:
    _write(f"{PROG}: warning: {line}", sys.stderr)


def error(line: str) -> None:
    _write(f"{PROG}: error: {line}", sys.stderr)


# ---- formatting -------------------------------------------------------------------------------
def format_metric(value: float) -> str:
    """A metric value as the study writes it: 6 decimals (-1 -> -1.000000)."""
    return f"{float(value):.6f}"


def format_float(value: float) -> str:
    """A plain float (frac_overlap, acc, val_loss): Python's repr, e.g. 0.4, 0.3333333333333333;
    the 'no value' marker -1 as -1, as in the study's accuracy files."""
    value = float(value)
    return "-1" if value == EMPTY else repr(value)


def similarity_rows(seed: int, frac_overlap: float, scores: dict[str, dict[str, float]]
                    ) -> list[list[str]]:
    """seed,metric,frac_overlap,<one value per probe column>: one row per metric, METRICS order.

    `scores`: probe column -> {metric: value}, in the header's column order.
    """
    return metric_rows(seed, [format_float(frac_overlap)], scores)


def metric_rows(seed: int, keys: list[str], scores: dict[str, dict[str, float]]
                ) -> list[list[str]]:
    """seed,metric,<keys>,<one value per probe column>: one row per metric, METRICS order
    (similarity_rows: keys = [frac_overlap]; partition files: [partition, model0, model1]).

    While a calibration is recorded (`calibrating`), each row's calibrated companion row
    (same keys; per probe column the calibrated score, p-value and tau) is recorded too.
    """
    from .metrics import METRICS

    rows = [[str(int(seed)), metric, *keys, *(format_metric(s[metric]) for s in scores.values())]
            for metric in METRICS]
    recorder = _RECORDER.get()
    if recorder is not None:
        for metric, row in zip(METRICS, rows, strict=True):
            values = []
            for s in scores.values():
                c = getattr(s, "calibrated", None)
                if c is None:
                    raise ValueError(f"calibrating, but the scores of {metric} were not "
                                     "made by score_probe")
                values += c[metric]
            recorder.rows[tuple(row)] = [*row[:2 + len(keys)], *values]
    return rows


# ---- null calibration of the scored probe sets (docs/calibration.md) --------------------------
class Scores(dict):
    """score_probe's {metric: raw score}; while calibrating also `calibrated`: {metric:
    [calibrated score, p-value, tau] formatted as the companion writes them}."""

    calibrated: dict[str, list[str]] | None = None


@dataclass
class Recorder:
    """What one pair's measurement records while calibrating: the settings, and for every
    row that metric_rows made (a tuple of its cells) the companion's row."""

    settings: dict
    rows: dict

    def companion(self, rows: list[list[str]]) -> list[list[str]] | None:
        """The companion rows of a file's rows, in order; None if any was not recorded."""
        try:
            return [list(self.rows[tuple(r)]) for r in rows]
        except KeyError:
            return None


_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "reprsim_calibration", default=None)


@contextlib.contextmanager
def calibrating(settings: dict | None):
    """Within the block, score_probe calibrates (settings: Options.calibration()) and
    metric_rows records the companion rows; yields the Recorder (None: settings None)."""
    if settings is None:
        yield None
        return
    check_calibration(settings["permutations"], settings["alpha"])
    recorder = Recorder(dict(settings), {})
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)


def check_calibration(permutations, alpha) -> None:
    """One clear error for a bad K or alpha (before any work)."""
    from .metrics.calibration import _check_alpha, _check_count

    try:
        _check_count(permutations)
        _check_alpha(alpha)
    except ValueError as e:
        raise UserError(str(e).replace("the number of permutations", "--permutations")
                        .replace("alpha", "--alpha", 1)) from None


def _calibrated_cells(c) -> list[str]:
    return [format_metric(c.calibrated), format_metric(c.p_value), format_metric(c.tau)]


# ---- probe sets and scoring -------------------------------------------------------------------
def probe_subset(n: int, size: int | None, name: str) -> np.ndarray:
    """Positions 0..n-1 of the inputs to use: all of them, or a seeded random subset of `size`.

    Random rather than the first `size`, because test sets may be sorted by class. The
    subset depends on the probe's name and n only, so every pair of an experiment sees the
    same inputs (the comparison across fractions stays paired). Sorted, to keep the
    original order of what is kept.
    """
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([PROBE_SEED, zlib.crc32(name.encode("utf-8")), n])
    return np.sort(rng.choice(n, size=int(size), replace=False)).astype(np.int64)


def empty_scores() -> dict[str, float]:
    from .metrics import METRICS

    scores = Scores(dict.fromkeys(METRICS, EMPTY))
    if _RECORDER.get() is not None:  # -1 in all three columns of the companion
        scores.calibrated = {m: [format_metric(EMPTY)] * 3 for m in METRICS}
    return scores


def score_probe(feats_a, feats_b, *, name: str, where: str, topk: int = TOPK) -> dict[str, float]:
    """Every metric of one probe set: prepare both sides and call score_all once (while
    `calibrating`: calibrate_all, whose observed scores are score_all's, the calibration
    carried in the result's `calibrated`).

    An empty set gives -1 for every metric; a set too small for k nearest neighbours
    (N <= k + 1) too, with a warning naming it. A NaN (possible for the unbiased
    estimators on degenerate features) is kept and warned about.
    """
    from .metrics import prepare, score_all

    n = 0 if feats_a is None else int(feats_a.shape[0])
    if n == 0:
        return empty_scores()
    if n <= topk + 1:
        warn(f"{where}: probe set {name} has {n} inputs, too few to score with k = {topk} "
             f"(needs more than {topk + 1}); its metrics are -1")
        return empty_scores()
    recorder = _RECORDER.get()
    if recorder is None:
        scores = Scores(score_all(prepare(feats_a), prepare(feats_b), topk=topk))
    else:  # calibrate_all's observed scores are exactly score_all's
        from .metrics.calibration import calibrate_all

        cal = recorder.settings
        results = calibrate_all(prepare(feats_a), prepare(feats_b),
                                n_permutations=cal["permutations"], seed=cal["seed"],
                                alpha=cal["alpha"], topk=topk)
        scores = Scores({m: r.score for m, r in results.items()})
        scores.calibrated = {m: _calibrated_cells(r) for m, r in results.items()}
    bad = [m for m, v in scores.items() if math.isnan(v)]
    if bad:
        warn(f"{where}: probe set {name}: {', '.join(bad)} undefined (NaN) on these features")
    return scores


def save_features(pair_dir: Path, column: str, feats: list) -> None:
    """features/<column>_model<1|2>.npy (float32, no pickles), atomically."""
    for i, f in enumerate(feats, start=1):
        if f is None or f.shape[0] == 0:
            continue
        array = np.ascontiguousarray(f.detach().float().cpu().numpy())
        path = Path(pair_dir) / FEATURES_DIR / f"{column}_model{i}.npy"
        with runs.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)


def score_probes(feats: dict[str, list], columns: list[str], *, pair_dir: Path, where: str,
                 opts) -> dict[str, dict[str, float]]:
    """score_probe of every probe column's [features of model 1, of model 2], in the CSV's
    column order (`columns`, checked); the features saved too with --save-features."""
    if list(feats) != list(columns):
        raise ValueError(f"{where}: probe sets {list(feats)} do not match the columns {list(columns)}")
    scores = {}
    for column, pair in feats.items():
        scores[column] = score_probe(*pair, name=column, where=where, topk=opts.topk)
        if opts.save_features:
            save_features(pair_dir, column, pair)
    return scores


def per_model_rows(seed: int, frac_overlap: float, values) -> list[list[str]]:
    """seed,frac_overlap,model_idx,<value>: one row per model, model_idx from 1."""
    return [[str(int(seed)), format_float(frac_overlap), str(i), format_float(v)]
            for i, v in enumerate(values, start=1)]


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_state_dict(path: Path) -> dict:
    """A model checkpoint that is a state_dict of tensors, read with weights_only=True: a
    missing file skips the pair; an unreadable or other file is one clear error."""
    import torch

    if not path.is_file():
        raise SkipPair(f"missing checkpoint {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or objects we refuse to unpickle
        raise UserError(f"corrupt checkpoint {path} ({first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} is not a state_dict of tensors")
    return state


def pair_label(folder: Path) -> str:
    folder = Path(folder)
    return f"{folder.parent.parent.name}/{folder.parent.name}/{folder.name}"
