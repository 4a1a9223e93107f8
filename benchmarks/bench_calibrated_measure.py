"""What `reprsim measure --calibrate` (the default) costs over `--no-calibrate` (issue 14).

Two parts, wall-clock seconds with torch.set_num_threads(--threads):
  * scoring: per probe set, score_probe without and with calibration (K = --permutations)
    on features of the built-in demo's sizes (the full image demo: 64-d features, probe
    sets of 500 test images, the 1,000 patches and the 1,797 digits; text: 500 windows);
    features as in bench_calibration.py (a shared latent, two random ReLU projections);
  * measure: `reprsim measure --force` on the test suite's tiny trained image experiments
    (tests/_run_fixtures.py: 2 + 3 pairs, probe sets of 6-30 inputs, 128-d features), once
    with --no-calibrate and once with --calibrate, best of --repeats.

    .venv/bin/python benchmarks/bench_calibrated_measure.py [--skip-measure]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = [(500, 64), (1000, 64), (1797, 64), (500, 128)]


def features(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 16))
    a = np.maximum(z @ rng.standard_normal((16, d)), 0) + 0.3 * rng.random((n, d))
    b = np.maximum(z @ rng.standard_normal((16, d)), 0) + 0.3 * rng.random((n, d))
    return torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32))


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(first, second, repeats: int) -> tuple[float, float]:
    """Best of `repeats` of each, alternating (a shared machine's load hits both alike)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(best(first, 1))
        b.append(best(second, 1))
    return min(a), min(b)


def scoring_rows(k: int, repeats: int) -> list[tuple]:
    from repr_sim import scoring

    settings = {"permutations": k, "alpha": 0.05, "seed": 0}
    rows = []
    for n, d in SIZES:
        a, b = features(n, d)

        def raw(a=a, b=b):
            scoring.score_probe(a, b, name="bench", where="bench")

        def calibrated(a=a, b=b):
            with scoring.calibrating(settings):
                scoring.score_probe(a, b, name="bench", where="bench")

        raw()  # warm-up: first-call costs are not the scoring's
        t_raw, t_cal = interleaved(raw, calibrated, repeats)
        rows.append((f"score_probe N={n} D={d}", t_raw, t_cal))
    return rows


def measure_rows(k: int, repeats: int) -> list[tuple]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import _run_fixtures as fixtures

    root = Path(tempfile.mkdtemp(prefix="bench_calmeasure_"))
    built = fixtures.build_image_runs(root)
    run = ["--workers", str(torch.get_num_threads()), "--device", "cpu", "--force"]
    rows = []
    with fixtures.roots(built.data, built.runs):
        folders = [str(built.ds), str(built.task)]
        fixtures.run_measure(run, *folders, "--no-calibrate")  # warm-up (imports, decoding)
        raw, cal = interleaved(
            lambda: fixtures.run_measure(run, *folders, "--no-calibrate"),
            lambda: fixtures.run_measure(run, *folders, "--calibrate", "--permutations", str(k)),
            repeats)
    rows.append(("reprsim measure, tiny test runs (5 pairs)", raw, cal))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-measure", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = scoring_rows(args.permutations, args.repeats)
    if not args.skip_measure:
        rows += measure_rows(args.permutations, args.repeats)
    print(f"K = {args.permutations}, {args.threads} threads, best of {args.repeats}\n")
    print("| what | --no-calibrate s | --calibrate s | ratio |")
    print("|---|---:|---:|---:|")
    for what, raw, cal in rows:
        print(f"| {what} | {raw:.3f} | {cal:.3f} | {cal / raw:.1f} x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
