"""The ColorShapeDigit800k folder tree: writing the generator's images as one, reading any.

Layout (`write_partition_tree` / `read_partition_tree`): the published ColorShapeDigit800k
layout, `root/partition3/{train,val}/<shape>_<digit>_<color>/<index>.png` (e.g.
`circle_7_blue/0000042.png`, the index being the image's position in the generator's
stream, repr_sim.data.shapes: lossless RGB PNG from the small encoder `encode_png`, read back
with PIL). Only classes that received images get a folder (a class folder
with no files would say nothing, and the reader takes its classes from the names, not
from a count of folders). Each split is written to a hidden temporary folder beside it
and renamed at the end, so a split folder that exists is complete; it carries a hidden
`.generator.json` with the parameters, and a rerun with the same parameters reuses it
(a lock file `root/.partition3.lock` serialises concurrent writers). The reader takes a
published tree as well as a generated one.
Label sets are views of one tree: `shapes.label_from_attrs(attrs, label)`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..atomic import file_lock
from ..paths import usable_cpus
from .shapes import ATTRIBUTES, check_args, class_name, parse_class_name, render_split

log = logging.getLogger(__name__)

PARTITION_DIR = "partition3"
MANIFEST = ".generator.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _split_params(n: int, size: int, seed: int, split: str) -> dict:
    return {"generator": "repr_sim.data.shapes", "version": 1, "split": split, "n": n,
            "size": size, "seed": seed}  # fmt: skip


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(image: np.ndarray) -> bytes:
    """A lossless 8-bit RGB PNG of a uint8 [H, W, 3] array.

    Written by hand (filter type 0, zlib level 1) because PIL's encoder costs ~3x more
    per small image and holds the GIL; any PNG reader (PIL in the tests) decodes it.
    """
    h, w, _ = image.shape
    rows = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # each row: filter byte 0, then RGB
    rows[:, 1:] = image.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, truecolour
    return b"".join([
        b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header),
        _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)), _png_chunk(b"IEND", b""),
    ])  # fmt: skip


def _write_pngs(folder: Path, images: np.ndarray, attrs: dict, start: int, workers: int):
    names = [class_name(s, d, c) for s, d, c in zip(attrs["shape"], attrs["digit"],
                                                    attrs["color"], strict=True)]  # fmt: skip
    for name in set(names):
        (folder / name).mkdir(exist_ok=True)

    def save(i: int) -> None:
        with open(folder / names[i] / f"{start + i:07d}.png", "wb") as f:
            f.write(encode_png(images[i]))

    with ThreadPoolExecutor(workers) as pool:  # zlib and file writes release the GIL
        list(pool.map(save, range(len(images))))


def _write_split(base: Path, split: str, n: int, size: int, seed: int, chunk: int) -> None:
    from ..paths import progress

    final = base / split
    params = _split_params(n, size, seed, split)
    if final.exists():
        manifest = final / MANIFEST
        found = json.loads(manifest.read_text()) if manifest.is_file() else None
        if found == params:
            log.info("reusing %s (%d images)", final, n)
            return
        raise ValueError(
            f"{final} already exists and was not written with {params} "
            f"(found {found}); remove it or choose another root"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp_{split}_", dir=base))
    try:
        log.info("writing %d %dx%d images to %s", n, size, size, final)
        workers = _io_workers()
        with progress(total=n, desc=f"partition3/{split}", unit="img") as bar:
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                images, attrs = render_split(start, stop, size=size, seed=seed, split=split)
                _write_pngs(tmp, images, attrs, start, workers)
                bar.update(stop - start)
        (tmp / MANIFEST).write_text(json.dumps(params, sort_keys=True) + "\n")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_partition_tree(root, n_train: int, n_val: int, *, size: int = 28, seed: int = 0,
                         chunk: int = 8192) -> Path:  # fmt: skip
    """Write `root/partition3/{train,val}/<shape>_<digit>_<color>/<index>.png`.

    train holds `shapes.generate(n_train, size=size, seed=seed)`, val the independent "val"
    stream of the same seed. Returns root/partition3. Each split appears complete or
    not at all; an existing split written with the same parameters is reused, any other
    existing split is a ValueError.
    """
    for n in (n_train, n_val):
        check_args(n, size, seed)
    base = Path(root) / PARTITION_DIR
    base.mkdir(parents=True, exist_ok=True)
    # Two writers of one tree: the second waits, then reuses the first one's folders.
    with file_lock(Path(root) / f".{PARTITION_DIR}.lock"):
        _write_split(base, "train", n_train, size, seed, chunk)
        _write_split(base, "val", n_val, size, seed, chunk)
    return base


def _split_folder(root, split: str) -> Path:
    root = Path(root)
    base = root if root.name == PARTITION_DIR and not (root / PARTITION_DIR).is_dir() else (
        root / PARTITION_DIR
    )  # fmt: skip
    folder = base / split
    if not folder.is_dir():
        raise ValueError(f"no partition folder {folder} (expected <root>/partition3/{split}/)")
    return folder


def _read_images(files: list[Path]) -> np.ndarray:
    """Decode image files into one preallocated uint8 [N, H, W, 3] array (threads)."""
    from PIL import Image
    from ..paths import progress

    def load(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    first = load(files[0])
    images = np.empty((len(files), *first.shape), dtype=np.uint8)

    def fill(i: int) -> None:
        pixels = load(files[i])
        if pixels.shape != first.shape:
            raise ValueError(f"{files[i]} is {pixels.shape[1]}x{pixels.shape[0]}, "
                             f"{files[0].name} is {first.shape[1]}x{first.shape[0]}")  # fmt: skip
        images[i] = pixels

    with ThreadPoolExecutor(_io_workers()) as pool:
        done = pool.map(fill, range(len(files)))
        for _ in progress(done, total=len(files), desc="reading images", unit="img"):
            pass
    return images


def _io_workers() -> int:
    return min(8, 2 * usable_cpus())


def read_partition_tree(root, split: str):
    """Read `root/partition3/<split>/` (published or generated): (images, attrs).

    images: uint8 [N, H, W, 3], sorted by class folder then file name; attrs: int64
    'shape', 'digit', 'color'. Hidden entries and plain files beside the class folders are
    ignored; a folder whose name is not <shape>_<digit>_<color> with known values is a
    ValueError naming it, and so are images of differing sizes.
    """
    folder = _split_folder(root, split)
    files, classes = [], []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            cls = parse_class_name(entry.name)
        except ValueError as err:
            raise ValueError(f"{entry}: {err}") from None
        for f in sorted(entry.iterdir(), key=lambda e: e.name):
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                files.append(f)
                classes.append(cls)
    if not files:
        raise ValueError(f"no images under {folder}")

    images = _read_images(files)
    table = np.array(classes, dtype=np.int64)
    attrs = {k: table[:, i].copy() for i, k in enumerate(ATTRIBUTES)}
    return images, attrs
