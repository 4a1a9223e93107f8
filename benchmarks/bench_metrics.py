"""Speed and memory of repr_sim.metrics (issue 2, section 4).

For each N (default 1,000 / 5,000 / 10,000 / 50,000) and D = 512 it measures, in one fresh
subprocess per N:
  * the time of one N x D by D x N float32 matrix product (the yardstick; best of a few runs
    taken before and after the metrics, since the machine may be shared). When the N x N
    result would not fit comfortably (more than 4 GiB, i.e. N = 50,000) the same product is
    timed in row blocks of 5,000 into a reused buffer: same flops, same kernel;
  * the time of score_all (all eight metrics, shared pieces computed once) and its ratio to
    the product;
  * score_all's peak memory: the process's resident-set high-water mark (VmHWM, reset just
    before score_all through /proc/self/clear_refs), so it includes the inputs already held
    (shown separately as "base") and everything torch allocates on CPU; tracemalloc would
    not see torch's allocations;
  * the time of each metric alone (score(metric, ...), nothing shared).
Features are synthetic but shaped like network features: 100 clusters in a 64-d latent
space, two different random ReLU projections to D plus noise, then prepare() (clamp at the
0.95 quantile, L2-normalise rows). Times are wall-clock seconds with torch.set_num_threads.

    .venv/bin/python benchmarks/bench_metrics.py                 # the full table
    .venv/bin/python benchmarks/bench_metrics.py --sizes 1000 5000 --no-single
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time

SIZES = [1000, 5000, 10000, 50000]
FULL_PRODUCT_MAX_BYTES = 4 * 2**30


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="values of N (default: %(default)s)")
    p.add_argument("--dim", type=int, default=512, help="feature dimension D (default 512)")
    p.add_argument("--topk", type=int, default=10, help="neighbours (default 10)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per timing for N <= 10,000, best kept (default 3; 1 above)")
    p.add_argument("--no-single", action="store_true", help="skip the per-metric timings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- worker (one N per process) ---------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _features(n, d, seed):
    import torch

    from repr_sim.metrics import prepare

    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(100, 64, generator=g)
    z = centres[torch.randint(0, 100, (n,), generator=g)] + torch.randn(n, 64, generator=g)
    out = []
    for _ in range(2):
        x = torch.relu(z @ torch.randn(64, d, generator=g)) + 0.3 * torch.rand(n, d, generator=g)
        out.append(prepare(x))
    return out


def _best(fn, repeats):
    best, value = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def _product_time(x, repeats):
    import torch

    n = x.shape[0]
    if n * n * 4 <= FULL_PRODUCT_MAX_BYTES:
        return _best(lambda: x @ x.T, repeats)[0], "full"
    rows = 5000
    buf = torch.empty((rows, n), dtype=x.dtype)

    def blocked():
        for s in range(0, n, rows):
            e = min(n, s + rows)
            torch.matmul(x[s:e], x.T, out=buf[: e - s])

    return _best(blocked, repeats)[0], f"row blocks of {rows}"


class _RedoCounter(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.rows = 0

    def emit(self, record):
        m = re.match(r"neighbours: (\d+) of", record.getMessage())
        if m:
            self.rows += int(m.group(1))


def worker(args) -> dict:
    import torch

    from repr_sim import metrics

    torch.set_num_threads(args.threads)
    n = args.worker
    repeats = args.repeats if n <= 10000 else 1
    a, b = _features(n, args.dim, args.seed)
    product = [_product_time(a, max(1, repeats - 1))]
    counter = _RedoCounter()
    logger = logging.getLogger("repr_sim.metrics")
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    base_kib = _status_kib("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    scores = metrics.score_all(a, b, topk=args.topk)
    first = time.perf_counter() - t0
    peak_kib = _status_kib("VmHWM")  # since the reset (or since start if it failed)
    redo_rows = counter.rows
    rest, _ = _best(lambda: metrics.score_all(a, b, topk=args.topk), repeats - 1) if repeats > 1 else (first, None)
    single = {}
    if not args.no_single:
        for name in metrics.METRICS:
            single[name] = _best(lambda name=name: metrics.score(name, a, b, topk=args.topk), repeats)[0]
    product.append(_product_time(a, max(1, repeats - 1)))
    return {
        "n": n, "d": args.dim, "threads": args.threads,
        "product_s": min(p[0] for p in product), "product_how": product[0][1],
        "score_all_s": min(first, rest), "peak_gib": peak_kib / 2**20, "base_gib": base_kib / 2**20,
        "peak_reset": reset, "rows_reranked": redo_rows, "single_s": single, "scores": scores,
    }


# ---- parent -------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _table(results, names, single: bool) -> str:
    lines = ["| N | matmul (s) | score_all (s) | score_all / matmul | peak RSS (GiB) | base RSS (GiB) "
             "| rows re-ranked | load before -> after |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        how = "" if r["product_how"] == "full" else " (blocked)"
        lines.append(f"| {r['n']:,} | {r['product_s']:.3f}{how} | {r['score_all_s']:.3f} | "
                     f"{r['score_all_s'] / r['product_s']:.2f} | {r['peak_gib']:.2f} | {r['base_gib']:.2f} | "
                     f"{r['rows_reranked']} | {r['load_before']} -> {r['load_after']} |")
    if single:
        lines += ["", "Each metric alone (s):", "",
                  "| N | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
        for r in results:
            lines.append(f"| {r['n']:,} | " + " | ".join(f"{r['single_s'][m]:.3f}" for m in names) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return 0
    import torch

    from repr_sim.metrics import METRICS

    print(f"# bench_metrics  {dt.datetime.now().isoformat(timespec='seconds')}  host {platform.node()}")
    print(f"# {_cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, D={args.dim}, topk={args.topk}", flush=True)
    results = []
    for n in args.sizes:
        before = _load()
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--dim", str(args.dim),
               "--topk", str(args.topk), "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--seed", str(args.seed)] + (["--no-single"] if args.no_single else [])
        print(f"# N={n:,}: running (load {before}) ...", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"N={n}: worker failed (exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        r["load_before"], r["load_after"] = before, _load()
        results.append(r)
        print(f"# N={n:,}: score_all {r['score_all_s']:.2f} s = {r['score_all_s'] / r['product_s']:.2f} x "
              f"matmul, peak {r['peak_gib']:.2f} GiB", file=sys.stderr, flush=True)
    print()
    print(_table(results, list(METRICS), not args.no_single))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
