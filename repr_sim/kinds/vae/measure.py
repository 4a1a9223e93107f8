"""Measurement of one VAE pair (docs/protocol.md sections 2-3), for repr_sim.measure (kind "vae").

Models: `split_<i>/checkpoint.pth` (a state_dict, `torch.load(weights_only=True)`) into the
VAE the trainer built (repr_sim.models.vae, the config's latent_dim), eval mode.

Features: the 20-d latent mean (`ConvVAE.features`), the representation the encoder gives
an input (the study took the best over {mean, log-variance, both}; docs/protocol.md section 2).

Probe sets and the similarity file: exactly those of the ResNet CIFAR-10 experiments
(repr_sim.kinds.image.measure: `metric_overlap` = the whole test set, or the shared classes' test
images for a task split, `metric_ood_one` = the classes of one model only, then
`metric_ood_all_<dataset>` per beton of `[probes] ood`), every image turned grey in [0, 1]
as in training (repr_sim.kinds.vae.train.grey), both models fed the same batches in the same
order, `--probe-size` a seeded subset (default: whole sets).

A VAE has no classifier, so there is no accuracy file (the study published none for its
VAEs). In its place `platonic_loss_ffcv.csv`, `seed,frac_overlap,model_idx,val_loss`: each
model's test loss per image (summed BCE + beta * KL, the negative ELBO in nats, one
posterior sample from a fixed seed) on the set a ResNet's accuracy uses: the whole test set
for a dataset split, the shared classes' test images for a task split, -1 when no class is
shared. repr_sim.summary lists it in the accuracy table as a validation loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ... import models, results, splits
from ...errors import UserError
from ...models import vae as vae_model
from ...scoring import (
    EMPTY,
    SkipPair,
    first_line,
    pair_label,
    per_model_rows,
    probe_subset,
    read_state_dict,
    score_probes,
    similarity_rows,
)
from ..image.measure import (
    checkpoint_paths,
    in_distribution_sets,
    is_task,
    ood_probes,
    probe_beton,
    probe_columns,
    probe_dataset,
)

SIM_CSV = results.IMAGE_SIM_CSV
LOSS_CSV = results.VAE_LOSS_CSV
LOSS_SEED = 0  # the posterior samples of the test loss


def _cfg(args: dict) -> dict:
    return args["config"]


def csv_files(args: dict) -> dict[str, list[str]]:
    return {SIM_CSV: results.similarity_header(probe_columns(args)),
            LOSS_CSV: list(results.LOSS_COLUMNS)}


def sidecar(args: dict) -> dict:
    return {"arch": "vae", "model": "vae", "dataset": _cfg(args)["dataset"],
            "kind": "task" if is_task(args) else "ds"}


def inputs(pair_dir: Path, args: dict) -> list[Path]:
    return checkpoint_paths(pair_dir)


def cached_grey(cache: dict, path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """(grey images [N, 1, H, W] in [0, 1], labels) of a beton, decoded once per process."""
    from .train import load_grey

    key = ("vae_grey", str(Path(path).resolve()))
    if key not in cache:
        cache[key] = load_grey(path)
    return cache[key]


def load_vae(path: Path, cfg: dict, device: str) -> torch.nn.Module:
    state = read_state_dict(path)
    latent = int(cfg.get("latent_dim", vae_model.LATENT))
    model = models.build("vae", 1, latent_dim=latent)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not match the VAE (latent_dim {latent}): "
                        f"{first_line(e)}") from None
    return model.to(device).eval()


def extract(pair, x: torch.Tensor, indices: np.ndarray, *, batch_size: int, device: str):
    """Latent means [len(indices), latent_dim] of each model on x[indices], same batches."""
    if len(indices) == 0:
        return [None for _ in pair]
    idx = torch.as_tensor(indices, dtype=torch.int64)
    out = [[] for _ in pair]
    for start in range(0, len(idx), batch_size):
        batch = x[idx[start:start + batch_size]].to(device)
        for model, acc in zip(pair, out, strict=True):
            acc.append(model.features(batch))
    return [torch.cat(parts) for parts in out]


def test_loss(model, x: torch.Tensor, indices: np.ndarray, cfg: dict, *, batch_size: int,
              device: str) -> float:
    """Loss per image on x[indices]; -1 for no images."""
    from .train import mean_loss

    if len(indices) == 0:
        return EMPTY
    chosen = x[torch.as_tensor(indices, dtype=torch.int64)].to(device)
    return mean_loss(model, chosen, batch_size, float(cfg["recipe"]["beta"]), seed=LOSS_SEED)


def measure_pair(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    from .train import beton_path

    pair_dir = Path(pair_dir)
    where = pair_label(pair_dir)
    cfg = _cfg(args)
    split = splits.load(pair_dir / "split_indices")
    x, labels = cached_grey(cache, beton_path(cfg, cfg["dataset"], "test"))
    paths = checkpoint_paths(pair_dir)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SkipPair(f"missing checkpoint{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    pair = [load_vae(p, cfg, opts.device) for p in paths]
    common = dict(batch_size=opts.batch_size, device=opts.device)

    loss_idx, sets = in_distribution_sets(split, labels)
    losses = [test_loss(m, x, loss_idx, cfg, **common) for m in pair]
    feats = {col: extract(pair, x, idx[probe_subset(len(idx), opts.probe_size, col)], **common)
             for col, idx in sets.items()}
    for probe in ood_probes(cfg):
        col = f"metric_ood_all_{probe_dataset(probe)}"
        ood_x, _ = cached_grey(cache, probe_beton(probe))
        feats[col] = extract(pair, ood_x, probe_subset(len(ood_x), opts.probe_size, col), **common)
    scores = score_probes(feats, probe_columns(args), pair_dir=pair_dir, where=where, opts=opts)
    seed, overlap = int(args["seed"]), float(split.overlap)
    return {SIM_CSV: similarity_rows(seed, overlap, scores),
            LOSS_CSV: per_model_rows(seed, overlap, losses)}
