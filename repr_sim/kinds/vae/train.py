"""Train one pair of VAEs (docs/protocol.md section 2, the study's `train_vae/`) into its run folder.

Data. The experiment's dataset at the config's `resolution` goes through the registry and
beton path like every image experiment: <data root>/ffcv/<beton_name(dataset, resolution)>/
{train,test}.beton (cifar10_28 for CIFAR-10 at 28x28; `train_vae/run_write_ffcv_data.sh`
writes them). Each beton is decoded once into memory (`betons.load_arrays`: the data is
small, and a VAE step is far cheaper than an FFCV pipeline compile) and turned grey in
[0, 1] (`grey`: ITU-R 601 luma, the weights of torchvision's Grayscale, in float; a grey
dataset such as MNIST, stored with its value in all three channels, comes out unchanged).
No normalisation, no augmentation.

Split and run folder exactly as for the ResNets (repr_sim.kinds.image.train): the split is made
from the train beton's labels and saved under split_indices/; model 0 trains on split.a,
model 1 on split.b; a task split's model sees every training image of its classes and is
evaluated on the test images of its classes (a dataset split's on the whole test set).
The labels select the images only: a VAE never sees them.

Recipe ([recipe]): Adam (lr, weight decay), `epochs` passes over the model's images in
batches of `batch_size` (the last, smaller batch kept), loss = summed pixel BCE + beta * KL
(repr_sim.vae_model.vae_loss). The log (split_<i>/log.txt, one JSON line per epoch) holds
the train and test loss per image (the negative ELBO in nats, one posterior sample; the
test sample is drawn from a generator seeded by the model's seed and the epoch, so it
does not disturb training's random stream).

Seeding (the study's script did not seed; this project does): the model's seed is
`image.model_seed(seed, index)`; it seeds torch (initialisation and the reparameterisation
noise) and, with the epoch, each epoch's sample order. On the CPU a pair is reproducible
bit for bit; CUDA convolutions may accumulate in another order.

Resume: as the image trainer, a full training state per epoch in split_<i>/epoch.pt
(tensors and plain data, loadable with weights_only=True), removed when the model is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ... import models, runs
from ... import pair as common
from ...errors import UserError
from ...models import vae as vae_model
from ...models.vae import vae_loss
from ...paths import progress
from ..image import train as image
from . import KIND

OPTION_KEYS = {"epochs": "recipe.epochs", "batch_size": "recipe.batch_size", "lr": "recipe.lr"}
RECIPE_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "beta")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's and torchvision's Grayscale


# ---- config and data ------------------------------------------------------------------------
def check_config(cfg: dict) -> None:
    where = cfg.get("config_path", cfg.get("name", "config"))
    common.require_keys(cfg, ("dataset", "resolution", "split", "mode", "arch", "recipe"), where)
    if cfg["arch"] != "vae":
        raise UserError(f"{where}: a vae experiment has arch = \"vae\", got {cfg['arch']!r}")
    if cfg["split"] not in image.SPLIT_KINDS:
        raise UserError(f"{where}: split must be one of {', '.join(image.SPLIT_KINDS)}, "
                        f"got {cfg['split']!r}")
    recipe = cfg["recipe"]
    common.require_keys(recipe, RECIPE_KEYS, where, "recipe.")
    common.check_positive_ints(recipe, ("epochs", "batch_size"), where, "recipe.")
    common.check_non_negative(recipe, ("lr", "weight_decay", "beta"), where, "recipe.")
    common.check_positive_ints({"latent_dim": cfg.get("latent_dim", vae_model.LATENT)},
                               ("latent_dim",), where)
    if cfg["resolution"] != vae_model.SIDE:
        raise UserError(f"{where}: the VAE takes {vae_model.SIDE}x{vae_model.SIDE} inputs, "
                        f"resolution is {cfg['resolution']!r}")


def beton_path(cfg: dict, dataset: str, part: str) -> Path:
    """The beton of `dataset` at the experiment's resolution; a clear error if missing."""
    from ...data import betons, registry

    path = betons.beton_path(registry.beton_name(dataset, cfg["resolution"]), part)
    if not path.is_file():
        script = Path(cfg.get("config_path", ".")).parent.parent / "run_write_ffcv_data.sh"
        how = (f"`bash {script.parent.name}/{script.name}`" if script.is_file() else
               f"`reprsim write-data {dataset} --resolution {cfg['resolution']}`")
        raise UserError(f"missing beton {path}: write it with {how}")
    return path


def grey(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 1, H, W] in [0, 1] (luma of the RGB values)."""
    weights = torch.tensor(LUMA, dtype=torch.float32) / 255.0
    return (torch.from_numpy(np.ascontiguousarray(images)).float() @ weights).unsqueeze(1)


def load_grey(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """(grey images [N, 1, H, W] in [0, 1], labels int64) of a beton, decoded once."""
    from ...data import betons

    images, labels = betons.load_arrays(path)
    return grey(images), labels


# ---- one model ------------------------------------------------------------------------------
def _generator(seed: int, epoch: int, device: str) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


def mean_loss(model, x: torch.Tensor, batch_size: int, beta: float, *, seed: int) -> float:
    """Loss per image over x (eval mode; the posterior sample drawn from its own seed)."""
    was_training = model.training
    model.eval()
    total = 0.0
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            total += float(vae_loss(*_forward(model, batch), beta).item())
    model.train(was_training)
    return total / max(len(x), 1)


def _forward(model, batch):
    recon, mu, logvar = model(batch)
    return recon, batch, mu, logvar


@dataclass
class VAETrainer:
    """Trains model `data.index` of a pair on in-memory grey images; `run()` does it."""

    cfg: dict
    data: image.ModelData
    folder: Path  # split_<i>/
    device: str
    seed: int  # the model's own seed (image.model_seed)
    label: str
    train_x: torch.Tensor  # the model's training images, on the device
    test_x: torch.Tensor  # the model's test images, on the device

    def build(self):
        return models.build("vae", max(1, self.data.num_classes),
                            latent_dim=int(self.cfg.get("latent_dim", vae_model.LATENT)))

    def run(self) -> None:
        recipe = self.cfg["recipe"]
        epochs, batch_size, beta = recipe["epochs"], recipe["batch_size"], float(recipe["beta"])
        torch.manual_seed(self.seed)
        if self.device == "cuda":
            torch.cuda.manual_seed_all(self.seed)
        model = self.build().to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"],
                                     weight_decay=recipe["weight_decay"])
        epoch, elapsed, rows = 0, 0.0, []
        saved = image.load_epoch_checkpoint(self.folder / image.EPOCH_FILE)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            common.set_rng_state(saved["rng"])
            epoch, elapsed, rows = saved["epoch"], saved["elapsed"], saved["log"]
            image.write_log(self.folder, rows)
            print(f"{self.label}: resuming after epoch {epoch} of {epochs}")

        n = len(self.train_x)
        iters = -(-n // batch_size)
        bar = progress(total=epochs * iters, initial=epoch * iters, desc=self.label, unit="it",
                   dynamic_ncols=True)
        model.train()
        while epoch < epochs:
            started = time.perf_counter()
            order = torch.randperm(n, generator=_generator(self.seed, epoch, "cpu"))
            order = order.to(self.device)
            loss_sum = torch.zeros((), device=self.device)
            for start in range(0, n, batch_size):
                batch = self.train_x[order[start:start + batch_size]]
                loss = vae_loss(*_forward(model, batch), beta)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                bar.update(1)
            epoch += 1
            test_loss = mean_loss(model, self.test_x, 512, beta, seed=self.seed + epoch)
            elapsed += time.perf_counter() - started
            rows.append({"epoch": epoch, "train_loss": round(float(loss_sum.item()) / n, 6),
                         "test_loss": round(test_loss, 6), "lr": recipe["lr"],
                         "step": epoch * iters, "time_s": round(elapsed, 3)})
            bar.write(f"{self.label} epoch {epoch}/{epochs}: train loss "
                      f"{rows[-1]['train_loss']:.2f}, test loss {test_loss:.2f} per image, "
                      f"{elapsed:.1f} s")
            runs.atomic_torch_save({
                "model": common.cpu_state_dict(model), "optimizer": optimizer.state_dict(),
                "rng": common.rng_state(), "epoch": epoch, "elapsed": elapsed, "log": rows,
            }, self.folder / image.EPOCH_FILE)
            image.write_log(self.folder, rows)
            runs.record_steps(self.folder, epoch * iters, epochs * iters)
        bar.close()
        runs.atomic_torch_save(common.cpu_state_dict(model), self.folder / image.CHECKPOINT)
        (self.folder / image.EPOCH_FILE).unlink(missing_ok=True)


# ---- the pair ---------------------------------------------------------------------------------
def _select(x: torch.Tensor, indices: np.ndarray | None, device: str) -> torch.Tensor:
    chosen = x if indices is None else x[torch.tensor(np.asarray(indices), dtype=torch.int64)]
    return chosen.to(device)


def prepare_pair(cfg: dict, seed: int, frac: float, device: str) -> common.PairJob:
    """Both VAEs of pair (seed, frac), their data checked before anything is written."""
    check_config(cfg)
    train_path = beton_path(cfg, cfg["dataset"], "train")
    test_path = beton_path(cfg, cfg["dataset"], "test")
    train_labels = image.read_labels(cfg, train_path)
    split = image.make_split(cfg, train_labels, frac, seed)
    test_labels = image.read_labels(cfg, test_path)
    data = [image.model_data(cfg, split, i, test_labels) for i in (0, 1)]
    for d in data:  # before anything is written
        if len(d.train_indices) == 0:
            raise UserError(f"model {d.index} of {cfg['name']} seed {seed} frac {frac:g} has no "
                            f"training images ({train_path} is too small for this split)")
    grey = {}

    def before_training(left: list[int]) -> None:  # decoded once for both models
        grey["train"], grey["test"] = load_grey(train_path)[0], load_grey(test_path)[0]

    def train_model(i: int, model_dir: Path) -> None:
        d = data[i]
        label = f"{cfg['name']} seed {seed} frac {frac:g} model {i}"
        VAETrainer(cfg, d, model_dir, device, image.model_seed(seed, i), label,
                   _select(grey["train"], d.train_indices, device),
                   _select(grey["test"], d.test_indices, device)).run()

    fields = image.pair_fields(cfg, data)
    fields.pop("width", None)  # a ResNet setting
    fields.update(resolution=cfg["resolution"],
                  latent_dim=int(cfg.get("latent_dim", vae_model.LATENT)))
    return common.PairJob(fields=fields, n_models=2, train_model=train_model,
                          checkpoint=image.CHECKPOINT, split=split,
                          before_training=before_training)


def train_pair(cfg: dict, seed: int, frac: float, *, device: str | None = None) -> Path:
    """Train both VAEs of pair (seed, frac) of experiment `cfg`; returns the pair folder."""
    return common.train(cfg, seed, frac, prepare_pair, device=image.resolve_device(device),
                        defaults=KIND.defaults)
