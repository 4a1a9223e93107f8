"""Train one pair of image models (docs/protocol.md sections 1-2) into its run folder.

`train_pair(cfg, seed, frac)` computes the split from the train beton's labels, saves it
under `split_indices/`, trains model 0 on split.a and model 1 on split.b, and writes the
run folder described in repr_sim.runs (args.json, split_indices/, split_<i>/checkpoint.pth
and log.txt, `done` last).

Recipe (all values from the config's [recipe] table): SGD with momentum (no Nesterov),
weight decay on every parameter, label smoothing, drop-last batches, and the per-iteration
triangular schedule of repr_sim.kinds.schedule. On CUDA: fp16 autocast with a gradient
scaler, channels-last model and inputs, loaders that place batches on the GPU; on the CPU
the same code runs in float32 (autocast and the scaler are disabled). Options of the
[recipe] table for speed on CUDA (docs/gpu.md): `precision` "fp16" (the study's, default),
"bf16" (bf16 autocast, no scaler) or "fp32"; `channels_last` (default true); `compile`
(torch.compile the model, default false; the first step's and first evaluation's wall time,
which hold the compilation, go to the log as `compile_s` and not into `time_s`).

Task split: each model has a c-way head; its train and test labels are mapped through its
label map by the loader; its test set is the test images of its own classes. Dataset
split: every model is tested on the whole test set.

Resume. After every epoch the model's full training state (weights, optimizer, scaler,
schedule step, epoch, RNG states, log rows) is written atomically to `split_<i>/epoch.pt`.
A rerun of an interrupted pair keeps a finished model's `checkpoint.pth`, resumes the
unfinished one from its last epoch checkpoint, and removes `epoch.pt` once the model is
finished, so a resumed folder has the same files as an uninterrupted one. A pair whose
`done` marker exists is never trained again. Everything in an epoch checkpoint is tensors
or plain Python data, so it loads with `torch.load(weights_only=True)`.

Determinism. The split depends on the seed only. Each model seeds torch (CPU and CUDA)
and its loader's ordering from (seed, model index). Not deterministic: FFCV's
augmentations draw from worker-thread random state that is not seeded per epoch, so the
augmented images differ between runs; cuDNN picks convolution algorithms by benchmark
(`cudnn.benchmark`), and some GPU kernels accumulate in nondeterministic order. A resumed
run therefore matches an uninterrupted one in structure and schedule, not bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ... import models, runs, splits
from ... import pair as common
from ...errors import UserError
from ...paths import progress
from ..schedule import Triangular
from . import KIND

# CLI option -> config key (repr_sim.train.cli_train applies them).
OPTION_KEYS = {
    "epochs": "recipe.epochs",
    "batch_size": "recipe.batch_size",
    "lr": "recipe.lr",
    "workers": "loader.workers",
}
RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing",
               "peak_epoch")
SPLIT_KINDS = ("dataset", "task")
PRECISIONS = ("fp16", "bf16", "fp32")  # on CUDA; the CPU trains in float32
EPOCH_FILE = "epoch.pt"
CHECKPOINT = "checkpoint.pth"
LOG = "log.txt"


# ---------------------------------------------------------------------------------------
# Config and data
# ---------------------------------------------------------------------------------------


def check_config(cfg: dict) -> None:
    """Every key the image trainer reads is present and sensible (UserError otherwise)."""
    where = cfg.get("config_path", cfg.get("name", "config"))
    common.require_keys(cfg, ("dataset", "split", "mode", "arch", "recipe"), where)
    if cfg["split"] not in SPLIT_KINDS:
        raise UserError(f"{where}: split must be one of {', '.join(SPLIT_KINDS)}, got {cfg['split']!r}")
    if cfg["arch"] not in models.ARCHS:
        raise UserError(f"{where}: unknown arch {cfg['arch']!r} (known: {', '.join(models.names())})")
    recipe = cfg["recipe"]
    common.require_keys(recipe, RECIPE_KEYS, where, "recipe.")
    common.check_positive_ints(recipe, ("epochs", "batch_size"), where, "recipe.")
    common.check_non_negative(recipe, ("lr",), where, "recipe.")
    loader = cfg.get("loader", {})
    if loader.get("workers") is not None:
        common.check_positive_ints(loader, ("workers",), where, "loader.")
    for key, kinds_ in (("precision", PRECISIONS), ("compile", (True, False)),
                        ("channels_last", (True, False))):
        if key in recipe and recipe[key] not in kinds_:
            raise UserError(f"{where}: recipe.{key} must be one of "
                            f"{', '.join(map(str, kinds_))}, got {recipe[key]!r}")
    backend = cfg.get("loader", {}).get("backend", "ffcv")
    if backend not in LOADER_BACKENDS:
        raise UserError(f"{where}: loader.backend must be one of {', '.join(LOADER_BACKENDS)}, "
                        f"got {backend!r}")
    from ...data.augment import resolve_augment

    try:  # the loader's own parser, so a bad table fails before anything is written
        resolve_augment(cfg.get("augment"))
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None


def _write_hint(cfg: dict, dataset: str) -> str:
    """How to write a missing beton: the training folder's script, or the CLI."""
    script = Path(cfg.get("config_path", ".")).parent.parent / "run_write_ffcv_data.sh"
    hint = f"`reprsim write-data {dataset}`"
    if script.is_file():
        hint = f"`bash {script.parent.name}/{script.name}` (or {hint})"
    return hint


def beton(cfg: dict, part: str) -> Path:
    """The path of the experiment's train or test beton; a clear error if it is missing."""
    from ...data import betons

    path = Path(betons.beton_path(cfg["dataset"], part))
    if not path.is_file():
        raise UserError(f"missing beton {path}: write it with {_write_hint(cfg, cfg['dataset'])}")
    return path


def read_labels(cfg: dict, path: Path) -> np.ndarray:
    """The label field of a beton; an unreadable file is reported as corrupt."""
    from ...data import betons

    try:
        labels = np.asarray(betons.read_labels(path), dtype=np.int64)
    except UserError:
        raise
    except Exception as e:  # FFCV raises assorted types on a damaged header
        raise UserError(
            f"corrupt beton {path} ({type(e).__name__}: {e}); delete it and rewrite it with "
            f"{_write_hint(cfg, cfg['dataset'])}"
        ) from None
    if labels.ndim != 1 or labels.size == 0:
        raise UserError(f"corrupt beton {path}: no labels")
    return labels


def make_split(cfg: dict, train_labels: np.ndarray, frac: float, seed: int):
    make = splits.dataset_split if cfg["split"] == "dataset" else splits.task_split
    return make(train_labels, frac, mode=cfg["mode"], seed=seed)


@dataclass
class ModelData:
    """What model `index` of a pair trains and is tested on."""

    index: int
    train_indices: np.ndarray
    test_indices: np.ndarray | None  # None: the whole test set
    label_map: dict[int, int] | None  # None: labels unchanged
    num_classes: int


def model_data(cfg: dict, split, index: int, test_labels: np.ndarray) -> ModelData:
    if split.kind == "task":
        classes = split.classes_a if index == 0 else split.classes_b
        label_map = split.label_map_a if index == 0 else split.label_map_b
        return ModelData(
            index=index,
            train_indices=split.a if index == 0 else split.b,
            test_indices=splits.class_indices(test_labels, classes),
            label_map=dict(label_map),
            num_classes=len(classes),
        )
    from ...data import registry

    return ModelData(
        index=index,
        train_indices=split.a if index == 0 else split.b,
        test_indices=None,
        label_map=None,
        num_classes=int(registry.get(cfg["dataset"]).num_classes),
    )


def model_seed(seed: int, index: int) -> int:
    """One 32-bit seed per (pair seed, model index) for torch and the loader order."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


# [loader] backend: "ffcv" (the study's FFCV loaders, loaders.make_loader), "memory" (the
# beton decoded once per process into arrays, loaders.ArrayLoader: no FFCV pipeline to
# compile per model, which dominates for the small built-in data of the demo and tests) or
# "device" (those arrays copied once per process to the training device, batches gathered
# and augmented there, loaders.DeviceLoader: no CPU work per image on a GPU).
LOADER_BACKENDS = ("ffcv", "memory", "device")
_MEMORY_ARRAYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def memory_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A beton's (images, labels), decoded once per process and shared by every model.

    Keyed by the file's path, size and modification time, so a rewritten beton is read
    again. Loaders index the arrays (a copy per batch) and never write into them.
    """
    from ...data import betons

    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _MEMORY_ARRAYS:
        for old in [k for k in _MEMORY_ARRAYS if k[0] == key[0]]:
            del _MEMORY_ARRAYS[old]
        _MEMORY_ARRAYS[key] = betons.load_arrays(path)
    return _MEMORY_ARRAYS[key]


def _open_loader(cfg: dict, path: Path, **kwargs):
    """One loader over a beton, by the config's loader backend."""
    from ...data import loaders, registry

    backend = cfg.get("loader", {}).get("backend", "ffcv")
    if backend in ("memory", "device"):
        entry = registry.get(cfg["dataset"])
        images, labels = memory_arrays(path)
        make = loaders.ArrayLoader if backend == "memory" else loaders.DeviceLoader
        return make(images, labels, mean=entry.mean, std=entry.std, **kwargs)
    return loaders.make_loader(path, **kwargs)


def make_loaders(cfg: dict, data: ModelData, *, device: str, seed: int):
    """(train loader, test loader) of one model, by the config's [loader] backend."""
    recipe = cfg["recipe"]
    workers = cfg.get("loader", {}).get("workers")
    common = dict(batch_size=recipe["batch_size"], label_map=data.label_map, device=device,
                  workers=workers)
    train = _open_loader(cfg, beton(cfg, "train"), indices=data.train_indices, train=True,
                         augment=cfg.get("augment"), drop_last=recipe.get("drop_last", True),
                         seed=seed, **common)
    test = _open_loader(cfg, beton(cfg, "test"), indices=data.test_indices, train=False,
                        drop_last=False, seed=seed, **common)
    return train, test


def _start_epoch(loader, epoch: int) -> None:
    """Make a resumed loader draw the sample order of `epoch`, not that of its first epoch.

    FFCV's Loader orders epoch e by (seed + e) and counts epochs in `next_epoch`
    (loaders.BetonLoader wraps it as `.loader`); ArrayLoader counts in `epoch`.
    """
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
        return
    inner = getattr(loader, "loader", loader)
    if hasattr(inner, "next_epoch"):
        inner.next_epoch = epoch
    elif hasattr(loader, "epoch"):
        loader.epoch = epoch


# ---------------------------------------------------------------------------------------
# One step, one epoch, evaluation
# ---------------------------------------------------------------------------------------


def autocast(device: str, precision: str = "fp16"):
    """fp16 (or bf16) autocast on CUDA, nothing on the CPU (float32) or for "fp32"."""
    if device == "cuda" and precision != "fp32":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def make_scaler(device: str, precision: str = "fp16"):
    """A gradient scaler for fp16 on CUDA; disabled otherwise (bf16 has float32's range)."""
    return torch.amp.GradScaler("cuda", enabled=device == "cuda" and precision == "fp16")


def _memory_format(device: str, channels_last: bool = True):
    return torch.channels_last if device == "cuda" and channels_last else torch.preserve_format


def prepare_model(model: nn.Module, device: str, channels_last: bool = True) -> nn.Module:
    model = model.to(device)
    if device == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def train_step(model, images, labels, optimizer, scaler, loss_fn, device: str,
               precision: str = "fp16", channels_last: bool = True):
    """One optimisation step; returns (loss, logits) detached. Used by the benchmark too."""
    if device == "cuda":
        images = images.to(device, non_blocking=True,
                           memory_format=_memory_format(device, channels_last))
        labels = labels.to(device, non_blocking=True)
    with autocast(device, precision):
        logits = model(images)
        loss = loss_fn(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


def evaluate(model, loader, device: str, precision: str = "fp16",
             channels_last: bool = True) -> float:
    """Top-1 accuracy over a loader (eval mode, no gradients)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.no_grad(), autocast(device, precision):
        for images, labels in loader:
            if device == "cuda":
                images = images.to(device, non_blocking=True,
                                   memory_format=_memory_format(device, channels_last))
                labels = labels.to(device, non_blocking=True)
            correct += (model(images).argmax(1) == labels).sum()
            seen += len(labels)
    model.train()
    return float(correct.item()) / max(seen, 1)


# ---------------------------------------------------------------------------------------
# Training state and checkpoints
# ---------------------------------------------------------------------------------------


def load_epoch_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # Written atomically, so a bad file is damage from elsewhere: restart this model.
        print(f"{path}: unreadable epoch checkpoint ({e}); restarting this model")
        return None


def _synced_since(t0: float, device: str) -> float:
    """Seconds since t0 once the device's queued work is done."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def write_log(folder: Path, rows: list[dict]) -> None:
    runs.atomic_write_text(folder / LOG, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


@dataclass
class Trainer:
    """Everything needed to train model `data.index` of a pair; `run()` does it."""

    cfg: dict
    data: ModelData
    folder: Path  # split_<i>/
    device: str
    seed: int  # the model's own seed (model_seed)
    label: str  # for the progress bar

    def run(self) -> None:
        recipe = self.cfg["recipe"]
        precision = recipe.get("precision", "fp16")
        channels_last = recipe.get("channels_last", True)
        torch.manual_seed(self.seed)
        if self.device == "cuda":
            torch.cuda.manual_seed_all(self.seed)
            torch.backends.cudnn.benchmark = True
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise UserError("recipe.precision = \"bf16\": this GPU has no bf16 support; "
                                "use \"fp16\"")
        model = prepare_model(
            models.build(self.cfg["arch"], self.data.num_classes, width=self.cfg.get("width", 64)),
            self.device, channels_last,
        )
        # The compiled module shares the parameters; checkpoints are written from `model`
        # (no "_orig_mod." prefix in their keys).
        run_model = torch.compile(model) if recipe.get("compile", False) else model
        train_loader, test_loader = make_loaders(self.cfg, self.data, device=self.device,
                                                 seed=self.seed)
        iters = len(train_loader)
        if iters == 0:
            raise UserError(
                f"model {self.data.index} has {len(self.data.train_indices)} training images, "
                f"fewer than one batch of {recipe['batch_size']} (drop-last): lower --batch-size"
            )
        epochs = recipe["epochs"]
        schedule = Triangular.from_epochs(epochs, iters, recipe["peak_epoch"])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=recipe["momentum"],
                                    weight_decay=recipe["weight_decay"],
                                    nesterov=bool(recipe.get("nesterov", False)))
        scaler = make_scaler(self.device, precision)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])

        epoch, step, elapsed, rows = 0, 0, 0.0, []
        compiling = recipe.get("compile", False)  # until the first step and evaluation ran
        saved = load_epoch_checkpoint(self.folder / EPOCH_FILE)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scaler.is_enabled() and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            common.set_rng_state(saved["rng"])
            epoch, step, elapsed, rows = saved["epoch"], saved["step"], saved["elapsed"], saved["log"]
            write_log(self.folder, rows)  # in case the kill came between checkpoint and log
            print(f"{self.label}: resuming after epoch {epoch} of {epochs}")
            _start_epoch(train_loader, epoch)

        bar = progress(total=schedule.total, initial=step, desc=self.label, unit="it", dynamic_ncols=True)
        model.train()
        while epoch < epochs:
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            seen = 0
            compile_s = 0.0
            for images, labels in train_loader:
                lr = recipe["lr"] * schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                first = compiling and compile_s == 0.0
                t0 = time.perf_counter()
                loss, logits = train_step(run_model, images, labels, optimizer, scaler, loss_fn,
                                          self.device, precision, channels_last)
                if first:
                    compile_s += _synced_since(t0, self.device)
                loss_sum += loss.float() * len(labels)
                correct += (logits.argmax(1) == labels.to(logits.device)).sum()
                seen += len(labels)
                step += 1
                bar.update(1)
            t0 = time.perf_counter()
            test_acc = evaluate(run_model, test_loader, self.device, precision, channels_last)
            if compiling:
                compile_s += _synced_since(t0, self.device)
            epoch += 1
            elapsed += time.perf_counter() - started - compile_s
            rows.append({
                "epoch": epoch,
                "train_loss": round(float(loss_sum.item()) / max(seen, 1), 6),
                "train_acc": round(float(correct.item()) / max(seen, 1), 6),
                "test_acc": round(test_acc, 6),
                "lr": lr,
                "step": step,
                "time_s": round(elapsed, 3),
                **({"compile_s": round(compile_s, 3)} if compiling else {}),
            })
            compiling = False
            bar.set_postfix(epoch=epoch, train_acc=rows[-1]["train_acc"], test_acc=rows[-1]["test_acc"])
            bar.write(f"{self.label} epoch {epoch}/{epochs}: train acc {rows[-1]['train_acc']:.4f}, "
                      f"test acc {test_acc:.4f}, {elapsed:.1f} s")
            runs.atomic_torch_save({
                "model": common.cpu_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "rng": common.rng_state(),
                "epoch": epoch,
                "step": step,
                "elapsed": elapsed,
                "log": rows,
            }, self.folder / EPOCH_FILE)
            write_log(self.folder, rows)
            runs.record_steps(self.folder, step, epochs * iters)
        bar.close()
        runs.atomic_torch_save(common.cpu_state_dict(model), self.folder / CHECKPOINT)
        (self.folder / EPOCH_FILE).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# The pair
# ---------------------------------------------------------------------------------------


def pair_fields(cfg: dict, data: list[ModelData]) -> dict:
    """The image kind's own entries of a pair's args.json."""
    return {"arch": cfg["arch"], "width": cfg.get("width", 64),
            "num_classes": [d.num_classes for d in data], "dataset": cfg["dataset"],
            "split": cfg["split"], "mode": cfg["mode"]}


def resolve_device(device: str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    if device not in ("cpu", "cuda"):
        raise UserError(f"device must be cpu or cuda, got {device!r}")
    return device


def prepare_pair(cfg: dict, seed: int, frac: float, device: str) -> common.PairJob:
    """The pair as the generic driver (repr_sim.pair.train) runs it: the split, the data of
    both models, checked before anything is written."""
    check_config(cfg)
    train_path, test_path = beton(cfg, "train"), beton(cfg, "test")
    train_labels, test_labels = read_labels(cfg, train_path), read_labels(cfg, test_path)
    split = make_split(cfg, train_labels, frac, seed)
    data = [model_data(cfg, split, i, test_labels) for i in (0, 1)]
    recipe = cfg["recipe"]
    drop_last = recipe.get("drop_last", True)
    for d in data:  # fail before anything is written if a model cannot fill one batch
        if drop_last and len(d.train_indices) < recipe["batch_size"]:
            raise UserError(
                f"model {d.index} has {len(d.train_indices)} training images, fewer than one "
                f"batch of {recipe['batch_size']} (drop-last): lower --batch-size"
            )

    def train_model(i: int, model_dir: Path) -> None:
        label = f"{cfg['name']} seed {seed} frac {frac:g} model {i}"
        Trainer(cfg, data[i], model_dir, device, model_seed(seed, i), label).run()

    return common.PairJob(fields=pair_fields(cfg, data), n_models=2, train_model=train_model,
                          checkpoint=CHECKPOINT, split=split,
                          steps=[total_steps(cfg, len(d.train_indices)) for d in data],
                          model_keys=[model_key(cfg, seed, d, train_path) for d in data])


def model_key(cfg: dict, seed: int, d: ModelData, train_path: Path) -> str:
    """Everything model `d` trains on (repr_sim.pair's reuse_models): the training config
    without the sweep's lists, its seed, its images, their labels and the test set it is
    scored on. Model A of a dataset split has the same key at every fraction of a seed."""
    def digest(a):
        return None if a is None else hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()

    stat = Path(train_path).stat()
    config = {k: v for k, v in common.training_config(cfg).items() if k not in ("fracs", "seeds")}
    return runs.fingerprint({"config": config, "seed": model_seed(seed, d.index),
                             "train": digest(d.train_indices), "test": digest(d.test_indices),
                             "labels": sorted((d.label_map or {}).items()),
                             "classes": d.num_classes,
                             "data": [str(Path(train_path).resolve()), stat.st_size, stat.st_mtime_ns]})


def total_steps(cfg: dict, n_images: int) -> int:
    r = cfg["recipe"]
    per_epoch = (n_images // r["batch_size"] if r.get("drop_last", True)
                 else -(-n_images // r["batch_size"]))
    return r["epochs"] * per_epoch


def train_pair(cfg: dict, seed: int, frac: float, *, device: str | None = None) -> Path:
    """Train both models of pair (seed, frac) of experiment `cfg`; returns the pair folder."""
    return common.train(cfg, seed, frac, prepare_pair, device=resolve_device(device),
                        defaults=KIND.defaults)
