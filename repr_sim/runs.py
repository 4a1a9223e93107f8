"""The run folder: naming, atomic writes, done markers, locks.

Layout of one experiment (written by `reprsim train`, read by `reprsim measure`):

    <runs root>/<experiment>/seed_<S>/frac_<F>/
        args.json          resolved config, versions, host, times
        status.json        the pair's state: config fingerprint, steps done of total per
                           model, checkpoint paths, finished (write_status / read_status)
        split_indices/     repr_sim.splits.save(...)
        split_0/, split_1/ one folder per model (checkpoint, log)
        done               written last: the pair is finished

The status record is the one place that says where a pair stands: the trainers write it
through `write_status` / `record_steps` (repr_sim.pair does it for them), and the sweep,
the measurer and the demo's progress read it. Folders written before it existed (no
status.json) are still read: `done` says finished, the kind's checkpoint names say where
the models are.

Writes go through repr_sim.atomic (temporary name, then rename).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .atomic import (  # noqa: F401  (re-exported: the run-folder API)
    atomic_path,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_lock,
    json_bytes,
    read_json,
    remove_temporaries,
    write_if_changed,
)

DONE = "done"
STATUS = "status.json"
_PAIR_RE = re.compile(r"^seed_(-?\d+)$")
_FRAC_RE = re.compile(r"^frac_(.+)$")


def frac_name(frac: float) -> str:
    """The folder name of a fraction, Python's f"{F:g}": frac_0, frac_0.5, frac_0.333333."""
    return f"frac_{float(frac):g}"


def pair_dir(exp_dir: Path, seed: int, frac: float) -> Path:
    return Path(exp_dir) / f"seed_{int(seed)}" / frac_name(frac)


def is_done(folder: Path) -> bool:
    return (Path(folder) / DONE).is_file()


def mark_done(folder: Path) -> None:
    atomic_write_text(Path(folder) / DONE, "")


def iter_pairs(exp_dir: Path) -> list[tuple[int, float, Path]]:
    """Every seed_<S>/frac_<F> folder of an experiment, sorted by (seed, frac)."""
    found = []
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return found
    for seed_dir in exp_dir.iterdir():
        m = _PAIR_RE.match(seed_dir.name)
        if not (m and seed_dir.is_dir()):
            continue
        for frac_dir in seed_dir.iterdir():
            f = _FRAC_RE.match(frac_dir.name)
            if not (f and frac_dir.is_dir()):
                continue
            try:
                frac = float(f.group(1))
            except ValueError:
                continue
            found.append((int(m.group(1)), frac, frac_dir))
    return sorted(found, key=lambda t: (t[0], t[1]))


# ---- the pair-status record ---------------------------------------------------------------
def fingerprint(training_config: dict) -> str:
    """sha256 of a config's canonical JSON: equal fingerprints, equal training."""
    text = json.dumps(training_config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_status(folder: Path) -> dict | None:
    path = Path(folder) / STATUS
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def write_status(folder: Path, *, fingerprint: str, models: list[dict], finished: bool) -> None:
    """The whole record. `models`: one dict per model, in order, with "checkpoint" (path
    relative to the pair folder), "steps_done", "steps_total" (None when not known yet)."""
    atomic_write_json(Path(folder) / STATUS, {"fingerprint": fingerprint, "models": models,
                                              "finished": bool(finished)})


def record_steps(model_dir: Path, steps_done: int, steps_total: int | None = None) -> None:
    """A trainer's progress: model `split_<i>` has done `steps_done` optimisation steps."""
    model_dir = Path(model_dir)
    status = read_status(model_dir.parent)
    match = re.fullmatch(r"split_(\d+)", model_dir.name)
    if status is None or match is None or int(match.group(1)) >= len(status["models"]):
        return  # a model trained outside a pair driver: nothing to record into
    entry = status["models"][int(match.group(1))]
    entry["steps_done"] = int(steps_done)
    if steps_total is not None:
        entry["steps_total"] = int(steps_total)
    atomic_write_json(model_dir.parent / STATUS, status)


def is_finished(folder: Path) -> bool:
    """The one rule for "this pair is trained": its `done` marker exists (written last, so
    everything else is complete) and its status record, if it has one (folders from
    before the record have none), says finished."""
    return _finished(folder, read_status(folder))


def _finished(folder: Path, status: dict | None) -> bool:
    return is_done(folder) and (status is None or bool(status.get("finished")))


def steps_fraction(folder: Path) -> float:
    """How much of a pair's training is done, 0..1, from its status record (0: no record)."""
    status = read_status(folder)  # read once, for is_finished's rule and for the steps
    if _finished(folder, status):
        return 1.0
    if not status:
        return 0.0
    done = total = 0
    for m in status["models"]:
        if not m.get("steps_total"):
            total += 1
            continue
        total += m["steps_total"]
        done += min(m.get("steps_done") or 0, m["steps_total"])
    return done / total if total else 0.0


def checkpoints(folder: Path) -> list[Path] | None:
    """The models' checkpoint files of a pair, from its status record (None: no record)."""
    status = read_status(folder)
    if not status:
        return None
    return [Path(folder) / m["checkpoint"] for m in status["models"]]
