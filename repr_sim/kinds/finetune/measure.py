"""Measurement of one fine-tuned pair (docs/protocol.md section 6.2), for repr_sim.measure.

Models: `split_<i>/checkpoint.pth` (a state_dict, read with weights_only=True) loaded into
`timm.create_model(arch, num_classes=<the model's head>, **model_kwargs)`, eval mode, fp32.
Features: timm's pre-logits (repr_sim.models.timm_models.pre_logits: the pooled last stage
of a ResNet, the CLS token after the final norm of a ViT), fp32, no autocast; every batch
goes through both models, which see the same tensors. Inputs go through the experiment's
pipeline (repr_sim.kinds.finetune.train.Pipeline: upsampled on the device, normalised as
configured). `extract(..., layers=True)` gives the layer-wise features instead (each
ResNet stage pooled, each ViT block's CLS token).

Probe sets and files:
- dataset split: one column `metric_<dataset>` per beton of `[probes] sets` (test part;
  the study's cifar100, tinyimagenet, cifar10), whatever the training dataset; accuracy of
  each model on the experiment's whole test set;
- task split: `metric_overlap` (test images of the shared classes), `metric_ood_one`
  (those of the classes only one model saw), then the `sets` columns; accuracy on the
  shared-class images under each model's label map, -1 when none is shared;
  `platonic_ffcv.csv` (seed,metric,frac_overlap,<columns>) and `platonic_acc_ffcv.csv`
  (seed,frac_overlap,model_idx,acc), realised overlap from the saved split;
- partitions: `partition_metric` = the ColorShapeDigit val set, at most --probe-size
  images (default the study's 42 batches of 512), a seeded subset; every pair of the
  partition; `platonic_ffcv.csv` (seed,metric,partition,model0,model1,partition_metric)
  and `platonic_acc_ffcv.csv` (seed,partition,model,acc; acc with 6 decimals).
Accuracy is the head applied to the fp32 pre-logit features just extracted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ... import results, splits
from ...errors import UserError
from ...models import timm_models
from ...scoring import (
    EMPTY,
    SkipPair,
    first_line,
    format_metric,
    metric_rows,
    pair_label,
    per_model_rows,
    probe_subset,
    read_state_dict,
    save_features,
    score_probe,
    score_probes,
    similarity_rows,
)

SIM_CSV = results.IMAGE_SIM_CSV
ACC_CSV = results.IMAGE_ACC_CSV
PARTITION_PROBE_SIZE = 42 * 512  # the study's: 42 batches of 512 of the val set


def _cfg(args: dict) -> dict:
    return args["config"]


def split_of(args: dict) -> str:
    return _cfg(args)["split"]


def probe_sets(cfg: dict) -> list[str]:
    sets = cfg.get("probes", {}).get("sets", [])
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise UserError(f"{cfg.get('config_path', cfg.get('name'))}: probes.sets must be a list "
                        f"of beton names")
    return sets


def set_column(name: str) -> str:
    from ..image.measure import probe_dataset

    return f"metric_{probe_dataset(name)}"


def probe_columns(args: dict) -> list[str]:
    if split_of(args) == "partition":
        return [results.PARTITION_VAL_PROBE]
    columns = [results.OVERLAP_PROBE, results.OOD_ONE_PROBE] if split_of(args) == "task" else []
    for name in probe_sets(_cfg(args)):
        column = set_column(name)
        if column in columns:
            raise UserError(f"{_cfg(args).get('config_path', args.get('experiment'))}: two probe "
                            f"sets give the column {column}")
        columns.append(column)
    return columns


def csv_files(args: dict) -> dict[str, list[str]]:
    if split_of(args) == "partition":
        return {SIM_CSV: results.partition_header(probe_columns(args)),
                ACC_CSV: list(results.PARTITION_ACC_COLUMNS)}
    return {SIM_CSV: results.similarity_header(probe_columns(args)),
            ACC_CSV: list(results.ACCURACY_COLUMNS)}


def sidecar(args: dict) -> dict:
    arch = str(_cfg(args)["arch"])
    kind = {"dataset": "ds", "task": "task", "partition": "partition"}[split_of(args)]
    return {"arch": timm_models.family(arch), "model": arch, "dataset": _cfg(args)["dataset"],
            "kind": kind, "pretrained": _cfg(args).get("pretrained")}


def checkpoint_paths(pair_dir: Path, n: int = 2) -> list[Path]:
    from .train import CHECKPOINT

    return [Path(pair_dir) / f"split_{i}" / CHECKPOINT for i in range(n)]


def inputs(pair_dir: Path, args: dict) -> list[Path]:
    return checkpoint_paths(pair_dir, len(args.get("num_classes", [0, 0])))


# ---- models and features ------------------------------------------------------------------------
def load_model(path: Path, cfg: dict, num_classes: int, device: str) -> torch.nn.Module:
    """The fine-tuned model in `path`, eval mode, fp32, on `device`."""
    from .train import to_device

    state = read_state_dict(path)
    model = timm_models.create(cfg["arch"], num_classes, cfg.get("model_kwargs"))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not match {cfg['arch']} ({num_classes} classes): "
                        f"{first_line(e)}") from None
    return to_device(model, device).eval()


def batches(images: np.ndarray, indices: np.ndarray, batch_size: int, device: str):
    """Raw pixel batches [B, 3, h, w] of images[indices], in order (no augmentation)."""
    from ...data import loaders
    from .train import RAW

    loader = loaders.ArrayLoader(images, np.zeros(len(images), dtype=np.int64), indices=indices,
                                 batch_size=batch_size, train=False, device=device, **RAW)
    for x, _ in loader:
        yield x


def extract(models: list, pipe, images: np.ndarray, indices: np.ndarray, *, batch_size: int,
            device: str, layers: bool = False) -> list:
    """Per model: features [len(indices), D] (pre-logits), or with `layers` a list of one
    [len(indices), D_l] tensor per stage/block; None for no images."""
    from .train import model_input

    if len(indices) == 0:
        return [None for _ in models]
    out: list[list] = [[] for _ in models]
    with torch.no_grad():
        for raw in batches(images, indices, batch_size, device):
            x = model_input(pipe, raw, device)
            for model, acc in zip(models, out, strict=True):
                f = timm_models.layer_features(model, x) if layers else timm_models.pre_logits(model, x)
                acc.append(f)
    if layers:
        return [[torch.cat([b[k] for b in parts]).float() for k in range(len(parts[0]))]
                for parts in out]
    return [torch.cat(parts).float() for parts in out]


def accuracy(model, feats, labels: np.ndarray) -> float:
    if feats is None or len(labels) == 0:
        return EMPTY
    head = timm_models.classifier(model)
    with torch.no_grad():
        logits = head(feats)
    return float((logits.argmax(1).cpu() == torch.as_tensor(labels)).sum()) / len(labels)


def cached_arrays(cache: dict, path: Path):
    from ..image.measure import cached_arrays as image_cached

    return image_cached(cache, path)


# ---- the pair ---------------------------------------------------------------------------------
def models_of(pair_dir: Path, args: dict, device: str) -> list:
    paths = checkpoint_paths(pair_dir, len(args["num_classes"]))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SkipPair(f"missing checkpoint{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return [load_model(p, _cfg(args), int(n), device)
            for p, n in zip(paths, args["num_classes"], strict=True)]


def measure_pair(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    if split_of(args) == "partition":
        return measure_partition(Path(pair_dir), args, opts, cache)
    from ..image.measure import in_distribution_sets
    from ..image.train import model_data
    from .train import beton, pipeline

    pair_dir = Path(pair_dir)
    cfg = _cfg(args)
    split = splits.load(pair_dir / "split_indices")
    images, labels = cached_arrays(cache, beton(cfg, "test"))
    data = [model_data(cfg, split, i, labels) for i in (0, 1)]
    models = models_of(pair_dir, args, opts.device)
    pipe = pipeline(cfg)
    common = dict(batch_size=opts.batch_size, device=opts.device)

    acc_idx, sets = in_distribution_sets(split, labels)
    if split.kind == "dataset":
        sets = {}  # the dataset split's probes are the named test sets
    acc_feats = extract(models, pipe, images, acc_idx, **common)
    accs = []
    for model, d, f in zip(models, data, acc_feats, strict=True):
        target = labels[acc_idx] if d.label_map is None else splits.relabel(labels[acc_idx], d.label_map)
        accs.append(accuracy(model, f, target))

    feats: dict[str, list] = {}
    for column, idx in sets.items():
        chosen = idx[probe_subset(len(idx), opts.probe_size, column)]
        feats[column] = extract(models, pipe, images, chosen, **common)
    for name in probe_sets(cfg):
        column = set_column(name)
        probe_images, _ = cached_arrays(cache, beton(cfg, "test", name))
        pos = probe_subset(len(probe_images), opts.probe_size, column)
        feats[column] = extract(models, pipe, probe_images, pos, **common)
    scores = score_probes(feats, probe_columns(args), pair_dir=pair_dir,
                          where=pair_label(pair_dir), opts=opts)
    seed, overlap = int(args["seed"]), float(split.overlap)
    return {SIM_CSV: similarity_rows(seed, overlap, scores),
            ACC_CSV: per_model_rows(seed, overlap, accs)}


def measure_partition(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    from ...data import partition
    from .train import beton, pipeline

    cfg = _cfg(args)
    part = partition.partition_of_frac(args["frac"])
    names = list(partition.PARTITIONS[part])
    models = models_of(pair_dir, args, opts.device)
    images, labels = cached_arrays(cache, beton(cfg, "test"))
    pipe = pipeline(cfg)
    common = dict(batch_size=opts.batch_size, device=opts.device)
    everything = np.arange(len(labels), dtype=np.int64)
    feats = extract(models, pipe, images, everything, **common)
    accs = [accuracy(m, f, splits.relabel(labels, partition.label_map(n)))
            for m, f, n in zip(models, feats, names, strict=True)]
    column = results.PARTITION_VAL_PROBE
    size = opts.probe_size if opts.probe_size is not None else PARTITION_PROBE_SIZE
    pos = torch.as_tensor(probe_subset(len(labels), size, column))
    probe = [f[pos.to(f.device)] for f in feats]
    if opts.save_features:
        save_features(pair_dir, column, probe)
    seed, rows = str(int(args["seed"])), []
    for a, b in partition.pairs(part):
        i, j = names.index(a), names.index(b)
        s = score_probe(probe[i], probe[j], name=column, where=f"{pair_label(pair_dir)} {a}/{b}",
                        topk=opts.topk)
        rows += metric_rows(int(seed), [part, a, b], {column: s})
    acc_rows = [[seed, part, n, format_metric(a)] for n, a in zip(names, accs, strict=True)]
    return {SIM_CSV: rows, ACC_CSV: acc_rows}


def summary(files: dict[str, dict]) -> str:
    """'acc 0.91 / 0.90; cka metric_cifar100 0.95, ...' (partitions: per compared pair)."""
    sim, acc = files[SIM_CSV], files[ACC_CSV]
    parts = ["acc " + " / ".join(f"{float(row[-1]):.3f}" for row in acc["rows"])]
    header = sim["header"]
    start = header.index("frac_overlap") + 1 if "frac_overlap" in header else len(results.PARTITION_KEYS)
    for row in sim["rows"]:
        if row[1] == "cka":
            who = f" {row[3]}/{row[4]}" if "partition" in header else ""
            parts.append(f"cka{who} " + ", ".join(
                f"{c.removeprefix('metric_')} {v}" for c, v in zip(header[start:], row[start:], strict=True)))
    return "; ".join(parts)


