"""FFCV betons: writing them (atomic, idempotent), reading them back, and loaders over them.

Layout: `<data root>/ffcv/<name>/{train,test}.beton`, each with a sidecar
`<split>.beton.json` (count, image shape, sha256 of the file and of the arrays written,
what it was made from). Fields: `image` (RGBImageField) and `label` (IntField).

Write mode: 'raw'. Pixels are stored as they are, so a beton reads back bit-exactly (the
tests check it) and decoding costs a memcpy. The price is size: H*W*3 bytes per image,
e.g. 154 MB for CIFAR-10 train, 1.2 GB for TinyImageNet train, where JPEG at quality 90
would be several times smaller but lossy. The study's FFCV CIFAR recipe writes raw too.

Complete = the sidecar exists and matches the file (size, sample count, sha256). The
sidecar is written after the beton has been renamed into place, and removed before a
rewrite, so a beton without a matching sidecar is never taken as complete. Writing goes to
a temporary name in the same folder and is renamed when FFCV has finished; a failure leaves
nothing under the final name.

Loaders: `make_loader` (FFCV) and `ArrayLoader` (in-memory, torch) yield
(images float32 [B, 3, H, W] normalised, labels int64 [B] mapped through `label_map`);
on CUDA the images are on the device, channels-last, float16. The training augmentation
is the study's (PROTOCOL 2), in this order: horizontal flip, brightness, contrast,
saturation, translate, cutout (colour jitter first so that the translate and cutout fill
stays exactly the fill colour). FFCV reuses its output buffers: an image batch is valid
until a few batches later; clone it to keep it.

Determinism: the FFCV sample order is seeded (seed + epoch); FFCV's augmentations draw
from numba's per-thread generators, which cannot be seeded from outside, so FFCV training
batches differ from run to run. ArrayLoader is fully deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..paths import data_root, usable_cpus
from ..runs import atomic_path, atomic_write_json, file_lock
from . import registry
from .raw import _one_line

log = logging.getLogger(__name__)

IMAGE_FIELD, LABEL_FIELD = "image", "label"
WRITE_MODE = "raw"
SIDECAR_VERSION = 1


# ---- paths ------------------------------------------------------------------------------------
def beton_path(name: str, split: str, root: Path | str | None = None) -> Path:
    return (Path(root) if root is not None else data_root()) / "ffcv" / name / f"{split}.beton"


def sidecar_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


# ---- digests and completeness -----------------------------------------------------------------
def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """A digest of what is written: shape, pixels, labels."""
    digest = hashlib.sha256(repr(images.shape).encode())
    digest.update(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return digest.hexdigest()


def read_sidecar(path: Path) -> dict | None:
    try:
        with open(sidecar_path(path), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def is_complete(path: Path | str, *, content: str | None = None, expect: dict | None = None) -> bool:
    """True when the beton and its sidecar agree (size, count, sha256) and match the request.

    `content`: the arrays' digest the beton must hold; `expect`: sidecar entries it must have
    (e.g. dataset, split, resolution).
    """
    path = Path(path)
    info = read_sidecar(path)
    if info is None or not path.is_file():
        return False
    if content is not None and info.get("content_sha256") != content:
        return False
    if any(info.get(k) != v for k, v in (expect or {}).items()):
        return False
    if info.get("file_size") != path.stat().st_size:
        return False
    try:
        if int(open_reader(path).num_samples) != info.get("num_samples"):
            return False
    except UserError:
        return False
    return file_sha256(path) == info.get("file_sha256")


# ---- writing ----------------------------------------------------------------------------------
class _ArrayDataset:
    """The indexable FFCV's writer reads: (image [H, W, 3] uint8, label int)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def _writer_plan(images: np.ndarray, workers: int) -> tuple[int, int, int]:
    """(processes, chunk size, page size) for FFCV's writer.

    Every writer process fills pages of its own, so small sets get small pages and few
    processes (FFCV's default 8 MiB pages make a 10-image beton 25 MB).
    """
    from ffcv.writer import MIN_PAGE_SIZE

    chunk = max(1, min(1000, math.ceil(len(images) / (4 * workers))))
    workers = max(1, min(workers, math.ceil(len(images) / chunk),
                         math.ceil(images.nbytes / (8 * MIN_PAGE_SIZE))))
    page = MIN_PAGE_SIZE if images.nbytes < 64 * MIN_PAGE_SIZE else 4 * MIN_PAGE_SIZE
    while page < images[0].nbytes * 2:
        page *= 2
    return workers, chunk, page


def _ffcv_write(path: Path, images: np.ndarray, labels: np.ndarray, workers: int) -> None:
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    fields = {IMAGE_FIELD: RGBImageField(write_mode=WRITE_MODE), LABEL_FIELD: IntField()}
    workers, chunk, page = _writer_plan(images, workers)
    writer = DatasetWriter(str(path), fields, page_size=page, num_workers=workers)
    writer.from_indexed_dataset(_ArrayDataset(images, labels), chunksize=chunk)


def write_beton(images, labels, path: Path | str, *, workers: int | None = None,
                info: dict | None = None) -> bool:
    """Write (images uint8 [N, H, W, 3], labels int [N]) to `path`. Atomic and idempotent.

    Returns True when written, False when a complete beton with the same content was kept.
    `info` goes into the sidecar (dataset, split, resolution, ...).
    """
    path = Path(path)
    images, labels = registry.check_arrays(images, labels, str(path))
    if len(images) == 0:
        raise ValueError(f"{path}: nothing to write (no images)")
    if labels.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative")
    content = content_sha256(images, labels)
    workers = max(1, int(workers or usable_cpus()))
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f".{path.name}.lock")):
        if is_complete(path, content=content):
            log.debug("kept %s (complete, same content)", path)
            return False
        log.info("writing %s (%d images, %d processes)", path, len(images),
                 _writer_plan(images, workers)[0])
        sidecar_path(path).unlink(missing_ok=True)  # the old sidecar must not vouch for new bytes
        with atomic_path(path) as tmp:
            _ffcv_write(tmp, images, labels, workers)
            if int(open_reader(tmp).num_samples) != len(images):
                raise UserError(f"{path}: FFCV wrote an incomplete file")
            _shareable(tmp)
        record = {
            "version": SIDECAR_VERSION, "format": "ffcv beton", "write_mode": WRITE_MODE,
            "fields": {IMAGE_FIELD: "RGBImageField", LABEL_FIELD: "IntField"},
            "num_samples": len(images), "image_shape": list(images.shape[1:]),
            "num_labels": int(labels.max()) + 1, "file_size": path.stat().st_size,
            "file_sha256": file_sha256(path), "content_sha256": content, **(info or {}),
        }
        atomic_write_json(sidecar_path(path), record)
        _shareable(sidecar_path(path))
    return True


def _shareable(path: Path) -> None:
    """Temporary files are created 0600; give the result the permissions the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@dataclass
class Written:
    path: Path
    written: bool  # False: an existing complete beton was kept


def write_dataset(name: str, *, root: Path | str | None = None, resolution: int | None = None,
                  out_name: str | None = None, splits: list[str] | None = None,
                  download: bool = False, workers: int | None = None) -> list[Written]:
    """Write a registry dataset's splits to betons under <root>/ffcv/<out_name>/.

    A split whose beton is complete for the same dataset, split and resolution is kept
    without reading the raw files. Default resolution: the entry's write resolution.
    """
    entry = registry.get(name)
    root = Path(root) if root is not None else data_root()
    size = int(resolution or entry.write_resolution or entry.resolution)
    out_name = out_name or registry.beton_name(name, resolution)
    splits = list(splits or entry.write_splits)
    for split in splits:
        if split not in entry.splits:
            raise UserError(f"{name}: no split '{split}' (splits: {', '.join(entry.splits)})")
    requests = {split: {"dataset": name, "split": split, "resolution": size} for split in splits}
    paths = {split: beton_path(out_name, split, root) for split in splits}
    todo = [split for split in splits if not is_complete(paths[split], expect=requests[split])]
    if not download:
        entry.check_raw(root, todo)  # one error naming every missing file, before any work
    results = []
    for split in splits:
        if split not in todo:
            results.append(Written(paths[split], False))
            continue
        images, labels = entry.load(root, split, resolution=size, download=download)
        written = write_beton(images, labels, paths[split], workers=workers, info=requests[split])
        results.append(Written(paths[split], written))
    return results


# ---- reading ----------------------------------------------------------------------------------
def open_reader(path: Path | str):
    """FFCV's Reader on a checked beton (image and label fields, data inside the file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: beton not found (write it with `reprsim write-data`)")
    from ffcv.fields import IntField, RGBImageField
    from ffcv.reader import Reader

    size = path.stat().st_size
    try:
        reader = Reader(str(path))
        problem = _reader_problem(reader, size, IntField, RGBImageField)
    except Exception as e:  # FFCV asserts, numpy raises on short reads
        problem = f"unreadable ({_one_line(e)})"
    if problem:
        raise UserError(f"{path}: not a valid FFCV beton: {problem}")
    return reader


def _reader_problem(reader, size: int, IntField, RGBImageField) -> str | None:
    handlers = reader.handlers
    if not isinstance(handlers.get(IMAGE_FIELD), RGBImageField):
        return f"no RGB '{IMAGE_FIELD}' field (fields: {', '.join(handlers)})"
    if not isinstance(handlers.get(LABEL_FIELD), IntField):
        return f"no integer '{LABEL_FIELD}' field (fields: {', '.join(handlers)})"
    if len(reader.metadata) != reader.num_samples or reader.num_samples == 0:
        return f"{len(reader.metadata)} metadata records for {reader.num_samples} samples (truncated?)"
    if int(reader.header["alloc_table_ptr"]) > size:
        return "allocation table beyond the end of the file (truncated)"
    meta = _field(reader, IMAGE_FIELD)
    ends = meta["data_ptr"].astype(np.uint64) + (meta["height"].astype(np.uint64)
                                                 * meta["width"].astype(np.uint64) * np.uint64(3))
    raw_mode = meta["mode"] == 1
    if np.any(ends[raw_mode] > size) or np.any(meta["data_ptr"] >= size):
        return "image data beyond the end of the file (truncated)"
    return None


def _field(reader, name: str) -> np.ndarray:
    return reader.metadata[f"f{reader.field_names.index(name)}"]


def read_labels(path: Path | str) -> np.ndarray:
    """The label field as int64 [N], from the beton's metadata (no image is decoded)."""
    return np.array(_field(open_reader(path), LABEL_FIELD), dtype=np.int64)


def load_arrays(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W, 3], labels int64 [N]): every image decoded once, into memory."""
    reader = open_reader(path)
    meta = _field(reader, IMAGE_FIELD)
    heights, widths = np.unique(meta["height"]), np.unique(meta["width"])
    if len(heights) != 1 or len(widths) != 1:
        raise UserError(f"{path}: images of several sizes; load_arrays needs one size")
    h, w = int(heights[0]), int(widths[0])
    data = np.memmap(path, dtype=np.uint8, mode="r")
    images = np.empty((len(meta), h, w, 3), dtype=np.uint8)
    sizes = _jpeg_sizes(reader) if np.any(meta["mode"] != 1) else None
    for i, (mode, ptr) in enumerate(zip(meta["mode"], meta["data_ptr"], strict=True)):
        ptr = int(ptr)
        if mode == 1:  # raw
            images[i] = data[ptr: ptr + h * w * 3].reshape(h, w, 3)
        else:
            images[i] = _decode_jpeg(data[ptr: ptr + sizes[ptr]], path, i)
    del data
    return images, np.array(_field(reader, LABEL_FIELD), dtype=np.int64)


def _jpeg_sizes(reader) -> dict[int, int]:
    table = reader.alloc_table
    return dict(zip(table["ptr"].tolist(), table["size"].tolist(), strict=True))


def _decode_jpeg(buffer: np.ndarray, path: Path, i: int) -> np.ndarray:
    # OpenCV's decoder; FFCV's turbojpeg may differ from it by rounding (betons here are raw).
    import cv2

    bgr = cv2.imdecode(np.asarray(buffer), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"{path}: image {i} is not a decodable JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def beton_stats(path: Path | str) -> dict:
    """The sidecar's record, or a minimal one from the file if there is none."""
    info = read_sidecar(Path(path))
    if info is not None:
        return info
    return {"num_samples": int(open_reader(path).num_samples)}


# ---- augmentation settings --------------------------------------------------------------------
# The study's CIFAR values (PROTOCOL 2); a config's [augment] table overrides any of them,
# and 0 switches one off. The fill is the CIFAR-10 mean as uint8, truncated as FFCV's CIFAR
# example does (125, 122, 113).
DEFAULT_AUGMENT = {"flip": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.3,
                   "jitter_p": 0.3, "translate": 8, "cutout": 10, "fill": "mean"}


@dataclass(frozen=True)
class Augment:
    flip: float
    brightness: float
    contrast: float
    saturation: float
    jitter_p: float
    translate: int
    cutout: int
    fill: tuple[int, int, int]

    def jitters(self) -> list[tuple[str, float]]:
        if self.jitter_p <= 0:
            return []
        pairs = (("brightness", self.brightness), ("contrast", self.contrast),
                 ("saturation", self.saturation))
        return [(kind, m) for kind, m in pairs if m > 0]


def resolve_augment(augment: dict | None, mean=registry.MEAN) -> Augment:
    """The settings: the study's defaults updated with `augment` (unknown keys rejected)."""
    given = dict(augment or {})
    unknown = sorted(set(given) - set(DEFAULT_AUGMENT))
    if unknown:
        raise ValueError(f"unknown augmentation settings: {', '.join(unknown)} "
                         f"(known: {', '.join(DEFAULT_AUGMENT)})")
    cfg = {**DEFAULT_AUGMENT, **given}
    for key in ("flip", "jitter_p"):
        if not 0.0 <= float(cfg[key]) <= 1.0:
            raise ValueError(f"augment.{key} must be a probability in [0, 1], got {cfg[key]}")
    for key in ("brightness", "contrast", "saturation"):
        if float(cfg[key]) < 0:
            raise ValueError(f"augment.{key} must be >= 0, got {cfg[key]}")
    for key in ("translate", "cutout"):
        if isinstance(cfg[key], bool) or int(cfg[key]) != cfg[key] or int(cfg[key]) < 0:
            raise ValueError(f"augment.{key} must be a whole number of pixels >= 0, got {cfg[key]}")
    fill = cfg["fill"]
    if fill == "mean":
        fill = tuple(int(m) for m in mean)
    elif (not isinstance(fill, list | tuple) or len(fill) != 3
          or not all(isinstance(v, int) and 0 <= v <= 255 for v in fill)):
        raise ValueError(f"augment.fill must be 'mean' or three integers 0..255, got {fill!r}")
    return Augment(float(cfg["flip"]), float(cfg["brightness"]), float(cfg["contrast"]),
                   float(cfg["saturation"]), float(cfg["jitter_p"]), int(cfg["translate"]),
                   int(cfg["cutout"]), tuple(int(v) for v in fill))


# ---- shared loader arguments ------------------------------------------------------------------
def _check_indices(indices, n: int) -> np.ndarray:
    if indices is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    if idx.size == 0:
        raise ValueError("indices select no examples")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
    return idx.astype(np.int64)


def _label_table(label_map: dict | None, labels: np.ndarray):
    """A lookup tensor original -> new for the selected labels (None: keep the labels)."""
    import torch

    if label_map is None:
        return None
    mapping = {int(k): int(v) for k, v in label_map.items()}
    if any(k < 0 for k in mapping) or any(v < 0 for v in mapping.values()):
        raise ValueError("label_map keys and values must be non-negative integers")
    present = np.unique(labels)
    missing = [int(v) for v in present if int(v) not in mapping]
    if missing:
        raise ValueError(f"label_map has no entry for label(s) {missing[:10]} of the selected examples")
    table = np.full(max(int(present.max()), max(mapping, default=0)) + 1, -1, dtype=np.int64)
    for k, v in mapping.items():
        table[k] = v
    return torch.from_numpy(table)


def _batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return int(batch_size)


def _order_is_random(order, train: bool) -> bool:
    if order is None:
        return bool(train)
    name = getattr(order, "name", order)
    if str(name).lower() not in {"random", "sequential"}:
        raise ValueError(f"order must be 'random' or 'sequential', got {order!r}")
    return str(name).lower() == "random"


def _mean_std(path: Path | None, mean, std):
    """Explicit values, else the beton's dataset entry's, else the study's constants."""
    if mean is None or std is None:
        info = read_sidecar(path) if path is not None else None
        dataset = (info or {}).get("dataset")
        entry = registry.get(dataset) if dataset in registry.names() else None
        mean = mean if mean is not None else (entry.mean if entry else registry.MEAN)
        std = std if std is not None else (entry.std if entry else registry.STD)
    return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)


def _workers(workers: int | None) -> int:
    """FFCV's thread count: the usable CPUs by default, at most what numba can start."""
    import numba

    wanted = int(workers) if workers else usable_cpus()
    return max(1, min(wanted, numba.config.NUMBA_NUM_THREADS))


# ---- the FFCV loader ---------------------------------------------------------------------------
class BetonLoader:
    """An FFCV Loader yielding (images, labels[B] mapped through the label map)."""

    def __init__(self, loader, table, indices: np.ndarray, batch_size: int, workers: int):
        self.loader = loader
        self.table = table
        self.indices = indices
        self.batch_size = batch_size
        self.workers = workers

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """The next iteration draws epoch `epoch`'s order (FFCV orders by seed + epoch)."""
        self.loader.next_epoch = int(epoch)

    def __iter__(self):
        for images, labels in self.loader:
            labels = labels.reshape(-1)
            labels = self.table[labels] if self.table is not None else labels.clone()
            yield images, labels


def _ffcv_augment_ops(aug: Augment) -> list:
    from ffcv.transforms import (
        Cutout,
        RandomBrightness,
        RandomContrast,
        RandomHorizontalFlip,
        RandomSaturation,
        RandomTranslate,
    )

    jitter = {"brightness": RandomBrightness, "contrast": RandomContrast,
              "saturation": RandomSaturation}
    ops = [RandomHorizontalFlip(aug.flip)] if aug.flip > 0 else []
    ops += [jitter[kind](magnitude, p=aug.jitter_p) for kind, magnitude in aug.jitters()]
    if aug.translate > 0:
        ops.append(RandomTranslate(padding=aug.translate, fill=aug.fill))
    if aug.cutout > 0:
        ops.append(Cutout(aug.cutout, aug.fill))
    return ops


def _ffcv_tail(device, mean: np.ndarray, std: np.ndarray) -> list:
    """uint8 HWC -> normalised NCHW: a JIT lookup table on the CPU, torch ops on CUDA."""
    import torch
    from ffcv.transforms import Convert, NormalizeImage, ToDevice, ToTensor, ToTorchImage

    if device.type == "cuda":
        # FFCV's GPU NormalizeImage needs cupy; torchvision's Normalize on the device is
        # what FFCV's own CIFAR example uses and costs one fused elementwise pass.
        from torchvision.transforms import Normalize

        return [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(channels_last=True),
                Convert(torch.float16), Normalize(mean.tolist(), std.tolist())]
    return [NormalizeImage(mean, std, np.float32), ToTensor(), ToTorchImage(channels_last=True)]


def make_loader(path: Path | str, *, indices=None, batch_size: int, train: bool, augment=None,
                label_map: dict | None = None, device="cpu", workers: int | None = None,
                drop_last: bool = False, seed: int = 0, order=None, mean=None, std=None
                ) -> BetonLoader:
    """An FFCV loader over `path` restricted to `indices` (see the module docstring).

    train=True: the study's augmentation (defaults updated by `augment`), random order
    seeded by `seed`; train=False: no augmentation, sequential order. `order` ('random' or
    'sequential') overrides the order. `workers`: FFCV threads (default: usable CPUs).
    """
    import torch
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToDevice, ToTensor

    path = Path(path)
    batch_size = _check_batch_size(batch_size)
    reader = open_reader(path)
    indices = _check_indices(indices, int(reader.num_samples))
    labels = np.asarray(_field(reader, LABEL_FIELD), dtype=np.int64)
    device = torch.device(device)
    table = _label_table(label_map, labels[indices])
    if table is not None:
        table = table.to(device)
    mean, std = _mean_std(path, mean, std)
    ops = []
    if train:
        aug = resolve_augment(augment, mean)
        side = int(_field(reader, IMAGE_FIELD)["height"].min())
        if aug.cutout > side:
            raise ValueError(f"augment.cutout {aug.cutout} is larger than the {side}px images")
        ops = _ffcv_augment_ops(aug)
    label_ops = [IntDecoder(), ToTensor()]
    if device.type == "cuda":
        label_ops.append(ToDevice(device, non_blocking=True))
    workers = _workers(workers)
    random_order = _order_is_random(order, train)
    loader = Loader(
        str(path), batch_size=batch_size, num_workers=workers,
        order=OrderOption.RANDOM if random_order else OrderOption.SEQUENTIAL,
        seed=int(seed), indices=indices.astype(np.uint64), drop_last=bool(drop_last),
        pipelines={IMAGE_FIELD: [SimpleRGBImageDecoder(), *ops, *_ffcv_tail(device, mean, std)],
                   LABEL_FIELD: label_ops},
    )
    return BetonLoader(loader, table, indices, batch_size, workers)


# ---- the in-memory loader ----------------------------------------------------------------------
def _blend(img, other, ratio):
    """FFCV's blend: ratio * img + (1 - ratio) * other, clipped, truncated to uint8."""
    out = ratio * img.float() + (1.0 - ratio) * other
    return out.clamp_(0, 255).to(img.dtype)


def _grey(x):
    r, g, b = x[..., 0].float(), x[..., 1].float(), x[..., 2].float()
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(x.dtype)  # truncated, as FFCV does


def augment_batch(x, aug: Augment, gen):
    """The study's augmentation on a uint8 [B, H, W, 3] tensor, with the draws from `gen`."""
    import torch

    b, h, w, _ = x.shape
    x = x.clone()
    if aug.flip > 0:
        flip = torch.rand(b, generator=gen) < aug.flip
        x[flip] = x[flip].flip(2)
    for kind, magnitude in aug.jitters():
        apply = torch.rand(b, generator=gen) < aug.jitter_p
        low = max(0.0, 1.0 - magnitude)
        ratio = low + (1.0 + magnitude - low) * torch.rand(b, generator=gen)
        if not apply.any():
            continue
        sel, r = x[apply], ratio[apply].view(-1, 1, 1, 1)
        if kind == "brightness":
            other = torch.zeros(())
        elif kind == "contrast":
            other = _grey(sel).float().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        else:
            other = _grey(sel).float().unsqueeze(-1)
        x[apply] = _blend(sel, other, r)
    fill = torch.tensor(aug.fill, dtype=x.dtype)
    if aug.translate > 0:
        p = aug.translate
        padded = fill.expand(b, h + 2 * p, w + 2 * p, 3).clone()
        padded[:, p:p + h, p:p + w] = x
        dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, :]
        x = padded[torch.arange(b)[:, None, None], rows, cols]
    if aug.cutout > 0:
        c = aug.cutout
        y0 = torch.randint(0, h - c + 1, (b,), generator=gen)
        x0 = torch.randint(0, w - c + 1, (b,), generator=gen)
        ys, xs = torch.arange(h), torch.arange(w)
        inside = (((ys[None] >= y0[:, None]) & (ys[None] < y0[:, None] + c))[:, :, None]
                  & ((xs[None] >= x0[:, None]) & (xs[None] < x0[:, None] + c))[:, None, :])
        x = torch.where(inside[..., None], fill, x)
    return x


def normalise(x, mean: np.ndarray, std: np.ndarray, device, half: bool):
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] (channels-last memory), (x - mean) / std."""
    import torch

    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.half() if half else x


class ArrayLoader:
    """make_loader's interface over in-memory arrays, with the augmentation done in torch.

    Deterministic: epoch e draws its order and augmentations from a generator seeded by
    (seed, e). `workers` is accepted for the common interface and unused.
    """

    def __init__(self, images, labels, *, indices=None, batch_size: int, train: bool,
                 augment=None, label_map: dict | None = None, device="cpu",
                 workers: int | None = None, drop_last: bool = False, seed: int = 0,
                 order=None, mean=None, std=None):
        import torch

        images, labels = registry.check_arrays(images, labels, "ArrayLoader")
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels)
        self.indices = _check_indices(indices, len(images))
        self.batch_size = _check_batch_size(batch_size)
        self.device = torch.device(device)
        self.table = _label_table(label_map, labels[self.indices])
        self.mean, self.std = _mean_std(None, mean, std)
        self.aug = resolve_augment(augment, self.mean) if train else None
        if self.aug is not None and self.aug.cutout > min(images.shape[1:3]):
            raise ValueError(f"augment.cutout {self.aug.cutout} is larger than the images")
        self.random = _order_is_random(order, train)
        self.drop_last, self.seed, self.epoch = bool(drop_last), int(seed), 0
        self.workers = 0

    def __len__(self) -> int:
        return _batches(len(self.indices), self.batch_size, self.drop_last)

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """The next iteration draws epoch `epoch`'s order and augmentations."""
        self.epoch = int(epoch)

    def _generator(self):
        import torch

        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))

    def __iter__(self):
        import torch

        gen = self._generator()
        self.epoch += 1
        order = torch.from_numpy(self.indices)
        if self.random:
            order = order[torch.randperm(len(order), generator=gen)]
        half = self.device.type == "cuda"
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx]
            if self.aug is not None:
                x = augment_batch(x, self.aug, gen)
            y = self.labels[idx]
            if self.table is not None:
                y = self.table[y]
            yield normalise(x, self.mean, self.std, self.device, half), y.to(self.device)


def default_workers() -> int:
    """What the loaders use when `workers` is not given (exposed for logs and tests)."""
    return _workers(None)

