"""The device-resident loader (loaders.DeviceLoader) and its batched augmentation.

Semantics are checked against FFCV's own transforms: their Python bodies (what FFCV's
compiler would JIT) are run here uncompiled on the same input batches, and the two
outputs' distributions are compared (flip fraction, translate offsets, cutout origins,
jitter values), each also against its exact law (uniform offsets on [-p, p], ...). The
per-image arithmetic is checked against a float64 NumPy transcription of FFCV's formulas
fed with the draws the loader used. CPU and CUDA batches of one (seed, epoch) are compared
on a GPU (`cuda` mark); a model trained with the device backend on the CPU is compared with
one trained with the in-memory backend.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from scipy import stats

from repr_sim.data import augment, loaders

N = 3000  # images per distribution test
SIDE = 32
FILL = (255, 254, 253)  # unused by the marker images below
OFF = {"flip": 0, "brightness": 0, "contrast": 0, "saturation": 0, "jitter_p": 0,
       "translate": 0, "cutout": 0, "fill": list(FILL)}


@pytest.fixture(scope="module")
def ffcv_transforms():
    return pytest.importorskip("ffcv.transforms")


def marker_images(n: int) -> np.ndarray:
    """Channel 0 = 7 * row, channel 1 = 7 * column (<= 217, never the fill), channel 2 = 9."""
    rows, cols = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    one = np.stack([7 * rows, 7 * cols, np.full_like(rows, 9)], axis=-1).astype(np.uint8)
    return np.repeat(one[None], n, axis=0)


def ours(images: np.ndarray, settings: dict, seed: int = 0) -> np.ndarray:
    """The DeviceLoader's augmentation of `images` (uint8 HWC out, before normalisation)."""
    aug = augment.resolve_augment({**OFF, **settings})
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images)
    out = augment.apply(x, aug, augment.draw(aug, *images.shape[:3], gen))
    return out.numpy()


def theirs(op, images: np.ndarray, seed: int = 1) -> np.ndarray:
    """An FFCV transform's uncompiled body on a copy of `images`."""
    np.random.seed(seed)
    fn = op.generate_code()
    x = images.copy()
    n, h, w, c = x.shape
    pad = getattr(op, "padding", 0)
    dst = np.zeros((n, h + 2 * pad, w + 2 * pad, c), np.uint8) if pad else np.zeros_like(x)
    return fn(x, dst)


def same_law(a: np.ndarray, b: np.ndarray) -> float:
    """p-value of a chi-square test that two samples of integers share one distribution."""
    values = np.union1d(a, b)
    table = np.array([[np.sum(a == v) for v in values], [np.sum(b == v) for v in values]])
    return stats.chi2_contingency(table)[1]


def proportion_z(k1: int, k2: int, n: int) -> float:
    p = (k1 + k2) / (2 * n)
    return abs(k1 - k2) / n / np.sqrt(2 * p * (1 - p) / n)


# ---- flip -----------------------------------------------------------------------------------
def test_flip_fraction_matches_ffcv(ffcv_transforms):
    x = marker_images(N)
    mine = ours(x, {"flip": 0.5})
    ref = theirs(ffcv_transforms.RandomHorizontalFlip(0.5), x)
    for out in (mine, ref):
        flipped = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
        assert np.all(flipped | np.all(out == x, axis=(1, 2, 3)))  # each image: as is or mirrored
    k_mine = int(np.all(mine == x[:, :, ::-1], axis=(1, 2, 3)).sum())
    k_ref = int(np.all(ref == x[:, :, ::-1], axis=(1, 2, 3)).sum())
    assert abs(k_mine - N / 2) < 4 * np.sqrt(N / 4)  # binomial(N, 0.5), 4 sigma
    assert proportion_z(k_mine, k_ref, N) < 4


# ---- translate and cutout -------------------------------------------------------------------
def offsets(out: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) with out[i, j] = image[i + dy, j + dx], from the marker of a kept pixel."""
    dys, dxs = [], []
    for img in out:
        kept = np.argwhere(img[:, :, 2] == 9)[0]  # any pixel that is not fill
        i, j = kept
        dys.append(img[i, j, 0] // 7 - i)
        dxs.append(img[i, j, 1] // 7 - j)
    return np.array(dys), np.array(dxs)


def test_translate_offsets_match_ffcv(ffcv_transforms):
    pad = 8
    x = marker_images(N)
    mine = ours(x, {"translate": pad})
    ref = theirs(ffcv_transforms.RandomTranslate(padding=pad, fill=FILL), x)
    (my_dy, my_dx), (ref_dy, ref_dx) = offsets(mine, pad), offsets(ref, pad)
    for d in (my_dy, my_dx, ref_dy, ref_dx):
        assert d.min() == -pad and d.max() == pad
        counts = np.bincount(d + pad, minlength=2 * pad + 1)
        assert stats.chisquare(counts)[1] > 1e-4  # uniform on [-pad, pad]
    assert same_law(my_dy, ref_dy) > 1e-4 and same_law(my_dx, ref_dx) > 1e-4
    # The rest is exactly the shifted image and the fill.
    for img, dy, dx in zip(mine[:50], my_dy, my_dx, strict=False):
        rows, cols = np.arange(SIDE) + dy, np.arange(SIDE) + dx
        inside = ((rows >= 0) & (rows < SIDE))[:, None] & ((cols >= 0) & (cols < SIDE))[None]
        want = np.where(inside[..., None], x[0][rows.clip(0, SIDE - 1)][:, cols.clip(0, SIDE - 1)],
                        np.array(FILL, np.uint8))
        assert np.array_equal(img, want)


def cutout_origins(out: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = [], []
    for img in out:
        filled = np.argwhere(np.all(img == np.array(FILL, np.uint8), axis=-1))
        assert len(filled) == size * size  # one whole square inside the image
        (y0, x0), (y1, x1) = filled.min(0), filled.max(0)
        assert (y1 - y0, x1 - x0) == (size - 1, size - 1)
        ys.append(y0)
        xs.append(x0)
    return np.array(ys), np.array(xs)


def test_cutout_squares_match_ffcv(ffcv_transforms):
    size = 10
    x = marker_images(N)
    my_y, my_x = cutout_origins(ours(x, {"cutout": size}), size)
    ref_y, ref_x = cutout_origins(theirs(ffcv_transforms.Cutout(size, FILL), x), size)
    for d in (my_y, my_x, ref_y, ref_x):
        assert d.min() == 0 and d.max() == SIDE - size
        assert stats.chisquare(np.bincount(d, minlength=SIDE - size + 1))[1] > 1e-4
    assert same_law(my_y, ref_y) > 1e-4 and same_law(my_x, ref_x) > 1e-4


# ---- colour jitter --------------------------------------------------------------------------
JITTERS = {"brightness": ("RandomBrightness", 0.2), "contrast": ("RandomContrast", 0.2),
           "saturation": ("RandomSaturation", 0.3)}


def colour_images(n: int) -> np.ndarray:
    """A fixed colourful image (two halves), repeated."""
    img = np.zeros((SIDE, SIDE, 3), np.uint8)
    img[:, : SIDE // 2] = (200, 100, 50)
    img[:, SIDE // 2:] = (30, 160, 90)
    return np.repeat(img[None], n, axis=0)


def ffcv_formula(img: np.ndarray, kind: str, ratio: float) -> np.ndarray:
    """FFCV's colour ops for one image in float64 (ffcv/transforms/color_jitter.py)."""
    r, g, b = (img[..., c].astype(np.float64) for c in range(3))
    grey = (0.2989 * r + 0.587 * g + 0.114 * b).astype(np.uint8).astype(np.float64)
    other = {"brightness": 0.0, "contrast": grey.mean(), "saturation": grey[..., None]}[kind]
    return np.clip(ratio * img + (1 - ratio) * other, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", list(JITTERS))
def test_jitter_matches_ffcv(ffcv_transforms, kind):
    name, magnitude = JITTERS[kind]
    x = colour_images(N)
    settings = {kind: magnitude, "jitter_p": 0.3}
    mine = ours(x, settings, seed=3)
    ref = theirs(getattr(ffcv_transforms, name)(magnitude, p=0.3), x)
    # The draws: applied with probability p, ratio uniform on [1 - m, 1 + m].
    aug = augment.resolve_augment({**OFF, **settings})
    chosen, ratio = augment.draw(aug, N, SIDE, SIDE, torch.Generator().manual_seed(3))[kind]
    assert abs(int(chosen.sum()) - 0.3 * N) < 4 * np.sqrt(N * 0.21)
    assert ratio.min() >= 1 - magnitude and ratio.max() <= 1 + magnitude
    assert stats.kstest(ratio.numpy(), stats.uniform(1 - magnitude, 2 * magnitude).cdf)[1] > 1e-4
    # Each image: FFCV's arithmetic with its own draw (one uint8 level for float32 rounding).
    for i in range(200):
        want = ffcv_formula(x[i], kind, float(ratio[i])) if chosen[i] else x[i]
        assert np.abs(mine[i].astype(int) - want).max() <= 1
    # The same law of output values as FFCV's own transform.
    for channel in range(3):
        a, b = mine[:, 0, 0, channel], ref[:, 0, 0, channel]
        assert stats.ks_2samp(a, b)[1] > 1e-4


# ---- the loader -----------------------------------------------------------------------------
def small_data(n: int = 96, side: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.int64))


def batches(loader_cls, device="cpu", epoch=0, **kw):
    images, labels = small_data()
    loader = loader_cls(images, labels, batch_size=32, train=True, seed=5, device=device,
                        indices=np.arange(10, 90), drop_last=True,
                        label_map={i: 9 - i for i in range(10)}, **kw)
    loader.set_epoch(epoch)
    return [(x.float().cpu(), y.cpu()) for x, y in loader]


def test_device_loader_equals_array_loader_on_cpu():
    for epoch in (0, 3):
        got, want = batches(loaders.DeviceLoader, epoch=epoch), batches(loaders.ArrayLoader, epoch=epoch)
        assert len(got) == len(want) == 2
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            assert torch.equal(gx, wx) and torch.equal(gy, wy)
    assert not torch.equal(batches(loaders.DeviceLoader, epoch=0)[0][0],
                           batches(loaders.DeviceLoader, epoch=1)[0][0])


def test_device_copy_is_made_once_per_array():
    images, labels = small_data()
    a = loaders.DeviceLoader(images, labels, batch_size=8, train=False)
    b = loaders.DeviceLoader(images, labels, batch_size=8, train=True)
    assert a.images is b.images


@requires_cuda
def test_cpu_and_cuda_batches_agree_up_to_rounding():
    images, labels = small_data()
    std = np.asarray(loaders.registry.STD, dtype=np.float64)
    level = 1.0 / (255 * std.min())  # one uint8 level after normalisation
    for (cx, cy), (gx, gy) in zip(batches(loaders.DeviceLoader, "cpu"),
                                  batches(loaders.DeviceLoader, "cuda"), strict=True):
        assert torch.equal(cy, gy)
        diff = (cx - gx).abs()
        assert diff.max() <= level + 0.01  # fp16 outputs on CUDA, jitter rounding
        assert (diff > 0.01).float().mean() < 1e-3


def test_model_trained_with_device_backend_equals_memory_backend(reprsim_env):
    """Same (seed, epoch) draws and the same work: the checkpoints are equal, bit for bit."""
    from repr_sim import cli, experiments, kinds
    from repr_sim import runs as run_folders
    from repr_sim.data import betons
    from repr_sim.paths import environ

    for part, seed in (("train", 0), ("test", 1)):
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(10), 8 if part == "train" else 3)
        images = rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
        betons.write_beton(images, labels, betons.beton_path("cifar10", part), workers=1,
                           info={"dataset": "cifar10", "split": part, "resolution": 8})
    states = {}
    threads = torch.get_num_threads()
    for backend in ("memory", "device"):
        runs = reprsim_env / f"runs_{backend}"
        with environ({"REPRSIM_RUNS": str(runs)}):
            code = cli.main(["train", "cifar10_ds", "--seed", "0", "--frac", "0.5", "--epochs", "2",
                             "--batch-size", "16", "--device", "cpu", "--set=width=8",
                             f"--set=loader.backend={backend}", "--set=augment.cutout=4"])
            assert code == 0
            pair = run_folders.pair_dir(experiments.experiment_dir(kinds.load("cifar10_ds")), 0, 0.5)
            states[backend] = [torch.load(pair / f"split_{i}" / "checkpoint.pth",
                                          weights_only=True) for i in (0, 1)]
        torch.set_num_threads(threads)
    for mem, dev in zip(states["memory"], states["device"], strict=True):
        assert mem.keys() == dev.keys()
        assert all(torch.equal(mem[k], dev[k]) for k in mem)


def test_bad_precision_is_one_clear_error():
    from repr_sim import kinds
    from repr_sim.errors import UserError
    from repr_sim.kinds.image import train

    cfg = kinds.load("cifar10_ds")
    cfg["recipe"]["precision"] = "fp8"
    with pytest.raises(UserError, match="recipe.precision must be one of fp16, bf16, fp32"):
        train.check_config(cfg)
    cfg["recipe"]["precision"] = "bf16"
    cfg["loader"] = {"backend": "device"}
    train.check_config(cfg)  # accepted


def tiny_betons(side: int = 8) -> None:
    """cifar10 train and test betons of random images under $REPRSIM_DATA: real betons,
    written without FFCV where it is not installed (as on the GPU check's machine)."""
    from repr_sim.data import betons

    for part, seed in (("train", 0), ("test", 1)):
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(10), 8 if part == "train" else 3).astype(np.int64)
        images = rng.integers(0, 256, (len(labels), side, side, 3), dtype=np.uint8)
        betons.write_beton(images, labels, betons.beton_path("cifar10", part), workers=1,
                           info={"dataset": "cifar10", "split": part})


@requires_cuda
@pytest.mark.parametrize("options", [{"precision": "bf16", "compile": True},
                                     {"precision": "fp16", "channels_last": False}])
def test_cuda_pair_with_device_backend_bf16_and_compile(reprsim_env, monkeypatch, options):
    import json

    from repr_sim import experiments, kinds, runs
    from repr_sim.kinds.image import train

    tiny_betons()
    cfg = kinds.load("cifar10_ds")
    cfg["width"] = 8
    cfg["recipe"].update(epochs=2, batch_size=16, **options)
    cfg["augment"] = {**cfg.get("augment", {}), "cutout": 4}  # 8 px images
    cfg["loader"] = {"backend": "device"}
    made = []
    real = train.make_scaler
    monkeypatch.setattr(train, "make_scaler",
                        lambda *a: made.append(real(*a)) or made[-1])
    train.train_pair(cfg, 0, 0.5, device="cuda")
    pair = runs.pair_dir(experiments.experiment_dir(cfg), 0, 0.5)
    assert runs.is_finished(pair)
    rows = [json.loads(line) for line in (pair / "split_0" / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    compiled = options.get("compile", False)
    assert ("compile_s" in rows[0]) == compiled and "compile_s" not in rows[1]
    assert all(s.is_enabled() == (options["precision"] == "fp16") for s in made) and made
    state = torch.load(pair / "split_0" / "checkpoint.pth", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in state)
