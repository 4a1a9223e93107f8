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

Without FFCV (a machine that cannot build it, such as the GPU check's): the same format is
written and read here with NumPy alone (`_plain_write`, `_PlainReader`; the layout is FFCV's
version 2: header, field descriptors, per-sample metadata, page-aligned data pages, an
allocation table). What `_plain_write` writes is byte for byte what FFCV's writer writes
with one process (tests/test_data.py compares them), so such a beton is a real one: FFCV
reads it, and the `memory` and `device` loader backends, measurement and the other kinds'
trainers read any beton without FFCV. Only the `ffcv` loader backend needs FFCV itself.

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
    chunk = max(1, min(1000, math.ceil(len(images) / (4 * workers))))
    workers = max(1, min(workers, math.ceil(len(images) / chunk),
                         math.ceil(images.nbytes / (8 * _MIN_PAGE_SIZE))))
    page = _MIN_PAGE_SIZE if images.nbytes < 64 * _MIN_PAGE_SIZE else 4 * _MIN_PAGE_SIZE
    while page < images[0].nbytes * 2:
        page *= 2
    return workers, chunk, page


def _ffcv_write(path: Path, images: np.ndarray, labels: np.ndarray, workers: int) -> None:
    try:
        from ffcv.fields import IntField, RGBImageField
        from ffcv.writer import DatasetWriter
    except ImportError:  # no FFCV here: the same format, written with NumPy (one process)
        _plain_write(path, images, labels, _writer_plan(images, 1)[2])
        return

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


# ---- the format without FFCV (ffcv/types.py, writer.py, memory_allocator.py) ------------------
_VERSION = 2  # ffcv.types.CURRENT_VERSION
_MIN_PAGE_SIZE = 1 << 21  # ffcv.writer.MIN_PAGE_SIZE
_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                    ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")], align=True)
_FIELD_DESC = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)),
                        ("arguments", ("<u1", (1024,)))], align=True)
_ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
_TYPE_FLOAT, _TYPE_INT, _TYPE_RGB = 0, 1, 2  # ffcv.types.TYPE_ID_HANDLER
_FIELD_METADATA = {
    _TYPE_FLOAT: np.dtype("<f8"),
    _TYPE_INT: np.dtype("<i8"),
    _TYPE_RGB: np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"),
                         ("data_ptr", "<u8")]),
}
_RAW_MODE = 1  # ffcv.fields.rgb_image.IMAGE_MODES["raw"]


def _metadata_type(type_ids) -> np.dtype:
    """The per-sample record of fields of these types (ffcv.types.get_metadata_type)."""
    return np.dtype([("", _FIELD_METADATA[int(t)]) for t in type_ids], align=True)


def _plain_write(path: Path, images: np.ndarray, labels: np.ndarray, page_size: int) -> None:
    """Write (images, labels) as FFCV's DatasetWriter does with one process: raw RGB images,
    int64 labels, `page_size`-byte pages of data after the page-aligned end of the metadata,
    each page written whole, the allocation table at the end, the header written last."""
    fields = ((IMAGE_FIELD, _TYPE_RGB), (LABEL_FIELD, _TYPE_INT))
    descriptors = np.zeros(len(fields), dtype=_FIELD_DESC)
    for desc, (name, type_id) in zip(descriptors, fields, strict=True):
        encoded = np.frombuffer(name.encode("ascii"), dtype="<u1")[:16]
        desc["type_id"] = type_id
        desc["name"][:len(encoded)] = encoded
    metadata = np.zeros(len(images), dtype=_metadata_type(t for _, t in fields))
    start = _HEADER.itemsize + descriptors.nbytes + metadata.nbytes
    data_start = -(-start // page_size) * page_size  # ffcv.utils.align_to_page
    size = int(images[0].nbytes)
    if size > page_size:
        raise ValueError(f"an image of {size} bytes does not fit a page of {page_size}")
    per_page = page_size // size  # one allocation per sample, so pages fill in order
    n_pages = -(-len(images) // per_page)
    index = np.arange(len(images), dtype=np.uint64)
    ptrs = (np.uint64(data_start) + (index // np.uint64(per_page)) * np.uint64(page_size)
            + (index % np.uint64(per_page)) * np.uint64(size))
    image_meta = metadata["f0"]
    image_meta["mode"] = _RAW_MODE
    image_meta["height"], image_meta["width"] = images.shape[1], images.shape[2]
    image_meta["data_ptr"] = ptrs
    metadata["f1"] = labels
    table = np.zeros(len(images), dtype=_ALLOC)
    table["sample_id"], table["ptr"], table["size"] = index, ptrs, size
    header = np.zeros(1, dtype=_HEADER)
    header["version"], header["num_fields"] = _VERSION, len(fields)
    header["page_size"], header["num_samples"] = page_size, len(images)
    header["alloc_table_ptr"] = data_start + n_pages * page_size
    pixels = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), size)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(descriptors.tobytes())
        f.write(metadata.tobytes())
        f.write(bytes(data_start - start))
        page = np.zeros((per_page, size), dtype=np.uint8)
        tail = bytes(page_size - per_page * size)
        for first in range(0, len(images), per_page):
            chunk = pixels[first:first + per_page]
            page[:len(chunk)] = chunk
            page[len(chunk):] = 0
            f.write(page.tobytes())
            f.write(tail)
        f.write(table.tobytes())


class _PlainReader:
    """What this module uses of FFCV's Reader (header, field names and descriptors,
    per-sample metadata, allocation table), read with NumPy as ffcv.reader.Reader does."""

    def __init__(self, fname: str):
        self._fname = fname
        header = np.fromfile(fname, dtype=_HEADER, count=1)
        if len(header) != 1:
            raise ValueError("shorter than a beton header")
        self.header = header[0]
        if int(self.header["version"]) != _VERSION:
            raise ValueError(f"file format mismatch: code={_VERSION},file={self.header['version']}")
        self.num_samples = self.header["num_samples"]
        self.page_size = self.header["page_size"]
        self.num_fields = self.header["num_fields"]
        self.field_descriptors = np.fromfile(fname, dtype=_FIELD_DESC,
                                             count=int(self.num_fields), offset=_HEADER.itemsize)
        if len(self.field_descriptors) != int(self.num_fields):
            raise ValueError("truncated in the field descriptors")
        self.field_names = [bytes(d["name"]).split(b"\0", 1)[0].decode("ascii")
                            for d in self.field_descriptors]
        unknown = [int(t) for t in self.field_descriptors["type_id"] if int(t) not in _FIELD_METADATA]
        if unknown:
            raise ValueError(f"field type {unknown[0]} is not readable without FFCV")
        self.metadata_type = _metadata_type(self.field_descriptors["type_id"])
        self.metadata = np.fromfile(fname, dtype=self.metadata_type, count=int(self.num_samples),
                                    offset=_HEADER.itemsize + self.field_descriptors.nbytes)
        self.alloc_table = np.fromfile(fname, dtype=_ALLOC,
                                       offset=int(self.header["alloc_table_ptr"]))

    @property
    def file_name(self) -> str:
        return self._fname


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
    """FFCV's Reader on a checked beton (image and label fields, data inside the file);
    without FFCV, `_PlainReader` (the same attributes, read with NumPy)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: beton not found (write it with `reprsim write-data`)")
    try:
        from ffcv.reader import Reader
    except ImportError:
        Reader = _PlainReader  # noqa: N806

    size = path.stat().st_size
    try:
        reader = Reader(str(path))
        problem = _reader_problem(reader, size)
    except Exception as e:  # FFCV asserts, numpy raises on short reads
        problem = f"unreadable ({_one_line(e)})"
    if problem:
        raise UserError(f"{path}: not a valid FFCV beton: {problem}")
    return reader


def _reader_problem(reader, size: int) -> str | None:
    types = dict(zip(reader.field_names, (int(t) for t in reader.field_descriptors["type_id"]),
                     strict=True))
    if types.get(IMAGE_FIELD) != _TYPE_RGB:
        return f"no RGB '{IMAGE_FIELD}' field (fields: {', '.join(types)})"
    if types.get(LABEL_FIELD) != _TYPE_INT:
        return f"no integer '{LABEL_FIELD}' field (fields: {', '.join(types)})"
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
