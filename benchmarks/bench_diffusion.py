"""Benchmark the diffusion kind: UNet training steps/s, feature images/s, the study's run projected.

Training steps/s and feature images/s of the UNets, and the projected length of the
study's 30,000-step run.

    python benchmarks/bench_diffusion.py [--device cpu|cuda] [--quick] [--batch N]
                                         [--steps N] [--threads N]

Rows, per configuration (the tiny UNet 8/16/16 at 16x16 on 8 classes; the study's UNet
96/192/192 at 32x32 on 10 classes):
- training: the trainer's own step (repr_sim.kinds.diffusion.train: seeded noisy batch,
  forward, MSE, backward, grad clip, AdamW) plus the EMA update, on random images, timed
  after one warm-up step; on CUDA with the study's fp16 autocast and grad scaler;
- features: the measurer's extraction (repr_sim.kinds.diffusion.measure.extract: noisy
  input, forward with the conv_act hook, pooled 2C-d features) for two models.

Projection of the study's run: hours = 30,000 steps x (1280 / batch) / (steps/s at batch)
/ 3600 per model, times 2 models per pair, 20 pairs (dataset overlap) or 24 (task);
it assumes time per step grows linearly with the batch from the batch measured, which
holds on a GPU once the batch fills it (so measure at a batch of 256 or more on a GPU).
On CUDA the default batch is 256; `--quick` runs fewer steps and images (under a minute
on a GPU; on a CPU, the GPU check's dry run, batch 4 and one timed step).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from repr_sim.kinds import diffusion  # noqa: E402
from repr_sim.kinds.diffusion import measure as dmeasure  # noqa: E402
from repr_sim.kinds.diffusion import train as dtrain  # noqa: E402
from repr_sim.models import unet as unet_model  # noqa: E402

STUDY_STEPS, STUDY_BATCH, PAIRS = 30000, 1280, {"dataset": 20, "task": 24}
CONFIGS = {"tiny": ("tiny", 16, 8), "study": ("cifar32", 32, 10)}  # preset, side, classes


def config(preset: str, side: int, batch: int) -> dict:
    cfg = diffusion.KIND.resolve({"name": "bench", "kind": "diffusion", "resolution": side,
                                  "unet": {"preset": preset}})
    cfg["recipe"].update(batch_size=batch, lr_batch=batch)
    return cfg


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_rate(name: str, batch: int, steps: int, device: str) -> float:
    """Training steps per second (model, data on `device`)."""
    preset, side, classes = CONFIGS[name]
    cfg = config(preset, side, batch)
    images = torch.randint(0, 256, (max(batch, 64), side, side, 3), dtype=torch.uint8)
    labels = torch.randint(0, classes, (len(images),))
    trainer = dtrain.DiffusionTrainer(cfg, Path("."), device, 0, name, images, labels, classes)
    torch.manual_seed(0)
    model = dtrain.build(cfg, classes).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")
    ema = dtrain.Ema(model, 0.999)
    scheduler = unet_model.make_scheduler()
    for step in range(steps + 1):
        if step == 1:  # the first step pays for allocation and kernel selection
            sync(device)
            start = time.perf_counter()
        trainer._step(model, optimizer, scaler, scheduler, step, batch)
        ema.update(model)
    sync(device)
    return steps / (time.perf_counter() - start)


def feature_rate(name: str, n: int, batch: int, device: str) -> float:
    """Probe images per second through the measurer's extraction, for two models."""
    preset, side, classes = CONFIGS[name]
    cfg = config(preset, side, batch)
    pair = [dtrain.build(cfg, classes).to(device).eval() for _ in range(2)]
    x0 = torch.rand(n, 3, side, side) * 2 - 1
    noisy = [dmeasure.draws(n, (3, side, side), timestep=-1, seed=0, k=0)]
    idx = np.arange(n, dtype=np.int64)
    dmeasure.extract(pair, [classes] * 2, x0, idx[:batch], noisy, batch_size=batch, device=device)
    sync(device)
    start = time.perf_counter()
    dmeasure.extract(pair, [classes] * 2, x0, idx, noisy, batch_size=batch, device=device)
    sync(device)
    return n / (time.perf_counter() - start)


def projection(rate: float, batch: int) -> str:
    hours = STUDY_STEPS * (STUDY_BATCH / batch) / rate / 3600
    return (f"{hours:.2f} h per model; {2 * hours * PAIRS['dataset']:.0f} h dataset overlap, "
            f"{2 * hours * PAIRS['task']:.0f} h task overlap (one device)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer steps and images (GPU check)")
    p.add_argument("--batch", type=int, default=None,
                   help="training batch (default 8 CPU, 256 CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 20 CUDA)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1 on a CPU: these convolutions scale badly "
                        "over threads on a shared machine; torch's default on CUDA)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_diffusion: --device cuda but no CUDA device here", file=sys.stderr)
        return 2
    try:
        import diffusers
    except ImportError as e:
        print(f"bench_diffusion: diffusers does not import ({e}); on the GPU machine install it "
              f"from wheels (benchmarks/README.md, section Diffusion UNets)", file=sys.stderr)
        return 2
    threads = args.threads or (None if args.device == "cuda" else 1)
    if threads:
        torch.set_num_threads(threads)
    cuda = args.device == "cuda"
    batch = args.batch or (256 if cuda else (4 if args.quick else 8))
    steps = args.steps or ((5 if args.quick else 20) if cuda else (1 if args.quick else 3))
    images = (2048 if cuda else 64) // (4 if args.quick else 1)
    where = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} threads"
    print(f"diffusers {diffusers.__version__}; device {args.device} ({where}), "
          f"torch {torch.__version__}, training batch {batch}, {steps} timed steps")
    print("| configuration | train steps/s | train images/s | feature images/s |")
    print("|---|---|---|---|")
    rates = {}
    for name in CONFIGS:
        rate = train_rate(name, batch, steps, args.device)
        feats = feature_rate(name, images, min(batch, 500), args.device)
        rates[name] = rate
        print(f"| {name} | {rate:.2f} | {rate * batch:.1f} | {feats:.1f} |", flush=True)
    print(f"study's run, projected from the {args.device} figure at batch {batch}: "
          f"{projection(rates['study'], batch)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
