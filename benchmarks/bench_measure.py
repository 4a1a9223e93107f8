"""Wall time of measuring one image pair (repr_sim.kinds.image.measure), split into its two parts.

For a CIFAR-sized probe set (default N = 10,000 inputs, 32x32) and two real ResNet-18s
(the CIFAR variant, width 64, 512-d features; random initialisation, eval mode: the cost
does not depend on the weights) it times, with the measurement's own functions:
  * feature extraction: `measure_image.extract`, both models on the same batches of an
    in-memory eval loader (normalisation included), as `reprsim measure` runs it;
  * scoring: `measure.score_probe`, prepare both sides and score_all (eight metrics) once.
Each part is timed `--repeats` times, the best kept (the machine may be shared; the load
average before and after is printed, and this process's CPU seconds beside the wall time:
on an idle machine wall ~ CPU / threads). The last line extrapolates to a whole CIFAR-10
dataset-split pair: test set (10,000) + MNIST (10,000) + SVHN (26,032) inputs.

    .venv/bin/python benchmarks/bench_measure.py                     # CPU, N = 10,000
    .venv/bin/python benchmarks/bench_measure.py --device cuda --sizes 10000 26032
"""

from __future__ import annotations

import argparse
import os
import platform
import time

PAIR_INPUTS = {"test set": 10_000, "MNIST": 10_000, "SVHN": 26_032}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000], help="probe set sizes N (default 10000)")
    p.add_argument("--batch-size", type=int, default=500, help="inputs per forward pass (default 500, as reprsim measure)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=1, help="timings per part, best kept (default 1)")
    p.add_argument("--width", type=int, default=64, help="ResNet stage width (default 64: 512-d features)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def best_of(repeats: int, device: str, fn):
    """(best wall seconds, this process's CPU seconds in that run, fn's result)."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeats):
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        wall = time.perf_counter() - t
        if wall < best:
            best, cpu = wall, time.process_time() - c
    return best, cpu, out


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from repr_sim import measure, measure_image, models
    from repr_sim.data import registry
    from repr_sim.kinds.image.train import prepare_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pair = [prepare_model(models.build("resnet18_cifar", 10, width=args.width), args.device).eval()
            for _ in range(2)]
    rng = np.random.default_rng(args.seed)
    load_before = os.getloadavg()
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else ""
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, device {args.device} {gpu}".rstrip())
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    # warm-up: first-call costs (allocator, kernels) are not per-pair costs
    warm = rng.integers(0, 256, size=(args.batch_size, 32, 32, 3), dtype=np.uint8)
    measure_image.extract(pair, warm, np.arange(len(warm)), mean=registry.MEAN, std=registry.STD,
                          batch_size=args.batch_size, device=args.device)
    rows = []
    for n in args.sizes:
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        t_feat, c_feat, feats = best_of(args.repeats, args.device, lambda images=images, n=n: measure_image.extract(
            pair, images, np.arange(n), mean=registry.MEAN, std=registry.STD,
            batch_size=args.batch_size, device=args.device))
        t_score, c_score, scores = best_of(args.repeats, args.device, lambda feats=feats: measure.score_probe(
            *feats, name="bench", where="bench"))
        assert len(scores) == 8 and feats[0].shape == (n, 8 * args.width)
        rows.append((n, t_feat, c_feat, t_score, c_score))
    load_after = os.getloadavg()
    print()
    print("| N | batch | features, 2 models: wall s (CPU s) | per 1,000 inputs (s) "
          "| scoring, 8 metrics: wall s (CPU s) | total wall (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, t_feat, c_feat, t_score, c_score in rows:
        print(f"| {n:,} | {args.batch_size} | {t_feat:.1f} ({c_feat:.1f}) | {1000 * t_feat / n:.2f} "
              f"| {t_score:.1f} ({c_score:.1f}) | {t_feat + t_score:.1f} |")
    n0, t_feat0, _, t_score0, _ = rows[0]
    total = sum(PAIR_INPUTS.values())
    # extraction scales with N; scoring is dominated by N^2 kernel work (scaled as N^2 here)
    estimate = t_feat0 * total / n0 + sum(t_score0 * (m / n0) ** 2 for m in PAIR_INPUTS.values())
    print()
    print(f"# a CIFAR-10 dataset-split pair ({' + '.join(f'{k} {v:,}' for k, v in PAIR_INPUTS.items())}"
          f" = {total:,} inputs): about {estimate:.0f} s (extrapolated from N = {n0:,})")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
