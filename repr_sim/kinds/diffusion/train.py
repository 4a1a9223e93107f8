"""Train one pair of class-conditional diffusion UNets (docs/protocol.md section 6.4) into its run folder.

Data. The experiment's dataset at the config's `resolution` through the registry and beton
path of every image experiment: <data root>/ffcv/<beton_name(dataset, resolution)>/
{train,test}.beton (cifar10 at 32, tinyimagenet at 64, shapes_16 for the tiny experiment;
`train_diffusion_unet/run_write_ffcv_data.sh` writes them). Each beton is decoded once into
memory and a model's images go to its device once, as uint8; a batch is scaled to [-1, 1]
((x - 127.5) / 127.5) after a horizontal flip with probability `recipe.flip`, the study's
only augmentation.

Split and run folder as for the ResNets (repr_sim.kinds.image.train): dataset or task
split of the train labels, model 0 on split.a, model 1 on split.b; a task split's model
sees its classes mapped to 0..c-1. The null ("unconditional") class id is the model's
number of classes (10 for CIFAR-10 dataset overlap, 5 for task overlap).

Recipe ([recipe], the study's): DDPMScheduler(1000) at defaults; per step t uniform in
{0..999}, Gaussian noise, x_t = add_noise(x_0, noise, t), MSE between the predicted and the
true noise; labels replaced by the null id with probability `label_dropout`; AdamW (weight
decay `weight_decay`) at lr * batch_size / lr_batch (2e-4 x batch / 512 in the study's
words: 5e-4 at 1280); linear warmup for `warmup_steps`, then a cosine over
schedule_factor x steps (so lr has not reached 0 at the end; `cosine_lr`); gradient norm
clipped at `grad_clip`; fp16 autocast and a gradient scaler on CUDA (`amp`); drop-last
epochs of a fresh permutation each. EMA of the parameters after every optimiser step
with diffusers EMAModel's rule: decay 0 at the first update, then
min((1 + s) / (10 + s), ema_decay) at update s + 1 (`Ema`).

Output (split_<i>/): `ckpt.pth`, the EMA weights as a full UNet state_dict (what is
measured and sampled; the study copied its EMA into the model and saved over ckpt.pth),
`log.txt` (a JSON line per `log_every` steps: step, mean loss since the last line, lr,
seconds), and with `keep_raw` the raw weights as `raw.pth`.

Determinism and resume. Every random draw of step s (batch order, flips, timesteps,
noise, label dropout, the UNet's dropout) comes from generators seeded by (model seed, s)
or (model seed, epoch), never from a stream carried across steps, so a run's state is its
weights, EMA, optimiser and scaler only. Every `checkpoint_every` steps that state goes
atomically to split_<i>/train_state.pt (tensors and plain data, read with
weights_only=True); a rerun after a kill continues from its step, and on the CPU the
result is bit-identical to an uninterrupted run (tests/test_diffusion_train.py). The
state file is removed when the model is done. CUDA kernels may accumulate in another
order, so on a GPU a resumed run matches in schedule and data, not bit for bit.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ... import pair as common
from ... import runs
from ...atomic import atomic_torch_save
from ...errors import UserError
from ...models import unet as unet_model
from ...paths import progress
from ...scoring import first_line
from ..image import train as image
from . import KIND

OPTION_KEYS = {"iters": "recipe.steps", "batch_size": "recipe.batch_size", "lr": "recipe.lr"}
RECIPE_KEYS = ("steps", "batch_size", "lr", "lr_batch", "warmup_steps", "schedule_factor",
               "weight_decay", "grad_clip", "label_dropout", "flip", "ema_decay",
               "checkpoint_every", "log_every")
CHECKPOINT = "ckpt.pth"
RAW = "raw.pth"
STATE = "train_state.pt"
LOG = "log.txt"


# ---- config and data --------------------------------------------------------------------------
def where(cfg: dict) -> str:
    return str(cfg.get("config_path", cfg.get("name", "config")))


def check_config(cfg: dict) -> None:
    """Every key the trainer reads is present and sensible (UserError otherwise)."""
    at = where(cfg)
    common.require_keys(cfg, ("dataset", "resolution", "split", "mode", "unet", "recipe"), at)
    if cfg["split"] not in image.SPLIT_KINDS:
        raise UserError(f"{at}: split must be one of {', '.join(image.SPLIT_KINDS)}, "
                        f"got {cfg['split']!r}")
    recipe = cfg["recipe"]
    common.require_keys(recipe, RECIPE_KEYS, at, "recipe.")
    common.check_positive_ints(recipe, ("steps", "batch_size", "lr_batch", "checkpoint_every",
                                        "log_every"), at, "recipe.")
    common.check_non_negative(recipe, ("lr", "warmup_steps", "schedule_factor", "weight_decay",
                                       "grad_clip", "label_dropout", "flip", "ema_decay"),
                              at, "recipe.")
    for key in ("label_dropout", "flip", "ema_decay"):
        if recipe[key] > 1:
            raise UserError(f"{at}: recipe.{key} must be at most 1, got {recipe[key]!r}")
    if recipe["schedule_factor"] < 1:
        raise UserError(f"{at}: recipe.schedule_factor must be at least 1 (the cosine runs over "
                        f"schedule_factor x steps), got {recipe['schedule_factor']!r}")
    if unet_settings(cfg, 1)[1]["sample_size"] != cfg["resolution"]:  # checked by its builder
        raise UserError(f"{at}: unet.sample_size must equal resolution {cfg['resolution']}")


def unet_settings(cfg: dict, num_classes: int) -> tuple[str, dict]:
    """(preset, overrides) of the config's [unet] table, sample_size = resolution by default;
    a bad table is one UserError."""
    table = dict(cfg.get("unet", {}))
    preset = table.pop("preset", "cifar32")
    table.setdefault("sample_size", cfg["resolution"])
    try:
        full = unet_model.unet_config(num_classes, preset, **table)
    except ValueError as e:
        raise UserError(f"{where(cfg)}: unet: {e}") from None
    return preset, {**table, "sample_size": full["sample_size"]}


def build(cfg: dict, num_classes: int):
    preset, overrides = unet_settings(cfg, num_classes)
    return unet_model.build_unet(num_classes, preset, **overrides)


def beton_path(cfg: dict, part: str) -> Path:
    """The beton of the experiment's dataset at its resolution; a clear error if missing."""
    from ...data import betons, registry

    path = betons.beton_path(registry.beton_name(cfg["dataset"], cfg["resolution"]), part)
    if not path.is_file():
        script = Path(cfg.get("config_path", ".")).parent.parent / "run_write_ffcv_data.sh"
        how = (f"`bash {script.parent.name}/{script.name}`" if script.is_file() else
               f"`reprsim write-data {cfg['dataset']} --resolution {cfg['resolution']}`")
        raise UserError(f"missing beton {path}: write it with {how}")
    return path


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [-1, 1], the study's (x - 127.5) / 127.5."""
    return (images.permute(0, 3, 1, 2).float() - 127.5) / 127.5


# ---- schedule, EMA, seeds -----------------------------------------------------------------------
def cosine_lr(step: int, peak: float, warmup: int, total: int) -> float:
    """lr at optimiser step `step` (0-based): linear warmup to `peak`, then a half cosine
    to 0 at `total` (diffusers' get_cosine_schedule_with_warmup, num_cycles 0.5)."""
    if step < warmup:
        return peak * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def peak_lr(recipe: dict) -> float:
    """The study's linear scaling: lr at batch lr_batch, scaled to this batch size."""
    return float(recipe["lr"]) * recipe["batch_size"] / recipe["lr_batch"]


def schedule_length(recipe: dict) -> int:
    return int(round(recipe["steps"] * float(recipe["schedule_factor"])))


class Ema:
    """EMA of a model's parameters, diffusers EMAModel's rule (no warmup power, no delay):
    update n (1-based) uses decay 0 for n = 1, else min((1 + s) / (10 + s), max_decay)
    with s = n - 1."""

    def __init__(self, model: torch.nn.Module, max_decay: float):
        self.max_decay = float(max_decay)
        self.updates = 0
        self.shadow = [p.detach().clone().float() for p in model.parameters()]

    def decay(self, update: int) -> float:
        s = update - 1
        return 0.0 if s <= 0 else min((1 + s) / (10 + s), self.max_decay)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        keep = self.decay(self.updates)
        for s, p in zip(self.shadow, model.parameters(), strict=True):
            s.sub_((1.0 - keep) * (s - p.detach().float()))

    def state_dict_of(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's full state_dict (CPU) with its parameters replaced by the EMA's."""
        names = {id(p): n for n, p in model.named_parameters()}
        state = common.cpu_state_dict(model)
        for p, s in zip(model.parameters(), self.shadow, strict=True):
            state[names[id(p)]] = s.detach().cpu().to(p.dtype).contiguous()
        return state

    def state(self) -> dict:
        return {"updates": self.updates, "shadow": [s.detach().cpu() for s in self.shadow]}

    def load(self, saved: dict, device: str) -> None:
        self.updates = int(saved["updates"])
        self.shadow = [s.to(device) for s in saved["shadow"]]


def step_seed(seed: int, *key: int) -> int:
    """A 63-bit seed for the draws of (model seed, key...)."""
    state = np.random.SeedSequence([int(seed), *map(int, key)]).generate_state(2, np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & ((1 << 63) - 1)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Positions (into the model's images) of step `step`'s batch: drop-last epochs, each a
    fresh permutation seeded by (seed, epoch)."""
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([int(seed), 1, int(epoch)]).permutation(n)
    return order[k * batch_size:(k + 1) * batch_size]


def noisy_batch(x0: torch.Tensor, labels: torch.Tensor, null_id: int, recipe: dict,
                scheduler, generator: torch.Generator):
    """(x_t, t, noise, labels after dropout) of one training batch, every draw from
    `generator` (on the batch's device), in a fixed order."""
    n, dev = len(x0), x0.device
    flip = torch.rand(n, generator=generator, device=dev) < float(recipe["flip"])
    x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator,
                      device=dev)
    noise = torch.randn(x0.shape, generator=generator, device=dev)
    drop = torch.rand(n, generator=generator, device=dev) < float(recipe["label_dropout"])
    labels = torch.where(drop, torch.full_like(labels, null_id), labels)
    return scheduler.add_noise(x0, noise, t), t, noise, labels


# ---- one model ---------------------------------------------------------------------------------
def _after_step(model_dir: Path, step: int) -> None:
    """Called after each optimiser step (tests replace it to stop a run as a kill would)."""


def read_state(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # written atomically: a bad file is damage from elsewhere
        print(f"{path}: unreadable training state ({first_line(e)}); restarting this model")
        return None


def write_log(folder: Path, rows: list[dict]) -> None:
    runs.atomic_write_text(folder / LOG, "".join(json.dumps(r, sort_keys=True) + "\n"
                                                 for r in rows))


@dataclass
class DiffusionTrainer:
    """Trains one UNet of a pair on in-memory images; `run()` does it."""

    cfg: dict
    folder: Path  # split_<i>/
    device: str
    seed: int  # the model's own seed (image.model_seed)
    label: str
    images: torch.Tensor  # uint8 [N, H, W, 3], the model's training images (CPU)
    labels: torch.Tensor  # int64 [N], mapped to 0..num_classes-1
    num_classes: int

    def run(self) -> None:
        recipe = self.cfg["recipe"]
        if recipe.get("threads"):
            torch.set_num_threads(int(recipe["threads"]))
        steps, batch_size = recipe["steps"], min(recipe["batch_size"], len(self.images))
        # the images stay uint8 on the device (CIFAR-10: 150 MB): no copy per step
        self.images, self.labels = self.images.to(self.device), self.labels.to(self.device)
        torch.manual_seed(self.seed)  # the initialisation
        model = build(self.cfg, self.num_classes).to(self.device).train()
        scheduler = unet_model.make_scheduler()
        cuda = self.device == "cuda"
        optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr(recipe),
                                      weight_decay=float(recipe["weight_decay"]))
        scaler = torch.amp.GradScaler("cuda", enabled=cuda and bool(recipe.get("amp", True)))
        ema = Ema(model, recipe["ema_decay"])
        step, rows, elapsed = 0, [], 0.0
        saved = read_state(self.folder / STATE)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scaler.load_state_dict(saved["scaler"])
            ema.load(saved["ema"], self.device)
            step, rows, elapsed = int(saved["step"]), list(saved["log"]), float(saved["elapsed"])
            write_log(self.folder, rows)
            print(f"{self.label}: resuming from step {step} of {steps}")
        bar = progress(total=steps, initial=step, desc=self.label, unit="step", mininterval=5)
        start, losses = time.perf_counter() - elapsed, []
        while step < steps:
            loss = self._step(model, optimizer, scaler, scheduler, step, batch_size)
            ema.update(model)
            step += 1
            losses.append(loss)
            bar.update(1)
            if step % recipe["log_every"] == 0 or step == steps:
                rows.append({"step": step, "loss": float(np.mean(losses)),
                             "lr": cosine_lr(step - 1, peak_lr(recipe), recipe["warmup_steps"],
                                             schedule_length(recipe)),
                             "seconds": round(time.perf_counter() - start, 3)})
                losses = []
                write_log(self.folder, rows)
                bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}")
            if step % recipe["checkpoint_every"] == 0 and step < steps:
                self._save_state(model, optimizer, scaler, ema, step, rows, start)
                runs.record_steps(self.folder, step, steps)
            _after_step(self.folder, step)
        bar.close()
        self._finish(model, ema, steps)

    def _step(self, model, optimizer, scaler, scheduler, step: int, batch_size: int) -> float:
        recipe = self.cfg["recipe"]
        seed = step_seed(self.seed, step)
        dev = self.device
        idx = torch.from_numpy(batch_indices(len(self.images), batch_size, self.seed, step))
        idx = idx.to(self.images.device)
        gen = torch.Generator(device=dev).manual_seed(seed)
        x0 = to_unit_range(self.images[idx]).to(dev)
        x_t, t, noise, labels = noisy_batch(x0, self.labels[idx], self.num_classes, recipe,
                                            scheduler, gen)
        torch.manual_seed(seed)  # the UNet's dropout, per step (also seeds CUDA)
        lr = cosine_lr(step, peak_lr(recipe), recipe["warmup_steps"], schedule_length(recipe))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device_type="cuda", dtype=torch.float16,
                            enabled=scaler.is_enabled()):
            pred = model(x_t, t, class_labels=labels.to(dev)).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if recipe["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(recipe["grad_clip"]))
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    def _save_state(self, model, optimizer, scaler, ema, step, rows, start) -> None:
        atomic_torch_save({"step": step, "model": common.cpu_state_dict(model),
                           "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                           "ema": ema.state(), "log": rows,
                           "elapsed": time.perf_counter() - start}, self.folder / STATE)

    def _finish(self, model, ema, steps: int) -> None:
        if self.cfg["recipe"].get("keep_raw"):
            atomic_torch_save(common.cpu_state_dict(model), self.folder / RAW)
        atomic_torch_save(ema.state_dict_of(model), self.folder / CHECKPOINT)
        runs.record_steps(self.folder, steps, steps)
        (self.folder / STATE).unlink(missing_ok=True)


# ---- the pair ---------------------------------------------------------------------------------
def mapped_labels(labels: np.ndarray, label_map: dict[int, int] | None) -> np.ndarray:
    if label_map is None:
        return labels.astype(np.int64)
    lookup = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    for old, new in label_map.items():
        lookup[int(old)] = int(new)
    return lookup[labels]


def pair_fields(cfg: dict, data: list) -> dict:
    preset, overrides = unet_settings(cfg, max(1, data[0].num_classes))
    return {"arch": "unet", "unet_preset": preset, "unet": overrides,
            "num_classes": [d.num_classes for d in data],
            "null_class": [d.num_classes for d in data], "dataset": cfg["dataset"],
            "resolution": cfg["resolution"], "split": cfg["split"], "mode": cfg["mode"]}


def prepare_pair(cfg: dict, seed: int, frac: float, device: str) -> common.PairJob:
    """Both UNets of pair (seed, frac), their data checked before anything is written."""
    check_config(cfg)
    train_path, test_path = beton_path(cfg, "train"), beton_path(cfg, "test")
    train_labels = image.read_labels(cfg, train_path)
    split = image.make_split(cfg, train_labels, frac, seed)
    test_labels = image.read_labels(cfg, test_path)
    data = [image.model_data(cfg, split, i, test_labels) for i in (0, 1)]
    for d in data:
        if len(d.train_indices) == 0:
            raise UserError(f"model {d.index} of {cfg['name']} seed {seed} frac {frac:g} has no "
                            f"training images ({train_path} is too small for this split)")
    arrays = {}

    def before_training(left: list[int]) -> None:  # decoded once for both models
        from ...data import betons

        arrays["images"], arrays["labels"] = betons.load_arrays(train_path)

    def train_model(i: int, model_dir: Path) -> None:
        d = data[i]
        idx = np.asarray(d.train_indices, dtype=np.int64)
        labels = mapped_labels(arrays["labels"][idx], d.label_map)
        DiffusionTrainer(cfg, model_dir, device, image.model_seed(seed, i),
                         f"{cfg['name']} seed {seed} frac {frac:g} model {i}",
                         torch.from_numpy(np.ascontiguousarray(arrays["images"][idx])),
                         torch.from_numpy(labels), d.num_classes).run()

    steps = int(cfg["recipe"]["steps"])
    return common.PairJob(fields=pair_fields(cfg, data), n_models=2, train_model=train_model,
                          checkpoint=CHECKPOINT, split=split, steps=[steps, steps],
                          before_training=before_training)


def train_pair(cfg: dict, seed: int, frac: float, *, device: str | None = None) -> Path:
    """Train both UNets of pair (seed, frac) of experiment `cfg`; returns the pair folder."""
    return common.train(cfg, seed, frac, prepare_pair, device=image.resolve_device(device),
                        defaults=KIND.defaults)
