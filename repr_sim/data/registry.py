"""The image datasets the study uses, one entry each: what it is and how to load it.

An entry knows its raw format, its classes, its native resolution, the normalisation
constants (the study uses the CIFAR-10 ones for every image dataset and probe set) and
how to read its train and test parts as arrays; `repr_sim.data.betons.write_dataset`
turns any entry into FFCV betons. Adding a dataset means adding one `register(...)` call.

`load(root, split, resolution=...)` returns images uint8 [N, H, W, 3] and labels int64 [N]:
at the native resolution by default, else resized (bilinear). Grey datasets come out with
the grey value in all three channels. `write_resolution` is the side a beton is written at
by default: the input size of the model that probes it (MNIST at 32 for the CIFAR models;
the TinyImageNet folder writes mnist/svhn at 64 under the names mnist_64 and svhn_64, see
`beton_name`).

Generated and bundled entries (shapes, sklearn_digits, sample_patches) take their arrays
from `repr_sim.data.shapes`, imported when loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..paths import data_root
from . import raw

# The study's CIFAR-10 constants on the 0-255 scale, for every image dataset (docs/protocol.md section 2).
MEAN = (125.307, 122.961, 113.8575)
STD = (51.5865, 50.847, 51.255)

Reader = Callable[[Path, str, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    num_classes: int
    resolution: int                      # native image side
    raw_format: str                      # what the files on disk are
    reader: Reader                       # (root, split, size) -> arrays at `size`
    classes: tuple[str, ...] | None = None  # names where fixed; else class_names(root)
    class_reader: Callable[[Path], list[str]] | None = None
    splits: tuple[str, ...] = ("train", "test")
    write_splits: tuple[str, ...] = ("train", "test")  # what write-data writes by default
    write_resolution: int | None = None  # default beton side (None: native)
    raw_hint: str = ""                   # how to obtain the raw files (for error messages)
    downloader: Callable[[Path, str], None] | None = None
    required: Callable[[str], list[str]] | None = None  # raw files a split needs (raw.find_missing)
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    def load(self, root: Path | str | None = None, split: str = "test", *,
             resolution: int | None = None, download: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [N, H, W, 3], labels int64 [N]) of one split."""
        if split not in self.splits:
            raise ValueError(f"{self.name}: no split '{split}' (splits: {', '.join(self.splits)})")
        size = self.resolution if resolution is None else int(resolution)
        if size < 1:
            raise ValueError(f"{self.name}: resolution must be positive, got {resolution}")
        root = Path(root) if root is not None else data_root()
        if download:
            if self.downloader is None:
                raise UserError(f"{self.name}: no downloader; {self.raw_hint or 'nothing to download'}")
            self.downloader(root, split)
        images, labels = self.reader(root, split, size)
        return check_arrays(images, labels, self.name)

    def check_raw(self, root: Path | str | None, splits) -> None:
        """One UserError naming every raw file the splits need that is not under `root`."""
        if self.required is None:
            return
        root = Path(root) if root is not None else data_root()
        wanted = dict.fromkeys(rel for split in splits for rel in self.required(split))
        missing = raw.find_missing(root, list(wanted))
        if missing:
            raise raw.missing_error(self.name, root, missing, self.raw_hint)

    def class_names(self, root: Path | str | None = None) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        if self.class_reader is None:
            return [str(i) for i in range(self.num_classes)]
        return self.class_reader(Path(root) if root is not None else data_root())


def check_arrays(images, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{what}: images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{what}: labels must be [N] with N = {len(images)}, got {labels.shape}")
    return np.ascontiguousarray(images), labels.astype(np.int64)


_REGISTRY: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    _REGISTRY[entry.name] = entry
    return entry


def get(name: str) -> DatasetEntry:
    if name not in _REGISTRY:
        raise UserError(f"unknown dataset '{name}' (known: {', '.join(names())})")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


def beton_name(name: str, resolution: int | None = None) -> str:
    """The folder name of a dataset's betons: `name`, or `name_<res>` off its default side."""
    entry = get(name)
    default = entry.write_resolution or entry.resolution
    return name if resolution is None or int(resolution) == default else f"{name}_{int(resolution)}"


# ---- readers: raw files, then a resize to the requested side -----------------------------
def _resized(read: Callable[[Path, str], tuple[np.ndarray, np.ndarray]]) -> Reader:
    def reader(root: Path, split: str, size: int):
        images, labels = read(root, split)
        return raw.resize(images, size), labels

    return reader


def _torchvision_download(cls_name: str, subdir: str = "") -> Callable[[Path, str], None]:
    """Let torchvision fetch (and md5-check) the official files into torchvision's layout.

    CIFAR archives are fetched with torchvision's download_and_extract_archive rather than
    by building its dataset class, which would unpickle the batches without restriction.
    """

    def download(root: Path, split: str) -> None:
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import download_and_extract_archive

        cls = getattr(tvd, cls_name)
        try:
            if cls_name.startswith("CIFAR"):
                if not (Path(root) / cls.base_folder).is_dir():
                    download_and_extract_archive(cls.url, str(root), filename=cls.filename,
                                                 md5=cls.tgz_md5)
            elif cls_name == "SVHN":
                cls(str(Path(root) / subdir), split=split, download=True)
            else:
                cls(str(Path(root) / subdir), train=split == "train", download=True)
        except Exception as e:  # network errors, checksum failures, disk full
            raise UserError(f"download of {cls_name} into {root} failed ({raw._one_line(e)})") from None

    return download


CIFAR_HINT = "or pass --download"
CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")

register(DatasetEntry(
    name="cifar10", num_classes=10, resolution=32, raw_format="cifar python pickle batches",
    reader=_resized(lambda root, split: raw.read_cifar(
        root, "cifar10", raw.CIFAR10_DIR, CIFAR10_BATCHES if split == "train" else ("test_batch",),
        "batches.meta", "labels", CIFAR_HINT)),
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    raw_hint=f"unpack cifar-10-python.tar.gz there, {CIFAR_HINT}",
    required=lambda split: raw.cifar_files(
        raw.CIFAR10_DIR, CIFAR10_BATCHES if split == "train" else ("test_batch",), "batches.meta"),
    downloader=_torchvision_download("CIFAR10"),
))

register(DatasetEntry(
    name="cifar100", num_classes=100, resolution=32, raw_format="cifar python pickle batches",
    reader=_resized(lambda root, split: raw.read_cifar(
        root, "cifar100", raw.CIFAR100_DIR, (split,), "meta", "fine_labels", CIFAR_HINT)),
    class_reader=lambda root: raw.cifar_label_names(root, raw.CIFAR100_DIR, "meta", "fine_label_names"),
    raw_hint=f"unpack cifar-100-python.tar.gz there, {CIFAR_HINT}",
    required=lambda split: raw.cifar_files(raw.CIFAR100_DIR, (split,), "meta"),
    downloader=_torchvision_download("CIFAR100"),
))

TINY_HINT = ("unzip tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) "
             "there, then run `reprsim reorg-tinyimagenet`")

register(DatasetEntry(
    name="tinyimagenet", num_classes=200, resolution=64, raw_format="tiny-imagenet-200 folder",
    reader=_resized(lambda root, split: raw.read_tinyimagenet(root, split, TINY_HINT)),
    class_reader=raw.tinyimagenet_wnids,
    raw_hint=TINY_HINT, required=raw.tinyimagenet_files,
))

DIGITS = tuple(str(d) for d in range(10))

register(DatasetEntry(
    name="mnist", num_classes=10, resolution=28, raw_format="mnist idx files",
    reader=_resized(lambda root, split: raw.read_mnist(root, split, "or pass --download")),
    classes=DIGITS, write_splits=("test",), write_resolution=32,
    raw_hint="the four idx files (or their .gz) under MNIST/raw/, or pass --download",
    downloader=_torchvision_download("MNIST"), required=raw.mnist_files,
))

register(DatasetEntry(
    name="svhn", num_classes=10, resolution=32, raw_format="svhn .mat files",
    reader=_resized(lambda root, split: raw.read_svhn(root, split, "or pass --download")),
    classes=DIGITS, write_splits=("test",),
    raw_hint="train_32x32.mat / test_32x32.mat under svhn/, or pass --download",
    downloader=_torchvision_download("SVHN", subdir=raw.SVHN_DIR), required=raw.svhn_files,
))


# ---- generated and bundled data (repr_sim.data.shapes) -------------------------------------
# Sizes of the generated sets (seed 0; `shapes.generate` draws train and test from
# independent streams).
SHAPES_SIZES = {"train": 10000, "test": 2000}
SAMPLE_PATCHES = (1000, 0)


def _shapes_by(label: str) -> Reader:
    """The generated set labelled by one attribute ("shape": 8 classes, "color": 10); the
    images are the same whatever the label."""
    def reader(root: Path, split: str, size: int):
        from . import shapes

        images, labels, _ = shapes.generate(SHAPES_SIZES[split], size=size, seed=0, label=label,
                                            split=split)
        return images, labels

    return reader


def _sklearn_digits(root: Path, split: str, size: int):
    from . import shapes

    return shapes.sklearn_digits(size=size)


def _sample_patches(root: Path, split: str, size: int):
    from . import shapes

    n, seed = SAMPLE_PATCHES
    return shapes.sample_patches(n, size=size, seed=seed)


register(DatasetEntry(
    name="shapes", num_classes=8, resolution=32, raw_format="generated (repr_sim.data.shapes)",
    reader=_shapes_by("shape"),
))

register(DatasetEntry(
    name="shapes_color", num_classes=10, resolution=32,
    raw_format="generated (repr_sim.data.shapes), labelled by colour",
    reader=_shapes_by("color"),
))

register(DatasetEntry(
    name="sklearn_digits", num_classes=10, resolution=32,
    raw_format="bundled with scikit-learn (8x8 digits, upsampled)",
    reader=_sklearn_digits, classes=DIGITS, splits=("test",), write_splits=("test",),
))

register(DatasetEntry(
    name="sample_patches", num_classes=1, resolution=32,
    raw_format="patches of scikit-learn's bundled sample images",
    reader=_sample_patches, splits=("test",), write_splits=("test",),
))


# ---- the label-partition data (repr_sim.data.partition) ----------------------------------
def _colorshapedigit(root: Path, split: str, size: int):
    from . import partition

    return partition.read_split(root, split, size)


def _generated_probe(kind: str) -> Reader:
    def reader(root: Path, split: str, size: int):
        from . import partition

        return partition.probe_images(kind, size)

    return reader


def _partition_required(split: str) -> list[str]:
    from . import partition

    return partition.required(split)


def _partition_classes(root: Path) -> list[str]:
    from . import shapes

    return shapes.label_names("all")  # <shape>_<digit>_<color>, in label order


register(DatasetEntry(
    name="colorshapedigit", num_classes=800, resolution=28,
    raw_format="ColorShapeDigit800k image folders (published, or the built-in generator's)",
    reader=_colorshapedigit, required=_partition_required, class_reader=_partition_classes,
    raw_hint=("unpack the published folders to ColorShapeDigit800k/partition3/{train,val}/, "
              "or run `python train_task_only/prepare_data.py --generate`"),
))

register(DatasetEntry(
    name="digit_only", num_classes=10, resolution=28,
    raw_format="generated (repr_sim.data.shapes.digit_only: a digit, no shape)",
    reader=_generated_probe("digit_only"), classes=DIGITS, splits=("test",),
    write_splits=("test",),
))

register(DatasetEntry(
    name="shape_only", num_classes=8, resolution=28,
    raw_format="generated (repr_sim.data.shapes.shape_only: a shape, no digit)",
    reader=_generated_probe("shape_only"), splits=("test",), write_splits=("test",),
))
