"""`reprsim sweep`: experiments -> (seed, frac) tasks -> a launcher (serial, pool, SLURM).

The one planner and its launchers, for every experiment kind (repr_sim.kinds) and for the
built-in demo: a task is (experiment, seed, frac), a task is finished when its pair
folder's status record says so (repr_sim.runs.is_finished), and running a task means
`reprsim train EXPERIMENT --seed S --frac F [train args]` (repr_sim.train.run_task).

Choosing the launcher: `--launcher slurm|pool|local`, else $LAUNCHER (slurm|pool|local|
auto), else auto: SLURM when `sbatch` is on the PATH and `sinfo` answers, else local.

Pool. `--launcher pool --workers N` (default: one per usable CPU) trains N pairs at once
on this machine, in worker processes forked from a server that imported the kinds' stacks
once (their declarations' `preload`), each with an equal share of the CPU threads. Each
task's output goes to `<log dir>/pool/<experiment>_seed<S>_frac<F>.log`; the terminal
shows one line per finished pair (and a bar on a terminal).

SLURM. Per experiment with pending tasks: the task list is written (atomically) to
`<log dir>/tasks/<experiment>_<time>_<pid>.tsv`, one `experiment<TAB>seed<TAB>frac` line
per task, and ONE job array is submitted from the sbatch script's folder:

    sbatch --array=0-<n-1> [$SBATCH_ARGS] --output=<log dir>/slurm_out/%x_%A_%a.out \
        <sbatch script> <task file> [train args]

The sbatch script (the training folder's `run_train.sh`) picks line SLURM_ARRAY_TASK_ID of
the task file and runs the training command with the train args it is given. Resources
are `#SBATCH` defaults in that script; nothing here overrides them on the command line,
so sbatch's own SBATCH_* input variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_GRES,
SBATCH_MEM_PER_NODE, SBATCH_TIMELIMIT, ...) take effect; $SBATCH_ARGS is appended for the
rest. Defaults: the sbatch script is `run_train.sh` in the experiment's training folder
(the parent of its `configs/`), the log dir is `log_dir/` beside the script. The jobs get
the runs root the sweep planned against (and REPRSIM_DATA when set) as absolute paths, so
they write where the next sweep looks for finished pairs, from wherever it was started.

Several pairs per GPU. `--pairs-per-gpu M` (else $PAIRS_PER_GPU) packs M pairs onto each
device: a small ResNet-18 at batch 512 leaves a large GPU mostly idle, and M processes
sharing it fill it (benchmarks/gpu_check.sh measures M = 1, 2, 4, 8; docs/gpu.md). The pool
launcher then runs M pairs at once per visible GPU (a sub-pool of M workers per GPU, each
worker seeing only its GPU through CUDA_VISIBLE_DEVICES; on a machine without GPUs, M
workers on the CPU), with the CPU threads shared equally. The SLURM launcher submits
ceil(n / M) array elements and exports PAIRS_PER_GPU=M; element k runs tasks kM..kM+M-1
of the task file at once (`reprsim sweep --task k --task-file F --pairs-per-gpu M`, which
the array body train_task.sh calls), so an element should be given one GPU. Each pair is
its own process with its own seeds, data and CUDA context: what it computes does not depend
on its neighbours (bit for bit on the CPU at a given thread count, tests/test_packing.py;
on CUDA as deterministic as a pair alone, see docs/gpu.md).

Local. The pending tasks run here one after another (a progress bar over tasks); a failed
task is reported and the others still run; the exit code is 1 if any failed.

Environment (used when the matching option is not given): SEEDS="0 1", FRACS="0.0 0.5"
narrow the sweep, WORKERS=N sizes the pool, PAIRS_PER_GPU=M packs pairs, TRAIN_ARGS="--epochs 2" is passed to
`reprsim train`, SBATCH_ARGS is
appended to sbatch's command line, LAUNCHER chooses the launcher.

`--task N --task-file F` runs task N of a task file here (what an array task does, for
bodies that do not parse the file themselves).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from . import experiments, kinds, runs
from .errors import UserError
from .paths import data_root, progress, runs_root, usable_cpus

LAUNCHERS = ("auto", "slurm", "pool", "local")
SBATCH_SCRIPT = "run_train.sh"
LOG_DIR = "log_dir"


@dataclass(frozen=True)
class Task:
    experiment: str  # a name `reprsim train` finds, or a config path
    seed: int
    frac: float
    cfg: dict | None = field(default=None, compare=False)  # a resolved config (the demo's)

    def line(self) -> str:
        return f"{self.experiment}\t{self.seed}\t{self.frac!r}\n"

    def train_argv(self, train_args: list[str]) -> list[str]:
        return ["train", self.experiment, "--seed", str(self.seed), "--frac", repr(self.frac),
                *train_args]


@dataclass
class Plan:
    """One experiment's sweep: every task, and the ones not finished yet."""

    cfg: dict
    tasks: list[Task]
    pending: list[Task]

    @property
    def name(self) -> str:
        return self.cfg["name"]


# ---------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------


def _env_list(name: str, kind, flag: str):
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return [kind(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise UserError(f"{name}={text!r}: expected {flag} values separated by spaces") from None


def _task_name(cfg: dict) -> str:
    """What a task file says: the experiment's name when that finds the same config."""
    known = experiments.config_paths().get(cfg["name"])
    if known is not None and str(known.resolve()) == cfg["config_path"]:
        return cfg["name"]
    return cfg["config_path"]


def plan(experiment: str | dict, seeds=None, fracs=None) -> Plan:
    """Expand one experiment (a name, a config path, or a resolved config) into tasks,
    narrowed to `seeds`/`fracs`; drop finished pairs."""
    given = isinstance(experiment, dict)
    cfg = experiment if given else kinds.load(experiment)
    name = cfg["name"] if given else _task_name(cfg)
    tasks = [Task(name, s, f, cfg if given else None)
             for s, f in experiments.tasks(cfg, seeds, fracs)]
    exp_dir = experiments.experiment_dir(cfg)
    pending = [t for t in tasks if not runs.is_finished(runs.pair_dir(exp_dir, t.seed, t.frac))]
    return Plan(cfg, tasks, pending)


def refuse_other_configs(plan: Plan, what: str = "another config") -> None:
    """A pair folder of the plan trained with another config is an error (the trainer would
    skip a finished pair without looking at its config): one line naming the folder."""
    from .pair import config_mismatch

    defaults = kinds.get(plan.cfg["kind"]).defaults
    exp_dir = experiments.experiment_dir(plan.cfg)
    for task in plan.tasks:
        folder = runs.pair_dir(exp_dir, task.seed, task.frac)
        if not (folder / "args.json").is_file():
            continue
        recorded = runs.read_json(folder / "args.json").get("config", {})
        diff = config_mismatch(recorded, plan.cfg, defaults)
        if diff:
            raise UserError(f"{folder} was trained with {what} ({diff}); delete "
                            f"{folder.parent.parent} and run again")


# ---------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------


def slurm_available() -> bool:
    """`sbatch` on the PATH and `sinfo` answering (a reachable controller)."""
    if not (shutil.which("sbatch") and shutil.which("sinfo")):
        return False
    try:
        result = subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def choose_launcher(option: str | None) -> str:
    choice = option if option and option != "auto" else os.environ.get("LAUNCHER", "auto").strip() or "auto"
    if choice not in LAUNCHERS:
        raise UserError(f"LAUNCHER={choice!r}: expected one of {', '.join(LAUNCHERS)}")
    if choice == "auto":
        return "slurm" if slurm_available() else "local"
    if choice == "slurm" and not shutil.which("sbatch"):
        raise UserError("the SLURM launcher was asked for, but `sbatch` is not on the PATH")
    return choice


def default_sbatch_script(cfg: dict) -> Path:
    """`run_train.sh` of the experiment's training folder (the parent of its configs/)."""
    return Path(cfg["config_path"]).parent.parent / SBATCH_SCRIPT


def write_task_file(log_dir: Path, plan: Plan) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = log_dir / "tasks" / f"{plan.name}_{stamp}_{os.getpid()}.tsv"
    runs.atomic_write_text(path, "".join(t.line() for t in plan.pending))
    return path


def read_task(task_file: Path, index: int) -> Task:
    path = Path(task_file)
    if not path.is_file():
        raise UserError(f"task file not found: {path}")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not 0 <= index < len(lines):
        raise UserError(f"{path} has {len(lines)} task(s); there is no task {index}")
    try:
        experiment, seed, frac = lines[index].split("\t")
        return Task(experiment, int(seed), float(frac))
    except ValueError:
        raise UserError(f"{path}, line {index + 1}: expected experiment<TAB>seed<TAB>frac") from None


def sbatch_command(script: Path, task_file: Path, n_tasks: int, log_dir: Path,
                   sbatch_args: list[str], train_args: list[str]) -> list[str]:
    out = log_dir / "slurm_out" / "%x_%A_%a.out"
    return ["sbatch", f"--array=0-{n_tasks - 1}", *sbatch_args, f"--output={out}",
            str(script), str(task_file), *train_args]


def job_environment() -> dict[str, str]:
    """This environment, with the runs root the plan was made against and any data root
    given, as absolute paths.

    The jobs run in the sbatch script's folder, not where the sweep was started: a relative
    REPRSIM_RUNS / REPRSIM_DATA, or no REPRSIM_RUNS outside the repository (runs/ is then
    found from the working folder), would point them elsewhere, and the finished pairs this
    sweep looks for would never be the ones its jobs write.
    """
    env = dict(os.environ)
    env["REPRSIM_RUNS"] = str(runs_root())
    if env.get("REPRSIM_DATA"):
        env["REPRSIM_DATA"] = str(data_root())
    return env


def submit(plan: Plan, *, script: Path | None, log_dir: Path | None, sbatch_args: list[str],
           train_args: list[str], pairs_per_gpu: int = 1) -> str:
    """Submit one job array for the plan's pending tasks, `pairs_per_gpu` tasks per array
    element; returns sbatch's output line."""
    script = Path(script) if script else default_sbatch_script(plan.cfg)
    if not script.is_file():
        raise UserError(f"sbatch script not found: {script} (give one with --sbatch-script)")
    script = script.resolve()
    log_dir = (Path(log_dir) if log_dir else script.parent / LOG_DIR).resolve()
    (log_dir / "slurm_out").mkdir(parents=True, exist_ok=True)
    task_file = write_task_file(log_dir, plan)
    elements = math.ceil(len(plan.pending) / pairs_per_gpu)
    cmd = sbatch_command(script, task_file, elements, log_dir, sbatch_args, train_args)
    print(f"tasks: {task_file}\nlogs: {log_dir / 'slurm_out'}", flush=True)
    env = job_environment()
    if pairs_per_gpu > 1:  # the array body passes it on (train_task.sh)
        env["PAIRS_PER_GPU"] = str(pairs_per_gpu)
    else:
        env.pop("PAIRS_PER_GPU", None)
    # Submitted from the script's folder: the job's SLURM_SUBMIT_DIR, where it finds the project.
    result = subprocess.run(cmd, cwd=script.parent, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise UserError(f"sbatch failed for {plan.name} (exit {result.returncode}): "
                        f"{detail[-1] if detail else 'no output'}")
    return result.stdout.strip()


def run_task(task: Task, train_args: list[str]) -> int:
    """`reprsim train` for one task, in this process; returns its exit code (2 and one
    error line for bad input, as the command gives)."""
    from . import train

    return train.run_task(task.experiment, task.seed, task.frac, train_args, cfg=task.cfg)


def run_local(tasks: list[Task], train_args: list[str]) -> int:
    failed = []
    for task in progress(tasks, desc="sweep", unit="pair"):
        print(f"== {task.experiment} seed {task.seed} frac {task.frac:g}", flush=True)
        code = run_task(task, train_args)
        if code != 0:
            failed.append((task, code))
    return report_failed(failed, len(tasks))


def report_failed(failed: list, n_tasks: int) -> int:
    for task, code in failed:
        print(f"failed (exit {code}): {task.experiment} seed {task.seed} frac {task.frac:g}",
              file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {n_tasks} task(s) failed", file=sys.stderr)
    return 1 if failed else 0


def pool_workers(requested: int | None) -> int:
    """--workers, else $WORKERS, else one worker per usable CPU."""
    if requested is None and os.environ.get("WORKERS", "").strip():
        text = os.environ["WORKERS"].strip()
        if not text.isdigit():
            raise UserError(f"WORKERS={text!r}: expected a whole number")
        requested = int(text)
    if requested is not None and requested < 1:
        raise UserError(f"--workers must be at least 1, got {requested}")
    return requested or usable_cpus()


def pairs_per_gpu(requested: int | None) -> int | None:
    """--pairs-per-gpu, else $PAIRS_PER_GPU, else None (no packing asked for)."""
    if requested is None and os.environ.get("PAIRS_PER_GPU", "").strip():
        text = os.environ["PAIRS_PER_GPU"].strip()
        if not text.isdigit():
            raise UserError(f"PAIRS_PER_GPU={text!r}: expected a whole number")
        requested = int(text)
    if requested is not None and requested < 1:
        raise UserError(f"--pairs-per-gpu must be at least 1, got {requested}")
    return requested


def visible_gpus() -> list[str]:
    """The ids of the GPUs this process may use (CUDA_VISIBLE_DEVICES, else all); [] if none."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        ids = [d.strip() for d in given.split(",") if d.strip()]
        # CUDA stops at the first invalid entry; "-1" (or "") hides every GPU.
        return [] if not ids or ids[0].startswith("-") else ids
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no usable CUDA runtime: the CPU
        return []


class DevicePool:
    """Pool's interface over one sub-pool of `per_device` workers per device: a job goes to
    the device with the most free workers when one is free (queued here until then), so no
    device runs more than `per_device` jobs. `devices`: GPU ids ([] : one pool on the CPU)."""

    def __init__(self, devices: list[str], per_device: int, preload: list[str],
                 env: dict[str, str], threads: int):
        from .pool import Pool

        groups = [{"CUDA_VISIBLE_DEVICES": d} for d in devices] or [{}]
        self.pools = [Pool(per_device, preload, {**env, **g}, threads) for g in groups]
        self.free = [per_device] * len(self.pools)
        self.queue: deque = deque()
        self.lock = threading.RLock()  # a done callback may run inside _dispatch

    def submit(self, log_path, fn, *args) -> Future:
        outer = Future()
        with self.lock:
            self.queue.append((outer, log_path, fn, args))
        self._dispatch()
        return outer

    def _dispatch(self) -> None:
        with self.lock:
            while self.queue:
                i = max(range(len(self.pools)), key=self.free.__getitem__)
                if self.free[i] == 0:
                    return
                outer, log_path, fn, args = self.queue.popleft()
                if not outer.set_running_or_notify_cancel():
                    continue
                self.free[i] -= 1
                inner = self.pools[i].submit(log_path, fn, *args)
                inner.add_done_callback(lambda f, i=i, outer=outer: self._finished(i, outer, f))

    def _finished(self, i: int, outer: Future, inner: Future) -> None:
        with self.lock:
            self.free[i] += 1
        if inner.cancelled():
            outer.set_exception(RuntimeError("cancelled"))
        elif inner.exception() is not None:
            outer.set_exception(inner.exception())
        else:
            outer.set_result(inner.result())
        self._dispatch()

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            with self.lock:
                for outer, *_ in self.queue:
                    outer.cancel()
                self.queue.clear()
        for pool in self.pools:
            pool.close(cancel=cancel)


def packed_pool(tasks: list[Task], per_device: int) -> tuple[DevicePool, int]:
    """A DevicePool of `per_device` workers per visible GPU (or on the CPU); (pool, workers)."""
    devices = visible_gpus()
    workers = per_device * max(1, len(devices))
    threads = max(1, usable_cpus() // workers)
    return DevicePool(devices, per_device, preload_of(tasks), worker_env(), threads), workers


def worker_env() -> dict[str, str]:
    """The environment of a pool's jobs: absolute roots, quiet bars, offline."""
    env = {k: v for k, v in job_environment().items()
           if k in ("REPRSIM_RUNS", "REPRSIM_DATA", "REPRSIM_VERIFY")}
    return {**env, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "MPLBACKEND": "Agg"}


def task_configs(tasks: list[Task]) -> dict[str, dict]:
    """The tasks' configs by experiment, each read once (a task made from a name has none)."""
    cfgs: dict[str, dict] = {}
    for t in tasks:
        if t.experiment not in cfgs:
            cfgs[t.experiment] = t.cfg or kinds.load(t.experiment)
    return cfgs


def preload_of(tasks: list[Task]) -> list[str]:
    """What the workers import once: the preload lists of the tasks' kinds."""
    names = {cfg["kind"] for cfg in task_configs(tasks).values()}
    return sorted({m for k in names for m in kinds.get(k).preload})


def task_log(log_dir: Path, task: Task) -> Path:
    return log_dir / "pool" / f"{Path(task.experiment).stem}_seed{task.seed}_frac{task.frac:g}.log"


def run_pool(tasks: list[Task], train_args: list[str], *, workers: int, log_dir: Path,
             pool=None, log_for=None, on_done=None, per_device: int | None = None) -> int:
    """Train `tasks` in `workers` processes (or in the given repr_sim.pool.Pool), in the
    order of `spread_seeds`;
    with `per_device` M, in M processes per visible GPU instead (packed_pool).
    Each task's output goes to `log_for(task)` (default: task_log). The terminal gets one
    line per finished pair, and on a terminal a bar over the pairs' steps (their status
    records). `on_done(task, exit code)` is called as each pair finishes."""
    from .pool import Pool

    log_for = log_for or (lambda t: task_log(log_dir, t))
    own = pool is None
    if own and per_device is not None:
        pool, workers = packed_pool(tasks, per_device)
    elif own:
        threads = max(1, usable_cpus() // workers)
        pool = Pool(workers, preload_of(tasks), worker_env(), threads)
    failed = []
    tasks = spread_seeds(tasks)
    futures = {pool.submit(log_for(t), run_task, t, train_args): t for t in tasks}
    cfgs = task_configs(tasks)
    bar = StepsBar([task_folder(t, cfgs[t.experiment]) for t in tasks])
    where = (f" ({per_device} per device)" if per_device is not None else "")
    bar.write(f"training {len(tasks)} pair(s) on {workers} worker(s){where}; output in "
              f"{log_for(tasks[0]).parent if len(set(map(log_for, tasks))) > 1 else log_for(tasks[0])}")
    try:
        for i, future in enumerate(as_completed(futures), start=1):
            task = futures[future]
            try:
                code = future.result()
            except Exception as e:  # a worker that died: one line, the log has the rest
                bar.write(f"{task.experiment} seed {task.seed} frac {task.frac:g}: "
                          f"{type(e).__name__}: {e}")
                code = 1
            state = "trained" if code == 0 else f"failed (exit {code}, see {log_for(task)})"
            bar.write(f"[{i}/{len(tasks)}] {task.experiment} seed {task.seed} "
                      f"frac {task.frac:g}: {state}")
            if code != 0:
                failed.append((task, code))
            if on_done is not None:
                on_done(task, code)
    finally:
        bar.close()
        if own:
            pool.close(cancel=bool(sys.exc_info()[0]))
    return report_failed(failed, len(tasks))


def spread_seeds(tasks: list[Task]) -> list[Task]:
    """Each experiment's tasks in rounds, one pair of every seed per round (experiments
    kept in order): pairs of one seed then rarely train at the same time, so with
    `reuse_models` a pair finds the model its sibling trained instead of training it too."""
    experiments_order = list(dict.fromkeys(t.experiment for t in tasks))
    seen: dict[tuple, int] = {}
    rounds = []
    for t in tasks:
        rounds.append(seen.get((t.experiment, t.seed), 0))
        seen[(t.experiment, t.seed)] = rounds[-1] + 1
    order = sorted(range(len(tasks)),
                   key=lambda i: (experiments_order.index(tasks[i].experiment), rounds[i], i))
    return [tasks[i] for i in order]


def task_folder(task: Task, cfg: dict) -> Path:
    return experiments.pair_folder(cfg, task.seed, task.frac)


class StepsBar:
    """A bar over the training steps of some pair folders, read from their status records
    twice a second by a thread, on a terminal only; `write` prints a line either way."""

    def __init__(self, folders: list[Path]):
        import threading

        self.folders = folders
        self.bar = None
        if sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE"):
            self.bar = tqdm(total=len(folders), desc="training", unit="pair",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            self.bar.n = sum(runs.steps_fraction(f) for f in self.folders)
            self.bar.refresh()

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.stop.set()
            self.thread.join()
            self.bar.n = sum(runs.steps_fraction(f) for f in self.folders)
            self.bar.close()


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def cli_sweep(args) -> int:
    train_args = shlex.split(args.train_args or os.environ.get("TRAIN_ARGS", ""))
    packing = pairs_per_gpu(getattr(args, "pairs_per_gpu", None))
    if packing is not None and args.workers is not None:
        raise UserError("give --workers or --pairs-per-gpu, not both")
    if args.task is not None:
        if not args.task_file:
            raise UserError("--task needs --task-file")
        if packing is not None and packing > 1:
            return run_packed_element(Path(args.task_file), args.task, packing, train_args,
                                      args.log_dir)
        task = read_task(Path(args.task_file), args.task)
        if os.environ.get("RANK", "0") == "0":  # one line per task, also under torchrun
            world = os.environ.get("WORLD_SIZE")
            print(f"task {args.task}: {task.experiment} seed {task.seed} frac {task.frac!r} on "
                  f"{socket.gethostname()}" + (f", {world} process(es)" if world else ""),
                  flush=True)
        return run_task(task, train_args)

    if not args.experiments:
        raise UserError("name at least one experiment (or --task N --task-file F)")
    seeds = args.seeds if args.seeds is not None else _env_list("SEEDS", int, "integer")
    fracs = args.fracs if args.fracs is not None else _env_list("FRACS", float, "fraction")
    sbatch_args = shlex.split(args.sbatch_args or os.environ.get("SBATCH_ARGS", ""))
    plans = [plan(e, seeds, fracs) for e in args.experiments]
    for p in plans:
        print(f"{p.name}: {len(p.tasks)} task(s), {len(p.tasks) - len(p.pending)} done, "
              f"{len(p.pending)} to run")
    if args.dry_run:
        for p in plans:
            for t in p.pending:
                print("reprsim " + shlex.join(t.train_argv(train_args)))
        return 0
    pending = [t for p in plans for t in p.pending]
    if not pending:
        print("nothing to do")
        return 0

    launcher = choose_launcher(args.launcher)
    if launcher == "local":
        if packing is not None and packing > 1:
            raise UserError("--pairs-per-gpu runs pairs at once: use --launcher pool or slurm")
        return run_local(pending, train_args)
    if launcher == "pool":
        log_dir = Path(args.log_dir) if args.log_dir else Path(LOG_DIR)
        if packing is not None:
            return run_pool(pending, train_args, workers=0, log_dir=log_dir.resolve(),
                            per_device=packing)
        return run_pool(pending, train_args, workers=pool_workers(args.workers),
                        log_dir=log_dir.resolve())
    per_element = packing or 1
    for p in plans:
        if p.pending:
            packed = (f" in {math.ceil(len(p.pending) / per_element)} element(s) of "
                      f"{per_element}" if per_element > 1 else "")
            print(f"{p.name}: submitting a job array of {len(p.pending)} task(s){packed}",
                  flush=True)
            print(submit(p, script=args.sbatch_script, log_dir=args.log_dir,
                         sbatch_args=sbatch_args, train_args=train_args,
                         pairs_per_gpu=per_element), flush=True)
    return 0


def run_packed_element(task_file: Path, element: int, per_element: int, train_args: list[str],
                       log_dir: str | None) -> int:
    """Array element `element` of a packed sweep: tasks element*M .. element*M+M-1 of the
    task file (those that exist), at once, through the pool launcher. Each task's output goes
    to a log beside the task file (pool/), this element's output names them."""
    first = element * per_element
    n_lines = len([ln for ln in Path(task_file).read_text(encoding="utf-8").splitlines()
                   if ln.strip()]) if Path(task_file).is_file() else 0
    if element < 0 or first >= n_lines:
        read_task(task_file, first)  # the one-line error: no such task / no task file
    tasks = [read_task(task_file, i) for i in range(first, min(first + per_element, n_lines))]
    for i, task in enumerate(tasks, start=first):
        print(f"task {i}: {task.experiment} seed {task.seed} frac {task.frac!r}", flush=True)
    logs = (Path(log_dir) if log_dir else Path(task_file).resolve().parent.parent).resolve()
    return run_pool(tasks, train_args, workers=0, log_dir=logs, per_device=per_element)
