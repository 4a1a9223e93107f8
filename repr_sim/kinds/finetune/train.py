"""Fine-tune one pair of timm models (docs/protocol.md section 6.1) into its run folder.

`train_pair(cfg, seed, frac)` splits the train beton's labels (dataset or task split,
constrained mode, repr_sim.splits; labels read from the beton's label field, never by
decoding images) or, for `split = "partition"`, picks the label sets of one ColorShapeDigit
partition (0 -> partition1, 0.5 -> partition2, 1 -> partition3, as the partition kind);
then trains each model from the same pretrained weights with a fresh head and writes
`split_<i>/checkpoint.pth` (a state_dict) and `log.txt`; args.json records the weights'
file, sha256 and tag.

Input pipeline (training, measurement and attacks alike): the loader yields uint8-valued
images at their native side with the augmentation applied (no normalisation); on the
device they are upsampled to `input_size` (bilinear, rounded to whole pixel values as
torchvision's Resize does on a uint8 batch), then normalised with the config's statistics
(`normalisation = "study"`: mean = std = 127; "weights": the weights' own mean/std).

Recipe: the family's optimiser from the config's [optim] table (ResNets: SGD lr 0.2,
momentum 0.9, weight decay 5e-4; ViTs: AdamW lr 3e-4, weight decay 0.05), any of
recipe.optimizer/lr/momentum/weight_decay overriding it; 5 epochs of batch 256, drop-last
(not for partitions), per-iteration triangular schedule peaking at epoch 1, label smoothing
0.1; fp16 autocast with a gradient scaler and channels-last on CUDA, fp32 on the CPU.
Test accuracy is evaluated after the last epoch only (the study's log).

Resume: after every epoch the full training state goes to `split_<i>/epoch.pt` (atomic,
tensors and plain data only: torch.load(weights_only=True)); a rerun resumes there, as the
image kind does.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ... import pair as common
from ... import runs
from ...data.loaders import Normalised
from ...errors import UserError
from ...models import timm_models
from ...paths import progress
from ..image import train as image
from ..schedule import Triangular
from . import KIND

OPTION_KEYS = {"epochs": "recipe.epochs", "batch_size": "recipe.batch_size", "lr": "recipe.lr",
               "workers": "loader.workers"}
SPLIT_KINDS = ("dataset", "task", "partition")
NORMALISATIONS = ("study", "weights")
STUDY_MEAN_STD = 127.0  # docs/protocol.md section 6.1: mean = std = 127 per channel, 0-255 scale
OPTIMIZERS = ("sgd", "adamw")
CHECKPOINT = image.CHECKPOINT
EPOCH_FILE = image.EPOCH_FILE


# ---- config ---------------------------------------------------------------------------------
def where(cfg: dict) -> str:
    return str(cfg.get("config_path", cfg.get("name", "config")))


def check_config(cfg: dict) -> None:
    w = where(cfg)
    common.require_keys(cfg, ("dataset", "split", "arch", "recipe", "input_size"), w)
    if cfg["split"] not in SPLIT_KINDS:
        raise UserError(f"{w}: split must be one of {', '.join(SPLIT_KINDS)}, got {cfg['split']!r}")
    if cfg.get("normalisation", "study") not in NORMALISATIONS:
        raise UserError(f"{w}: normalisation must be one of {', '.join(NORMALISATIONS)}, "
                        f"got {cfg.get('normalisation')!r}")
    if not isinstance(cfg.get("model_kwargs", {}), dict):
        raise UserError(f"{w}: model_kwargs must be a table")
    common.check_positive_ints(cfg, ("input_size",), w)
    common.require_keys(cfg["recipe"], ("epochs", "batch_size", "peak_epoch", "label_smoothing"),
                        w, "recipe.")
    common.check_positive_ints(cfg["recipe"], ("epochs", "batch_size"), w, "recipe.")
    optim = optimiser_settings(cfg)
    if optim.get("optimizer") not in OPTIMIZERS:
        raise UserError(f"{w}: optimizer must be one of {', '.join(OPTIMIZERS)}, "
                        f"got {optim.get('optimizer')!r}")
    common.check_non_negative(optim, ("lr", "weight_decay"), w, "optim.")
    timm_models.check_arch(cfg["arch"])
    backend = cfg.get("loader", {}).get("backend", "ffcv")
    if backend not in image.LOADER_BACKENDS:
        raise UserError(f"{w}: loader.backend must be one of {', '.join(image.LOADER_BACKENDS)}, "
                        f"got {backend!r}")
    from ...data.augment import resolve_augment

    try:
        resolve_augment(cfg.get("augment"))
    except ValueError as e:
        raise UserError(f"{w}: {e}") from None


def optimiser_settings(cfg: dict) -> dict:
    """The family's [optim] entry with any optimiser key of [recipe] over it."""
    fam = timm_models.family(cfg["arch"])
    table = cfg.get("optim", {})
    if fam not in table:
        raise UserError(f"{where(cfg)}: no [optim.{fam}] table for {cfg['arch']}")
    out = dict(table[fam])
    for key in ("optimizer", "lr", "momentum", "weight_decay"):
        if key in cfg["recipe"]:
            out[key] = cfg["recipe"][key]
    return out


def weights_file(cfg: dict) -> Path | None:
    """The config's pretrained_file (relative paths are under the data root), or None."""
    from ...paths import data_root

    name = str(cfg.get("pretrained_file") or "")
    if not name:
        return None
    path = Path(name).expanduser()
    return path if path.is_absolute() else data_root() / path


def resolve_weights(cfg: dict) -> timm_models.Weights:
    return timm_models.resolve_weights(cfg["arch"], cfg.get("pretrained"), weights_file(cfg))


def beton_name(cfg: dict) -> str:
    return str(cfg.get("betons") or cfg["dataset"])


def write_hint() -> str:
    return "`bash vit_resnet_different_model_size/run_write_ffcv_data.sh` (or `reprsim write-data`)"


def beton(cfg: dict, part: str, name: str | None = None) -> Path:
    from ...data import betons

    path = Path(betons.beton_path(name or beton_name(cfg), part))
    if not path.is_file():
        raise UserError(f"missing beton {path}: write it with {write_hint()}")
    return path


# ---- the input pipeline -----------------------------------------------------------------------
@dataclass(frozen=True)
class Pipeline(Normalised):
    """Raw pixel batches [B, 3, h, w] (0-255) -> the model's normalised input at `size`
    (`bounds` and `eps_scale` from loaders.Normalised: what the attack needs)."""

    size: int
    mean: tuple[float, float, float]  # 0-255 scale
    std: tuple[float, float, float]

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                align_corners=False, antialias=False)
            x = x.round().clamp_(0, 255)  # torchvision's Resize on a uint8 batch
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.upsample(x))


def pipeline(cfg: dict) -> Pipeline:
    """The experiment's input pipeline: the study's mean = std = 127, or the weights' own
    statistics (timm's pretrained config of arch.tag, e.g. ImageNet's for the ResNets)."""
    size = int(cfg["input_size"])
    if cfg.get("normalisation", "study") == "study":
        return Pipeline(size, (STUDY_MEAN_STD,) * 3, (STUDY_MEAN_STD,) * 3)
    import timm

    tag = str(cfg.get("pretrained") or "")
    name = cfg["arch"] if tag in timm_models.NO_WEIGHTS else f"{cfg['arch']}.{tag}"
    pcfg = timm.models.get_pretrained_cfg(name) or timm.models.get_pretrained_cfg(cfg["arch"])
    if pcfg is None or pcfg.mean is None or pcfg.std is None:
        raise UserError(f"{where(cfg)}: normalisation = \"weights\": timm names no mean/std for {name}")
    return Pipeline(size, tuple(255.0 * float(v) for v in pcfg.mean),
                    tuple(255.0 * float(v) for v in pcfg.std))


# ---- loaders ----------------------------------------------------------------------------------
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # the loaders yield pixel values


def open_loader(cfg: dict, path: Path, **kwargs):
    """A loader of raw pixel values over a beton, by the config's loader backend."""
    from ...data import loaders

    if cfg.get("loader", {}).get("backend", "ffcv") == "memory":
        images, labels = image.memory_arrays(path)
        return loaders.ArrayLoader(images, labels, **RAW, **kwargs)
    return loaders.make_loader(path, **RAW, **kwargs)


def make_loaders(cfg: dict, data: image.ModelData, *, device: str, seed: int):
    recipe = cfg["recipe"]
    shared = dict(batch_size=recipe["batch_size"], label_map=data.label_map, device=device,
                  workers=cfg.get("loader", {}).get("workers"), seed=seed)
    train = open_loader(cfg, beton(cfg, "train"), indices=data.train_indices, train=True,
                        augment=cfg.get("augment"), drop_last=drop_last(cfg), **shared)
    test = open_loader(cfg, beton(cfg, "test"), indices=data.test_indices, train=False,
                       drop_last=False, **shared)
    return train, test


def drop_last(cfg: dict) -> bool:
    default = cfg["split"] != "partition"  # the study's partition loaders keep the last batch
    return bool(cfg["recipe"].get("drop_last", default)) and default


# ---- one step, evaluation -----------------------------------------------------------------------
def autocast(device: str):
    if device == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def to_device(model: nn.Module, device: str) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device == "cuda" else model


def model_input(pipe: Pipeline, images: torch.Tensor, device: str) -> torch.Tensor:
    x = pipe(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if device == "cuda" else x


def train_step(model, pipe, images, labels, optimizer, scaler, loss_fn, device: str):
    """One optimisation step (used by the benchmark too); returns (loss, logits) detached."""
    x = model_input(pipe, images, device)
    labels = labels.to(device, non_blocking=True)
    with autocast(device):
        logits = model(x)
        loss = loss_fn(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


def evaluate(model, pipe, loader, device: str) -> float:
    model.eval()
    correct, seen = 0, 0
    with torch.no_grad(), autocast(device):
        for images, labels in loader:
            logits = model(model_input(pipe, images, device))
            correct += int((logits.argmax(1) == labels.to(logits.device)).sum())
            seen += len(labels)
    model.train()
    return correct / max(seen, 1)


def make_optimizer(cfg: dict, model: nn.Module):
    o = optimiser_settings(cfg)
    if o["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.0, momentum=o.get("momentum", 0.9),
                               weight_decay=o["weight_decay"], nesterov=bool(o.get("nesterov", False)))
    return torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=o["weight_decay"],
                             betas=tuple(o.get("betas", (0.9, 0.999))))


# ---- one model ----------------------------------------------------------------------------------
@dataclass
class Trainer:
    cfg: dict
    data: image.ModelData
    weights: timm_models.Weights
    folder: Path
    device: str
    seed: int
    label: str

    def build(self) -> nn.Module:
        torch.manual_seed(self.seed)  # the fresh head
        model = timm_models.create(self.cfg["arch"], self.data.num_classes,
                                   self.cfg.get("model_kwargs"), self.weights)
        return to_device(model, self.device)

    def run(self) -> None:
        cfg, recipe, device = self.cfg, self.cfg["recipe"], self.device
        torch.manual_seed(self.seed)
        if device == "cuda":
            torch.cuda.manual_seed_all(self.seed)
            torch.backends.cudnn.benchmark = True
        model = self.build()
        pipe = pipeline(cfg)
        train_loader, test_loader = make_loaders(cfg, self.data, device=device, seed=self.seed)
        iters, epochs = len(train_loader), recipe["epochs"]
        if iters == 0:
            raise UserError(f"model {self.data.index} has {len(self.data.train_indices)} training "
                            f"images, fewer than one batch of {recipe['batch_size']}: lower --batch-size")
        schedule = Triangular.from_epochs(epochs, iters, recipe["peak_epoch"])
        base_lr = optimiser_settings(cfg)["lr"]
        optimizer = make_optimizer(cfg, model)
        scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")
        loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
        epoch, step, elapsed, rows = 0, 0, 0.0, []
        saved = image.load_epoch_checkpoint(self.folder / EPOCH_FILE)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scaler.is_enabled() and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            common.set_rng_state(saved["rng"])
            epoch, step, elapsed, rows = saved["epoch"], saved["step"], saved["elapsed"], saved["log"]
            image.write_log(self.folder, rows)
            print(f"{self.label}: resuming after epoch {epoch} of {epochs}")
            image._start_epoch(train_loader, epoch)
        bar = progress(total=schedule.total, initial=step, desc=self.label, unit="it", dynamic_ncols=True)
        model.train()
        while epoch < epochs:
            started = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for images, labels in train_loader:
                lr = base_lr * schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, logits = train_step(model, pipe, images, labels, optimizer, scaler,
                                          loss_fn, device)
                loss_sum += float(loss) * len(labels)
                correct += int((logits.argmax(1) == labels.to(logits.device)).sum())
                seen += len(labels)
                step += 1
                bar.update(1)
            epoch += 1
            row = {"epoch": epoch, "train_loss": round(loss_sum / max(seen, 1), 6),
                   "train_acc": round(correct / max(seen, 1), 6), "lr": lr, "step": step}
            if epoch == epochs and recipe.get("eval_test", True):
                row["test_acc"] = round(evaluate(model, pipe, test_loader, device), 6)
            elapsed += time.perf_counter() - started
            row["time_s"] = round(elapsed, 3)
            rows.append(row)
            bar.write(f"{self.label} epoch {epoch}/{epochs}: train acc {row['train_acc']:.4f}"
                      + (f", test acc {row['test_acc']:.4f}" if "test_acc" in row else "")
                      + f", {elapsed:.1f} s")
            runs.atomic_torch_save({
                "model": common.cpu_state_dict(model), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "rng": common.rng_state(), "epoch": epoch, "step": step, "elapsed": elapsed,
                "log": rows,
            }, self.folder / EPOCH_FILE)
            image.write_log(self.folder, rows)
            runs.record_steps(self.folder, step, epochs * iters)
        bar.close()
        runs.atomic_torch_save(common.cpu_state_dict(model), self.folder / CHECKPOINT)
        (self.folder / EPOCH_FILE).unlink(missing_ok=True)


# ---- the pair -----------------------------------------------------------------------------------
def pair_data(cfg: dict, seed: int, frac: float):
    """(split or None, [ModelData], model names or None) of pair (seed, frac)."""
    train_path, test_path = beton(cfg, "train"), beton(cfg, "test")
    train_labels = image.read_labels(cfg, train_path)
    test_labels = image.read_labels(cfg, test_path)
    if cfg["split"] == "partition":
        from ...data import partition
        from ..partition import train as part_train

        names = partition.PARTITIONS[partition.partition_of_frac(frac)]
        return None, part_train.model_data(names, len(train_labels)), list(names)
    split = image.make_split(cfg, train_labels, frac, seed)
    return split, [image.model_data(cfg, split, i, test_labels) for i in (0, 1)], None


def model_seed(seed: int, index: int, names: list[str] | None) -> int:
    if names is None:
        return image.model_seed(seed, index)
    from ...data import partition

    return image.model_seed(seed, partition.model_index(names[index]))


def pair_fields(cfg: dict, data, weights: timm_models.Weights, names) -> dict:
    fields = {"arch": cfg["arch"], "pretrained": cfg.get("pretrained"),
              "weights": weights.record(), "num_classes": [d.num_classes for d in data],
              "dataset": cfg["dataset"], "split": cfg["split"], "mode": cfg.get("mode"),
              "input_size": cfg["input_size"], "normalisation": cfg.get("normalisation", "study")}
    if names is not None:
        fields["models"] = names
    return fields


def prepare_pair(cfg: dict, seed: int, frac: float, device: str) -> common.PairJob:
    check_config(cfg)
    weights = resolve_weights(cfg)  # a missing file fails here, before anything is written
    split, data, names = pair_data(cfg, seed, frac)
    for d in data:
        if drop_last(cfg) and len(d.train_indices) < cfg["recipe"]["batch_size"]:
            raise UserError(f"model {d.index} has {len(d.train_indices)} training images, fewer "
                            f"than one batch of {cfg['recipe']['batch_size']}: lower --batch-size")

    def train_model(i: int, model_dir: Path) -> None:
        label = f"{cfg['name']} seed {seed} frac {frac:g} model {i}"
        Trainer(cfg, data[i], weights, model_dir, device, model_seed(seed, i, names), label).run()

    fields = pair_fields(cfg, data, weights, names)
    if names is not None:
        from ...data import partition

        fields["partition"] = partition.partition_of_frac(frac)
    return common.PairJob(fields=fields, n_models=len(data), train_model=train_model,
                          checkpoint=CHECKPOINT, split=split,
                          steps=[total_steps(cfg, len(d.train_indices)) for d in data])


def total_steps(cfg: dict, n_images: int) -> int:
    b = cfg["recipe"]["batch_size"]
    per_epoch = n_images // b if drop_last(cfg) else -(-n_images // b)
    return cfg["recipe"]["epochs"] * per_epoch


def train_pair(cfg: dict, seed: int, frac: float, *, device: str | None = None) -> Path:
    return common.train(cfg, seed, frac, prepare_pair, device=image.resolve_device(device),
                        defaults=KIND.defaults)
