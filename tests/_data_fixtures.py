"""Helpers other test modules reuse: tiny raw datasets in the real formats, and betons.

All cheap: a few dozen random images. Raw files go under `root` in torchvision's layout
(what `REPRSIM_DATA` points at); betons under `root/ffcv/<name>/`. The checksums of
these files are not the published ones: run with REPRSIM_VERIFY=0 (the `reprsim_env`
fixture of conftest.py sets it).

    data = make_fake_cifar10(root, n_train=64, n_test=32)
    images, labels = data["train"]          # what a reader must return
    betons = make_fake_betons(root, "cifar10", n_train=64, n_test=32)
    betons["train"]                          # Path of train.beton
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repr_sim.data import fake

FakeData = fake.FakeData


def make_fake_cifar10(root, n_train: int = 50, n_test: int = 20, seed: int = 0) -> FakeData:
    return fake.fake_cifar10(Path(root), n_train, n_test, seed)


def make_fake_cifar100(root, n_train: int = 50, n_test: int = 20, seed: int = 0) -> FakeData:
    return fake.fake_cifar100(Path(root), n_train, n_test, seed)


def make_fake_mnist(root, n_train: int = 40, n_test: int = 20, seed: int = 0,
                    compress: bool = False) -> FakeData:
    return fake.fake_mnist(Path(root), n_train, n_test, seed, compress=compress)


def make_fake_svhn(root, n_train: int = 40, n_test: int = 20, seed: int = 0) -> FakeData:
    return fake.fake_svhn(Path(root), n_train, n_test, seed)


def make_fake_tinyimagenet(root, n_classes: int = 3, n_train: int = 4, n_val: int = 2,
                           seed: int = 0, reorganize: bool = False) -> FakeData:
    """A tiny-imagenet-200 folder; `reorganize=True` also regroups val (ready to read)."""
    data = fake.fake_tinyimagenet(Path(root), n_classes, n_train, n_val, seed)
    if reorganize:
        from repr_sim.data.raw import reorganize_tinyimagenet

        reorganize_tinyimagenet(Path(root))
    return data


MAKERS = {"cifar10": make_fake_cifar10, "cifar100": make_fake_cifar100,
          "mnist": make_fake_mnist, "svhn": make_fake_svhn}


def make_fake_raw(root, names=("cifar10", "cifar100", "mnist", "svhn", "tinyimagenet"),
                  seed: int = 0) -> dict[str, FakeData]:
    """Every named dataset's raw files under `root` (TinyImageNet left un-regrouped)."""
    out = {}
    for i, name in enumerate(names):
        maker = MAKERS.get(name, make_fake_tinyimagenet)
        out[name] = maker(root, seed=seed + 10 * i)
    return out


def make_fake_betons(root, name: str = "cifar10", n_train: int = 50, n_test: int = 20,
                     seed: int = 0, resolution: int | None = None) -> dict[str, Path]:
    """Raw files of `name` (cifar10/cifar100/mnist/svhn) and its betons, written by the
    real code path (`write_dataset`), both splits. Returns {split: beton path}."""
    from repr_sim.data.betons import write_dataset

    MAKERS[name](root, n_train=n_train, n_test=n_test, seed=seed)
    written = write_dataset(name, root=Path(root), resolution=resolution,
                            splits=["train", "test"], workers=1)
    return {w.path.stem: w.path for w in written}


def make_fake_beton(path, n: int = 64, size: int = 32, num_classes: int = 10, seed: int = 0
                    ) -> tuple[Path, np.ndarray, np.ndarray]:
    """A beton of random images at `path` (no raw files). Returns (path, images, labels)."""
    from repr_sim.data.betons import write_beton

    images, labels = fake.random_images(n, size, seed, num_classes)
    write_beton(images, labels, Path(path), workers=1)
    return Path(path), images, labels
