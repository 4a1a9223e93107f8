"""What every trainer (image, text, label partitions, VAE) does the same way: config checks,
the pair's args.json bookkeeping, the saved split, RNG state and CPU state dicts."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import subprocess
from pathlib import Path

import torch
from torch import nn

from .. import __version__, runs, splits
from ..errors import UserError
from ..paths import source_root

# Config keys that say how a run was started, not what it trains: they may differ between
# an interrupted run and its resumption.
RUNTIME_KEYS = ("loader", "config_path")


# ---- config checks ------------------------------------------------------------------------
def require_keys(table: dict, keys, where: str, prefix: str = "") -> None:
    for key in keys:
        if key not in table:
            raise UserError(f"{where}: missing key '{prefix}{key}'")


def check_positive_ints(table: dict, keys, where: str, prefix: str = "") -> None:
    for key in keys:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{where}: {prefix}{key} must be a positive integer, got {value!r}")


def check_non_negative(table: dict, keys, where: str, prefix: str = "") -> None:
    for key in keys:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise UserError(f"{where}: {prefix}{key} must be a non-negative number, got {value!r}")


# ---- args.json ----------------------------------------------------------------------------
def git_commit() -> str | None:
    root = source_root()
    if root is None:
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def training_config(cfg: dict) -> dict:
    """The part of a config that decides what is trained."""
    return {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}


def first_difference(old, new, prefix="") -> str:
    """'recipe.lr: 0.1 then, 0.2 now': the first key where two configs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} then, {new!r} now"


def config_mismatch(old_cfg: dict, cfg: dict) -> str | None:
    """Where a folder's recorded config differs from this one (None: the same training)."""
    old, new = training_config(old_cfg), training_config(cfg)
    return None if old == new else first_difference(old, new)


def pair_args(cfg: dict, folder: Path, seed: int, frac: float, fields: dict, device: str) -> dict:
    """args.json of a pair: an interrupted run's (its config checked against this one, the
    resumption noted), else a new one: what every pair records, with the trainer's `fields`."""
    path = folder / "args.json"
    if path.is_file():
        old = runs.read_json(path)
        diff = config_mismatch(old.get("config", {}), cfg)
        if diff:
            raise UserError(f"{folder} was started with another config ({diff}); "
                            f"rerun with the same options or delete the folder")
        old["config"] = cfg
        old.setdefault("resumed", []).append(now())
        return old
    return {"config": cfg, "experiment": cfg["name"], "kind": cfg["kind"], "seed": seed,
            "frac": frac, **fields, "device": device, "version": __version__,
            "torch_version": torch.__version__, "git_commit": git_commit(),
            "host": socket.gethostname(), "start_time": now(), "end_time": None}


# ---- the run folder -----------------------------------------------------------------------
@contextlib.contextmanager
def pair_lock(folder: Path):
    """Hold the pair's lock while training it; yields False when another process finished
    the pair while this one waited (nothing left to do), True after clearing what a killed
    run left behind. The lock file is beside the folder: its contents stay the run's."""
    folder.mkdir(parents=True, exist_ok=True)
    with runs.file_lock(folder.parent / f".{folder.name}.lock"):
        if runs.is_done(folder):
            print(f"{folder}: already trained, skipping")
            yield False
            return
        runs.remove_temporaries(folder, recursive=True)  # under the pair's lock
        yield True


def finish_pair(folder: Path, args: dict) -> None:
    """args.json with the end time, then the `done` marker (last: a pair is done only
    when everything else is written)."""
    args["end_time"] = now()
    runs.atomic_write_json(folder / "args.json", args)
    runs.mark_done(folder)


def save_split(split, folder: Path) -> None:
    """Save the split, or check that an interrupted run saved the same one."""
    target = folder / "split_indices"
    if (target / splits.SPLIT_FILE).is_file():
        if splits.load(target) != split:
            raise UserError(f"{target} holds another split than this seed/frac gives; delete {folder}")
        return
    splits.save(split, target)


# ---- checkpoints --------------------------------------------------------------------------
def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # contiguous: a channels-last CUDA model saves the usual layout, loadable anywhere
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # fewer devices than before
            torch.cuda.set_rng_state_all(state["cuda"])
