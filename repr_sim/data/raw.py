"""Readers for the raw on-disk formats, in torchvision's folder layout under the data root.

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   python pickles
    <root>/cifar-100-python/{train, test, meta}                               python pickles
    <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]        idx files
    <root>/svhn/{train,test}_32x32.mat                                        MATLAB v5
    <root>/tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
                              val/val_annotations.txt, val/<wnid>/images/*.JPEG}

Every reader returns (images uint8 [N, H, W, 3], labels int64 [N]) at the native resolution
(grey images copied to three channels). The readers are this project's own rather than
torchvision's dataset classes, for two reasons: torchvision unpickles the CIFAR batches with
an unrestricted `pickle.load`, and its SVHN class always checks md5 sums, which synthetic
test files in the real format cannot pass. torchvision is still used to *download* (see
`download`), with its own archive checksums.

Checksums: the files are compared with the md5 sums published for the official files (the
table below, the same values torchvision checks) unless REPRSIM_VERIFY=0. MNIST's published
sums are those of the .gz archives; where only the uncompressed files are present, the
check is structural (the official image counts and 28x28 size). TinyImageNet publishes no
per-file sums: the check is structural (200 classes, 500 training and 50 validation images
per class, 64x64).

Problems come out as one UserError naming the file: missing files (with where to put them),
checksum mismatches, files that do not parse.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..paths import verify_checksums

log = logging.getLogger(__name__)

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
MNIST_DIR = "MNIST/raw"
SVHN_DIR = "svhn"
TINYIMAGENET_DIR = "tiny-imagenet-200"

# md5 of the member files of the official archives (cifar-10-python.tar.gz,
# cifar-100-python.tar.gz), of the MNIST .gz files and of the SVHN .mat files.
MD5 = {
    f"{CIFAR10_DIR}/data_batch_1": "c99cafc152244af753f735de768cd75f",
    f"{CIFAR10_DIR}/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    f"{CIFAR10_DIR}/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    f"{CIFAR10_DIR}/data_batch_4": "634d18415352ddfa80567beed471001a",
    f"{CIFAR10_DIR}/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    f"{CIFAR10_DIR}/test_batch": "40351d587109b95175f43aff81a1287e",
    f"{CIFAR10_DIR}/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    f"{CIFAR100_DIR}/train": "16019d7e3df5f24257cddd939b257f8d",
    f"{CIFAR100_DIR}/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    f"{CIFAR100_DIR}/meta": "7973b15100ade9c7d40fb424638fde48",
    f"{MNIST_DIR}/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    f"{MNIST_DIR}/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    f"{MNIST_DIR}/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    f"{MNIST_DIR}/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    f"{SVHN_DIR}/train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    f"{SVHN_DIR}/test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}

MNIST_COUNTS = {"train": 60000, "test": 10000}
TINYIMAGENET_COUNTS = {"classes": 200, "train": 500, "test": 50}


# ---- files: presence and checksums -------------------------------------------------------
def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def missing_error(dataset: str, root: Path, missing: Sequence[str], hint: str = "") -> UserError:
    """One line: which files are missing, where they go, how to get them."""
    names = ", ".join(missing)
    where = (f"put the official files under {root} (the data root: --data-root or $REPRSIM_DATA)"
             f"{'; ' + hint if hint else ''}")
    return UserError(f"{dataset}: raw files missing: {names}; {where}")


def find_missing(root: Path, relpaths: Sequence[str]) -> list[str]:
    """The entries of `relpaths` not under `root`: 'x/' is a folder, 'f[.gz]' is f or f.gz."""
    root = Path(root)
    missing = []
    for rel in relpaths:
        if rel.endswith("/"):
            present = (root / rel).is_dir()
        elif rel.endswith("[.gz]"):
            stem = rel[: -len("[.gz]")]
            present = (root / stem).is_file() or (root / f"{stem}.gz").is_file()
        else:
            present = (root / rel).is_file()
        if not present:
            missing.append(rel)
    return missing


def require(dataset: str, root: Path, relpaths: Sequence[str], hint: str = "") -> list[Path]:
    """The files as paths, after checking that they exist and (if enabled) their md5 sums."""
    root = Path(root)
    missing = find_missing(root, relpaths)
    if missing:
        raise missing_error(dataset, root, missing, hint)
    paths = [root / rel for rel in relpaths]
    if verify_checksums():
        for rel, path in zip(relpaths, paths, strict=True):
            check_md5(path, MD5.get(rel))
    return paths


def check_md5(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    found = md5sum(path)
    if found != expected:
        raise UserError(f"{path}: md5 {found} differs from the published {expected}: "
                        "a corrupt or unofficial file (REPRSIM_VERIFY=0 skips this check)")


# ---- CIFAR: python pickle batches -------------------------------------------------------
class CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches and nothing else.

    The batches are Python 2 pickles of a dict of strings, ints, lists and one uint8 numpy
    array. Building the array is the only thing that needs a global: numpy's
    `_reconstruct`, `ndarray` and `dtype`. Any other global (os.system, builtins.eval,
    ...) is refused, so a crafted file cannot run code.
    """

    def find_class(self, module: str, name: str):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")}:
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        if module == "numpy" and name in {"ndarray", "dtype"}:
            return getattr(np, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch")


def read_pickle_dict(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (latin1, as the files were written by Python 2)."""
    try:
        with open(path, "rb") as f:
            obj = CifarUnpickler(f, encoding="latin1").load()
    except Exception as e:  # any parse failure is the file's fault
        raise UserError(f"{path}: not a readable CIFAR python batch ({_one_line(e)})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a CIFAR python batch (a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def cifar_files(folder: str, batches: Sequence[str], meta: str) -> list[str]:
    return [f"{folder}/{name}" for name in (*batches, meta)]


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle_dict(path)
    if "data" not in batch or label_key not in batch:
        raise UserError(f"{path}: CIFAR batch without 'data' or '{label_key}'")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: CIFAR data must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    if len(labels) != len(data):
        raise UserError(f"{path}: {len(data)} images but {len(labels)} labels")
    # Rows are stored channel-major (1024 R, 1024 G, 1024 B values, each row-major).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar(root: Path, dataset: str, folder: str, files: Sequence[str], meta: str,
               label_key: str, hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The concatenated batches `files` of one CIFAR folder (the meta file is checked too)."""
    paths = require(dataset, root, cifar_files(folder, files, meta), hint)
    parts = [read_cifar_batch(path, label_key) for path in paths[:-1]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels


def cifar_label_names(root: Path, folder: str, meta: str, key: str) -> list[str]:
    return [str(n) for n in read_pickle_dict(Path(root) / folder / meta)[key]]


# ---- MNIST: idx files -------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip-compressed if its name ends in .gz) of unsigned bytes."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
        if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
            raise ValueError("bad magic number")
        if raw[2] != 0x08:
            raise ValueError(f"element type 0x{raw[2]:02x} is not unsigned byte (0x08)")
        ndim = raw[3]
        header = 4 + 4 * ndim
        shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        if len(raw) != header + int(np.prod(shape)):
            raise ValueError(f"{len(raw) - header} data bytes for shape {shape}")
    except (OSError, EOFError, ValueError) as e:
        raise UserError(f"{path}: not a readable idx file ({_one_line(e)})") from None
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def mnist_files(split: str) -> list[str]:
    prefix = "train" if split == "train" else "t10k"
    return [f"{MNIST_DIR}/{prefix}-{kind}-ubyte[.gz]" for kind in ("images-idx3", "labels-idx1")]


def _mnist_file(root: Path, stem: str) -> str:
    """The relative name to read: the uncompressed file (what torchvision extracts), else .gz."""
    plain = f"{MNIST_DIR}/{stem}"
    return plain if (root / plain).is_file() or not (root / f"{plain}.gz").is_file() else f"{plain}.gz"


def read_mnist(root: Path, split: str, hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    rels = [_mnist_file(root, f"{prefix}-images-idx3-ubyte"),
            _mnist_file(root, f"{prefix}-labels-idx1-ubyte")]
    image_path, label_path = require("mnist", root, rels, hint)
    grey, labels = read_idx(image_path), read_idx(label_path).astype(np.int64)
    if grey.ndim != 3 or labels.ndim != 1 or len(grey) != len(labels):
        raise UserError(f"{image_path}: images {grey.shape} do not match labels {labels.shape}")
    if verify_checksums():  # `require` checked the .gz sums; the shape check covers the rest
        _check_mnist_shape(image_path, grey, split)
    return np.repeat(grey[..., None], 3, axis=3), labels


def _check_mnist_shape(path: Path, grey: np.ndarray, split: str) -> None:
    expected = (MNIST_COUNTS[split], 28, 28)
    if grey.shape != expected:
        raise UserError(f"{path}: shape {grey.shape}, the official file has {expected} "
                        "(REPRSIM_VERIFY=0 skips this check)")


# ---- SVHN: MATLAB files -----------------------------------------------------------------
def svhn_files(split: str) -> list[str]:
    return [f"{SVHN_DIR}/{split}_32x32.mat"]


def read_svhn(root: Path, split: str, hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    (path,) = require("svhn", root, svhn_files(split), hint)
    try:
        mat = scipy.io.loadmat(path)
        x, y = mat["X"], mat["y"]
    except Exception as e:  # scipy raises a zoo of types on bad files
        raise UserError(f"{path}: not a readable SVHN .mat file ({_one_line(e)})") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 or y.size != x.shape[3]:
        raise UserError(f"{path}: expected X uint8 [32, 32, 3, N] and y [N, 1], "
                        f"got X {x.dtype} {x.shape}, y {y.shape}")
    labels = y.reshape(-1).astype(np.int64)
    if labels.min() < 1 or labels.max() > 10:
        raise UserError(f"{path}: SVHN labels must be 1..10 (10 is the digit 0)")
    labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
    images = np.ascontiguousarray(x.transpose(3, 0, 1, 2))  # [H, W, C, N] -> [N, H, W, C]
    return images, labels


# ---- TinyImageNet: image folders --------------------------------------------------------
def tinyimagenet_files(split: str) -> list[str]:
    part = "train/" if split == "train" else "val/val_annotations.txt"
    return [f"{TINYIMAGENET_DIR}/wnids.txt", f"{TINYIMAGENET_DIR}/{part}"]


def tinyimagenet_wnids(root: Path) -> list[str]:
    """The class ids in wnids.txt order, which is the label order."""
    (path,) = require("tinyimagenet", root, [f"{TINYIMAGENET_DIR}/wnids.txt"])
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids) or not wnids:
        raise UserError(f"{path}: empty or repeated class ids")
    return wnids


def tinyimagenet_words(root: Path) -> dict[str, str]:
    path = Path(root) / TINYIMAGENET_DIR / "words.txt"
    words = {}
    for line in path.read_text().splitlines():
        wnid, _, text = line.partition("\t")
        words[wnid.strip()] = text.strip()
    return words


def read_image_file(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises OSError, SyntaxError, ... on bad files
        raise UserError(f"{path}: not a readable image ({_one_line(e)})") from None


def read_tinyimagenet(root: Path, split: str, hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Train: train/<wnid>/images/*.JPEG; test: the labelled validation set, regrouped."""
    from ..paths import progress

    root = Path(root)
    base = root / TINYIMAGENET_DIR
    wnids = tinyimagenet_wnids(root)
    part = "train" if split == "train" else "val"
    if part == "val" and not all((base / "val" / w / "images").is_dir() for w in wnids):
        if (base / "val" / "images").is_dir():
            raise UserError(f"{base / 'val'}: validation images are not grouped per class yet; "
                            "run `reprsim reorg-tinyimagenet` first")
        raise missing_error("tinyimagenet", root, [f"{TINYIMAGENET_DIR}/val"], hint)
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = base / part / wnid / "images"
        found = sorted(p for p in folder.glob("*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
        if not found:
            raise missing_error("tinyimagenet", root, [str(folder.relative_to(root))], hint)
        files += found
        labels += [label] * len(found)
    if verify_checksums():
        _check_tinyimagenet_counts(base / part, wnids, len(files), split)
    images = np.empty((len(files), 64, 64, 3), dtype=np.uint8)
    for i, path in enumerate(progress(files, desc=f"tinyimagenet {split}", unit="img")):
        img = read_image_file(path)
        if img.shape != (64, 64, 3):
            raise UserError(f"{path}: size {img.shape[1]}x{img.shape[0]}, expected 64x64")
        images[i] = img
    return images, np.asarray(labels, dtype=np.int64)


def _check_tinyimagenet_counts(folder: Path, wnids: list[str], n: int, split: str) -> None:
    per_class = TINYIMAGENET_COUNTS[split]
    expected = TINYIMAGENET_COUNTS["classes"] * per_class
    if len(wnids) != TINYIMAGENET_COUNTS["classes"] or n != expected:
        raise UserError(f"{folder}: {len(wnids)} classes and {n} images, the official set has "
                        f"{TINYIMAGENET_COUNTS['classes']} and {expected} "
                        "(REPRSIM_VERIFY=0 skips this check)")


def reorganize_tinyimagenet(root: Path) -> dict[str, int]:
    """Move val/images/<file> to val/<wnid>/images/<file> following val_annotations.txt.

    Idempotent and restartable: a file already in its class folder is left alone, so a
    second run (or a rerun after an interruption) only moves what is still to move.
    Returns counts {"moved": ..., "already": ...}.
    """
    root = Path(root)
    base = root / TINYIMAGENET_DIR
    val = base / "val"
    (annotations,) = require("tinyimagenet", root, [f"{TINYIMAGENET_DIR}/val/val_annotations.txt"])
    wnids = set(tinyimagenet_wnids(root))
    moved = already = 0
    for lineno, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in wnids:
            raise UserError(f"{annotations}:{lineno}: expected '<file>\\t<wnid>...' with a wnid "
                            "from wnids.txt")
        name, wnid = fields[0].strip(), fields[1].strip()
        source, target = val / "images" / name, val / wnid / "images" / name
        if target.is_file():
            already += 1
            continue
        if not source.is_file():
            raise UserError(f"{source}: listed in {annotations.name} but neither there nor in "
                            f"{target.parent}")
        target.parent.mkdir(parents=True, exist_ok=True)
        source.replace(target)
        moved += 1
    images = val / "images"
    if images.is_dir() and not any(images.iterdir()):
        images.rmdir()
    log.info("tinyimagenet val: moved %d images, %d already in place", moved, already)
    return {"moved": moved, "already": already}


# ---- resizing -----------------------------------------------------------------------------
def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 [N, H, W, 3] to [N, size, size, 3] (PIL, as torchvision's Resize)."""
    if images.shape[1:3] == (size, size):
        return images
    from PIL import Image

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return out
