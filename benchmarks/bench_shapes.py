"""Speed of the built-in data: generated images, the partition-folder writer and reader.

Prints a markdown table of images per second, by wall clock and by this process's CPU
time (the machine is shared: the CPU rate is the one-core speed, the wall rate what a
run saw). Best of --repeats runs.

    .venv/bin/python benchmarks/bench_shapes.py [--n 20000] [--tree-n 4000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

from repr_sim.data import shapes, shapetree  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds of `repeats` calls."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images per generate() call at 32x32")
    parser.add_argument("--tree-n", type=int, default=4000, help="train images of the tree")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    shapes.generate(8)  # build the distance tables outside the timing
    n32, n64 = args.n, max(1, args.n // 4)
    cases = [
        ("generate 32x32", n32, lambda: shapes.generate(n32, size=32)),
        ("generate 64x64", n64, lambda: shapes.generate(n64, size=64)),
        ("generate 28x28", n32, lambda: shapes.generate(n32, size=28)),
        ("digit_only 32x32", n32, lambda: shapes.digit_only(n32, size=32)),
        ("sample_patches 32x32", 2000, lambda: shapes.sample_patches(2000, size=32)),
        ("sklearn_digits 32x32", 1797, lambda: shapes.sklearn_digits(size=32)),
    ]
    rows = [(name, n, *timed(fn, args.repeats)) for name, n, fn in cases]

    tmp = Path(tempfile.mkdtemp(prefix="bench_shapes_"))
    try:
        n_val = args.tree_n // 4

        def write():
            shutil.rmtree(tmp / "partition3", ignore_errors=True)
            shapetree.write_partition_tree(tmp, args.tree_n, n_val, size=28)

        rows.append(("write_partition_tree 28x28 (PNG)", args.tree_n + n_val,
                     *timed(write, args.repeats)))  # fmt: skip
        read = lambda: shapetree.read_partition_tree(tmp, "train")  # noqa: E731
        rows.append(("read_partition_tree 28x28", args.tree_n, *timed(read, args.repeats)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print("| case | images | wall s | images/s (wall) | images/s (CPU time) |")
    print("|---|---:|---:|---:|---:|")
    for name, n, wall, cpu in rows:
        print(f"| {name} | {n} | {wall:.3f} | {n / wall:,.0f} | {n / max(cpu, 1e-9):,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
