"""Images per second of the training data pipelines on this CPU (issue 3, benchmark).

    .venv/bin/python benchmarks/bench_loading.py [--n 10000] [--batch 512] [--epochs 2] [--workers N]

On a synthetic CIFAR-sized beton (random 32x32 images written in raw mode), with the
study's training augmentation (flip p 0.5; brightness 0.2 / contrast 0.2 / saturation 0.3
each with p 0.3; translate padding 8; cutout 10; fill the CIFAR-10 mean) and
normalisation, batch 512, drop last, random order:

- FFCV `make_loader` (the project's pipeline: JIT-compiled numba ops, float32 on the CPU);
- a torchvision `DataLoader` over the same images in memory doing the same augmentations
  per image with PIL / torchvision transforms (RandomHorizontalFlip, ColorJitter of one
  factor inside RandomApply(p=0.3) three times, RandomCrop(32, padding=8, fill=mean) for
  the translate, a fixed-size cutout), ToTensor, Normalize, `workers` processes;
- `ArrayLoader` (the project's in-memory loader: the same augmentations batched in torch,
  in the main process).

Each loader runs `--epochs` timed epochs after construction. Reported: construction time,
the first epoch (FFCV compiles its pipeline there: the one-off JIT cost is the first
epoch minus a steady epoch, shown as "compile"), and images per second over the later
epochs. The load average is printed before and after: the machine may be shared.
Also reported: writing the beton (images per second, FFCV's writer).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repr_sim.data import betons, fake, loaders, registry  # noqa: E402
from repr_sim.paths import usable_cpus  # noqa: E402


def timed_epochs(loader, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        n = 0
        for images, labels in loader:
            n += len(labels)
            images.sum()  # touch the data, as a training step would
        times.append(time.perf_counter() - start)
    return times


class Cutout:
    """A `size`-pixel square at a uniform position, set to `fill` (PIL in, PIL out)."""

    def __init__(self, size: int, fill):
        self.size, self.fill = size, np.asarray(fill, np.uint8)

    def __call__(self, img):
        from PIL import Image

        x = np.array(img)
        h, w = x.shape[:2]
        i, j = np.random.randint(h - self.size + 1), np.random.randint(w - self.size + 1)
        x[i:i + self.size, j:j + self.size] = self.fill
        return Image.fromarray(x)


class InMemory:
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def torchvision_loader(images, labels, batch: int, workers: int):
    import torch
    from torchvision import transforms as T

    fill = tuple(int(m) for m in registry.MEAN)
    jitter = [T.RandomApply([T.ColorJitter(**{k: v})], p=0.3)
              for k, v in (("brightness", 0.2), ("contrast", 0.2), ("saturation", 0.3))]
    transform = T.Compose([T.RandomHorizontalFlip(0.5), *jitter,
                           T.RandomCrop(32, padding=8, fill=fill), Cutout(10, fill), T.ToTensor(),
                           T.Normalize([m / 255 for m in registry.MEAN], [s / 255 for s in registry.STD])])
    return torch.utils.data.DataLoader(InMemory(images, labels, transform), batch_size=batch,
                                       shuffle=True, drop_last=True, num_workers=workers,
                                       persistent_workers=workers > 0)


def row(name, build, times, n_per_epoch, compile_=None):
    steady = times[1:] or times
    rate = n_per_epoch / (sum(steady) / len(steady))
    comp = f"{compile_:.1f}" if compile_ is not None else "-"
    print(f"| {name:<44} | {build:8.1f} | {times[0]:11.1f} | {comp:>9} | {rate:10,.0f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="images in the synthetic beton")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loader (>= 2)")
    parser.add_argument("--workers", type=int, default=None, help="default: usable CPUs")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ffcv", "torchvision", "array"])
    args = parser.parse_args()
    import torch

    workers = args.workers or usable_cpus()
    torch.set_num_threads(workers)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          f"({usable_cpus()} usable); workers {workers}; {args.n} images 32x32, batch {args.batch}")
    images, labels = fake.random_images(args.n, 32, seed=0, num_classes=10)
    n_epoch = (args.n // args.batch) * args.batch
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench" / "train.beton"
        start = time.perf_counter()
        betons.write_beton(images, labels, path, workers=workers)
        write_s = time.perf_counter() - start
        print(f"beton written in {write_s:.1f} s ({args.n / write_s:,.0f} images/s incl. sha256), "
              f"{path.stat().st_size / 1e6:.0f} MB")
        print()
        print(f"| {'pipeline (study augmentation, normalised)':<44} | {'build s':>8} | "
              f"{'1st epoch s':>9} | {'compile s':>8} | {'images/s':>10} |")
        print(f"|{'-' * 46}|{'-' * 9}:|{'-' * 12}:|{'-' * 10}:|{'-' * 11}:|")
        if "ffcv" not in args.skip:
            start = time.perf_counter()
            loader = loaders.make_loader(path, batch_size=args.batch, train=True, workers=workers,
                                         drop_last=True, seed=0)
            build = time.perf_counter() - start
            times = timed_epochs(loader, args.epochs)
            compile_ = build + times[0] - float(np.mean(times[1:]))
            row(f"FFCV make_loader, {workers} threads", build, times, n_epoch, compile_)
        if "torchvision" not in args.skip:
            start = time.perf_counter()
            loader = torchvision_loader(images, labels, args.batch, workers)
            build = time.perf_counter() - start
            times = timed_epochs(loader, args.epochs)
            row(f"torchvision DataLoader (PIL), {workers} workers", build, times, n_epoch)
        if "array" not in args.skip:
            start = time.perf_counter()
            loader = loaders.ArrayLoader(images, labels, batch_size=args.batch, train=True,
                                         drop_last=True)
            build = time.perf_counter() - start
            times = timed_epochs(loader, args.epochs)
            row(f"ArrayLoader (torch, batched), {torch.get_num_threads()} threads", build, times, n_epoch)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
