"""Images per second of one training step of the CIFAR ResNet-18 (the study's recipe).

One step = forward, label-smoothed cross-entropy, backward, SGD update, as
repr_sim.kinds.image.train.train_step does it (the trainer's own function), on synthetic
32x32 batches already in memory: this measures the model, not the data loader
(benchmarks/bench_loading.py measures the loaders).

CPU: float32, at the batch sizes given. CUDA (when a GPU is present): fp16 autocast with
a grad scaler and channels-last model and inputs, batch 512 by default; skipped with a
message otherwise.

    .venv/bin/python benchmarks/bench_train_step.py [--cpu-batches 128 512] [--steps 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from repr_sim import models
from repr_sim.kinds.image.train import prepare_model, train_step


def measure(device: str, batch: int, steps: int, warmup: int, arch: str, side: int) -> dict:
    torch.manual_seed(0)
    model = prepare_model(models.build(arch, 10), device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(batch, 3, side, side, device=device)
    if device == "cuda":
        images = images.to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):  # cuDNN autotuning, allocator warm-up
        train_step(model, images, labels, optimizer, scaler, loss_fn, device)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, images, labels, optimizer, scaler, loss_fn, device)
    sync()
    seconds = (time.perf_counter() - start) / steps
    return {"device": device, "precision": "fp16 AMP, channels-last" if device == "cuda" else "float32",
            "batch": batch, "ms_per_step": 1000 * seconds, "images_per_s": batch / seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-batches", type=int, nargs="*", default=[128, 512],
                   help="CPU batch sizes (none: skip the CPU)")
    p.add_argument("--cuda-batch", type=int, default=512, help="CUDA batch size")
    p.add_argument("--steps", type=int, default=3, help="timed CPU steps per batch size")
    p.add_argument("--cuda-steps", type=int, default=50, help="timed CUDA steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--arch", default="resnet18_cifar", help="resnet18_cifar (32x32) or resnet18 (64x64)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    side = 32 if args.arch == "resnet18_cifar" else 64

    rows = []
    for batch in args.cpu_batches:
        rows.append(measure("cpu", batch, args.steps, warmup=1, arch=args.arch, side=side))
        print(f"  cpu batch {batch}: {rows[-1]['images_per_s']:.1f} images/s", flush=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # as the trainer sets it
        rows.append(measure("cuda", args.cuda_batch, args.cuda_steps, warmup=10, arch=args.arch, side=side))
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = None
        print("  CUDA: no GPU on this machine, skipped")

    print(f"\n{args.arch} training step ({side}x{side}, SGD + label smoothing; "
          f"CPU threads {torch.get_num_threads()}{'; GPU ' + gpu if gpu else ''})")
    print(f"| {'device':6} | {'precision':24} | {'batch':>5} | {'ms/step':>9} | {'images/s':>9} |")
    print(f"|{'-' * 8}|{'-' * 26}|{'-' * 7}|{'-' * 11}|{'-' * 11}|")
    for r in rows:
        print(f"| {r['device']:6} | {r['precision']:24} | {r['batch']:>5} | "
              f"{r['ms_per_step']:>9.1f} | {r['images_per_s']:>9.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
