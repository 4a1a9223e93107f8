"""`reprsim measure`: trained pairs -> one result file per pair -> the study's result CSVs.

    reprsim measure RUNS_DIR [RUNS_DIR...] [--probe-size N] [--batch-size N]
                    [--device cpu|cuda] [--workers N] [--force] [--save-features]
                    [--calibrate | --no-calibrate] [--permutations K] [--alpha A]
                    [--calibration-seed S]

For every experiment folder (`$REPRSIM_RUNS/<experiment>/`, made by `reprsim train`):

1. Pairs. Every `seed_<S>/frac_<F>/` folder with an `args.json` (repr_sim.runs.iter_pairs,
   sorted by seed, then frac). A pair that its status record (or, in an older folder, the
   missing `done` marker) shows unfinished is still training: it is skipped with a note, so a sweep can be measured while it runs.
2. Measurement. The pair's kind (args.json "kind") picks a measurer module
   (repr_sim.kinds.<kind>.measure, see below); it loads both models, extracts features on the
   probe sets, scores them, and returns the rows of the CSVs it produces. The rows go
   into `<pair>/measure.json`, written atomically. A pair whose result is current (same
   result version, probe size, k, metric list, and unchanged checkpoint files) is not measured again
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

Null calibration (docs/calibration.md; on by default, --no-calibrate turns it off): every
probe set is scored by calibration.calibrate_all (K permutations, alpha, seed; its observed
scores are score_all's, so the study's CSVs do not change), and beside each similarity (or
partition) CSV the merge writes its calibrated companion (results.calibrated_name, e.g.
platonic_calibrated_ffcv.csv): the same rows, per probe column C the calibrated score C,
the p-value C_p and the threshold C_tau (-1 for an empty probe set), with a sidecar naming
the settings. The measurers need no code for it: scoring.calibrating (entered here per
pair) makes score_probe calibrate, and scoring.metric_rows (similarity_rows) records each
row's companion row. K, alpha and the seed belong to the "current" rule while calibrating;
without calibration any result's raw rows are current, and a companion is written only when
every merged pair carries the same calibration (else an old one is removed).

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

How a kind plugs in
-------------------
A pair of kind K (args.json "kind", one of repr_sim.kinds.names()) is measured by the
module `repr_sim.kinds.K.measure`; its default probe size is the kind declaration's
`default_probe_size`. The module provides:

    csv_files(args) -> dict[str, list[str]]
        CSV file name -> header, for a pair with this args.json (headers may depend on
        the config, e.g. one column per probe set; names and headers from
        repr_sim.results). Every pair of an experiment must give the same headers.
    sidecar(args) -> dict
        the metadata written beside each CSV: at least "arch" (e.g. "resnet", "gpt",
        "vae"), "dataset" and "kind" ("ds", "task", "partition"); "experiment" is added.
    inputs(pair_dir, args) -> list[Path]
        the checkpoints of a pair folder written before the status record existed (a
        newer folder's status.json names them); a result is stale when one changes.
    measure_pair(pair_dir, args, opts, cache) -> dict[str, list[list[str]]]
        the rows of each CSV for this pair, already formatted as strings (use
        `format_metric`, `format_float`, `similarity_rows` of repr_sim.scoring), in their
        final order within the pair. `opts` is an `Options` (probe_size already resolved
        to the kind's default when not given), `cache` a dict kept across the pairs of one
        `measure` call (decode each probe set once). Raise `SkipPair` for a missing input
        (warning, pair skipped), `UserError` naming the file for anything bad (error
        line, pair skipped). Warnings go through `warn(...)`.
    (optional) summary(files) -> str   the pair's log line; default: `default_summary`.

Shared helpers for measurers (repr_sim.scoring): `score_probe` (prepare + score_all once per probe set, -1
for an empty or too small set), `probe_subset` (the seeded --probe-size subset),
`save_features`, `similarity_rows`, `format_metric`, `format_float`. Rows with other keys
than seed,metric,frac_overlap (the partition files) are built with `metric_rows(seed, keys,
scores)`, so that they get their calibrated companion too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from . import runs
from .errors import UserError

RESULT = "measure.json"
RESULT_VERSION = 1  # bump when a measurer's output changes: older results are re-measured
LOCK = ".measure.lock"

from .scoring import (  # noqa: E402,F401  (the measurers' shared helpers; re-exported)
    EMPTY,
    FEATURES_DIR,
    PROBE_SEED,
    PROG,
    TOPK,
    Options,
    SkipPair,
    calibrating,
    check_calibration,
    error,
    first_line,
    format_float,
    format_metric,
    metric_rows,
    note,
    pair_label,
    per_model_rows,
    probe_subset,
    read_state_dict,
    save_features,
    score_probe,
    score_probes,
    similarity_rows,
    warn,
)


# ---- measurers --------------------------------------------------------------------------------
def measurer(kind: str):
    """The module measuring pairs of `kind` (repr_sim.kinds.<kind>.measure)."""
    from . import kinds

    if kind not in kinds.names():
        raise UserError(f"no measurement for experiment kind {kind!r} "
                        f"(known: {', '.join(kinds.names())})")
    return kinds.module(kind, "measure")


def known_kinds() -> list[str]:
    from . import kinds

    return sorted(kinds.names())


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


def result_inputs(module, pair_dir: Path, args: dict) -> list[Path]:
    """The files a pair's result depends on: the checkpoints its status record names, or (a
    folder from before the record) the ones its kind's measurer names."""
    return runs.checkpoints(pair_dir) or module.inputs(pair_dir, args)


def _wanted(module, pair_dir: Path, args: dict, opts: Options) -> dict:
    """What a current result records (compared with a stored one): the rule for "this
    result is current" covers the metric list and k, so adding a metric re-measures."""
    from .metrics import METRICS

    wanted = {"version": RESULT_VERSION, "kind": args["kind"], "probe_size": opts.probe_size,
              "topk": opts.topk, "metrics": list(METRICS),
              "inputs": _input_signature(pair_dir, result_inputs(module, pair_dir, args))}
    if opts.precision is not None:  # features in another precision are another result
        wanted["precision"] = opts.precision
    if opts.calibrate:  # K, alpha, seed; without calibration any result's raw rows will do
        wanted["calibration"] = opts.calibration()
    return wanted


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

    def _module_opts(self, kind: str) -> Options:
        from . import kinds

        default = kinds.get(kind).default_probe_size
        size = self.opts.probe_size if self.opts.probe_size is not None else default
        return replace(self.opts, probe_size=size)

    def handle(self, pair_dir: Path) -> None:
        """Measure one pair (under its lock) unless its result is current."""
        label = pair_label(pair_dir)
        runs.remove_temporaries(pair_dir, RESULT)
        runs.remove_temporaries(pair_dir / FEATURES_DIR, "*")
        args = self._args(pair_dir)
        module = measurer(args["kind"])
        opts = self._module_opts(args["kind"])
        wanted = _wanted(module, pair_dir, args, opts)
        old = _read_result(pair_dir)
        if not opts.force and _is_current(old, wanted, opts):
            self.tally.reused += 1
            return
        if old is not None and not opts.force:
            note(f"{label}: measuring again ({_stale_reason(old, wanted)})")
        started = time.perf_counter()
        with calibrating(opts.calibration()) as recorder:
            rows = module.measure_pair(pair_dir, args, opts, self.cache)
        files = self._check_rows(module, args, rows, label)
        companions = _companions(files, recorder, label, module)
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
            "calibration": opts.calibration(),
            "calibrated_files": companions,
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

    @staticmethod
    def _calibration_of(results: list[tuple[Path, dict]]) -> dict | None:
        """The calibration settings all merged results share (None: not all calibrated, or
        with different settings): only then are companions written."""
        settings = [r.get("calibration") for _, r in results]
        if not settings or settings[0] is None or any(c != settings[0] for c in settings):
            return None
        return settings[0]

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
            if runs.is_finished(pair_dir):
                todo.append(pair_dir)
            else:
                self.tally.unfinished += 1
                note(f"{pair_label(pair_dir)}: not finished (no done marker); skipped for now")
        from .paths import progress

        bar = progress(total=len(todo), desc=f"measure {self.folder.name}", unit="pair",
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
            if not runs.is_finished(pair_dir):
                continue
            result = _read_result(pair_dir)
            if result is None:
                continue
            try:
                args = self._args(pair_dir)
                module = measurer(args["kind"])
                wanted = _wanted(module, pair_dir, args, self._module_opts(args["kind"]))
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
            self._merge_companions(results, headers)
            for name, (header, _) in headers.items():
                runs.remove_temporaries(self.folder, name)
                runs.remove_temporaries(self.folder, Path(name).with_suffix(".json").name)
                text = "\n".join([",".join(header), *bodies[name]]) + "\n"
                runs.write_if_changed(self.folder / name, text.encode("utf-8"))
                meta = runs.json_bytes(sidecars[name])
                runs.write_if_changed((self.folder / name).with_suffix(".json"), meta)


    def _merge_companions(self, results: list[tuple[Path, dict]], headers: dict) -> None:
        """The calibrated companions (results.calibrated_name) of the similarity files, from
        the per-pair results, when every merged pair carries the same calibration; else a
        companion left from an earlier run would describe other rows: it is removed."""
        from . import results as schema

        settings = self._calibration_of(results)
        for name, (header, _) in headers.items():
            companion = self.folder / schema.calibrated_name(name)
            if not _is_similarity_header(header):
                continue
            specs = [r.get("calibrated_files", {}).get(companion.name) for _, r in results]
            if settings is None or any(spec is None for spec in specs):
                for path in (companion, companion.with_suffix(".json")):
                    if path.is_file():
                        path.unlink()
                        note(f"{path}: removed (not every pair of {name} is calibrated with "
                             f"the same settings; measure with --calibrate to rewrite it)")
                continue
            runs.remove_temporaries(self.folder, companion.name)
            runs.remove_temporaries(self.folder, companion.with_suffix(".json").name)
            lines = [",".join(specs[0]["header"])]
            lines += [",".join(row) for spec in specs for row in spec["rows"]]
            runs.write_if_changed(companion, ("\n".join(lines) + "\n").encode("utf-8"))
            meta = {**results[0][1].get("sidecar", {}), "calibration": settings}
            runs.write_if_changed(companion.with_suffix(".json"), runs.json_bytes(meta))


def _is_similarity_header(header: list[str]) -> bool:
    """A similarity or partition file's header (the files that get a calibrated companion)."""
    from . import results as schema

    for keys in (schema.SIMILARITY_KEYS, schema.PARTITION_KEYS):
        if tuple(header[:len(keys)]) == keys and len(header) > len(keys):
            return True
    return False


def _companions(files: dict[str, dict], recorder, label: str, module) -> dict[str, dict]:
    """{companion name: {"header", "rows"}} of a pair's similarity files (none when not
    calibrating): the rows metric_rows recorded for each of the file's rows."""
    from . import results as schema

    if recorder is None:
        return {}
    out = {}
    for name, spec in files.items():
        header = spec["header"]
        if not _is_similarity_header(header):
            continue
        n_keys = len(schema.SIMILARITY_KEYS if header[:3] == list(schema.SIMILARITY_KEYS)
                     else schema.PARTITION_KEYS)
        rows = recorder.companion(spec["rows"])
        if rows is None:
            raise ValueError(f"{label}: measurer {module.__name__} built {name} rows without "
                             "repr_sim.scoring.similarity_rows / metric_rows: no calibrated "
                             "companion (measure with --no-calibrate)")
        out[schema.calibrated_name(name)] = {
            "header": [*header[:n_keys], *schema.calibrated_columns(header[n_keys:])],
            "rows": rows}
    return out


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


def expand(folders: list[Path | str]) -> list[Path]:
    """Each folder as it is if it is an experiment folder, else the experiment folders
    directly inside it (a runs root); one that is neither stays, for check_folder to name."""
    out = []
    for folder in map(Path, folders):
        inside = ([] if any((p / "args.json").is_file() for _, _, p in runs.iter_pairs(folder))
                  else _experiment_folders_below(folder))
        out += [folder / name for name in inside] or [folder]
    return out


def measure(folders: list[Path | str], opts: Options, cache: dict | None = None) -> int:
    """Measure every experiment folder; returns the exit code (see the module docstring)."""
    checked = [check_folder(Path(f)) for f in folders]  # all of them before any work
    if opts.calibrate:
        check_calibration(opts.permutations, opts.alpha)
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
    from .kinds.image.train import resolve_device as trainer_device

    return trainer_device(device)


def cli_measure(args) -> int:
    import torch

    from .paths import usable_cpus

    for name in ("probe_size", "batch_size", "workers"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    calibration = {}  # options not given (None) keep Options' defaults
    for name in ("calibrate", "permutations", "alpha", "calibration_seed"):
        if getattr(args, name, None) is not None:
            calibration[name] = getattr(args, name)
    probe = Options(**calibration)
    check_calibration(probe.permutations, probe.alpha)
    torch.set_num_threads(int(args.workers or usable_cpus()))
    opts = Options(probe_size=args.probe_size, batch_size=args.batch_size,
                   device=resolve_device(args.device), force=args.force,
                   save_features=args.save_features, precision=args.precision, **calibration)
    folders = [Path(f) for f in args.runs_dirs]
    if getattr(args, "below", False):
        from .paths import runs_root

        folders = expand(folders or [runs_root()])
        note(f"{len(folders)} experiment folder(s): {', '.join(str(f) for f in folders)}")
    elif not folders:
        raise UserError("name at least one experiment folder (or --below [ROOT])")
    return measure(folders, opts)


