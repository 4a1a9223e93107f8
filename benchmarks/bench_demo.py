"""Timings of the built-in study (`reprsim demo`) on this machine; prints markdown tables.

    .venv/bin/python benchmarks/bench_demo.py demo  [--text] [--scale full] [--repeats 3]
    .venv/bin/python benchmarks/bench_demo.py loaders   [--scale full]
    .venv/bin/python benchmarks/bench_demo.py threads   [--scale full] [--steps 30]

demo: runs `reprsim demo` as a subprocess in fresh REPRSIM_DATA / REPRSIM_RUNS / --out
folders (the whole study from nothing: data, training, measurement, outputs), then once
more on the same folders (everything reused). Reported per run: wall seconds, CPU seconds
of the whole process tree (the demo, its fork server and its workers; sampled every 0.2 s
with psutil, so a process living less than that is missed), the 1-minute load average
before and after (the machine may be shared: CPU seconds are the comparable number, wall
seconds what this run saw), and the demo's own stage times from its summary.

loaders: what one model's data costs in a fresh process, on the demo's training beton,
batch and augmentation: an FFCV loader (`loaders.make_loader`, pipeline compiled on its
first epoch) against decoding the beton once into memory (`betons.load_arrays`) plus an
`ArrayLoader`. Each variant runs in its own subprocess, so every one pays its imports and
compilation as a worker would; reported: import seconds, construction, first epoch, a
later epoch.

threads: training steps per second of the demo's model (narrowed CIFAR ResNet-18 at the
demo's side and batch) in one process with 1 and 2 torch threads, and in two concurrent
single-threaded processes (aggregate): why the demo runs one single-threaded worker per CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PY = sys.executable


def load() -> float:
    return os.getloadavg()[0]


# ---- demo -------------------------------------------------------------------------------
def tree_cpu(proc, samples: dict[int, float]) -> None:
    """Record utime + stime of `proc` and all its descendants (latest sample per pid)."""
    import psutil

    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return
    for p in family:
        try:
            t = p.cpu_times()
            samples[p.pid] = t.user + t.system
        except psutil.Error:
            pass


def timed_demo(args: list[str], env: dict[str, str]) -> dict:
    import psutil

    before = load()
    start = time.perf_counter()
    child = subprocess.Popen([str(ROOT / ".venv" / "bin" / "reprsim"), "demo", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc = psutil.Process(child.pid)
    samples: dict[int, float] = {}
    while child.poll() is None:
        tree_cpu(proc, samples)
        time.sleep(0.2)
    wall = time.perf_counter() - start
    out = child.stdout.read()
    if child.returncode != 0:
        raise SystemExit(f"reprsim demo {' '.join(args)} failed ({child.returncode}):\n{out}")
    return {"wall": wall, "cpu": sum(samples.values()), "load_before": before,
            "load_after": load(), "summary": out}


def bench_demo(opts) -> None:
    print("| run | study | scale | wall s | CPU s (tree) | load before | load after |")
    print("|---|---|---|---|---|---|---|")
    study = "text" if opts.text else "image"
    for i in range(opts.repeats):
        with contextlib.ExitStack() as stack:
            if opts.keep:
                tmp = Path(tempfile.mkdtemp(prefix="bench_demo_"))
                print(f"(run {i + 1} in {tmp}, kept)")
            else:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_demo_")))
            env = {**os.environ, "REPRSIM_DATA": str(tmp / "data"),
                   "REPRSIM_RUNS": str(tmp / "runs"), "TQDM_DISABLE": "1"}
            args = ["--scale", opts.scale, "--out", str(tmp / "out")] + (["--text"] if opts.text else [])
            for what in ("fresh", "rerun"):
                r = timed_demo(args, env)
                print(f"| {i + 1} {what} | {study} | {opts.scale} | {r['wall']:.0f} | "
                      f"{r['cpu']:.0f} | {r['load_before']:.1f} | {r['load_after']:.1f} |",
                      flush=True)
                if what == "fresh":
                    summary = r["summary"]
    print("\nLast fresh run's summary:\n")
    print("\n".join("    " + line for line in summary.strip().splitlines()))


# ---- loaders ----------------------------------------------------------------------------
LOADER_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
kind, path, batch, aug = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
import torch
torch.set_num_threads(1)
from repr_sim.data import betons, loaders
if kind == "ffcv":
    import ffcv.fields, ffcv.loader  # noqa: F401
t1 = time.perf_counter()
if kind == "ffcv":
    loader = loaders.make_loader(path, batch_size=batch, train=True, augment=aug, drop_last=True,
                                 workers=1)
else:
    images, labels = betons.load_arrays(path)
    loader = loaders.ArrayLoader(images, labels, batch_size=batch, train=True, augment=aug,
                                 drop_last=True)
t2 = time.perf_counter()
epochs = []
for _ in range(3):
    s = time.perf_counter()
    for x, y in loader:
        x.sum()
    epochs.append(time.perf_counter() - s)
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "epochs": epochs,
                  "images": loader.num_samples}))
"""


def bench_loaders(opts) -> None:
    from repr_sim import demo
    from repr_sim.data import betons

    scale = demo.get_scale(opts.scale)
    cfg = demo.demo_config("demo_ds", scale, "image", demo.study_of(False, scale).data_record)
    batch = cfg["recipe"]["batch_size"]
    # The study's CIFAR augmentation (augment.DEFAULT_AUGMENT), translate and cutout scaled
    # from 32 px to the demo's side.
    study_aug = {"translate": max(1, 8 * scale.image.data["size"] // 32),
                 "cutout": max(1, 10 * scale.image.data["size"] // 32)}
    with tempfile.TemporaryDirectory(prefix="bench_loaders_") as tmp:
        root = Path(tmp)
        demo.study_of(False, scale).write_data(root)
        path = betons.beton_path("shapes", "train", root)
        print(f"shapes train beton: {scale.image.data['n_train']} images {scale.image.data['size']}x"
              f"{scale.image.data['size']}, batch {batch}; load {load():.1f}\n")
        print("| loader | augmentation | imports s | build s | epoch 1 s | epoch 3 s |")
        print("|---|---|---|---|---|---|")
        for aug_name, aug in (("demo (off)", cfg["augment"]), ("study's, scaled", study_aug)):
            for kind in ("ffcv", "memory"):
                out = subprocess.run([PY, "-c", LOADER_CHILD, kind, str(path), str(batch),
                                      json.dumps(aug)], capture_output=True, text=True,
                                     cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
                if out.returncode != 0:
                    raise SystemExit(out.stderr)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {kind} | {aug_name} | {r['import']:.1f} | {r['build']:.2f} | "
                      f"{r['epochs'][0]:.2f} | {r['epochs'][2]:.2f} |", flush=True)
        print(f"\nload after: {load():.1f}")


# ---- threads ----------------------------------------------------------------------------
THREAD_CHILD = r"""
import sys, time, torch
threads, width, side, batch, steps = map(int, sys.argv[1:6])
torch.set_num_threads(threads)
from repr_sim import models
model = models.build("resnet18_cifar", 8, width=width)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
x = torch.randn(batch, side, side, 3).permute(0, 3, 1, 2)  # channels-last, as the loaders give
y = torch.randint(0, 8, (batch,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
for _ in range(3):
    step()
start, cpu = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
print(steps / (time.perf_counter() - start), steps / (time.process_time() - cpu))
"""


def bench_threads(opts) -> None:
    from repr_sim import demo

    scale = demo.get_scale(opts.scale)
    cfg = demo.demo_config("demo_ds", scale, "image", demo.study_of(False, scale).data_record)
    args = [str(cfg.get("width", 64)), str(scale.image.data["size"]), str(cfg["recipe"]["batch_size"]),
            str(opts.steps)]
    print(f"model resnet18_cifar width {args[0]}, {args[1]}x{args[1]}, batch {args[2]}; "
          f"load {load():.1f}\n")
    print("| setting | steps/s (wall, all processes) | steps/s per CPU second |")
    print("|---|---|---|")
    for label, threads, procs in (("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 2, 1),
                                  ("2 processes, 1 thread each", 1, 2)):
        children = [subprocess.Popen([PY, "-c", THREAD_CHILD, str(threads), *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True) for _ in range(procs)]
        rates = [tuple(map(float, c.communicate()[0].split())) for c in children]
        wall = sum(r[0] for r in rates)
        cpu = sum(r[1] for r in rates) / len(rates)
        print(f"| {label} | {wall:.1f} | {cpu:.1f} |", flush=True)
    print(f"\nload after: {load():.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["demo", "loaders", "threads"])
    parser.add_argument("--text", action="store_true", help="demo: the text study")
    parser.add_argument("--scale", default="full", choices=["full", "tiny"])
    parser.add_argument("--repeats", type=int, default=3, help="demo: fresh runs (each + a rerun)")
    parser.add_argument("--steps", type=int, default=30, help="threads: timed steps")
    parser.add_argument("--keep", action="store_true", help="demo: keep the run folders")
    opts = parser.parse_args(argv)
    {"demo": bench_demo, "loaders": bench_loaders, "threads": bench_threads}[opts.what](opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
