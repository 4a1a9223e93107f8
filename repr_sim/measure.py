"""`reprsim measure`: trained pairs -> one result file per pair -> the study's result CSVs.

    reprsim measure RUNS_DIR [RUNS_DIR...] [--probe-size N] [--batch-size N]
                    [--device cpu|cuda] [--workers N] [--force] [--save-features]

For every experiment folder (`$REPRSIM_RUNS/<experiment>/`, made by `reprsim train`):

1. Pairs. Every `seed_<S>/frac_<F>/` folder with an `args.json` (repr_sim.runs.iter_pairs,
   sorted by seed, then frac). A pair without its `done` marker is still training: it is
   skipped with a note, so a sweep can be measured while it runs.
2. Measurement. The pair's kind (args.json "kind") picks a measurer module
   (repr_sim.measure_<kind>, see below); it loads both models, extracts features on the
   probe sets, scores them, and returns the rows of the CSVs it produces. The rows go
   into `<pair>/measure.json`, written atomically. A pair whose result is current (same
   result version, probe size, k, and unchanged checkpoint files) is not measured again
   unless `--force`; one that is not (e.g. measured with another --probe-size) is
   measured again, with a note.
3. Merge. All current per-pair results are merged into the experiment folder's CSVs (one
   header; rows sorted by seed, frac, then in the measurer's order: metrics in METRICS
   order, model 1 then 2), each with a sidecar `<csv stem>.json` ({"arch", "dataset",
   "kind", "experiment"}; repr_sim.analysis reads "arch", "dataset", "kind"). A file is
   written (atomically) only when its bytes change: a rerun with nothing new leaves the
   CSVs byte-identical, mtime included. Results that are not current (a pair that failed
   after its options or checkpoints changed) are left out, so one file never mixes
   probe sizes. A NaN metric (degenerate features) is written as `nan`, with a warning.

Problems per pair: a missing checkpoint is a warning (the pair is skipped); a corrupt or
mismatched checkpoint, or any other failure, is one error line naming the pair and the
file; the other pairs still run. Exit code 0 when anything was measured (or nothing is
finished yet), 2 when finished pairs exist but none could be measured, or when a folder
is not an experiment folder (one error line, before anything runs).

Concurrency (two SLURM jobs on one folder, or a rerun beside a running job): each pair is
measured under an exclusive lock `<pair>/.measure.lock`, taken without waiting; a pair
that another process holds is deferred, and waited for after all others, then its
result is re-read (and measured only if that process died before writing it). The
merge runs under `<experiment>/.measure.lock`. Every write is atomic, so a killed
process leaves complete files only; a rerun resumes from the results it finds.

Plug-in interface (how to add a kind, e.g. "partition" or "vae")
-----------------------------------------------------------------
A pair of kind K (args.json "kind") is measured by the module `repr_sim.measure_K`
(MEASURERS maps a kind to another module name where needed; nothing else to register).
The module provides:

    KIND: str                      the kind it measures
    DEFAULT_PROBE_SIZE: int | None inputs per probe set when --probe-size is not given
                                   (None: whole sets)
    csv_files(args) -> dict[str, list[str]]
        CSV file name -> header, for a pair with this args.json (headers may depend on
        the config, e.g. one column per probe set). Every pair of an experiment must give
        the same headers.
    sidecar(args) -> dict
        the metadata written beside each CSV: at least "arch" (e.g. "resnet", "gpt",
        "vae"), "dataset" and "kind" ("ds", "task", "partition"); "experiment" is added.
    inputs(pair_dir, args) -> list[Path]
        the files the result depends on (checkpoints); a result is stale when one of
        them changes (size or mtime).
    measure_pair(pair_dir, args, opts, cache) -> dict[str, list[list[str]]]
        the rows of each CSV for this pair, already formatted as strings (use
        `format_metric`, `format_float`, `similarity_rows` below), in their final order
        within the pair. `opts` is an `Options` (probe_size already resolved to the
        module's default when not given), `cache` a dict kept across the pairs of one
        `measure` call (decode each probe set once). Raise `SkipPair` for a missing input
        (warning, pair skipped), `UserError` naming the file for anything bad (error
        line, pair skipped). Warnings go through `warn(...)`.
    (optional) summary(files) -> str   the pair's log line; default: `default_summary`.

Shared helpers for measurers: `score_probe` (prepare + score_all once per probe set, -1
for an empty or too small set), `probe_subset` (the seeded --probe-size subset),
`save_features`, `similarity_rows`, `format_metric`, `format_float`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import importlib
import importlib.util
import math
import os
import re
import socket
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import runs
from .errors import UserError

# kind (args.json "kind") -> module implementing the interface described above.
MEASURERS: dict[str, str] = {
    "image": "repr_sim.measure_image",
    "text": "repr_sim.measure_text",
    "partition": "repr_sim.measure_partition",
    "vae": "repr_sim.measure_vae",
}

RESULT = "measure.json"
RESULT_VERSION = 1  # bump when a measurer's output changes: older results are re-measured
LOCK = ".measure.lock"
FEATURES_DIR = "features"
TOPK = 10  # PROTOCOL section 3: k nearest neighbours
EMPTY = -1.0  # the value of every metric on an empty (or too small) probe set
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
    from .metrics import METRICS

    return [[str(int(seed)), metric, format_float(frac_overlap),
             *(format_metric(s[metric]) for s in scores.values())] for metric in METRICS]


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

    return dict.fromkeys(METRICS, EMPTY)


def score_probe(feats_a, feats_b, *, name: str, where: str, topk: int = TOPK) -> dict[str, float]:
    """Every metric of one probe set: prepare both sides and call score_all once.

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
    scores = score_all(prepare(feats_a), prepare(feats_b), topk=topk)
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


# ---- measurers --------------------------------------------------------------------------------
def measurer(kind: str):
    """The module measuring pairs of `kind`: MEASURERS[kind], else repr_sim.measure_<kind>."""
    name = MEASURERS.get(kind) or (f"repr_sim.measure_{kind}" if re.fullmatch(r"[a-z][a-z0-9_]*", str(kind))
                                   else None)
    if name is None or importlib.util.find_spec(name) is None:
        raise UserError(f"no measurement for experiment kind {kind!r} (no module "
                        f"{name or 'for it'}; known: {', '.join(known_kinds())})")
    return importlib.import_module(name)


def known_kinds() -> list[str]:
    """Every kind with a measurer: MEASURERS and the repr_sim.measure_<kind> modules."""
    import pkgutil

    found = {m.name.removeprefix("measure_") for m in pkgutil.iter_modules([str(Path(__file__).parent)])
             if m.name.startswith("measure_")}
    return sorted(found | set(MEASURERS))


def default_summary(files: dict[str, dict]) -> str:
    """'acc 0.91 / 0.90; cka overlap 0.95, ood_all_mnist 0.80': the cka row of each
    similarity file and the last column of every per-model file."""
    parts = []
    for spec in files.values():
        header, rows = spec["header"], spec["rows"]
        if "metric" in header:
            m = header.index("metric")
            for row in rows:
                if row[m] == "cka":
                    start = header.index("frac_overlap") + 1
                    parts.append("cka " + ", ".join(
                        f"{c.removeprefix('metric_')} {v}" for c, v in zip(header[start:], row[start:],
                                                                          strict=True)))
        elif rows:
            parts.append(f"{header[-1]} " + " / ".join(row[-1] for row in rows))
    return "; ".join(parts)


# ---- per-pair results -------------------------------------------------------------------------
def _input_signature(pair_dir: Path, paths: list[Path]) -> dict[str, list[int]]:
    out = {}
    for p in paths:
        p = Path(p)
        try:
            st = p.stat()
        except OSError:
            continue
        try:
            key = str(p.relative_to(pair_dir))
        except ValueError:
            key = str(p)
        out[key] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def _read_result(pair_dir: Path) -> dict | None:
    path = Path(pair_dir) / RESULT
    if not path.is_file():
        return None
    try:
        result = runs.read_json(path)
    except (OSError, ValueError):
        note(f"{pair_label(pair_dir)}: unreadable {RESULT}; measuring again")
        return None
    return result if isinstance(result, dict) and "files" in result else None


def _wanted(module, pair_dir: Path, args: dict, opts: Options) -> dict:
    """What a current result records (compared with a stored one)."""
    return {"version": RESULT_VERSION, "kind": module.KIND, "probe_size": opts.probe_size,
            "topk": opts.topk, "inputs": _input_signature(pair_dir, module.inputs(pair_dir, args))}


def _is_current(result: dict | None, wanted: dict, opts: Options) -> bool:
    if result is None:
        return False
    if any(result.get(k) != v for k, v in wanted.items()):
        return False
    return not (opts.save_features and not result.get("features_saved"))


def _stale_reason(result: dict, wanted: dict) -> str:
    for key, value in wanted.items():
        if result.get(key) != value:
            if key == "inputs":
                return "its checkpoints changed"
            return f"{key} {result.get(key)!r} then, {value!r} now"
    return "features were not saved"


@contextlib.contextmanager
def _try_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """An exclusive flock on `path`; yields False at once if another process holds it and
    `wait` is False. Released when the block ends (or the process dies)."""
    with open(path, "a") as f:
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(f.fileno(), flags)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                yield False
                return
            raise
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@dataclass
class Tally:
    measured: int = 0  # measured in this run
    reused: int = 0  # current result found
    skipped: int = 0  # missing checkpoint
    failed: int = 0  # error
    unfinished: int = 0  # no done marker
    merged: int = 0  # pairs in the CSVs


class _Experiment:
    """Measures the finished pairs of one experiment folder and merges their results."""

    def __init__(self, folder: Path, opts: Options, cache: dict):
        self.folder = Path(folder)
        self.opts = opts
        self.cache = cache
        self.tally = Tally()
        self.pairs = [(s, f, p) for s, f, p in runs.iter_pairs(self.folder) if (p / "args.json").is_file()]

    # -- one pair --
    def _args(self, pair_dir: Path) -> dict:
        try:
            args = runs.read_json(pair_dir / "args.json")
        except (OSError, ValueError) as e:
            raise UserError(f"{pair_dir / 'args.json'}: unreadable ({e})") from None
        if not isinstance(args, dict) or not {"kind", "config", "seed", "frac"} <= set(args):
            raise UserError(f"{pair_dir / 'args.json'}: not a run record (no kind/config/seed/frac)")
        expected = runs.pair_dir(pair_dir.parent.parent, args["seed"], args["frac"])
        if expected.name != pair_dir.name or expected.parent.name != pair_dir.parent.name:
            raise UserError(f"{pair_dir / 'args.json'} records seed {args['seed']} frac {args['frac']}, "
                            f"not those of its folder")
        return args

    def _module_opts(self, module) -> Options:
        size = self.opts.probe_size if self.opts.probe_size is not None else module.DEFAULT_PROBE_SIZE
        return replace(self.opts, probe_size=size)

    def handle(self, pair_dir: Path) -> None:
        """Measure one pair (under its lock) unless its result is current."""
        label = pair_label(pair_dir)
        runs.remove_temporaries(pair_dir, RESULT)
        runs.remove_temporaries(pair_dir / FEATURES_DIR, "*")
        args = self._args(pair_dir)
        module = measurer(args["kind"])
        opts = self._module_opts(module)
        wanted = _wanted(module, pair_dir, args, opts)
        old = _read_result(pair_dir)
        if not opts.force and _is_current(old, wanted, opts):
            self.tally.reused += 1
            return
        if old is not None and not opts.force:
            note(f"{label}: measuring again ({_stale_reason(old, wanted)})")
        started = time.perf_counter()
        rows = module.measure_pair(pair_dir, args, opts, self.cache)
        files = self._check_rows(module, args, rows, label)
        summary = getattr(module, "summary", default_summary)(files)
        seconds = time.perf_counter() - started
        result = {
            **wanted,
            "experiment": args.get("experiment", self.folder.name),
            "seed": args.get("seed"),
            "frac": args.get("frac"),
            "files": files,
            "sidecar": {**module.sidecar(args), "experiment": args.get("experiment", self.folder.name)},
            "features_saved": bool(opts.save_features),
            "summary": summary,
            "seconds": round(seconds, 3),
            "host": socket.gethostname(),
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        runs.atomic_write_json(pair_dir / RESULT, result)
        self.tally.measured += 1
        note(f"{label}: {summary} ({seconds:.1f} s)")

    @staticmethod
    def _check_rows(module, args: dict, rows: dict, label: str) -> dict[str, dict]:
        """{csv: {"header", "rows"}}, checked against the module's declared headers."""
        headers = module.csv_files(args)
        if set(rows) != set(headers):
            raise ValueError(f"{label}: measurer {module.__name__} returned files {sorted(rows)}, "
                             f"declared {sorted(headers)}")
        files = {}
        for name, header in headers.items():
            for row in rows[name]:
                if len(row) != len(header) or not all(isinstance(v, str) for v in row):
                    raise ValueError(f"{label}: measurer {module.__name__} returned a malformed "
                                     f"{name} row {row!r} for header {header}")
            files[name] = {"header": list(header), "rows": [list(r) for r in rows[name]]}
        return files

    def _attempt(self, pair_dir: Path) -> None:
        try:
            self.handle(pair_dir)
        except SkipPair as e:
            self.tally.skipped += 1
            warn(f"{pair_label(pair_dir)}: {e}; pair skipped")
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one line per failed pair; the other pairs still run
            if os.environ.get("REPRSIM_DEBUG"):
                raise
            self.tally.failed += 1
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            kind = "" if isinstance(e, (UserError, ValueError, FileNotFoundError)) else f"{type(e).__name__}: "
            error(f"{pair_label(pair_dir)}: {kind}{text or type(e).__name__}")

    # -- the folder --
    def run(self) -> Tally:
        todo = []
        for _seed, _frac, pair_dir in self.pairs:
            if runs.is_done(pair_dir):
                todo.append(pair_dir)
            else:
                self.tally.unfinished += 1
                note(f"{pair_label(pair_dir)}: not finished (no done marker); skipped for now")
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"measure {self.folder.name}", unit="pair",
                   dynamic_ncols=True)
        deferred = []
        for pair_dir in todo:
            with _try_lock(pair_dir / LOCK, wait=False) as locked:
                if locked:
                    self._attempt(pair_dir)
                    bar.update(1)
                    continue
            deferred.append(pair_dir)
        for pair_dir in deferred:  # another process holds them: wait, then re-check
            note(f"{pair_label(pair_dir)}: being measured by another process; waiting for it")
            with _try_lock(pair_dir / LOCK, wait=True):
                self._attempt(pair_dir)
            bar.update(1)
        bar.close()
        self.merge()
        return self.tally

    def _current_results(self) -> list[tuple[Path, dict]]:
        out = []
        for _seed, _frac, pair_dir in self.pairs:
            if not runs.is_done(pair_dir):
                continue
            result = _read_result(pair_dir)
            if result is None:
                continue
            try:
                args = self._args(pair_dir)
                module = measurer(args["kind"])
                wanted = _wanted(module, pair_dir, args, self._module_opts(module))
            except Exception:  # already reported when the pair was handled
                continue
            if any(result.get(k) != v for k, v in wanted.items()):
                continue  # measured with other options or older checkpoints: not merged
            out.append((pair_dir, result))
        return out

    def merge(self) -> None:
        """The experiment's CSVs and their sidecars from every current per-pair result."""
        with _try_lock(self.folder / LOCK, wait=True):
            results = self._current_results()
            self.tally.merged = len(results)
            headers: dict[str, tuple[list[str], Path]] = {}
            bodies: dict[str, list[str]] = {}
            sidecars: dict[str, dict] = {}
            for pair_dir, result in results:
                for name, spec in result["files"].items():
                    if name not in headers:
                        headers[name] = (spec["header"], pair_dir)
                        bodies[name] = []
                        sidecars[name] = result.get("sidecar", {})
                    elif spec["header"] != headers[name][0]:
                        raise UserError(
                            f"{self.folder / name}: pairs disagree on the columns "
                            f"({pair_label(headers[name][1])}: {','.join(headers[name][0])}; "
                            f"{pair_label(pair_dir)}: {','.join(spec['header'])}); "
                            f"were they trained with different probe configs?")
                    bodies[name].extend(",".join(row) for row in spec["rows"])
            for name, (header, _) in headers.items():
                runs.remove_temporaries(self.folder, name)
                runs.remove_temporaries(self.folder, Path(name).with_suffix(".json").name)
                text = "\n".join([",".join(header), *bodies[name]]) + "\n"
                runs.write_if_changed(self.folder / name, text.encode("utf-8"))
                meta = runs.json_bytes(sidecars[name])
                runs.write_if_changed((self.folder / name).with_suffix(".json"), meta)


# ---- folders ----------------------------------------------------------------------------------
def _experiment_folders_below(folder: Path) -> list[str]:
    found = []
    with contextlib.suppress(OSError):
        for child in sorted(folder.iterdir()):
            if child.is_dir() and any((p / "args.json").is_file() for _, _, p in runs.iter_pairs(child)):
                found.append(child.name)
    return found


def check_folder(folder: Path) -> Path:
    """An experiment folder (seed_*/frac_* pairs with args.json), else one clear UserError."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected an experiment folder made by `reprsim train`)")
    if not any((p / "args.json").is_file() for _, _, p in runs.iter_pairs(folder)):
        inside = _experiment_folders_below(folder)
        hint = (f"; it holds experiment folders ({', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''}): "
                f"pass those, or run repr_sim/run_metrics.sh on it") if inside else ""
        raise UserError(f"{folder}: not an experiment folder (no seed_*/frac_* pairs with args.json){hint}")
    return folder


def measure(folders: list[Path | str], opts: Options, cache: dict | None = None) -> int:
    """Measure every experiment folder; returns the exit code (see the module docstring)."""
    checked = [check_folder(Path(f)) for f in folders]  # all of them before any work
    cache = {} if cache is None else cache
    finished = merged = 0
    for folder in checked:
        tally = _Experiment(folder, opts, cache).run()
        finished += tally.measured + tally.reused + tally.skipped + tally.failed
        merged += tally.merged
        note(f"{folder}: {tally.measured} measured, {tally.reused} already measured, "
             f"{tally.skipped} skipped, {tally.failed} failed, {tally.unfinished} unfinished; "
             f"{tally.merged} pair(s) in the CSVs")
    if finished and not merged:
        error("no pair could be measured")
        return 2
    if not finished:
        note("nothing to measure yet: no pair is finished")
    return 0


def resolve_device(device: str | None) -> str:
    from .train.image import resolve_device as trainer_device

    return trainer_device(device)


def cli_measure(args) -> int:
    import torch

    from .paths import usable_cpus

    for name in ("probe_size", "batch_size", "workers"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    torch.set_num_threads(int(args.workers or usable_cpus()))
    opts = Options(probe_size=args.probe_size, batch_size=args.batch_size,
                   device=resolve_device(args.device), force=args.force,
                   save_features=args.save_features)
    return measure([Path(f) for f in args.runs_dirs], opts)


__all__ = ["MEASURERS", "Options", "SkipPair", "measure", "cli_measure", "score_probe",
           "probe_subset", "save_features", "similarity_rows", "format_metric", "format_float",
           "warn", "note", "error"]
