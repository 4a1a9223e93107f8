"""The run folder: naming, atomic writes, done markers, locks.

Layout of one experiment (written by `reprsim train`, read by `reprsim measure`):

    <runs root>/<experiment>/seed_<S>/frac_<F>/
        args.json          resolved config, versions, host, times
        split_indices/     repr_sim.splits.save(...)
        split_0/, split_1/ one folder per model (checkpoint, log)
        done               written last: the pair is finished

Writes go through repr_sim.atomic (temporary name, then rename).
"""

from __future__ import annotations

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
