"""Writing every beton an experiment reads, in one call: the label-partition experiment's.

This sits above the beton writer and the registry (it calls both), so that the dataset
modules the registry reads from (repr_sim.data.partition, .shapes, .shapetree) never
import the writer back.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..paths import data_root
from . import betons, registry
from .partition import (
    DATASET,
    GENERATED_SIZES,
    PROBES,
    RESOLUTION,
    SPLIT_FOLDERS,
    TREE_HINT,
    tree_root,
    write_generated_tree,
)
from .shapetree import PARTITION_DIR

RAW_PROBES = ("cifar10", "mnist", "svhn")  # probes read from raw files (downloadable)


def prepare_partition(root: Path | str | None = None, *, generate: bool = False,
                      n_train: int = GENERATED_SIZES["train"], n_val: int = GENERATED_SIZES["val"],
                      seed: int = 0, download: bool = False, workers: int | None = None
                      ) -> list[betons.Written]:
    """Write the betons of the partition experiment: the tree's train/val, and the probes.

    The tree is the one under <root>/ColorShapeDigit800k (published or generated); with
    `generate` and no tree there, the built-in generator writes one first. Complete betons
    are kept. Returns repr_sim.data.betons.Written records.
    """
    root = Path(root) if root is not None else data_root()
    if _tree_needed(root):
        _generate_tree(root, generate, n_train, n_val, seed)
    written = betons.write_dataset(DATASET, root=root, workers=workers)
    for name in PROBES:
        written += betons.write_dataset(name, root=root, resolution=RESOLUTION, splits=["test"],
                                        out_name=registry.beton_name(name, RESOLUTION),
                                        download=download and name in RAW_PROBES,
                                        workers=workers)
    return written


def _tree_needed(root: Path) -> bool:
    """True when a split folder is missing and its betons are not already written (complete
    betons are kept, so a tree removed after writing them is not needed)."""
    base = tree_root(root) / PARTITION_DIR
    have = all((base / f).is_dir() for f in SPLIT_FOLDERS.values())
    complete = all(betons.is_complete(betons.beton_path(DATASET, split, root), expect={
        "dataset": DATASET, "split": split, "resolution": RESOLUTION}) for split in SPLIT_FOLDERS)
    return not have and not complete


def _generate_tree(root: Path, generate: bool, n_train: int, n_val: int, seed: int) -> None:
    """The built-in generator's tree, when allowed and no part of another tree is there."""
    base = tree_root(root) / PARTITION_DIR
    if not generate:
        raise UserError(f"{DATASET}: no ColorShapeDigit800k tree at {base} "
                        f"(expected {base}/train/ and {base}/val/); {TREE_HINT}")
    if any((base / f).is_dir() for f in SPLIT_FOLDERS.values()):
        raise UserError(f"{base} holds only part of a tree (train/ and val/ go together); "
                        "complete it or remove it")
    write_generated_tree(root, n_train, n_val, seed=seed)
