"""Tiny synthetic datasets written in the exact on-disk formats of the real ones.

Tests (and anyone checking an installation without the real data) write these under a
data root and run the real readers on them. Each `fake_<name>(root, ...)` draws random
images, writes them where the real files go (the torchvision layout of `raw.py`) and
returns a `FakeData` with the arrays a reader must give back.

The CIFAR batches are written as the official ones are: Python 2 protocol-2 pickles whose
numpy array is built by `numpy.core.multiarray._reconstruct` with its pixel data as a
Python 2 byte string. Python 3's pickler cannot produce that (it writes bytes through
`_codecs.encode` and names `numpy._core`), so the opcodes are emitted here by hand; the
restricted unpickler in `raw.py` is then tested on the real files' structure.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import raw

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")


@dataclass
class FakeData:
    """What was written: the files, and the arrays per split as a reader must return them."""

    root: Path
    files: list[Path] = field(default_factory=list)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __getitem__(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return self.splits[split]


def random_images(n: int, size: int, seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)
    return images, labels


# ---- Python 2 protocol-2 pickles ----------------------------------------------------------
def _py2_str(text: str | bytes) -> bytes:
    data = text.encode("latin1") if isinstance(text, str) else text
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
    return b"T" + struct.pack("<I", len(data)) + data  # BINSTRING


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    return b"J" + struct.pack("<i", value)  # BININT


def _py2_array(array: np.ndarray) -> bytes:
    """A uint8 array as Python 2 numpy pickled it: _reconstruct + BUILD with a byte string."""
    if array.dtype != np.uint8:
        raise ValueError("only uint8 arrays are written")
    dims = b"".join(_py2_int(d) for d in array.shape)
    shape = b"(" + dims + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str("u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
             + b"(" + _py2_int(3) + _py2_str("|") + b"NNN" + b"J\xff\xff\xff\xff" * 2
             + _py2_int(0) + b"tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
            + _py2_int(0) + b"\x85" + _py2_str("b") + b"\x87R"
            + b"(" + _py2_int(1) + shape + dtype + b"\x89"
            + _py2_str(np.ascontiguousarray(array).tobytes()) + b"tb")


def _py2_value(value) -> bytes:
    if isinstance(value, np.ndarray):
        return _py2_array(value)
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int | np.integer):
        return _py2_int(int(value))
    if isinstance(value, str | bytes):
        return _py2_str(value)
    if isinstance(value, list | tuple):
        out = [b"]"]  # EMPTY_LIST, then APPENDS in batches of 1000 as cPickle did
        for start in range(0, len(value), 1000):
            out.append(b"(" + b"".join(_py2_value(v) for v in value[start:start + 1000]) + b"e")
        return b"".join(out)
    raise TypeError(f"cannot write {type(value).__name__} into a CIFAR pickle")


def py2_pickle(obj: dict) -> bytes:
    items = b"".join(_py2_str(k) + _py2_value(v) for k, v in obj.items())
    return b"\x80\x02}(" + items + b"u."


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """[N, 32, 32, 3] -> [N, 3072] in the files' channel-major order."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)


def _filenames(labels: np.ndarray, names: tuple[str, ...] | list[str], start: int = 0) -> list[str]:
    return [f"{names[y]}_s_{start + i:06d}.png" for i, y in enumerate(labels)]


# ---- CIFAR-10 / CIFAR-100 -----------------------------------------------------------------
def write_cifar10(root: Path, train: tuple, test: tuple) -> list[Path]:
    folder = Path(root) / raw.CIFAR10_DIR
    files = []
    train_parts = np.array_split(np.arange(len(train[0])), 5)
    for b, idx in enumerate(train_parts, start=1):
        batch = {"data": _cifar_rows(train[0][idx]), "labels": [int(v) for v in train[1][idx]],
                 "batch_label": f"training batch {b} of 5",
                 "filenames": _filenames(train[1][idx], CIFAR10_NAMES, int(idx[0]) if len(idx) else 0)}
        files.append(_write(folder / f"data_batch_{b}", py2_pickle(batch)))
    batch = {"data": _cifar_rows(test[0]), "labels": [int(v) for v in test[1]],
             "batch_label": "testing batch 1 of 1", "filenames": _filenames(test[1], CIFAR10_NAMES)}
    files.append(_write(folder / "test_batch", py2_pickle(batch)))
    meta = {"num_cases_per_batch": 10000, "label_names": list(CIFAR10_NAMES), "num_vis": 3072}
    files.append(_write(folder / "batches.meta", py2_pickle(meta)))
    return files


def write_cifar100(root: Path, train: tuple, test: tuple) -> list[Path]:
    folder = Path(root) / raw.CIFAR100_DIR
    fine = [f"class_{i:02d}" for i in range(100)]
    coarse = [f"superclass_{i:02d}" for i in range(20)]
    files = []
    for name, (images, labels), title in (("train", train, "training"), ("test", test, "testing")):
        batch = {"filenames": _filenames(labels, fine), "batch_label": f"{title} batch 1 of 1",
                 "fine_labels": [int(v) for v in labels],
                 "coarse_labels": [int(v) // 5 for v in labels], "data": _cifar_rows(images)}
        files.append(_write(folder / name, py2_pickle(batch)))
    files.append(_write(folder / "meta", py2_pickle({"fine_label_names": fine,
                                                      "coarse_label_names": coarse})))
    return files


def fake_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> FakeData:
    data = FakeData(Path(root))
    data.splits = {"train": random_images(n_train, 32, seed, 10),
                   "test": random_images(n_test, 32, seed + 1, 10)}
    data.files = write_cifar10(root, data["train"], data["test"])
    return data


def fake_cifar100(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> FakeData:
    data = FakeData(Path(root))
    data.splits = {"train": random_images(n_train, 32, seed, 100),
                   "test": random_images(n_test, 32, seed + 1, 100)}
    data.files = write_cifar100(root, data["train"], data["test"])
    return data


# ---- MNIST ----------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: 0, 0, type 0x08 (unsigned byte), ndim, big-endian dims, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(root: Path, train: tuple, test: tuple, *, compress: bool = False) -> list[Path]:
    """`train`/`test` are (grey uint8 [N, 28, 28], labels); .gz files when `compress`."""
    folder = Path(root) / raw.MNIST_DIR
    files = []
    for prefix, (grey, labels) in (("train", train), ("t10k", test)):
        for kind, array in (("images-idx3", grey), ("labels-idx1", np.asarray(labels, np.uint8))):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                files.append(_write(folder / f"{name}.gz", gzip.compress(data, mtime=0)))
            else:
                files.append(_write(folder / name, data))
    return files


def fake_mnist(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0,
               compress: bool = False) -> FakeData:
    rng = np.random.default_rng(seed)
    grey = {s: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            for s, n in (("train", n_train), ("test", n_test))}
    labels = {s: rng.integers(0, 10, size=len(grey[s])).astype(np.int64) for s in grey}
    data = FakeData(Path(root))
    data.files = write_mnist(root, (grey["train"], labels["train"]),
                             (grey["test"], labels["test"]), compress=compress)
    data.splits = {s: (np.repeat(grey[s][..., None], 3, axis=3), labels[s]) for s in grey}
    return data


# ---- SVHN -------------------------------------------------------------------------------------
def write_svhn(root: Path, splits: dict[str, tuple]) -> list[Path]:
    """`splits`: {"train"|"test": (images [N, 32, 32, 3], labels 0..9)}; label 10 stands for 0."""
    import scipy.io

    folder = Path(root) / raw.SVHN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for split, (images, labels) in splits.items():
        y = np.where(np.asarray(labels) == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        path = folder / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": np.ascontiguousarray(images.transpose(1, 2, 3, 0)), "y": y})
        files.append(path)
    return files


def fake_svhn(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> FakeData:
    data = FakeData(Path(root))
    data.splits = {"train": random_images(n_train, 32, seed, 10),
                   "test": random_images(n_test, 32, seed + 1, 10)}
    data.files = write_svhn(root, data.splits)
    return data


# ---- TinyImageNet -----------------------------------------------------------------------------
def _write_jpeg(path: Path, image: np.ndarray, grey: bool = False) -> np.ndarray:
    """Write a JPEG; return what a reader decodes from it (JPEG is lossy)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image)
    img = img.convert("L") if grey else img
    img.save(path, format="JPEG", quality=90)
    with Image.open(path) as back:
        return np.asarray(back.convert("RGB"))


def fake_tinyimagenet(root: Path, n_classes: int = 3, n_train: int = 4, n_val: int = 2,
                      seed: int = 0) -> FakeData:
    """A tiny-imagenet-200 folder as unpacked from the zip (validation not yet regrouped).

    `n_train` / `n_val` images per class. One training image per class is a greyscale
    JPEG, as a few real ones are. wnids.txt is deliberately not sorted (nor is the real
    one): its order is the label order.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / raw.TINYIMAGENET_DIR
    wnids = [f"n{int(v):08d}" for v in rng.choice(10**8, size=n_classes, replace=False)]
    wnids = sorted(wnids, reverse=True)
    data = FakeData(Path(root))
    data.files = [_write(base / "wnids.txt", "".join(f"{w}\n" for w in wnids).encode())]
    words = [f"{w}\tthing number {i}, thing" for i, w in enumerate(wnids)] + ["n99999999\tunused"]
    data.files.append(_write(base / "words.txt", ("\n".join(words) + "\n").encode()))
    train_x, train_y = [], []
    for label, wnid in enumerate(wnids):
        boxes = []
        for i in range(n_train):
            path = base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
            image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            train_x.append(_write_jpeg(path, image, grey=(i == 0)))
            train_y.append(label)
            boxes.append(f"{path.name}\t0\t0\t63\t63")
            data.files.append(path)
        data.files.append(_write(base / "train" / wnid / f"{wnid}_boxes.txt",
                                 ("\n".join(boxes) + "\n").encode()))
    order = rng.permutation(n_classes * n_val)  # val files interleave the classes
    val_labels = np.repeat(np.arange(n_classes), n_val)[order]
    val_x, lines = [], []
    for i, label in enumerate(val_labels):
        path = base / "val" / "images" / f"val_{i}.JPEG"
        image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        val_x.append(_write_jpeg(path, image))
        lines.append(f"{path.name}\t{wnids[label]}\t1\t2\t60\t61")
        data.files.append(path)
    data.files.append(_write(base / "val" / "val_annotations.txt", ("\n".join(lines) + "\n").encode()))
    test_image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    _write_jpeg(base / "test" / "images" / "test_0.JPEG", test_image)  # unlabelled, unused
    # Readers return each class's files in name order; reorder the val arrays to match.
    val_x, val_labels = np.stack(val_x), val_labels.astype(np.int64)
    names = np.array([f"val_{i}.JPEG" for i in range(len(val_labels))])
    val_order = np.lexsort((names, val_labels))
    train_order = np.lexsort((np.array([f"{wnids[y]}_{i % n_train}.JPEG" for i, y in enumerate(train_y)]),
                              np.array(train_y)))
    data.splits = {"train": (np.stack(train_x)[train_order], np.array(train_y, np.int64)[train_order]),
                   "test": (val_x[val_order], val_labels[val_order])}
    data.info["wnids"] = wnids
    return data
