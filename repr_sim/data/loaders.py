"""Loaders over images: `make_loader` (FFCV, over a beton), `ArrayLoader` (in memory, torch)
and `DeviceLoader` (the whole dataset on the device, gathered and augmented there).

Both yield (images float32 [B, 3, H, W] normalised, labels int64 [B] mapped through
`label_map`); on CUDA the images are on the device, channels-last, float16. Training
loaders apply the study's augmentation (`repr_sim.data.augment`). FFCV reuses its output
buffers: an image batch is valid until a few batches later; clone it to keep it.

Determinism: the FFCV sample order is seeded (seed + epoch), its augmentations are not
(see repr_sim.data.augment), so FFCV training batches differ from run to run.
ArrayLoader and DeviceLoader are fully deterministic for a seed (DeviceLoader on CUDA up to
float rounding in the colour jitter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..paths import usable_cpus
from . import registry
from .augment import augment_batch, ffcv_ops, resolve_augment
from .betons import IMAGE_FIELD, LABEL_FIELD, field_metadata, open_reader, read_sidecar


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
        raise ValueError(f"label_map has no entry for label(s) {missing[:10]} "
                         "of the selected examples")
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
    labels = np.asarray(field_metadata(reader, LABEL_FIELD), dtype=np.int64)
    device = torch.device(device)
    table = _label_table(label_map, labels[indices])
    if table is not None:
        table = table.to(device)
    mean, std = _mean_std(path, mean, std)
    ops = []
    if train:
        aug = resolve_augment(augment, mean)
        side = int(field_metadata(reader, IMAGE_FIELD)["height"].min())
        if aug.cutout > side:
            raise ValueError(f"augment.cutout {aug.cutout} is larger than the {side}px images")
        ops = ffcv_ops(aug)
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
def normalise(x, mean: np.ndarray, std: np.ndarray, device, half: bool):
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] (channels-last memory), (x - mean) / std."""
    import torch

    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.half() if half else x


class Normalised:
    """What an input map ending in `normalise`'s (x - mean) / std knows about its inputs
    (a mixin: the class has `mean` and `std`, per channel on the 0-255 pixel scale).

    An attack needs both methods: it perturbs the normalised input, so its pixel budget and
    the valid range have to be expressed on that scale (repr_sim.attack)."""

    def _stats(self, x):
        import torch

        m = torch.as_tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        s = torch.as_tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return m, s

    def normalise(self, x):
        m, s = self._stats(x)
        return (x - m) / s

    def bounds(self, device):
        """The normalised images of pixel values 0 and 255: the valid range, per channel."""
        import torch

        zero = torch.zeros(1, 3, 1, 1, device=device)
        return self.normalise(zero), self.normalise(zero + 255)

    def eps_scale(self, device):
        """Per channel: one unit of the 0-1 pixel scale on the normalised scale (255 / std)."""
        import torch

        return 255.0 / self._stats(torch.zeros(1, device=device))[1]


@dataclass(frozen=True)
class Normalise(Normalised):
    """Raw pixel batches [B, 3, H, W] (0-255) -> (x - mean) / std in float32: the model
    input the loaders give (`normalise`), from pixels an attack can move."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, x):
        return self.normalise(x.float())


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


# ---- the device-resident loader -----------------------------------------------------------------
# One device copy per (array, device) per process, shared by every loader over that array (the
# train and test loaders of both models of a pair, every pair a pool worker trains). The
# array itself is kept in the value, so its id cannot be reused while the entry lives; the
# oldest entries go beyond _DEVICE_KEEP (a pair needs two: its train and test images).
_DEVICE_COPIES: dict[tuple, tuple] = {}
_DEVICE_KEEP = 4


def device_copy(array: np.ndarray, device):
    """`array` as a tensor on `device`, copied there once per process."""
    import torch

    key = (id(array), array.shape, str(device))
    if key not in _DEVICE_COPIES:
        while len(_DEVICE_COPIES) >= _DEVICE_KEEP:
            del _DEVICE_COPIES[next(iter(_DEVICE_COPIES))]
        _DEVICE_COPIES[key] = (array, torch.from_numpy(np.ascontiguousarray(array)).to(device))
    return _DEVICE_COPIES[key][1]


class DeviceLoader(ArrayLoader):
    """ArrayLoader with the whole uint8 dataset on the device (once per process): each batch
    is gathered by index there and augmented there in batch (augment.apply).

    The order and the augmentation draws come from the same CPU generator, seeded by (seed,
    epoch), in the same sequence as ArrayLoader's: on the CPU the two give identical batches,
    on CUDA the same up to float rounding in the colour jitter. Per batch only the indices and
    the draws (a few hundred numbers) cross to the device; nothing syncs with the host.
    """

    def __init__(self, images, labels, **kwargs):
        super().__init__(images, labels, **kwargs)
        # Keyed by the caller's array (the image kind's per-process decoded beton).
        self.images = device_copy(np.asarray(images), self.device)
        self.labels = self.labels.to(self.device)
        if self.table is not None:
            self.table = self.table.to(self.device)

    def __iter__(self):
        import torch

        from .augment import apply, draw, draws_to

        gen = self._generator()
        self.epoch += 1
        order = torch.from_numpy(self.indices)
        if self.random:
            order = order[torch.randperm(len(order), generator=gen)]
        order = order.to(self.device)
        half = self.device.type == "cuda"
        _, h, w, _ = self.images.shape
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx]
            if self.aug is not None:
                x = apply(x, self.aug, draws_to(draw(self.aug, len(idx), h, w, gen), self.device))
            y = self.labels[idx]
            if self.table is not None:
                y = self.table[y]
            yield normalise(x, self.mean, self.std, self.device, half), y


def default_workers() -> int:
    """What the loaders use when `workers` is not given (exposed for logs and tests)."""
    return _workers(None)

