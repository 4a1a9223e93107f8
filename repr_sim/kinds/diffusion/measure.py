"""Measurement of one diffusion UNet pair (docs/protocol.md section 6.4), for repr_sim.measure (kind
"diffusion").

Models: `split_<i>/ckpt.pth`, the EMA weights (a UNet state_dict read with
weights_only=True) into the UNet the trainer built (args.json: preset, settings, classes).

Noisy inputs. For test image i and draw k, one timestep and one noise draw from generators
seeded by (features.seed, k), drawn for the whole test set at once, so image i gets the
same x_t = add_noise(x_0, noise, t) (DDPMScheduler(1000)) in every probe set, in every pair
and for both models (the study drew them unseeded). `features.timestep` >= 0 fixes t for
every image; `features.timesteps` = K > 1 averages the features (and the loss) of K draws.
Every image gets the null class label (the model's number of classes), as in the study.

Feature: the activation after the UNet's final GroupNorm and SiLU (diffusers `conv_act`,
read with a forward hook), per-channel spatial mean then per-channel spatial population
standard deviation: 2 x 96 = 192-d for the study's UNet. With `features.blocks`, every
block's output (down_<j>, mid, up_<j>) is pooled the same way and saved to
features/<column>_<block>_model<1|2>.npy, the input of the layer-wise calibration
(`reprsim similarity A B --calibrate`).

Probe sets: dataset split, the whole test set in the study's column `metric_train_ds`;
task split, `metric_overlap` (test images of the shared classes) and `metric_ood_one`
(test images of the classes only one model saw). `--probe-size` takes a seeded subset.
File `platonic_ffcv.csv` in the similarity schema, frac_overlap the realised overlap.

Per-model file `platonic_loss_ffcv.csv` (loss schema, no accuracy for a generative
model): each model's epsilon-prediction MSE per image on the in-distribution probe images
(`metric_train_ds`, or `metric_overlap` of a task split; -1 when no class is shared), at
the same seeded timesteps and noise, null label.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from ... import results, splits
from ...errors import UserError
from ...models import unet as unet_model
from ...scoring import (
    EMPTY,
    SkipPair,
    first_line,
    pair_label,
    per_model_rows,
    probe_subset,
    read_state_dict,
    save_features,
    score_probes,
    similarity_rows,
)

SIM_CSV = results.DIFFUSION_SIM_CSV
LOSS_CSV = results.DIFFUSION_LOSS_CSV


def _cfg(args: dict) -> dict:
    return args["config"]


def is_task(args: dict) -> bool:
    return _cfg(args)["split"] == "task"


def probe_columns(args: dict) -> list[str]:
    return list(results.DIFFUSION_TASK_PROBES if is_task(args) else results.DIFFUSION_DS_PROBES)


def csv_files(args: dict) -> dict[str, list[str]]:
    return {SIM_CSV: results.similarity_header(probe_columns(args)),
            LOSS_CSV: list(results.LOSS_COLUMNS)}


def sidecar(args: dict) -> dict:
    preset = args.get("unet_preset", _cfg(args).get("unet", {}).get("preset", "cifar32"))
    return {"arch": "unet", "model": f"unet_{preset}", "dataset": _cfg(args)["dataset"],
            "kind": "task" if is_task(args) else "ds"}


def checkpoint_paths(pair_dir: Path) -> list[Path]:
    from .train import CHECKPOINT

    return [Path(pair_dir) / f"split_{i}" / CHECKPOINT for i in (0, 1)]


def inputs(pair_dir: Path, args: dict) -> list[Path]:
    return checkpoint_paths(pair_dir)


# ---- models ---------------------------------------------------------------------------------
def load_unet(path: Path, cfg: dict, num_classes: int, device: str) -> torch.nn.Module:
    """The EMA UNet of a checkpoint, eval mode; a mismatch is one clear error."""
    from .train import build

    state = read_state_dict(path)
    model = build(cfg, num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not match the experiment's UNet: "
                        f"{first_line(e)}") from None
    return model.to(device).eval()


def pooled(h: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 2C]: per-channel spatial mean, then population std."""
    h = h.float()
    return torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3), unbiased=False)], dim=1)


def block_modules(model) -> dict[str, torch.nn.Module]:
    """The UNet's blocks in forward order: down_<j>, mid, up_<j>."""
    blocks = {f"down_{j}": b for j, b in enumerate(model.down_blocks)}
    blocks["mid"] = model.mid_block
    blocks.update({f"up_{j}": b for j, b in enumerate(model.up_blocks)})
    return blocks


@contextlib.contextmanager
def tap(model, blocks: bool):
    """Forward hooks: yields a dict that each forward fills with {"final": [B, 2C]} (the
    pooled `conv_act` output) and, with `blocks`, each block's pooled output."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output  # down blocks: (h, skips)
            seen[name] = pooled(out)
        return record

    targets = {"final": model.conv_act, **(block_modules(model) if blocks else {})}
    handles = [m.register_forward_hook(hook(name)) for name, m in targets.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


# ---- seeded noisy inputs ---------------------------------------------------------------------
def features_settings(cfg: dict) -> tuple[int, int, int, bool]:
    """(timestep (-1: random), draws per image, seed, blocks) of the config's [features]."""
    table = cfg.get("features", {})
    where = cfg.get("config_path", cfg.get("name", "config"))
    timestep, draws = table.get("timestep", -1), table.get("timesteps", 1)
    seed, blocks = table.get("seed", 0), bool(table.get("blocks", False))
    for key, value in (("timestep", timestep), ("timesteps", draws), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: features.{key} must be an integer, got {value!r}")
    if not -1 <= timestep < unet_model.TRAIN_TIMESTEPS:
        raise UserError(f"{where}: features.timestep must be -1 (random) or in 0.."
                        f"{unet_model.TRAIN_TIMESTEPS - 1}, got {timestep}")
    if draws < 1:
        raise UserError(f"{where}: features.timesteps must be positive, got {draws}")
    return timestep, draws, seed, blocks


def draws(n: int, shape: tuple[int, ...], *, timestep: int, seed: int, k: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps [n], noise [n, *shape]) of draw k for a set of n images: image i's
    values depend on (seed, k, n, i) only."""
    state = np.random.SeedSequence([seed, k, n]).generate_state(1)[0]
    gen = torch.Generator().manual_seed(int(state))
    t = torch.randint(0, unet_model.TRAIN_TIMESTEPS, (n,), generator=gen)
    if timestep >= 0:
        t = torch.full((n,), timestep, dtype=torch.int64)
    return t, torch.randn((n, *shape), generator=gen)


def cached_draws(cache: dict, key: str, n: int, shape, *, timestep: int, seed: int, k: int):
    name = ("diffusion_draws", key, n, tuple(shape), timestep, seed, k)
    if name not in cache:
        cache[name] = draws(n, tuple(shape), timestep=timestep, seed=seed, k=k)
    return cache[name]


def cached_test(cache: dict, path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """(test images float [N, 3, H, W] in [-1, 1], labels) of a beton, decoded once."""
    from ...data import betons
    from .train import to_unit_range

    key = ("diffusion_test", str(Path(path).resolve()))
    if key not in cache:
        images, labels = betons.load_arrays(path)
        cache[key] = (to_unit_range(torch.from_numpy(np.ascontiguousarray(images))), labels)
    return cache[key]


# ---- features ---------------------------------------------------------------------------------
def extract(pair, null_ids, x0: torch.Tensor, indices: np.ndarray, noisy: list, *,
            batch_size: int, device: str, blocks: bool = False, loss: bool = False):
    """Features of both models on test images x0[indices], averaged over the draws in
    `noisy` ([(t, noise)] over the whole test set): ([final features per model],
    [{block: features} per model], [mean loss per model or None])."""
    if len(indices) == 0:
        return [None, None], [{}, {}], [EMPTY, EMPTY]
    scheduler = unet_model.make_scheduler()
    idx = torch.as_tensor(indices, dtype=torch.int64)
    sums = [dict() for _ in pair]
    losses = [0.0 for _ in pair]
    with contextlib.ExitStack() as stack, torch.no_grad():
        taps = [stack.enter_context(tap(m, blocks)) for m in pair]
        for t_all, noise_all in noisy:
            for start in range(0, len(idx), batch_size):
                part = idx[start:start + batch_size]
                t, noise = t_all[part], noise_all[part]
                x_t = scheduler.add_noise(x0[part], noise, t).to(device)
                for i, model in enumerate(pair):
                    labels = torch.full((len(part),), int(null_ids[i]), dtype=torch.int64)
                    pred = model(x_t, t.to(device), class_labels=labels.to(device)).sample
                    if loss:
                        err = (pred.float() - noise.to(device)) ** 2
                        losses[i] += float(err.mean(dim=(1, 2, 3)).sum())
                    for name, value in taps[i].items():
                        sums[i].setdefault(name, []).append(value.cpu())
    feats = []
    for acc in sums:
        # draws outer, batches inner: reshape to [draws, n, D] and average the draws
        merged = {name: torch.cat(parts).reshape(len(noisy), len(idx), -1).mean(0)
                  for name, parts in acc.items()}
        feats.append(merged)
    final = [f.pop("final") for f in feats]
    mean_loss = [v / (len(idx) * len(noisy)) if loss else None for v in losses]
    return final, feats, mean_loss


def measure_pair(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    from ..image.measure import in_distribution_sets
    from .train import beton_path

    pair_dir = Path(pair_dir)
    where = pair_label(pair_dir)
    cfg = _cfg(args)
    timestep, n_draws, seed, blocks = features_settings(cfg)
    split = splits.load(pair_dir / "split_indices")
    test_path = beton_path(cfg, "test")
    x0, labels = cached_test(cache, test_path)
    paths = checkpoint_paths(pair_dir)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SkipPair(f"missing checkpoint{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    classes = [int(c) for c in args.get("num_classes", [])]
    if len(classes) != 2:
        raise UserError(f"{pair_dir / 'args.json'}: no num_classes for both models")
    pair = [load_unet(p, cfg, c, opts.device) for p, c in zip(paths, classes, strict=True)]
    noisy = [cached_draws(cache, str(test_path), len(x0), x0.shape[1:], timestep=timestep,
                          seed=seed, k=k) for k in range(n_draws)]
    _, sets = in_distribution_sets(split, labels)
    columns = probe_columns(args)
    sets = dict(zip(columns, sets.values(), strict=True))  # the study's names for the columns
    common = dict(batch_size=opts.batch_size, device=opts.device, blocks=blocks)
    feats, losses = {}, [EMPTY, EMPTY]
    for col, idx in sets.items():
        chosen = idx[probe_subset(len(idx), opts.probe_size, col)]
        final, per_block, loss = extract(pair, classes, x0, chosen, noisy, loss=col == columns[0],
                                         **common)
        feats[col] = final
        if col == columns[0]:
            losses = [EMPTY if v is None else v for v in loss]
        for block in per_block[0]:
            save_features(pair_dir, f"{col}_{block}", [per_block[0][block], per_block[1][block]])
    scores = score_probes(feats, columns, pair_dir=pair_dir, where=where, opts=opts)
    overlap = float(split.overlap)
    return {SIM_CSV: similarity_rows(int(args["seed"]), overlap, scores),
            LOSS_CSV: per_model_rows(int(args["seed"]), overlap, losses)}
