"""Image data: raw readers on files in the real formats, betons, loaders, CLI, scripts.

Everything runs on tiny synthetic data written by repr_sim.data.fake. FFCV compiles each
loader pipeline on first use (seconds to tens of seconds): two FFCV loaders are built for
the whole module (module-scoped fixtures).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_fixtures import (
    make_fake_beton,
    make_fake_betons,
    make_fake_cifar10,
    make_fake_cifar100,
    make_fake_mnist,
    make_fake_raw,
    make_fake_svhn,
    make_fake_tinyimagenet,
)
from PIL import Image

from repr_sim import cli, paths
from repr_sim.data import betons, loaders, raw, registry
from repr_sim.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MEAN = np.array([125.307, 122.961, 113.8575])
STD = np.array([51.5865, 50.847, 51.255])


@pytest.fixture(autouse=True, scope="module")
def _no_verify():
    with pytest.MonkeyPatch.context() as mp:  # synthetic files cannot match published md5s
        mp.setenv("REPRSIM_VERIFY", "0")
        yield


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def grey_resized(rgb_of_grey: np.ndarray, size: int) -> np.ndarray:
    """Independent reference: resize the single grey channel, then copy it to 3 channels."""
    out = [np.asarray(Image.fromarray(img[..., 0]).resize((size, size), Image.BILINEAR))
           for img in rgb_of_grey]
    return np.repeat(np.stack(out)[..., None], 3, axis=3)


# ---- registry ------------------------------------------------------------------------------
def test_registry_entries_and_constants():
    expected = {"cifar10": (10, 32), "cifar100": (100, 32), "tinyimagenet": (200, 64),
                "mnist": (10, 28), "svhn": (10, 32), "shapes": (8, 32),
                "sklearn_digits": (10, 32), "sample_patches": (1, 32)}
    assert set(expected) <= set(registry.names())
    for name, (classes, side) in expected.items():
        entry = registry.get(name)
        assert (entry.num_classes, entry.resolution) == (classes, side), name
        assert entry.mean == (125.307, 122.961, 113.8575) and entry.std == (51.5865, 50.847, 51.255)
    assert registry.get("cifar10").class_names()[0] == "airplane"
    assert registry.beton_name("mnist") == "mnist" == registry.beton_name("mnist", 32)
    assert registry.beton_name("mnist", 64) == "mnist_64"
    assert registry.beton_name("tinyimagenet", 64) == "tinyimagenet"
    with pytest.raises(UserError, match="unknown dataset 'cifar11'"):
        registry.get("cifar11")


def test_generated_entries():
    pytest.importorskip("repr_sim.data.shapes", reason="repr_sim.data.shapes not written yet")
    for name, split in (("shapes", "test"), ("sklearn_digits", "test"), ("sample_patches", "test")):
        entry = registry.get(name)
        images, labels = entry.load(None, split, resolution=16)
        assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 3), name
        assert labels.dtype == np.int64 and len(labels) == len(images), name
        assert 0 <= labels.min() and labels.max() < entry.num_classes, name
    assert len(registry.get("sklearn_digits").load(None, "test")[0]) == 1797
    with pytest.raises(ValueError, match="no split 'train'"):
        registry.get("sklearn_digits").load(None, "train")


# ---- raw readers on files in the real formats -----------------------------------------------
@pytest.fixture(scope="module")
def raw_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    data = make_fake_raw(root)
    raw.reorganize_tinyimagenet(root)
    return root, data


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "svhn", "tinyimagenet"])
def test_readers_return_what_was_written(raw_root, name):
    root, data = raw_root
    entry = registry.get(name)
    for split in ("train", "test"):
        images, labels = entry.load(root, split)
        ref_images, ref_labels = data[name][split]
        assert images.shape == ref_images.shape and images.dtype == np.uint8
        np.testing.assert_array_equal(images, ref_images)
        np.testing.assert_array_equal(labels, ref_labels)
    assert len(entry.class_names(root)) == (3 if name == "tinyimagenet" else entry.num_classes)


def test_mnist_gz_and_svhn_label_ten(tmp_path):
    data = make_fake_mnist(tmp_path, n_train=5, n_test=30, compress=True)
    assert all(p.suffix == ".gz" for p in data.files)
    images, labels = registry.get("mnist").load(tmp_path, "test")
    np.testing.assert_array_equal(images, data["test"][0])
    np.testing.assert_array_equal(labels, data["test"][1])
    # SVHN stores the digit 0 as 10: the .mat must hold 10 where the reader gives 0.
    import scipy.io

    svhn = make_fake_svhn(tmp_path, n_train=2, n_test=40)
    y = scipy.io.loadmat(tmp_path / "svhn" / "test_32x32.mat")["y"].ravel()
    zeros = svhn["test"][1] == 0
    assert zeros.any() and (y[zeros] == 10).all() and (y[~zeros] == svhn["test"][1][~zeros]).all()
    assert registry.get("svhn").load(tmp_path, "test")[1].max() <= 9


def test_resized_probe_matches_independent_resize(raw_root):
    root, data = raw_root
    images, _ = registry.get("mnist").load(root, "test", resolution=64)
    np.testing.assert_array_equal(images, grey_resized(data["mnist"]["test"][0], 64))
    assert (images[..., 0] == images[..., 2]).all()


def test_cifar_pickle_is_python2_format_and_unpickler_is_restricted(tmp_path):
    data = make_fake_cifar10(tmp_path, n_train=10, n_test=3)
    blob = (tmp_path / raw.CIFAR10_DIR / "data_batch_1").read_bytes()
    assert blob.startswith(b"\x80\x02}") and b"cnumpy.core.multiarray\n_reconstruct\n" in blob
    assert b"_codecs" not in blob  # bytes written as Python 2 strings, as in the real files
    with open(tmp_path / raw.CIFAR10_DIR / "data_batch_1", "rb") as f:  # stdlib agrees
        batch = pickle.load(f, encoding="latin1")
    np.testing.assert_array_equal(batch["labels"], data["train"][1][:2])
    evil = tmp_path / "evil"
    evil.write_bytes(b"\x80\x02cos\nsystem\nU\x04trueq\x85R.")
    with pytest.raises(UserError, match="'os.system' is not allowed") as err:
        raw.read_pickle_dict(evil)
    assert str(evil) in str(err.value)


def test_checksums_and_corrupt_raw_files(tmp_path, monkeypatch):
    make_fake_cifar10(tmp_path, n_train=10, n_test=3)
    entry = registry.get("cifar10")
    monkeypatch.setenv("REPRSIM_VERIFY", "1")
    with pytest.raises(UserError, match="data_batch_1: md5 [0-9a-f]{32} differs from the published"):
        entry.load(tmp_path, "train")
    monkeypatch.setenv("REPRSIM_VERIFY", "0")
    batch = tmp_path / raw.CIFAR10_DIR / "test_batch"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(UserError) as err:
        entry.load(tmp_path, "test")
    assert one_line(str(err.value)).startswith(f"{batch}: not a readable CIFAR python batch")
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match="test_32x32.mat: not a readable SVHN .mat file"):
        registry.get("svhn").load(tmp_path, "test")
    make_fake_mnist(tmp_path, n_train=2, n_test=3)
    idx = tmp_path / raw.MNIST_DIR / "t10k-images-idx3-ubyte"
    idx.write_bytes(idx.read_bytes()[:-5])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte: not a readable idx file"):
        registry.get("mnist").load(tmp_path, "test")
    make_fake_tinyimagenet(tmp_path, n_classes=2, n_train=2, n_val=1, reorganize=True)
    jpeg = next((tmp_path / raw.TINYIMAGENET_DIR / "train").rglob("*.JPEG"))
    jpeg.write_bytes(b"\xff\xd8 broken")
    with pytest.raises(UserError) as err:
        registry.get("tinyimagenet").load(tmp_path, "train")
    assert one_line(str(err.value)).startswith(f"{jpeg}: not a readable image")


# ---- TinyImageNet reorganisation ----------------------------------------------------------------
def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_reorg_twice_is_harmless(tmp_path, capsys):
    data = make_fake_tinyimagenet(tmp_path, n_classes=3, n_train=2, n_val=3)
    val = tmp_path / raw.TINYIMAGENET_DIR / "val"
    with pytest.raises(UserError, match="not grouped per class yet"):
        registry.get("tinyimagenet").load(tmp_path, "test")
    assert cli.main(["reorg-tinyimagenet", "--data-root", str(tmp_path)]) == 0
    assert "moved 9 images" in capsys.readouterr().out
    after_first = listing(val)
    assert not (val / "images").exists()
    for wnid in data.info["wnids"]:
        assert len(list((val / wnid / "images").glob("*.JPEG"))) == 3
    assert cli.main(["reorg-tinyimagenet", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "moved 0 images" in out and "9 already" in out
    assert listing(val) == after_first
    images, labels = registry.get("tinyimagenet").load(tmp_path, "test")
    np.testing.assert_array_equal(images, data["test"][0])
    np.testing.assert_array_equal(labels, data["test"][1])


# ---- betons: write, read back, idempotence, atomicity, corruption ---------------------------------
@pytest.fixture(scope="module")
def written(raw_root):
    """Every raw dataset written to betons (both splits) by the real code path."""
    root, data = raw_root
    out = {}
    for name in ("cifar10", "cifar100", "mnist", "svhn", "tinyimagenet"):
        out[name] = betons.write_dataset(name, root=root, splits=["train", "test"], workers=1)
    return root, data, out


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "svhn", "tinyimagenet"])
def test_betons_read_back_identically(written, name):
    root, data, out = written
    for result, split in zip(out[name], ("train", "test"), strict=True):
        assert result.written and result.path == root / "ffcv" / name / f"{split}.beton"
        images, labels = betons.load_arrays(result.path)
        ref_images, ref_labels = data[name][split]
        if name == "mnist":  # written at the CIFAR models' resolution
            ref_images = grey_resized(ref_images, 32)
        np.testing.assert_array_equal(images, ref_images)  # raw mode: pixel-exact
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(betons.read_labels(result.path), ref_labels)
        info = json.loads(betons.sidecar_path(result.path).read_text())
        assert info["num_samples"] == len(ref_labels) and info["dataset"] == name
        assert info["write_mode"] == "raw" and info["image_shape"] == list(ref_images.shape[1:])


def test_rewrite_is_idempotent(written):
    root, data, out = written
    path = out["cifar10"][0].path
    before = (path.stat().st_mtime_ns, betons.sidecar_path(path).read_text())
    again = betons.write_dataset("cifar10", root=root, splits=["train", "test"], workers=1)
    assert [r.written for r in again] == [False, False]
    assert not betons.write_beton(*data["cifar10"]["train"], path, workers=1)
    assert (path.stat().st_mtime_ns, betons.sidecar_path(path).read_text()) == before
    with pytest.MonkeyPatch.context() as mp:  # complete betons are kept without the raw files
        mp.setattr(registry.DatasetEntry, "load", lambda *a, **k: pytest.fail("raw data read"))
        assert not any(r.written for r in betons.write_dataset("cifar10", root=root,
                                                               splits=["train", "test"]))


def test_changed_or_damaged_beton_is_rewritten(tmp_path):
    path, images, labels = make_fake_beton(tmp_path / "x" / "train.beton", n=12)
    assert betons.is_complete(path)
    assert betons.write_beton(images[::-1].copy(), labels[::-1].copy(), path, workers=1)
    np.testing.assert_array_equal(betons.read_labels(path), labels[::-1])
    with open(path, "r+b") as f:  # same size, one flipped byte in the pixels
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not betons.is_complete(path)
    assert betons.write_beton(images, labels, path, workers=1)
    assert betons.is_complete(path)


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    import ffcv.writer

    def boom(self, allocations):
        raise RuntimeError("simulated crash while finalising")

    monkeypatch.setattr(ffcv.writer.DatasetWriter, "finalize", boom)
    images, labels = np.zeros((6, 8, 8, 3), np.uint8), np.arange(6)
    path = tmp_path / "ffcv" / "d" / "train.beton"
    with pytest.raises(RuntimeError, match="simulated crash"):
        betons.write_beton(images, labels, path, workers=1)
    left = [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")]
    assert left == []  # no beton, no sidecar, no temporary file


def test_corrupt_beton_gives_one_clear_line(tmp_path):
    garbage = tmp_path / "garbage.beton"
    garbage.write_bytes(os.urandom(5000))
    path, _, _ = make_fake_beton(tmp_path / "ok.beton", n=10)
    truncated = tmp_path / "truncated.beton"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for bad in (garbage, truncated, tmp_path / "missing.beton"):
        for reader in (betons.read_labels, betons.load_arrays):
            with pytest.raises(UserError) as err:
                reader(bad)
            line = one_line(str(err.value))
            assert line.startswith(f"{bad}: ") and ("not a valid FFCV beton" in line
                                                    or "beton not found" in line)
    with pytest.raises(UserError, match="not a valid FFCV beton"):
        loaders.make_loader(garbage, batch_size=2, train=False)


# ---- betons without FFCV (the GPU check's machine has none) ---------------------------------------
def without_ffcv(monkeypatch) -> None:
    """`import ffcv` and its submodules fail from here on in this test, as without FFCV."""
    for key in [k for k in sys.modules if k == "ffcv" or k.startswith("ffcv.")]:
        monkeypatch.setitem(sys.modules, key, None)
    monkeypatch.setitem(sys.modules, "ffcv", None)


@pytest.mark.parametrize("n, side, seed", [(40, 8, 0), (1500, 32, 1), (7, 64, 2)])
def test_plain_writer_writes_what_ffcv_writes(tmp_path, n, side, seed):
    """betons._plain_write against FFCV's DatasetWriter with one process: the same bytes
    (1500 CIFAR-sized images fill three 2 MiB pages); each reader reads the other's file."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.reader import Reader
    from ffcv.writer import MIN_PAGE_SIZE, DatasetWriter

    assert betons._MIN_PAGE_SIZE == MIN_PAGE_SIZE
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    labels = rng.integers(0, 200, n)
    page = betons._writer_plan(images, 1)[2]
    theirs, ours = tmp_path / "ffcv.beton", tmp_path / "plain.beton"
    fields = {"image": RGBImageField(write_mode="raw"), "label": IntField()}
    DatasetWriter(str(theirs), fields, page_size=page, num_workers=1).from_indexed_dataset(
        betons._ArrayDataset(images, labels), chunksize=100)
    betons._plain_write(ours, images, labels, page)
    assert ours.read_bytes() == theirs.read_bytes()
    for path in (theirs, ours):
        a, b = Reader(str(path)), betons._PlainReader(str(path))
        assert a.header.tobytes() == b.header.tobytes() and a.field_names == b.field_names
        assert a.metadata.tobytes() == b.metadata.tobytes()
        assert a.alloc_table.tobytes() == b.alloc_table.tobytes()


def test_betons_are_written_and_read_without_ffcv(tmp_path, monkeypatch):
    path, images, labels = make_fake_beton(tmp_path / "ffcv.beton", n=30, size=16, seed=4)
    without_ffcv(monkeypatch)
    with pytest.raises(ImportError):
        import ffcv.reader  # noqa: F401
    # A beton FFCV wrote, read without it; one written without it, checked and kept.
    got = betons.load_arrays(path)
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)
    plain = tmp_path / "d" / "train.beton"
    assert betons.write_beton(images, labels, plain, workers=4, info={"dataset": "d"})
    assert plain.read_bytes() == path.read_bytes()  # = FFCV's writer with one process
    assert betons.is_complete(plain) and not betons.write_beton(images, labels, plain)
    np.testing.assert_array_equal(betons.read_labels(plain), labels)
    # Damaged files: the same one-line errors as with FFCV.
    truncated = tmp_path / "truncated.beton"
    truncated.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    garbage = tmp_path / "garbage.beton"
    garbage.write_bytes(os.urandom(5000))
    tiny = tmp_path / "tiny.beton"
    tiny.write_bytes(b"\0" * 3)
    for bad in (truncated, garbage, tiny):
        for reader in (betons.read_labels, betons.load_arrays):
            with pytest.raises(UserError, match="not a valid FFCV beton"):
                reader(bad)
    monkeypatch.undo()
    from ffcv.reader import Reader  # FFCV reads what was written without it

    assert int(Reader(str(plain)).num_samples) == len(labels)


# ---- CLI errors ----------------------------------------------------------------------------------
def test_missing_raw_data_exit_2_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["write-data", "cifar10", "--data-root", str(empty)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "cifar-10-batches-py/data_batch_1" in line and "cifar-10-batches-py/test_batch" in line
    assert str(empty) in line and "--data-root or $REPRSIM_DATA" in line
    assert cli.main(["write-data", "mnist", "--data-root", str(empty)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "MNIST/raw/t10k-images-idx3-ubyte[.gz]" in line and "--download" in line
    assert not (empty / "ffcv").exists() or not any((empty / "ffcv").rglob("*.beton"))
    assert cli.main(["write-data", "nosuchset", "--data-root", str(empty)]) == 2
    assert "unknown dataset 'nosuchset'" in one_line(capsys.readouterr().err)


# ---- loaders ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    path, images, labels = make_fake_beton(root / "ffcv" / "d" / "train.beton", n=40, seed=3)
    return path, images, labels


INDICES = np.array([5, 1, 30, 2, 17, 9, 33, 12, 21, 0, 38])
LABEL_MAP = {c: (c * 3) % 10 for c in range(10)}


@pytest.fixture(scope="module")
def eval_batches(beton):
    path, _, _ = beton
    loader = loaders.make_loader(path, indices=INDICES, batch_size=4, train=False,
                                label_map=LABEL_MAP, workers=1)
    batches = [(x.clone(), y.clone()) for x, y in loader]
    return loader, batches


def test_eval_loader_values_labels_and_order(beton, eval_batches):
    _, images, labels = beton
    loader, batches = eval_batches
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [4, 4, 3]
    x = torch.cat([b[0] for b in batches]).numpy()
    y = torch.cat([b[1] for b in batches]).numpy()
    assert x.dtype == np.float32 and x.shape == (len(INDICES), 3, 32, 32)
    expected = (images[INDICES].astype(np.float64) - MEAN) / STD
    np.testing.assert_allclose(x, expected.transpose(0, 3, 1, 2), atol=1e-5)
    np.testing.assert_array_equal(y, [LABEL_MAP[int(c)] for c in labels[INDICES]])


@pytest.fixture(scope="module")
def train_run(beton):
    path, _, _ = beton
    with pytest.MonkeyPatch.context() as mp:  # default workers follow SLURM's allocation
        mp.setenv("SLURM_CPUS_PER_TASK", "1")
        loader = loaders.make_loader(path, indices=INDICES, batch_size=4, train=True,
                                    label_map=LABEL_MAP, drop_last=True, seed=7)
    epochs = [[(x.clone(), y.clone()) for x, y in loader] for _ in range(2)]
    return loader, epochs


def unnormalise(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1).astype(np.float64) * STD + MEAN


def has_fill_square(img: np.ndarray, side: int, fill) -> bool:
    match = (img == np.asarray(fill)).all(axis=2)
    h, w = match.shape
    return any(match[i:i + side, j:j + side].all() for i in range(h - side + 1) for j in range(w - side + 1))


def test_train_loader_subset_labels_and_augmentation(beton, train_run):
    _, images, labels = beton
    loader, epochs = train_run
    assert loader.workers == 1  # SLURM_CPUS_PER_TASK=1
    assert len(loader) == len(INDICES) // 4 == len(epochs[0])  # drop_last
    fill = (125, 122, 113)  # the CIFAR-10 mean as uint8
    for epoch, batches in enumerate(epochs):
        # Seeded random order over the given indices (FFCV: rng(seed + epoch).permutation).
        order = np.random.default_rng(7 + epoch).permutation(INDICES)[: len(loader) * 4]
        y = torch.cat([b[1] for b in batches]).numpy()
        np.testing.assert_array_equal(y, [LABEL_MAP[int(c)] for c in labels[order]])
        pixels = unnormalise(torch.cat([b[0] for b in batches]).numpy())
        np.testing.assert_allclose(pixels, np.rint(pixels), atol=2e-3)  # normalised uint8
        for img in np.rint(pixels).astype(np.uint8):
            assert has_fill_square(img, 10, fill)  # cutout 10 (always applied)
    first = torch.cat([b[0] for b in epochs[0]])
    assert first.shape == (8, 3, 32, 32) and first.dtype == torch.float32
    loader.set_epoch(1)  # a resumed run draws epoch 1's order again
    again = torch.cat([y for _, y in loader])
    np.testing.assert_array_equal(again.numpy(), torch.cat([b[1] for b in epochs[1]]).numpy())


def test_usable_cpus_and_default_workers(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert paths.usable_cpus() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert paths.usable_cpus() == 1 and loaders.default_workers() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert paths.usable_cpus() == len(os.sched_getaffinity(0))


def test_loader_argument_errors(beton):
    path, images, labels = beton
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 40\)"):
        loaders.make_loader(path, indices=[0, 40], batch_size=2, train=False)
    with pytest.raises(ValueError, match="label_map has no entry for label"):
        loaders.ArrayLoader(images, labels, batch_size=2, train=False, label_map={0: 0})
    with pytest.raises(ValueError, match="unknown augmentation settings: blur"):
        loaders.ArrayLoader(images, labels, batch_size=2, train=True, augment={"blur": 1})


# ---- ArrayLoader -----------------------------------------------------------------------------------
def test_array_loader_eval_matches_numpy(beton):
    _, images, labels = beton
    loader = loaders.ArrayLoader(images, labels, indices=INDICES, batch_size=5, train=False,
                                label_map=LABEL_MAP)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    x = torch.cat([b[0] for b in batches]).numpy()
    expected = ((images[INDICES].astype(np.float64) - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x, expected, atol=1e-5)
    y = torch.cat([b[1] for b in batches]).numpy()
    np.testing.assert_array_equal(y, [LABEL_MAP[int(c)] for c in labels[INDICES]])


def test_array_loader_deterministic_per_seed(beton):
    _, images, labels = beton

    def run(seed, epochs=2):
        loader = loaders.ArrayLoader(images, labels, batch_size=8, train=True, seed=seed,
                                    drop_last=True)
        return [[(x, y) for x, y in loader] for _ in range(epochs)]

    a, b, c = run(1), run(1), run(2)
    resumed = loaders.ArrayLoader(images, labels, batch_size=8, train=True, seed=1, drop_last=True)
    resumed.set_epoch(1)  # a resumed run draws epoch 1 as an uninterrupted one did
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(resumed, a[1], strict=True))
    flat = [torch.cat([x for x, _ in epoch]) for epoch in a]
    assert all(torch.equal(x, y) for ea, eb in zip(a, b, strict=True)
               for (x, _), (y, _) in zip(ea, eb, strict=True))
    assert not torch.equal(flat[0], torch.cat([x for x, _ in c[0]]))
    assert not torch.equal(flat[0], flat[1])  # a new epoch draws anew
    for img in np.rint(unnormalise(flat[0].numpy())).astype(np.uint8):
        assert has_fill_square(img, 10, (125, 122, 113))


def test_array_loader_augmentations_one_at_a_time(beton):
    _, images, labels = beton
    off = {"flip": 0, "brightness": 0, "contrast": 0, "saturation": 0, "translate": 0, "cutout": 0}

    def pixels(**aug):
        loader = loaders.ArrayLoader(images, labels, batch_size=40, train=True, order="sequential",
                                    augment={**off, **aug})
        return np.rint(unnormalise(next(iter(loader))[0].numpy())).astype(np.uint8)

    np.testing.assert_array_equal(pixels(flip=1.0), images[:, :, ::-1])
    shifted = pixels(translate=3, fill=[1, 2, 3])
    for img, src in zip(shifted, images, strict=True):
        padded = np.broadcast_to(np.array([1, 2, 3], np.uint8), (38, 38, 3)).copy()
        padded[3:35, 3:35] = src
        assert any((padded[dy:dy + 32, dx:dx + 32] == img).all() for dy in range(7) for dx in range(7))
    bright = pixels(brightness=0.5, jitter_p=1.0).astype(np.float64)
    ratios = bright.sum(axis=(1, 2, 3)) / images.astype(np.float64).sum(axis=(1, 2, 3))
    assert (ratios > 0.45).all() and (ratios < 1.55).all() and ratios.std() > 0.01


# ---- the shell scripts, end to end --------------------------------------------------------------
def run_script(script: Path, data: Path, *args: str, cwd: Path):
    env = {**os.environ, "REPRSIM_DATA": str(data), "REPRSIM_VERIFY": "0", "TQDM_DISABLE": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_cifar_script_end_to_end(tmp_path):
    data = tmp_path / "data"
    fakes = make_fake_raw(data, names=("cifar10", "cifar100", "mnist", "svhn"))
    script = REPO / "train_cifar_ffcv" / "run_write_ffcv_data.sh"
    assert "--data-root" in run_script(script, data, "--help", cwd=tmp_path).stdout
    done = run_script(script, data, "--workers", "1", cwd=tmp_path)  # not run from the repo
    assert done.returncode == 0, done.stderr
    for name, split in (("cifar10", "train"), ("cifar10", "test"), ("cifar100", "train"),
                        ("cifar100", "test"), ("mnist", "test"), ("svhn", "test")):
        path = data / "ffcv" / name / f"{split}.beton"
        np.testing.assert_array_equal(betons.read_labels(path), fakes[name][split][1])
    assert betons.load_arrays(data / "ffcv" / "mnist" / "test.beton")[0].shape[1:] == (32, 32, 3)
    assert done.stdout.count("wrote ") == 6, done.stdout  # (rewrites: test_rewrite_is_idempotent)


@pytest.mark.slow
def test_tinyimagenet_script_end_to_end(tmp_path):
    data = tmp_path / "data"
    fakes = make_fake_raw(data, names=("tinyimagenet", "mnist", "svhn"))
    script = REPO / "train_tinyimagenet_ffcv" / "run_write_ffcv_data.sh"
    assert "--data-root" in run_script(script, data, "--help", cwd=tmp_path).stdout
    done = run_script(script, tmp_path / "elsewhere", "--data-root", "data", "--workers", "1",
                      cwd=tmp_path)  # a relative --data-root wins over $REPRSIM_DATA
    assert done.returncode == 0, done.stderr
    for name, split in (("tinyimagenet", "train"), ("tinyimagenet", "test"),
                        ("mnist_64", "test"), ("svhn_64", "test")):
        path = data / "ffcv" / name / f"{split}.beton"
        images, labels = betons.load_arrays(path)
        np.testing.assert_array_equal(labels, fakes[name.split("_")[0]][split][1])
        assert images.shape[1:] == (64, 64, 3)
    tiny_test = betons.load_arrays(data / "ffcv" / "tinyimagenet" / "test.beton")[0]
    np.testing.assert_array_equal(tiny_test, fakes["tinyimagenet"]["test"][0])
    reorg = subprocess.run([sys.executable, str(REPO / "train_tinyimagenet_ffcv" /
                                                "tinyimagenet_dataset_reorg.py"),
                            "--data-root", str(data)], cwd=tmp_path, capture_output=True, text=True)
    assert reorg.returncode == 0 and "moved 0 images" in reorg.stdout, reorg.stderr


def test_fixture_helpers_are_cheap_and_consistent(tmp_path):
    paths_ = make_fake_betons(tmp_path, "cifar100", n_train=12, n_test=6)
    assert set(paths_) == {"train", "test"}
    np.testing.assert_array_equal(betons.read_labels(paths_["test"]),
                                  make_fake_cifar100(tmp_path / "again", n_train=12, n_test=6)["test"][1])
