"""Where things live: the repository, the data root, the runs root, CPU budget."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root(start: Path | None = None) -> Path:
    """The folder holding pyproject.toml, searched upward from `start` (default: cwd).

    Falls back to `start` itself when no such folder exists.
    """
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return start


def source_root() -> Path | None:
    """The checkout this package was installed from (editable installs), else None."""
    candidate = PACKAGE_DIR.parent
    return candidate if (candidate / "pyproject.toml").is_file() else None


def data_root() -> Path:
    """$REPRSIM_DATA, else `data/` in the repository root."""
    env = os.environ.get("REPRSIM_DATA")
    return Path(env).expanduser().resolve() if env else repo_root() / "data"


def runs_root() -> Path:
    """$REPRSIM_RUNS, else `runs/` in the repository root."""
    env = os.environ.get("REPRSIM_RUNS")
    return Path(env).expanduser().resolve() if env else repo_root() / "runs"


def verify_checksums() -> bool:
    """Raw files are checked against published checksums unless REPRSIM_VERIFY=0."""
    return os.environ.get("REPRSIM_VERIFY", "1") != "0"


def bars_disabled() -> bool | None:
    """tqdm's `disable` for a progress bar: True under TQDM_DISABLE, else None (tqdm then
    draws on a terminal only, so a SLURM or CI log gets the plain per-epoch lines, not
    thousands of carriage-return frames). Passed explicitly: tqdm reads TQDM_* variables
    once, when it is imported."""
    return True if os.environ.get("TQDM_DISABLE", "").strip() not in ("", "0") else None


def progress(*args, **kwargs):
    """A tqdm bar drawn on a terminal only (`bars_disabled`); disable=True still hides it."""
    from tqdm.auto import tqdm

    if kwargs.get("disable") is not True:
        kwargs["disable"] = bars_disabled()
    return tqdm(*args, **kwargs)


def usable_cpus() -> int:
    """CPUs this process may use: SLURM's allocation inside a job, else its affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def environ(values: dict[str, str]):
    """os.environ with `values` set inside the block, restored after (unset keys unset)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
