"""The run folder: naming, atomic writes, done markers, locks.

Layout of one experiment (written by `reprsim train`, read by `reprsim measure`):

    <runs root>/<experiment>/seed_<S>/frac_<F>/
        args.json          resolved config, versions, host, times
        split_indices/     repr_sim.splits.save(...)
        split_0/, split_1/ one folder per model (checkpoint, log)
        done               written last: the pair is finished

Everything is written under a temporary name in the same folder and renamed, so a
reader never sees a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

DONE = "done"
_PAIR_RE = re.compile(r"^seed_(-?\d+)$")
_FRAC_RE = re.compile(r"^frac_(.+)$")


def frac_name(frac: float) -> str:
    """The folder name of a fraction, Python's f"{F:g}": frac_0, frac_0.5, frac_0.333333."""
    return f"frac_{float(frac):g}"


def pair_dir(exp_dir: Path, seed: int, frac: float) -> Path:
    return Path(exp_dir) / f"seed_{int(seed)}" / frac_name(frac)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing), held for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


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
