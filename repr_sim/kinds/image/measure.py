"""Measurement of one image pair (docs/protocol.md section 3), for repr_sim.measure (kind "image").

Models. Both checkpoints (`split_<i>/checkpoint.pth`, a state_dict) are loaded with
`torch.load(weights_only=True)` into the architecture, width and head size the trainer
built (repr_sim.kinds.image.train: `model_data` gives each model's classes and label map,
`models.build(cfg["arch"], n, width=cfg.get("width", 64))`), in eval mode; on CUDA
channels-last with fp16 autocast, as the trainer evaluates.

Probe sets, in the CSV's column order:
- dataset split: `metric_overlap` = the whole in-distribution test set;
- task split: `metric_overlap` = test images of the shared classes, `metric_ood_one` =
  test images of the classes only one model was trained on;
- then `metric_ood_all_<dataset>` for every OOD probe beton of the config's
  `[probes] ood` list (test part), in config order; <dataset> is the registry dataset
  the beton was written from (its sidecar says so: mnist_64 -> mnist).
Each set is decoded once per process (betons.load_arrays, cached across pairs) and fed
through an in-memory eval loader (loaders.ArrayLoader, train=False: no augmentation,
sequential order, the dataset entry's mean/std); every batch goes through model A and
then model B, so both see exactly the same tensors in the same order. `--probe-size N`
keeps a seeded random subset of N inputs of each set (measure.probe_subset).

Accuracy: dataset split, each model on the whole test set; task split, on the test
images of the shared classes with labels mapped through the model's label map (the
shared classes come first and map identically in both), -1 when no class is shared.
Always on the whole set, whatever --probe-size says. The logits are the model's head
`model.fc` applied to the features just extracted (the features are by construction the
head's input, repr_sim.features), so the in-distribution set is run through each model once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ... import features, models, results, splits
from ...errors import UserError
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

SIM_CSV = results.IMAGE_SIM_CSV
ACC_CSV = results.IMAGE_ACC_CSV


# ---- config --------------------------------------------------------------------------------
def _cfg(args: dict) -> dict:
    return args["config"]


def is_task(args: dict) -> bool:
    return _cfg(args)["split"] == "task"


def ood_probes(cfg: dict) -> list[str]:
    """The OOD probe beton names of the config (`[probes] ood`), in order."""
    probes = cfg.get("probes", {}).get("ood", [])
    if not isinstance(probes, list) or not all(isinstance(p, str) for p in probes):
        raise UserError(f"{cfg.get('config_path', cfg.get('name'))}: probes.ood must be a list of beton names")
    return probes


def probe_dataset(probe: str) -> str:
    """The registry dataset an OOD probe beton was written from: its sidecar's "dataset"
    (write_dataset records it), else the dataset whose beton name at the beton's
    resolution is `probe` (registry.beton_name), else the name itself."""
    from ...data import betons, registry

    info = betons.read_sidecar(betons.beton_path(probe, "test")) or {}
    known = registry.names()
    if info.get("dataset") in known:
        return info["dataset"]
    if probe in known:
        return probe
    side = info.get("resolution") or (info.get("image_shape") or [None])[0]
    if side:
        for name in known:
            if registry.beton_name(name, int(side)) == probe:
                return name
    return probe


def probe_columns(args: dict) -> list[str]:
    """The probe columns of this pair's similarity file, in order."""
    columns = [results.OVERLAP_PROBE] + ([results.OOD_ONE_PROBE] if is_task(args) else [])
    for probe in ood_probes(_cfg(args)):
        column = f"{results.OOD_ALL_PREFIX}{probe_dataset(probe)}"
        if column in columns:
            raise UserError(f"{_cfg(args).get('config_path', args.get('experiment'))}: two OOD probes "
                            f"give the column {column}")
        columns.append(column)
    return columns


def csv_files(args: dict) -> dict[str, list[str]]:
    return {SIM_CSV: results.similarity_header(probe_columns(args)),
            ACC_CSV: list(results.ACCURACY_COLUMNS)}


def sidecar(args: dict) -> dict:
    arch = str(_cfg(args).get("arch", args.get("arch", "")))
    return {"arch": "resnet" if arch.startswith("resnet") else arch, "model": arch,
            "dataset": _cfg(args)["dataset"], "kind": "task" if is_task(args) else "ds"}


def checkpoint_paths(pair_dir: Path) -> list[Path]:
    from .train import CHECKPOINT

    return [Path(pair_dir) / f"split_{i}" / CHECKPOINT for i in (0, 1)]


def inputs(pair_dir: Path, args: dict) -> list[Path]:
    return checkpoint_paths(pair_dir)


# ---- data ----------------------------------------------------------------------------------
def cached_arrays(cache: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a beton, decoded once per process."""
    from ...data import betons

    key = ("image_arrays", str(Path(path).resolve()))
    if key not in cache:
        cache[key] = betons.load_arrays(path)
    return cache[key]


def probe_beton(name: str) -> Path:
    from ...data import betons

    path = betons.beton_path(name, "test")
    if not path.is_file():
        raise UserError(f"missing OOD probe beton {path}: write it with `reprsim write-data` "
                        f"(see the training folder's run_write_ffcv_data.sh)")
    return path


def mean_std(dataset: str):
    from ...data import registry

    entry = registry.get(dataset) if dataset in registry.names() else None
    return (entry.mean, entry.std) if entry else (registry.MEAN, registry.STD)


# ---- models --------------------------------------------------------------------------------
def load_model(path: Path, cfg: dict, num_classes: int, device: str) -> torch.nn.Module:
    """The trained model in `path`, built as the trainer built it, in eval mode on `device`."""
    from .train import prepare_model

    state = read_state_dict(path)
    arch, width = cfg["arch"], cfg.get("width", 64)
    # Built on the meta device (no random initialisation to throw away), then given the
    # checkpoint's tensors; load_state_dict still checks every key and shape (strict).
    with torch.device("meta"):
        model = models.build(arch, num_classes, width=width)
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not match {arch} (width {width}, {num_classes} "
                        f"classes): {first_line(e)}") from None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise UserError(f"checkpoint {path} leaves parts of {arch} unset")
    return prepare_model(model, device).eval()


def extract(pair: list[torch.nn.Module], images: np.ndarray, indices: np.ndarray, *,
            mean, std, batch_size: int, device: str,
            precision: str = "fp16") -> list[torch.Tensor | None]:
    """Features [len(indices), D] of each model on images[indices], same batches for both."""
    from ...data import loaders
    from .train import autocast

    if len(indices) == 0:
        return [None for _ in pair]
    loader = loaders.ArrayLoader(images, np.zeros(len(images), dtype=np.int64), indices=indices,
                                batch_size=batch_size, train=False, device=device, mean=mean, std=std)
    out: list[list[torch.Tensor]] = [[] for _ in pair]
    with torch.no_grad(), autocast(device, precision):
        for x, _ in loader:
            for model, acc in zip(pair, out, strict=True):
                acc.append(features.image_features(model, x).float())
    return [torch.cat(parts) for parts in out]


def accuracy(model: torch.nn.Module, feats: torch.Tensor | None, labels: np.ndarray) -> float:
    """Top-1 accuracy of the model's head on its features; -1 for no images."""
    if feats is None or len(labels) == 0:
        return EMPTY
    with torch.no_grad():
        logits = model.fc(feats.to(model.fc.weight.dtype))
    target = torch.as_tensor(labels, device=logits.device)
    return float((logits.argmax(1) == target).sum().item()) / len(labels)


# ---- the pair ------------------------------------------------------------------------------
def in_distribution_sets(split, test_labels: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(indices of the accuracy set, {probe column: test indices}) of the test set."""
    if split.kind == "task":
        shared = splits.class_indices(test_labels, split.shared_classes)
        only_one = sorted(set(split.classes_a) ^ set(split.classes_b))
        return shared, {"metric_overlap": shared,
                        "metric_ood_one": splits.class_indices(test_labels, only_one)}
    everything = np.arange(len(test_labels), dtype=np.int64)
    return everything, {"metric_overlap": everything}


def measure_pair(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    from .train import beton, model_data

    pair_dir = Path(pair_dir)
    where = pair_label(pair_dir)
    cfg = _cfg(args)
    split = splits.load(pair_dir / "split_indices")
    images, labels = cached_arrays(cache, beton(cfg, "test"))
    data = [model_data(cfg, split, i, labels) for i in (0, 1)]
    paths = checkpoint_paths(pair_dir)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SkipPair(f"missing checkpoint{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    pair = [load_model(path, cfg, d.num_classes, opts.device) for path, d in zip(paths, data, strict=True)]
    mean, std = mean_std(cfg["dataset"])
    common = dict(batch_size=opts.batch_size, device=opts.device,
                  precision=opts.precision or "fp16")

    # In-distribution: one pass over everything the accuracy and the probe sets need.
    acc_idx, sets = in_distribution_sets(split, labels)
    chosen = {col: idx[probe_subset(len(idx), opts.probe_size, col)] for col, idx in sets.items()}
    needed = np.unique(np.concatenate([acc_idx, *chosen.values()]))
    feats = extract(pair, images, needed, mean=mean, std=std, **common)

    def rows_of(idx: np.ndarray) -> list[torch.Tensor | None]:
        if len(idx) == 0:
            return [None, None]
        pos = torch.as_tensor(np.searchsorted(needed, idx), device=feats[0].device)
        return [f[pos] for f in feats]

    acc_feats = rows_of(acc_idx)
    accs = []
    for model, d, f in zip(pair, data, acc_feats, strict=True):
        target = labels[acc_idx] if d.label_map is None else splits.relabel(labels[acc_idx], d.label_map)
        accs.append(accuracy(model, f, target))

    probe_feats: dict[str, list] = {col: rows_of(idx) for col, idx in chosen.items()}
    for probe in ood_probes(cfg):
        col = f"metric_ood_all_{probe_dataset(probe)}"
        ood_images, _ = cached_arrays(cache, probe_beton(probe))
        pos = probe_subset(len(ood_images), opts.probe_size, col)
        ood_mean, ood_std = mean_std(probe_dataset(probe))
        probe_feats[col] = extract(pair, ood_images, pos, mean=ood_mean, std=ood_std, **common)
    scores = score_probes(probe_feats, probe_columns(args), pair_dir=pair_dir, where=where, opts=opts)
    seed, overlap = int(args["seed"]), float(split.overlap)
    return {SIM_CSV: similarity_rows(seed, overlap, scores),
            ACC_CSV: per_model_rows(seed, overlap, accs)}
