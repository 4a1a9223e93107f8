"""Train one label partition (docs/protocol.md section 2, task-only overlap) into its run folder.

The partition recipe is the image recipe with other config values: every model is
trained by repr_sim.kinds.image.train's `Trainer` (SGD, triangular schedule, label smoothing,
per-epoch resume checkpoints, fp16 on CUDA) on *all* images of the ColorShapeDigit train
beton, with the label map of its label set (repr_sim.data.partition) applied by the
loader, and evaluated each epoch on the val beton (the registry's "test" split) under the
same label map.

`--frac` picks the partition (0 -> partition1, 0.5 -> partition2, 1 -> partition3; see
repr_sim.data.partition), so one pair folder seed_<S>/frac_<F>/ holds the 2 or 3 models of
one partition: split_<i>/ is model i of `partition.PARTITIONS[p]`, args.json lists them
under "models" with their class counts. There is no split of the examples, so there is no
split_indices/ folder. Each model's torch seed and loader order come from (seed, the
model's position among all seven), so all0 and all1 start from different weights and
every model of one seed differs. `done` is written when every model of the partition is
trained; a rerun resumes as the image trainer does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import pair as common
from ...data import partition
from ...errors import UserError
from ..image import train as image
from . import KIND

OPTION_KEYS = image.OPTION_KEYS


def check_config(cfg: dict) -> None:
    where = cfg.get("config_path", cfg.get("name", "config"))
    if cfg.get("split") != "partition":
        raise UserError(f"{where}: a partition experiment has split = \"partition\", "
                        f"got {cfg.get('split')!r}")
    # The image trainer's checks of dataset, arch, recipe, augment and loader; it also
    # wants a split kind of its own, which a partition does not have.
    image.check_config({**cfg, "split": "dataset"})


def model_data(models: tuple[str, ...], n_train: int) -> list[image.ModelData]:
    """What each model of a partition trains on: every image, its own label map."""
    return [image.ModelData(index=i, train_indices=np.arange(n_train, dtype=np.int64),
                            test_indices=None, label_map=partition.label_map(m),
                            num_classes=partition.num_classes(m))
            for i, m in enumerate(models)]


def _check_labels(path: Path, labels: np.ndarray) -> None:
    if labels.min() < 0 or labels.max() >= partition.NUM_CLASSES:
        raise UserError(f"{path}: labels must be the 800-class ColorShapeDigit label "
                        f"(0..{partition.NUM_CLASSES - 1}), found {labels.min()}..{labels.max()}")


def prepare_pair(cfg: dict, seed: int, frac: float, device: str) -> common.PairJob:
    """The models of the partition `frac` stands for, checked before anything is written."""
    check_config(cfg)
    part = partition.partition_of_frac(frac)
    train_path, test_path = image.beton(cfg, "train"), image.beton(cfg, "test")
    train_labels = image.read_labels(cfg, train_path)
    _check_labels(train_path, train_labels)
    _check_labels(test_path, image.read_labels(cfg, test_path))
    names = partition.PARTITIONS[part]
    data = model_data(names, len(train_labels))

    def train_model(i: int, model_dir: Path) -> None:
        label = f"{cfg['name']} seed {seed} {part} {names[i]}"
        model_seed = image.model_seed(seed, partition.model_index(names[i]))
        image.Trainer(cfg, data[i], model_dir, device, model_seed, label).run()

    fields = {**image.pair_fields(cfg, data), "partition": part, "models": list(names)}
    return common.PairJob(fields=fields, n_models=len(names), train_model=train_model,
                          checkpoint=image.CHECKPOINT,
                          steps=[image.total_steps(cfg, len(d.train_indices)) for d in data])


def train_pair(cfg: dict, seed: int, frac: float, *, device: str | None = None) -> Path:
    """Train the models of the partition `frac` stands for; returns the pair folder."""
    return common.train(cfg, seed, frac, prepare_pair, device=image.resolve_device(device),
                        defaults=KIND.defaults)
