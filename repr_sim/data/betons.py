"""FFCV betons, the format: writing them (atomic, idempotent) and reading them back.

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

The loaders over betons are in `repr_sim.data.loaders`, the augmentation they apply in
`repr_sim.data.augment`.
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

from ..atomic import atomic_path, atomic_write_json, file_lock
from ..errors import UserError
from ..paths import data_root, usable_cpus
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


def is_complete(path: Path | str, *, content: str | None = None,
                expect: dict | None = None) -> bool:
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
        return (f"{len(reader.metadata)} metadata records for {reader.num_samples} samples "
                "(truncated?)")
    if int(reader.header["alloc_table_ptr"]) > size:
        return "allocation table beyond the end of the file (truncated)"
    meta = field_metadata(reader, IMAGE_FIELD)
    ends = meta["data_ptr"].astype(np.uint64) + (meta["height"].astype(np.uint64)
                                                 * meta["width"].astype(np.uint64) * np.uint64(3))
    raw_mode = meta["mode"] == 1
    if np.any(ends[raw_mode] > size) or np.any(meta["data_ptr"] >= size):
        return "image data beyond the end of the file (truncated)"
    return None


def field_metadata(reader, name: str) -> np.ndarray:
    """The per-sample metadata records of one field (labels: the values themselves)."""
    return reader.metadata[f"f{reader.field_names.index(name)}"]


def read_labels(path: Path | str) -> np.ndarray:
    """The label field as int64 [N], from the beton's metadata (no image is decoded)."""
    return np.array(field_metadata(open_reader(path), LABEL_FIELD), dtype=np.int64)


def load_arrays(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W, 3], labels int64 [N]): every image decoded once, into memory."""
    reader = open_reader(path)
    meta = field_metadata(reader, IMAGE_FIELD)
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
    return images, np.array(field_metadata(reader, LABEL_FIELD), dtype=np.int64)


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
