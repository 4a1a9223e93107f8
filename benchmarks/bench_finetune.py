"""Images per second of fine-tuning and of feature extraction for the fine-tuning kind's
timm models at 224 px (docs/protocol.md section 6.1), random weights (no download).

    python benchmarks/bench_finetune.py [--device cpu|cuda] [--quick] [--batch N] [--steps N]
                                        [--models resnet18 vit_tiny_patch16_224 ...]

Per model: a few SGD/AdamW steps (the kind's train_step: upsampling 32 -> 224 on the
device, normalisation, fp16 autocast and channels-last on CUDA) and a few no-grad
pre-logit passes, timed after one warm-up step. On the CPU the default batch is 8 (the
study's 256 does not fit ResNet-152 or ViT-L in a laptop's memory); on CUDA 64.
`--quick`: two models, two steps (the GPU check: under a minute).
"""

from __future__ import annotations

import argparse
import time

import torch

MODELS = ("resnet18", "resnet50", "resnet101", "resnet152", "vit_tiny_patch16_224",
          "vit_small_patch32_224", "vit_base_patch32_224", "vit_large_patch32_224")
QUICK = ("resnet18", "vit_tiny_patch16_224")


def bench(arch: str, device: str, batch: int, steps: int) -> tuple[float, float]:
    from repr_sim.kinds.finetune import DEFAULTS
    from repr_sim.kinds.finetune.train import (
        Pipeline,
        make_optimizer,
        model_input,
        to_device,
        train_step,
    )
    from repr_sim.models import timm_models

    cfg = {**DEFAULTS, "arch": arch}
    model = to_device(timm_models.create(arch, 100), device)
    pipe = Pipeline(224, (127.0,) * 3, (127.0,) * 3)
    images = torch.randint(0, 256, (batch, 3, 32, 32)).float()
    labels = torch.randint(0, 100, (batch,))
    optimizer = make_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    train_step(model, pipe, images, labels, optimizer, scaler, loss_fn, device)  # warm-up
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        train_step(model, pipe, images, labels, optimizer, scaler, loss_fn, device)
    sync()
    train_ips = steps * batch / (time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        timm_models.pre_logits(model, model_input(pipe, images, device))
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            timm_models.pre_logits(model, model_input(pipe, images, device))
        sync()
    return train_ips, steps * batch / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="two models, two steps")
    p.add_argument("--batch", type=int, default=None, help="default: 8 on cpu, 64 on cuda")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3; quick 2)")
    p.add_argument("--models", nargs="+", default=None, help=f"default: {' '.join(MODELS)}")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_finetune.py: error: --device cuda: no CUDA device here")
        return 2
    batch = args.batch or (64 if args.device == "cuda" else 8)
    steps = args.steps or (2 if args.quick else 3)
    models = args.models or (QUICK if args.quick else MODELS)
    print(f"device {args.device}, batch {batch}, {steps} timed steps, 224 px, "
          f"torch threads {torch.get_num_threads()}")
    print("| model | fine-tune images/s | features images/s |\n|---|---:|---:|")
    for arch in models:
        train_ips, feat_ips = bench(arch, args.device, batch, steps)
        print(f"| {arch} | {train_ips:.1f} | {feat_ips:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
