"""The GPU check's measurements (benchmarks/gpu_check.sh runs one section per call).

    PYTHONPATH=. python3 benchmarks/bench_gpu.py SECTION --out rows.jsonl [--device cuda]
    PYTHONPATH=. python3 benchmarks/bench_gpu.py table rows.jsonl   # the table of all rows

Sections (each appends JSON rows {section, name, value, unit, note} to --out):
  train    one CIFAR-shaped pair (generated 32x32 data, 10 classes, written as real betons:
           without FFCV by repr_sim.data.betons' own writer) for 2 epochs through the real
           trainer (`reprsim train`), per loader backend (memory, device; ffcv if FFCV
           imports, not in a CPU dry run): training images/s of each model from its log, and
           the wall time. Then torch.compile, M = 1: one ResNet-18 as in `pack` (batch 512,
           device loader), eager and compiled in one process: the compile time (the first
           compiled step's wall time) apart from the steady-state images/s of each, in a
           subprocess that gets what is left of --limit (a compile that does not finish in
           time gives a row saying so)
  pack     aggregate training images/s of M = 1, 2, 4, 8 processes sharing the device, each
           training a ResNet-18 (batch 512) on 25,000 device-resident images with the
           trainer's own train_step and DeviceLoader, timed together over one window after
           a warm-up; and the projected wall time of the CIFAR-10 dataset-overlap sweep
           (220 models x 50 epochs x 25,000 images / aggregate images/s)
  profile  one model's training step under torch.profiler: step time, the fraction of it
           the GPU is busy, the five ops with the most device (CPU: CPU) self time
  metrics  the eight metrics (metrics.score_all) of two 512-d feature sets at N = 10,000 and
           50,000 on the device, and calibrate_all with K = 200 permutations at N = 10,000
  extract  feature extraction images/s of one ResNet-18 (eval, autocast, batch 500)
  gpt      one GPT training step (the dataset-overlap model, bf16 autocast on CUDA): tokens/s
Options --precision (fp16, bf16, fp32), --channels-last/--no-channels-last and --compile
apply to `pack` (and --precision, --channels-last to the compile row). --limit SECONDS: the
time the section may take (gpu_check.sh passes its cap). --cpu-dry-run shrinks every size so that a section runs in seconds on a
CPU (its rows are then CPU numbers, labelled so).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_START = time.perf_counter()  # --limit counts from here (torch's import included)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

SWEEP_MODELS, SWEEP_EPOCHS, SWEEP_IMAGES = 220, 50, 25_000
GOAL_S = 3600.0
SECTIONS = ("train", "pack", "profile", "metrics", "extract", "gpt")

FULL = dict(side=32, width=64, batch=512, images=25_000, train_images=5_000, test_images=1_000,
            ms=(1, 2, 4, 8), warmup=10, window=4.0, compile_window=2.0, ns=(10_000, 50_000), calib_n=10_000,
            k=200, dim=512, extract_n=10_000, gpt_batch=32, gpt_steps=5)
DRY = dict(side=16, width=8, batch=32, images=256, train_images=160, test_images=40,
           ms=(1, 2, 4, 8), warmup=2, window=2.0, compile_window=1.0, ns=(500, 1_000), calib_n=300, k=20,
           dim=32, extract_n=256, gpt_batch=2, gpt_steps=2)


def sizes(args) -> dict:
    return DRY if args.cpu_dry_run else FULL


def label(args) -> str:
    return "CPU dry run" if args.cpu_dry_run else torch.cuda.get_device_name(0)


class Rows:
    """JSON lines appended to the --out file, one per measured value, echoed to stdout."""

    def __init__(self, path: Path, section: str, device_label: str):
        self.path, self.section, self.device = Path(path), section, device_label

    def add(self, name: str, value: float, unit: str, note: str = "") -> None:
        row = {"section": self.section, "name": name, "value": float(value), "unit": unit,
               "note": note, "device": self.device}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{self.section:8s} {name:42s} {value:12.4g} {unit:10s} {note}", flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def cifar_like(n: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated CIFAR-shaped data: a class-dependent colour plus noise (learnable, cheap)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), -(-n // 10))[:n]
    colours = rng.integers(40, 216, (10, 3))
    images = colours[labels][:, None, None, :] + rng.integers(-40, 41, (n, side, side, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


# ---- train: one pair per backend through the real trainer ---------------------------------------
def section_train(args, rows: Rows) -> None:
    from repr_sim import cli, experiments, kinds, runs
    from repr_sim.data import betons
    from repr_sim.paths import environ

    s = sizes(args)
    sets = {"train": cifar_like(s["train_images"], s["side"], 0),
            "test": cifar_like(s["test_images"], s["side"], 1)}
    backends = ["memory", "device"]
    try:
        if args.cpu_dry_run:  # FFCV compiles its pipelines for minutes on a small CPU
            raise ImportError("skipped in a CPU dry run")
        import ffcv.loader  # noqa: F401

        backends.append("ffcv")
    except ImportError:
        print("train: no ffcv row (no FFCV here, or a CPU dry run); the betons are real ones, "
              "written and read without FFCV", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        for part, (images, labels) in sets.items():
            betons.write_beton(images, labels, betons.beton_path("cifar10", part, data),
                               info={"dataset": "cifar10", "split": part})
        for backend in backends:
            out = tmp / f"runs_{backend}"
            env = {"REPRSIM_DATA": str(data), "REPRSIM_RUNS": str(out), "REPRSIM_VERIFY": "0"}
            with environ(env):
                t0 = time.perf_counter()
                code = cli.main(["train", "cifar10_ds", "--seed", "0", "--frac", "0.5",
                                 "--epochs", "2", "--batch-size", str(s["batch"]),
                                 "--device", args.device, f"--set=width={s['width']}",
                                 f"--set=loader.backend={backend}",
                                 f"--set=recipe.precision={args.precision}"])
                wall = time.perf_counter() - t0
                if code != 0:
                    rows.add(f"pair, 2 epochs, {backend} backend", float("nan"), "s", "FAILED")
                    continue
                pair = runs.pair_dir(experiments.experiment_dir(kinds.load("cifar10_ds")), 0, 0.5)
                speed = []
                for i in (0, 1):
                    log = [json.loads(line) for line in
                           (pair / f"split_{i}" / "log.txt").read_text().splitlines()]
                    seconds = log[-1]["time_s"] - log[0]["time_s"]
                    speed.append(log[0]["step"] * s["batch"] / max(seconds, 1e-9))
            rows.add(f"pair, 2 epochs, {backend} backend: wall", wall, "s",
                     f"{s['train_images']} images, both models, start-up included")
            rows.add(f"{backend} backend: epoch 2 images/s per model", float(np.mean(speed)),
                     "img/s", "training + test pass, " +
                     (args.precision if args.device == "cuda" else "float32 (CPU)"))
    compile_rows(args, rows)


def compile_rows(args, rows: Rows) -> None:
    """torch.compile at M = 1, in a subprocess given what is left of --limit (less 5 s)."""
    left = (args.limit - (time.perf_counter() - PROCESS_START) - 5.0) if args.limit else 600.0
    name = "torch.compile, M=1"
    if left < 5:
        rows.add(f"{name}: compile time", float("nan"), "s", "not run: no time left in the section")
        return
    opts = [f"--precision={args.precision}",
            "--channels-last" if args.channels_last else "--no-channels-last"]
    cmd = [sys.executable, __file__, "_compile_worker", "--device", args.device, *opts,
           *(["--cpu-dry-run"] if args.cpu_dry_run else [])]
    try:
        with tempfile.TemporaryDirectory() as cache:  # cold caches: what a fresh job pays
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor",
                   "TRITON_CACHE_DIR": f"{cache}/triton"}
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=left, env=env)
    except subprocess.TimeoutExpired:
        rows.add(f"{name}: compile time", float("nan"), "s",
                 f"not finished within the {left:.0f} s left in the section (compile time > that)")
        return
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        rows.add(f"{name}: compile time", float("nan"), "s", f"FAILED (exit {proc.returncode})")
        return
    r = json.loads(lines[-1])
    recipe = (f"{args.precision}, {'channels-last' if args.channels_last else 'NCHW'}"
              if args.device == "cuda" else "float32 (CPU), 1 thread")
    rows.add(f"{name}: eager images/s", r["eager"], "img/s", f"{recipe}, batch {r['batch']}")
    rows.add(f"{name}: compiled images/s", r["compiled"], "img/s",
             f"steady state, compile excluded; x{r['compiled'] / r['eager']:.2f} eager")
    rows.add(f"{name}: compile time", r["compile_s"], "s",
             "first compiled step's wall time (default mode, cold caches), apart")
    sweep_s = SWEEP_MODELS * SWEEP_EPOCHS * SWEEP_IMAGES / r["compiled"]
    rows.add(f"{name}: projected sweep wall time", sweep_s / 3600, "h",
             f"compiled, one model at a time; goal 1 h: {GOAL_S / sweep_s:.0%} of the needed speed")


def compile_worker(args) -> None:
    """Eager then compiled steps of one model (as `pack` trains it), timed apart."""
    s, device = sizes(args), args.device

    def images_per_s(step) -> float:
        for _ in range(s["warmup"]):
            step()
        sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < s["compile_window"]:
            step()
            n += 1
            if n % 4 == 0:
                sync(device)
        sync(device)
        return n * s["batch"] / (time.perf_counter() - t0)

    eager = images_per_s(make_step(argparse.Namespace(**{**vars(args), "compile": False}), 0))
    step = make_step(argparse.Namespace(**{**vars(args), "compile": True}), 0)
    sync(device)
    t0 = time.perf_counter()
    step()  # traces, compiles forward and backward, runs
    sync(device)
    compile_s = time.perf_counter() - t0
    compiled = images_per_s(step)
    print(json.dumps({"eager": eager, "compiled": compiled, "compile_s": compile_s,
                      "batch": s["batch"]}), flush=True)


# ---- pack: M processes sharing the device ------------------------------------------------------
def make_step(args, worker: int):
    """One training step of a ResNet-18 on device-resident generated data, as the trainer
    takes it (DeviceLoader, prepare_model, train_step with the chosen precision)."""
    from torch import nn

    from repr_sim import models
    from repr_sim.data import loaders
    from repr_sim.kinds.image import train as image

    s = sizes(args)
    device = args.device
    torch.manual_seed(worker)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(1)
    images, labels = cifar_like(s["images"], s["side"], worker)
    loader = loaders.DeviceLoader(images, labels, batch_size=s["batch"], train=True,
                                  drop_last=True, seed=worker, device=device)
    model = image.prepare_model(models.build("resnet18_cifar", 10, width=s["width"]), device,
                                args.channels_last)
    run = torch.compile(model) if args.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = image.make_scaler(device, args.precision)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def batches():
        while True:
            yield from loader

    it = batches()

    def step():
        x, y = next(it)
        image.train_step(run, x, y, opt, scaler, loss_fn, device, args.precision,
                         args.channels_last)

    return step


def pack_worker(args) -> None:
    """One packed process: warm up, say ready, wait for go, count steps over the window."""
    s, device = sizes(args), args.device
    step = make_step(args, args.worker)
    started = time.perf_counter()
    for _ in range(s["warmup"]):
        step()
    sync(device)
    warm = time.perf_counter() - started
    sync_dir = Path(args.sync_dir)
    (sync_dir / f"ready_{args.worker}").write_text("")
    while not (sync_dir / "go").exists():
        time.sleep(0.005)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < s["window"]:
        step()
        n += 1
        if n % 4 == 0:
            sync(device)
    sync(device)
    seconds = time.perf_counter() - t0
    print(json.dumps({"images_per_s": n * s["batch"] / seconds, "warmup_s": warm}), flush=True)


def section_pack(args, rows: Rows) -> None:
    s = sizes(args)
    opts = [f"--precision={args.precision}", "--channels-last" if args.channels_last else
            "--no-channels-last"] + (["--compile"] if args.compile else [])
    recipe = (f"{args.precision}, {'channels-last' if args.channels_last else 'NCHW'}"
              if args.device == "cuda" else "float32 (CPU), 1 thread each")
    recipe += ", compiled" if args.compile else ""
    best = 0.0
    for m in s["ms"]:
        with tempfile.TemporaryDirectory() as sync_dir:
            procs = [subprocess.Popen(
                [sys.executable, __file__, "_pack_worker", "--device", args.device,
                 "--worker", str(w), "--sync-dir", sync_dir, *opts,
                 *(["--cpu-dry-run"] if args.cpu_dry_run else [])],
                stdout=subprocess.PIPE, text=True) for w in range(m)]
            deadline = time.time() + 600
            while (len(list(Path(sync_dir).glob("ready_*"))) < m
                   and all(p.poll() is None for p in procs) and time.time() < deadline):
                time.sleep(0.05)
            Path(sync_dir, "go").write_text("")
            outs = [p.communicate()[0] for p in procs]
        results = [json.loads(o.strip().splitlines()[-1]) for o, p in zip(outs, procs, strict=True)
                   if p.returncode == 0 and o.strip()]
        if len(results) < m:
            rows.add(f"M={m}: aggregate", float("nan"), "img/s", "a worker FAILED")
            continue
        total = sum(r["images_per_s"] for r in results)
        best = max(best, total)
        rows.add(f"M={m}: images/s per model", total / m, "img/s", recipe)
        rows.add(f"M={m}: aggregate images/s", total, "img/s",
                 f"warm-up {max(r['warmup_s'] for r in results):.1f} s")
        sweep_s = SWEEP_MODELS * SWEEP_EPOCHS * SWEEP_IMAGES / total
        rows.add(f"M={m}: projected sweep wall time", sweep_s / 3600, "h",
                 f"goal 1 h: {GOAL_S / sweep_s:.0%} of the needed speed")
    if best:
        flops = 3.3e9 * best  # ~3.3 GFLOP per training image of the CIFAR ResNet-18
        rows.add("best aggregate: model FLOP/s", flops / 1e12, "TFLOP/s",
                 "vs ~790 bf16 peak on an H200" if not args.cpu_dry_run else "width-reduced")


# ---- profile: where one model's step spends its time ----------------------------------------------
def section_profile(args, rows: Rows) -> None:
    from torch.profiler import ProfilerActivity, profile

    s = sizes(args)
    step = make_step(args, 0)
    for _ in range(s["warmup"]):
        step()
    sync(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    n = 10 if not args.cpu_dry_run else 3
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        sync(args.device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    field = "self_device_time_total" if args.device == "cuda" else "self_cpu_time_total"

    def self_us(e) -> float:
        value = getattr(e, field, None)
        return float(value if value is not None else getattr(e, "self_cuda_time_total", 0.0))

    busy = sum(self_us(e) for e in events) / 1e6
    rows.add("one model: step wall time", wall / n * 1e3, "ms",
             f"batch {s['batch']}, {args.precision if args.device == 'cuda' else 'float32'}, "
             f"{n} profiled steps")
    if args.device == "cuda":
        rows.add("one model: GPU busy fraction", busy / wall, "",
                 "kernel time / wall time: < 1 means the GPU waits on the host")
    for e in sorted(events, key=self_us, reverse=True)[:5]:
        rows.add(f"top op: {e.key[:40]}", self_us(e) / 1e6 / max(busy, 1e-12), "share",
                 f"{'GPU' if args.device == 'cuda' else 'CPU'} self time")


# ---- metrics and calibration on the device -----------------------------------------------------
def section_metrics(args, rows: Rows) -> None:
    from repr_sim import metrics
    from repr_sim.metrics import calibration

    s = sizes(args)
    gen = torch.Generator(device="cpu").manual_seed(0)
    for n in s["ns"]:
        a = torch.randn(n, s["dim"], generator=gen).to(args.device)
        b = (a + 0.5 * torch.randn(n, s["dim"], generator=gen).to(args.device))
        sync(args.device)
        t0 = time.perf_counter()
        pa, pb = metrics.prepare(a), metrics.prepare(b)
        metrics.score_all(pa, pb)
        sync(args.device)
        rows.add(f"eight metrics, N={n}", time.perf_counter() - t0, "s",
                 f"D={s['dim']}, float32/float64 on {args.device}")
    n = s["calib_n"]
    a = torch.randn(n, s["dim"], generator=gen).to(args.device)
    b = a + torch.randn(n, s["dim"], generator=gen).to(args.device)
    t0 = time.perf_counter()
    calibration.calibrate_all(metrics.prepare(a), metrics.prepare(b), n_permutations=s["k"])
    sync(args.device)
    rows.add(f"calibrate_all, N={n}, K={s['k']}", time.perf_counter() - t0, "s", "")


# ---- feature extraction ------------------------------------------------------------------------
def section_extract(args, rows: Rows) -> None:
    from repr_sim import features, models
    from repr_sim.data import loaders
    from repr_sim.kinds.image import train as image

    s = sizes(args)
    images, labels = cifar_like(s["extract_n"], s["side"], 2)
    model = image.prepare_model(models.build("resnet18_cifar", 10, width=s["width"]),
                                args.device).eval()
    for backend in ("memory", "device"):
        make = loaders.ArrayLoader if backend == "memory" else loaders.DeviceLoader
        loader = make(images, labels, batch_size=500, train=False, device=args.device)
        for precision in ("fp16", "bf16"):
            for _rep in range(2):  # the first pass warms up (cuDNN autotuning)
                sync(args.device)
                t0 = time.perf_counter()
                with torch.no_grad(), image.autocast(args.device, precision):
                    for x, _ in loader:
                        features.image_features(model, x)
                sync(args.device)
            rows.add(f"features, {backend} loader, {precision}",
                     len(images) / (time.perf_counter() - t0), "img/s",
                     "ResNet-18 eval" + (" (CPU: float32)" if args.device == "cpu" else ""))


# ---- a GPT step ---------------------------------------------------------------------------------
def section_gpt(args, rows: Rows) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_gpt

    s = sizes(args)
    model = dict(bench_gpt.DS_MODEL)
    if args.cpu_dry_run:
        model.update(n_layer=1, n_head=2, n_embd=32, block_size=32)
    tok, mem = bench_gpt.step_throughput(model, 50_257, s["gpt_batch"], s["gpt_steps"],
                                         args.device)
    rows.add("GPT step (6x384, block 256), bf16" if not args.cpu_dry_run else
             "GPT step (tiny), float32 on CPU", tok, "tok/s",
             f"batch {s['gpt_batch']}" + (f", peak {mem:.1f} GiB" if mem else ""))


# ---- the table ----------------------------------------------------------------------------------
def print_table(path: Path) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    print("| section | measurement | value | unit | device | note |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        value = f"{r['value']:.4g}" if r["value"] == r["value"] else "n/a"
        print(f"| {r['section']} | {r['name']} | {value} | {r['unit']} | {r['device']} | "
              f"{r['note']} |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("section", choices=[*SECTIONS, "table", "_pack_worker", "_compile_worker"])
    p.add_argument("path", nargs="?", help="table: the rows file")
    p.add_argument("--out", default="gpu_rows.jsonl", help="rows file to append to")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda when available, else cpu (with --cpu-dry-run: cpu)")
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes, on the CPU")
    p.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="bf16")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the packed models")
    p.add_argument("--limit", type=float, default=None,
                   help="seconds the section may take (the compile row gets what is left)")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--sync-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.cpu_dry_run or not torch.cuda.is_available() else "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here (use --cpu-dry-run)")
    if args.device == "cpu" and not args.cpu_dry_run and args.section in SECTIONS:
        p.error("full sizes are for a GPU: give --cpu-dry-run to run this on the CPU")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.section == "table":
        print_table(Path(args.path or args.out))
        return 0
    if args.section == "_pack_worker":
        pack_worker(args)
        return 0
    if args.section == "_compile_worker":
        if args.device == "cpu":
            torch.set_num_threads(1)
        compile_worker(args)
        return 0
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows = Rows(Path(args.out), args.section, label(args))
    globals()[f"section_{args.section}"](args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
