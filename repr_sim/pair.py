"""The generic pair driver: what training one pair means for every kind.

`train(cfg, seed, frac, prepare, device=...)` is the only place that handles a pair's run
folder: skip a finished pair, lock it, write args.json (or check a resumed run's), save the
split, write the status record (repr_sim.runs), train the models the kind's `prepare`
returned that are not finished yet, then finish (end time, status, `done` last). A kind
only says what one pair is (a `PairJob`: its args.json fields, its split, how to train
model i, which file marks model i finished); config checks, RNG state and CPU state dicts
shared by the kinds' trainers live here too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import __version__, runs, splits
from .errors import UserError
from .experiments import merge, pair_folder
from .paths import source_root

# Config keys that say how a run was started, not what it trains: they may differ between
# an interrupted run and its resumption. `reuse_models` (a top-level bool) lets a pair copy
# a model that a sibling pair of the same seed already trained from the same inputs (see
# `reusable_model`): it saves work, it does not change what a model is trained on. The
# `attack` table says how `reprsim attack` attacks the trained pair.
RUNTIME_KEYS = ("loader", "config_path", "reuse_models", "attack")
MODEL_KEY = "model_key.json"  # split_<i>/: what the model's training depended on


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


def config_mismatch(old_cfg: dict, cfg: dict, defaults: dict | None = None) -> str | None:
    """Where a folder's recorded config differs from this one (None: the same training).
    `defaults`: the kind's; a folder recorded before a key had a default in code is read
    with the default under it, so moving a value from the TOML into code changes nothing."""
    old, new = training_config(merge(defaults or {}, old_cfg)), training_config(cfg)
    return None if old == new else first_difference(old, new)


def pair_args(cfg: dict, folder: Path, seed: int, frac: float, fields: dict, device: str,
              defaults: dict | None = None) -> dict:
    """args.json of a pair: an interrupted run's (its config checked against this one, the
    resumption noted), else a new one: what every pair records, with the trainer's `fields`."""
    path = folder / "args.json"
    if path.is_file():
        old = runs.read_json(path)
        diff = config_mismatch(old.get("config", {}), cfg, defaults)
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


# ---- the pair driver ----------------------------------------------------------------------
class SingleProcess:
    """The default `dist` of a PairJob: one process, which is the main one."""

    main = True

    def share(self, value):
        return value

    def barrier(self) -> None:
        pass


@dataclass
class PairJob:
    """One pair as its kind prepared it (before anything is written)."""

    fields: dict  # the kind's own args.json entries
    n_models: int  # folders split_0 .. split_<n-1>
    train_model: Callable[[int, Path], None]  # trains model i into its folder
    checkpoint: str  # the file in split_<i>/ that a finished model has
    split: object | None = None  # saved to split_indices/ (None: the kind has no split)
    steps: list[int | None] = field(default_factory=list)  # total steps per model, if known
    model_finished: Callable[[Path], bool] | None = None  # default: the checkpoint exists
    before_training: Callable[[list[int]], None] | None = None  # with the models left to train
    dist: object = field(default_factory=SingleProcess)  # DDP ranks share one pair (text)
    # Per model, a fingerprint of everything its training depends on (config, seed, its
    # data, its labels), or None: two models with equal keys train identically, so with
    # `reuse_models` one is copied instead of trained again (kinds that set it: image).
    model_keys: list[str | None] = field(default_factory=list)

    def finished(self, model_dir: Path) -> bool:
        if self.model_finished is not None:
            return self.model_finished(model_dir)
        return (model_dir / self.checkpoint).is_file()


def train(cfg: dict, seed: int, frac: float, prepare, *, device: str,
          defaults: dict | None = None) -> Path:
    """Train pair (seed, frac) of experiment `cfg`: `prepare(cfg, seed, frac, device)` is the
    kind's PairJob, `defaults` the kind's config defaults; returns the pair folder."""
    folder = pair_folder(cfg, seed, frac)
    if runs.is_finished(folder):
        print(f"{folder}: already trained, skipping")
        return folder
    job = prepare(cfg, seed, frac, device)
    dist = job.dist
    with pair_lock(folder, dist) as ours:
        if not ours:
            return folder
        args = pair_args(cfg, folder, seed, frac, job.fields, device, defaults) if dist.main else None
        if dist.main:
            runs.atomic_write_json(folder / "args.json", args)
            if job.split is not None:
                save_split(job.split, folder)
            _write_status(folder, cfg, job, finished=False)
        dist.barrier()
        left = [i for i in range(job.n_models) if not job.finished(folder / f"split_{i}")]
        for i in range(job.n_models):
            if dist.main and i not in left:
                print(f"{folder / f'split_{i}'}: already trained, keeping it")
        if left and job.before_training is not None:
            job.before_training(left)
        for i in left:
            model_dir = folder / f"split_{i}"
            model_dir.mkdir(exist_ok=True)
            dist.barrier()
            source = dist.share(reusable_model(folder, i, cfg, job) if dist.main else None)
            if source is not None:
                copy_model(source, model_dir, job.checkpoint)
                args.setdefault("reused_models", {})[f"split_{i}"] = str(source.relative_to(folder.parent.parent))
                print(f"{model_dir}: the same training as {source}; copied it")
            else:
                job.train_model(i, model_dir)
            dist.barrier()
            if dist.main and cfg.get("reuse_models") and i < len(job.model_keys) and job.model_keys[i]:
                runs.atomic_write_json(model_dir / MODEL_KEY, {"key": job.model_keys[i]})
        if dist.main:
            finish_pair(folder, args, cfg, job)
    if dist.main:
        print(f"{folder}: done")
    return folder


# ---- reusing a sibling's model ------------------------------------------------------------
def reusable_model(folder: Path, i: int, cfg: dict, job: PairJob) -> Path | None:
    """A finished split_<i> of another fraction of this seed with the same model key, when
    the config asks for `reuse_models` (e.g. model A of a dataset split: its images do not
    depend on the fraction). Only models whose key file was written after they finished
    count, so a half-trained or older model is never copied."""
    key = job.model_keys[i] if i < len(job.model_keys) else None
    if not (cfg.get("reuse_models") and key):
        return None
    for sibling in sorted(folder.parent.glob("frac_*")):
        source = sibling / f"split_{i}"
        if sibling == folder or not (source / MODEL_KEY).is_file() or not job.finished(source):
            continue
        try:
            if runs.read_json(source / MODEL_KEY).get("key") == key:
                return source
        except (OSError, ValueError):
            continue
    return None


def copy_model(source: Path, target: Path, checkpoint: str) -> None:
    """Copy a model folder's files, the checkpoint last (it is what marks the model
    finished), each atomically, with this user's umask."""
    import shutil

    names = sorted(p.name for p in source.iterdir()
                   if p.is_file() and p.name != MODEL_KEY and not p.name.startswith("."))
    for name in sorted(names, key=lambda n: n == checkpoint):
        with runs.atomic_path(target / name) as tmp:
            shutil.copyfile(source / name, tmp)


def _write_status(folder: Path, cfg: dict, job: PairJob, *, finished: bool) -> None:
    old = runs.read_status(folder) or {}
    old_models = old.get("models", [])
    models = []
    for i in range(job.n_models):
        total = job.steps[i] if i < len(job.steps) else None
        entry = {"checkpoint": f"split_{i}/{job.checkpoint}", "steps_done": 0, "steps_total": total}
        if i < len(old_models):  # a resumed pair keeps what its trainers recorded
            entry["steps_done"] = old_models[i].get("steps_done", 0)
            entry["steps_total"] = total or old_models[i].get("steps_total")
        if finished or job.finished(folder / f"split_{i}"):
            entry["steps_done"] = entry["steps_total"] or entry["steps_done"]
        models.append(entry)
    runs.write_status(folder, fingerprint=runs.fingerprint(training_config(cfg)), models=models,
                      finished=finished)


@contextlib.contextmanager
def pair_lock(folder: Path, dist):
    """Hold the pair's lock while training it; yields False when another process finished
    the pair while this one waited (nothing left to do), True after clearing what a killed
    run left behind. The lock file is beside the folder: its contents stay the run's. Under
    DDP only the main rank locks; every rank gets its answer."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = (runs.file_lock(folder.parent / f".{folder.name}.lock") if dist.main
            else contextlib.nullcontext())
    with lock:
        finished = runs.is_finished(folder) if dist.main else None
        if dist.share(finished):
            if dist.main:
                print(f"{folder}: already trained, skipping")
            yield False
            return
        if dist.main:
            runs.remove_temporaries(folder, recursive=True)  # under the pair's lock
        dist.barrier()
        yield True


def finish_pair(folder: Path, args: dict, cfg: dict, job: PairJob) -> None:
    """args.json with the end time, the status record, then the `done` marker (last: a
    pair is done only when everything else is written)."""
    args["end_time"] = now()
    runs.atomic_write_json(folder / "args.json", args)
    _write_status(folder, cfg, job, finished=True)
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
