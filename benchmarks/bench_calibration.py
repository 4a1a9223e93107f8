"""Speed and memory of null calibration, repr_sim.metrics.calibrate_all (issue 14).

For each N (default 10,000 and 50,000) and D = 512, float32, it measures in one fresh
subprocess per N and device:
  * score_all (all eight metrics, k = 10) on the data: the yardstick (best of the runs
    before, two for N <= 10,000 and one above, and one after calibrate_all);
  * calibrate_all (all eight metrics, K = 200 permutations, k = 10): its time, its ratio to
    score_all (target <= 10 x, stretch 5 x; re-scoring every permutation would be K + 1 =
    201 x), and its peak memory: the process's resident-set high-water mark (VmHWM, reset
    just before the call through /proc/self/clear_refs; it includes the inputs, shown as
    "base"), or on CUDA torch's peak allocation;
  * with --parts, calibrate_all on one group of metrics at a time (the five kNN-based ones,
    the two CKAs, svcca): where the time goes (each group repeats the neighbour search or
    kernel pieces it needs, so the parts add up to more than the whole).
Features are those of bench_metrics.py (100 clusters in a 64-d latent space, two random
ReLU projections to D plus noise, then prepare()). A CUDA row is added for each N when a
GPU is available (permutations are drawn on the CPU either way). Wall-clock seconds with
torch.set_num_threads(--threads).

    .venv/bin/python benchmarks/bench_calibration.py                     # N = 10,000 and 50,000
    .venv/bin/python benchmarks/bench_calibration.py --sizes 2000 10000 --parts
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time

SIZES = [10000, 50000]
# The machine-reading helpers are bench_metrics.py's (this folder is on the path when the
# script runs): one place for how a benchmark reads peak memory, the CPU and the load.
from bench_metrics import _cpu_model, _load, _status_kib  # noqa: E402

GROUPS = {
    "kNN-based (5)": ["cycle_knn", "mutual_knn", "lcs_knn", "cknna", "edit_distance_knn"],
    "cka + unbiased_cka": ["cka", "unbiased_cka"],
    "svcca": ["svcca"],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--sizes", type=int, nargs="+", default=SIZES,
                   help="values of N (default: %(default)s)")
    p.add_argument("--dim", type=int, default=512, help="feature dimension D (default 512)")
    p.add_argument("--topk", type=int, default=10, help="neighbours (default 10)")
    p.add_argument("--permutations", type=int, default=200, help="K (default 200)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--parts", action="store_true", help="also time each group of metrics alone")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA rows even with a GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- worker (one N and device per process) ------------------------------------------------
def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _peak_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return _status_kib("VmHWM") / 2**20


def _timed(fn, device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t, value


def worker(args) -> dict:
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_metrics import _features

    from repr_sim import metrics
    from repr_sim.metrics import calibration

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.worker
    a, b = (x.to(device) for x in _features(n, args.dim, args.seed))
    runs = 2 if n <= 10000 else 1
    score_s = min(_timed(lambda: metrics.score_all(a, b, topk=args.topk), device)[0]
                  for _ in range(runs))
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device) / 2**30
    else:
        base = _status_kib("VmRSS") / 2**20
    _reset_peak(device)
    calib_s, results = _timed(lambda: calibration.calibrate_all(
        a, b, n_permutations=args.permutations, seed=args.seed, topk=args.topk), device)
    peak = _peak_gib(device)
    # once more after: on a shared machine the load drifts; the best run is the yardstick
    score_s = min(score_s, _timed(lambda: metrics.score_all(a, b, topk=args.topk), device)[0])
    parts = {}
    if args.parts:
        for group, names in GROUPS.items():
            parts[group] = _timed(lambda names=names: calibration.calibrate_all(
                a, b, n_permutations=args.permutations, seed=args.seed, topk=args.topk,
                metrics=names), device)[0]
    return {
        "n": n, "d": args.dim, "device": args.device, "threads": args.threads,
        "k_perm": args.permutations, "score_all_s": score_s, "calibrate_s": calib_s,
        "peak_gib": peak, "base_gib": base, "parts_s": parts,
        "p_values": {k: r.p_value for k, r in results.items()},
    }


# ---- parent -------------------------------------------------------------------------------
def _table(results, parts: bool) -> str:
    k_perm = results[0]["k_perm"]
    lines = [f"| N | device | score_all (s) | calibrate_all, K = {k_perm} (s) "
             "| calibrate_all / score_all | peak memory (GiB) | base (GiB) "
             "| load before -> after |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['n']:,} | {r['device']} | {r['score_all_s']:.2f} | "
                     f"{r['calibrate_s']:.2f} | **{r['calibrate_s'] / r['score_all_s']:.2f}** | "
                     f"{r['peak_gib']:.2f} | "
                     f"{r['base_gib']:.2f} | {r['load_before']} -> {r['load_after']} |")
    if parts:
        lines += ["", "calibrate_all on one group of metrics (s):", "",
                  "| N | device | " + " | ".join(GROUPS) + " |",
                  "|---:|---|" + "---:|" * len(GROUPS)]
        for r in results:
            lines.append(f"| {r['n']:,} | {r['device']} | "
                         + " | ".join(f"{r['parts_s'][g]:.2f}" for g in GROUPS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return 0
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    now = dt.datetime.now().isoformat(timespec="seconds")
    print(f"# bench_calibration  {now}  host {platform.node()}")
    print(f"# {_cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, D={args.dim}, topk={args.topk}, K={args.permutations}",
          flush=True)
    results = []
    for n in args.sizes:
        for device in devices:
            before = _load()
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n),
                   "--device", device, "--dim", str(args.dim), "--topk", str(args.topk),
                   "--threads", str(args.threads),
                   "--permutations", str(args.permutations), "--seed", str(args.seed)]
            cmd += ["--parts"] if args.parts else []
            print(f"# N={n:,} {device}: running (load {before}) ...", file=sys.stderr, flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"N={n} {device}: worker failed (exit {done.returncode}):\n"
                      f"{done.stderr[-2000:]}", file=sys.stderr)
                return 1
            r = json.loads(done.stdout.strip().splitlines()[-1])
            r["load_before"], r["load_after"] = before, _load()
            results.append(r)
            print(f"# N={n:,} {device}: score_all {r['score_all_s']:.2f} s, calibrate_all "
                  f"{r['calibrate_s']:.2f} s = {r['calibrate_s'] / r['score_all_s']:.2f} x, "
                  f"peak {r['peak_gib']:.2f} GiB", file=sys.stderr, flush=True)
    print()
    print(_table(results, args.parts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
