"""Measurement of one label partition (docs/protocol.md sections 2-3), for repr_sim.measure
(kind "partition").

A pair folder seed_<S>/frac_<F>/ of the partition experiment holds the 2 or 3 models of
one partition (repr_sim.kinds.partition.train; args.json "partition" and "models"). Each model
is loaded as the image measurer loads a ResNet (repr_sim.kinds.image.measure.load_model:
weights_only, the architecture and head size the trainer built), and every probe set is
run through all models of the partition batch by batch (the same tensors in the same
order for every model), so each model's features are extracted once and every pair of
the partition (repr_sim.data.partition.pairs: 1, 3 or 1 pairs) is scored from them.

Probe sets (columns in the study's order, sorted by name):
- `partition_metric`: the ColorShapeDigit val set (the experiment's "test" beton);
- one column per entry of the config's `[probes.ood]` table, column -> probe beton
  (test part), all at the dataset's 28x28: cifar10 (cifar10_28), digit (digit_only),
  mnist (mnist_28), shape (shape_only), svhn (svhn_28).
Each set is decoded once per process and normalised with its dataset entry's mean/std
(the study's CIFAR-10 constants). At most `--probe-size` inputs per set, by default the
study's 42 batches of 512 (21,504): a seeded random subset (repr_sim.measure.probe_subset)
of a larger set, the same for every pair.

Files: `platonic_ffcv.csv`, seed,metric,partition,model0,model1,<columns>, one row per
metric per compared pair; `platonic_acc_ffcv.csv`, seed,partition,model,acc: each model's
top-1 accuracy on the whole val set under its own label map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ... import results, splits
from ...data import partition
from ...errors import UserError
from ...scoring import (
    SkipPair,
    format_float,
    metric_rows,
    pair_label,
    probe_subset,
    save_features,
    score_probe,
)
from ..image.measure import (
    accuracy,
    cached_arrays,
    extract,
    load_model,
    mean_std,
    probe_beton,
    probe_dataset,
)
from ..image.measure import sidecar as image_sidecar

SIM_CSV = results.IMAGE_SIM_CSV
ACC_CSV = results.IMAGE_ACC_CSV
VAL_COLUMN = results.PARTITION_VAL_PROBE


def _cfg(args: dict) -> dict:
    return args["config"]


def ood_probes(cfg: dict) -> dict[str, str]:
    """Column -> probe beton name, from the config's [probes.ood] table."""
    table = cfg.get("probes", {}).get("ood", {})
    where = cfg.get("config_path", cfg.get("name"))
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise UserError(f"{where}: probes.ood must be a table of column = \"beton name\"")
    if VAL_COLUMN in table:
        raise UserError(f"{where}: probes.ood must not name the column {VAL_COLUMN} "
                        "(the val set's own column)")
    return dict(table)


def probe_columns(args: dict) -> list[str]:
    return sorted([VAL_COLUMN, *ood_probes(_cfg(args))])


def csv_files(args: dict) -> dict[str, list[str]]:
    return {SIM_CSV: results.partition_header(probe_columns(args)),
            ACC_CSV: list(results.PARTITION_ACC_COLUMNS)}


def sidecar(args: dict) -> dict:
    return {**image_sidecar(args), "kind": "partition"}


def partition_of(args: dict, pair_dir: Path) -> tuple[str, tuple[str, ...]]:
    """(partition, its models) of a pair folder, checked against the trainer's record."""
    part = partition.partition_of_frac(args["frac"])
    names = partition.PARTITIONS[part]
    if args.get("partition", part) != part or tuple(args.get("models", names)) != names:
        raise UserError(f"{pair_dir / 'args.json'}: records {args.get('partition')} "
                        f"{args.get('models')}, but frac {args['frac']:g} is {part} {list(names)}")
    return part, names


def inputs(pair_dir: Path, args: dict) -> list[Path]:
    from ..image.train import CHECKPOINT

    _, names = partition_of(args, pair_dir)
    return [Path(pair_dir) / f"split_{i}" / CHECKPOINT for i in range(len(names))]


def measure_pair(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    from ..image.train import beton

    pair_dir = Path(pair_dir)
    where = pair_label(pair_dir)
    cfg = _cfg(args)
    part, names = partition_of(args, pair_dir)
    paths = inputs(pair_dir, args)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SkipPair(f"missing checkpoint{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    models = [load_model(p, cfg, partition.num_classes(n), opts.device)
              for p, n in zip(paths, names, strict=True)]
    common = dict(batch_size=opts.batch_size, device=opts.device,
                  precision=opts.precision or "fp16")

    # The val set: every image for the accuracies, a subset of them for the probe.
    val_images, val_labels = cached_arrays(cache, beton(cfg, "test"))
    mean, std = mean_std(cfg["dataset"])
    everything = np.arange(len(val_labels), dtype=np.int64)
    val_feats = extract(models, val_images, everything, mean=mean, std=std, **common)
    accs = [accuracy(m, f, splits.relabel(val_labels, partition.label_map(n)))
            for m, f, n in zip(models, val_feats, names, strict=True)]

    feats: dict[str, list[torch.Tensor | None]] = {}
    for column in probe_columns(args):
        if column == VAL_COLUMN:
            pos = torch.as_tensor(probe_subset(len(val_labels), opts.probe_size, column))
            feats[column] = [f[pos.to(f.device)] for f in val_feats]
            continue
        name = ood_probes(cfg)[column]
        images, _ = cached_arrays(cache, probe_beton(name))
        pos = probe_subset(len(images), opts.probe_size, column)
        m, s = mean_std(probe_dataset(name))
        feats[column] = extract(models, images, pos, mean=m, std=s, **common)
    if opts.save_features:  # features/<column>_model<i>.npy, i = 1.. in split order
        for column, fs in feats.items():
            save_features(pair_dir, column, fs)

    seed = int(args["seed"])
    sim_rows = []
    for a, b in partition.pairs(part):
        i, j = names.index(a), names.index(b)
        scores = {c: score_probe(feats[c][i], feats[c][j], name=c, where=f"{where} {a}/{b}",
                                 topk=opts.topk) for c in feats}
        sim_rows += metric_rows(seed, [part, a, b], scores)
    acc_rows = [[str(seed), part, n, format_float(a)] for n, a in zip(names, accs, strict=True)]
    return {SIM_CSV: sim_rows, ACC_CSV: acc_rows}


def summary(files: dict[str, dict]) -> str:
    """'acc shape 0.99, digit 0.99; cka shape/digit partition_metric 0.12, ...'."""
    sim, acc = files[SIM_CSV], files[ACC_CSV]
    parts = ["acc " + ", ".join(f"{row[2]} {float(row[3]):.3f}" for row in acc["rows"])]
    header = sim["header"]
    for row in sim["rows"]:
        if row[1] == "cka":
            values = ", ".join(f"{c} {v}" for c, v in zip(header[5:], row[5:], strict=True))
            parts.append(f"cka {row[3]}/{row[4]} {values}")
    return "; ".join(parts)
