"""`reprsim demo`: the built-in study, end to end, offline, on this machine's CPUs.

    reprsim demo [--scale full|tiny] [--out FOLDER]          the image study (make demo)
    reprsim demo --text [--scale full|tiny] [--out FOLDER]   the text study (make demo-text)

Image study (no download, no dataset needed):
1. Data. The built-in generator (repr_sim.data.shapes, through the registry entries
   `shapes`, `sklearn_digits` and `sample_patches`) is written to FFCV betons, the same
   path as CIFAR's, under a data root of the demo's own, `$REPRSIM_DATA/demo/image-<scale>/`
   (`ffcv/shapes/{train,test}.beton`, `ffcv/sklearn_digits/test.beton`,
   `ffcv/sample_patches/test.beton`). The demo's betons are smaller than the registry's
   (fewer images, a smaller side), so they live apart from `$REPRSIM_DATA/ffcv/shapes/`,
   which `reprsim write-data shapes` owns; training and measurement see the demo root as
   their data root (REPRSIM_DATA is set to it for them).
2. Training. The experiments `demo_ds` (dataset overlap) and `demo_task` (task overlap),
   configs in repr_sim/configs/, with the scale's overrides (SCALES below): the CIFAR
   ResNet-18 narrowed with `width`, several fractions, three seeds. Pairs are trained by
   repr_sim.train.image.train_pair into `$REPRSIM_RUNS/<experiment>/seed_<S>/frac_<F>/`
   (experiments `demo_ds_tiny`, ... at the tiny scale), in worker processes, one per
   usable CPU, each with one torch thread: small convolutions scale badly over threads
   (see benchmarks/bench_demo.py), so two single-threaded processes beat one process with
   two threads. The loaders are the in-memory backend (`[loader] backend = "memory"`):
   each process decodes the small betons once and every model shares the arrays, where
   an FFCV loader would compile its pipeline for every model.
3. Measurement. repr_sim.measure.measure on each experiment folder (all eight metrics;
   an experiment is measured as soon as its pairs are trained, beside the other's
   training).
4. Outputs, in `plotting/plotting_results/` (or --out): `demo_ds_platonic.csv`,
   `demo_task_platonic.csv`, `demo_ds_platonic_acc.csv`, `demo_task_platonic_acc.csv`
   (copies of the measurement's CSVs, with their `.json` sidecars, so `reprsim summary`
   and the notebook read them), for each the analysis table of CKA (`<stem>_cka_table.csv`,
   or `<stem>_table.csv` for accuracy files) and of all metrics
   (`<stem>_all_metrics_table.csv`), and the box plots (`<stem>_cka.png/.pdf`).
5. The summary printed last: per experiment the test accuracy, and for CKA on the
   in-distribution probe its slope, R^2, Spearman rho and p-value against the overlap.

Text study (`--text`): six generated text domains (repr_sim.data.textgen) written as
local files and prepared with the offline byte tokenizer into
`$REPRSIM_DATA/demo/text-<scale>/text/<corpus>/` (apart from real prepared corpora of the
same names), tiny GPTs, the experiments `demo_text_ds` (chunk split of one corpus) and
`demo_text_task` (corpus split over the six), then as above with the text schemas
(`demo_text_ds_platonic.csv`, `demo_text_task_platonic.csv`, the `_loss` files).

Rerunning reuses what is done: written data, finished pairs (the trainer skips them),
current measurements (the measurer skips them), and outputs newer than their CSV. A pair
trained at another scale setting is refused with a line naming its folder. Progress: one
bar over the whole run, with an ETA; what the trainers and the measurer print goes to
`$REPRSIM_RUNS/demo-<study>-<scale>.log`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import experiments, runs
from .errors import UserError
from .paths import data_root, environ, repo_root, runs_root, usable_cpus

# tqdm, torch and the training stacks are imported inside the functions: a worker process
# must set its environment (TQDM_DISABLE, threads) before any of them is imported.

IMAGE_EXPERIMENTS = ("demo_ds", "demo_task")
TEXT_EXPERIMENTS = ("demo_text_ds", "demo_text_task")
DEFAULT_OUT = Path("plotting") / "plotting_results"
METRIC = "cka"  # the metric the summary and the figures report (the study's)
TEXT_TOKENIZER = "bytes"


# ---------------------------------------------------------------------------------------
# Scales
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageScale:
    size: int  # image side in pixels
    n_train: int  # generated training images: the pool the two models' subsets come from
    n_test: int  # generated test images (the in-distribution probe set)
    probe_size: int | None  # inputs per probe set for the measurement (None: whole sets)
    # Config overrides, dotted key -> value, for every image experiment, then per experiment.
    common: dict = field(default_factory=dict)
    per_experiment: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TextScale:
    chars: int  # characters generated per domain
    probe_size: int  # windows per probe set
    common: dict = field(default_factory=dict)
    per_experiment: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scale:
    name: str
    image: ImageScale
    text: TextScale


SCALES = {
    # Tuned so that `make demo` fits in 10 minutes on a 2-core laptop CPU (the timings are
    # in benchmarks/README.md) and `make demo-text` in 5; see README, "The built-in study".
    "full": Scale(
        name="full",
        # Dataset overlap trains 16 epochs (85% test accuracy; at 8 epochs, 57%, the seeds'
        # spread of CKA was several times the effect), task overlap 8 to stay in budget.
        image=ImageScale(size=16, n_train=5000, n_test=500, probe_size=None,
                         common={"width": 8, "recipe.batch_size": 64, "recipe.lr": 0.2,
                                 "seeds": [0, 1, 2]},
                         per_experiment={"demo_ds": {"fracs": [0.0, 0.5, 1.0], "recipe.epochs": 16,
                                                     "recipe.peak_epoch": 3},
                                         "demo_task": {"fracs": [0.0, 0.5, 1.0], "recipe.epochs": 8,
                                                       "recipe.peak_epoch": 2}}),
        text=TextScale(chars=200_000, probe_size=500,
                       common={"seeds": [0, 1, 2], "recipe.iters": 150, "recipe.eval_interval": 25},
                       per_experiment={"demo_text_ds": {"fracs": [0.0, 0.5, 1.0]},
                                       "demo_text_task": {"fracs": [0.0, 1 / 3, 2 / 3, 1.0]}}),
    ),
    # The same code path at the smallest scale that still gives every output (what the
    # tests run): 8x8 images, one epoch (width 8: narrower CPU convolutions on channels-last
    # inputs crash torch 2.14, see README); a 1-layer GPT, a few steps.
    "tiny": Scale(
        name="tiny",
        image=ImageScale(size=8, n_train=160, n_test=48, probe_size=24,
                         common={"width": 8, "recipe.epochs": 1, "recipe.batch_size": 16,
                                 "recipe.peak_epoch": 1, "seeds": [0, 1]},
                         per_experiment={"demo_ds": {"fracs": [0.0, 1.0]},
                                         "demo_task": {"fracs": [0.0, 0.5, 1.0]}}),
        text=TextScale(chars=12_000, probe_size=24,
                       common={"seeds": [0, 1], "model.n_layer": 1, "model.n_head": 2,
                               "model.n_embd": 16, "model.block_size": 16,
                               "recipe.iters": 4, "recipe.batch_size": 4,
                               "recipe.eval_interval": 2, "recipe.eval_iters": 1},
                       per_experiment={"demo_text_ds": {"fracs": [0.0, 1.0]},
                                       "demo_text_task": {"fracs": [0.0, 2 / 3, 1.0]}}),
    ),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise UserError(f"unknown demo scale '{name}' (choose one of: {', '.join(SCALES)})")
    return SCALES[name]


def _set(cfg: dict, key: str, value) -> None:
    node = cfg
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def run_name(experiment: str, scale: Scale) -> str:
    """The run folder's experiment name: the config's at full scale, `<name>_<scale>` else,
    so that a tiny run never meets a full one."""
    return experiment if scale.name == "full" else f"{experiment}_{scale.name}"


def demo_config(experiment: str, scale: Scale, study: str, data: dict) -> dict:
    """The experiment's config with the scale's overrides, named for the scale.

    `data` (what the data root holds: sizes, seed) goes into the config, so the trainer
    records it in args.json and a pair trained on other data is recognised."""
    cfg = experiments.load(experiment)
    spec = scale.image if study == "image" else scale.text
    for key, value in {**spec.common, **spec.per_experiment.get(experiment, {})}.items():
        _set(cfg, key, value)
    cfg["name"] = run_name(experiment, scale)
    cfg["demo"] = {"scale": scale.name, "data": data}
    return experiments.validate(cfg, cfg["config_path"])


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def demo_data_root(study: str, scale: Scale) -> Path:
    return data_root() / "demo" / f"{study}-{scale.name}"


def data_root_at(root: Path):
    """REPRSIM_DATA = `root` inside the block (the trainer and measurer read it per call)."""
    return environ({"REPRSIM_DATA": str(root)})


SHAPES_SEED = 0  # the registry's generated `shapes` set is drawn with seed 0
IMAGE_PROBES = ("sklearn_digits", "sample_patches")


def image_data_record(s: ImageScale) -> dict:
    return {"dataset": "shapes", "size": s.size, "n_train": s.n_train, "n_test": s.n_test,
            "seed": SHAPES_SEED, "probes": list(IMAGE_PROBES)}


def write_image_data(root: Path, s: ImageScale) -> int:
    """The demo's betons under `root`; returns how many were written (0: all reused).

    shapes: the first n images of the registry entry's train and test streams at the
    scale's side (the generator's image i does not depend on n, so these are a prefix of
    the registry's set); the OOD probes: the registry entries, written by write_dataset.
    """
    from .data import betons, registry

    written = 0
    entry = registry.get("shapes")
    for split, n in (("train", s.n_train), ("test", s.n_test)):
        path = betons.beton_path("shapes", split, root)
        info = {"dataset": "shapes", "split": split, "resolution": s.size, "images": n,
                "seed": SHAPES_SEED}
        if betons.is_complete(path, expect=info):
            continue
        images, labels = entry.load(root, split, resolution=s.size)
        if n > len(images):
            raise ValueError(f"the shapes entry has {len(images)} {split} images, the demo asks {n}")
        written += betons.write_beton(images[:n], labels[:n], path, workers=1, info=info)
    for name in IMAGE_PROBES:
        results = betons.write_dataset(name, root=root, resolution=s.size, out_name=name, workers=1)
        written += sum(r.written for r in results)
    return written


def text_data_record(s: TextScale) -> dict:
    return {"generator": "repr_sim.data.textgen", "chars": s.chars, "seed": 0,
            "tokenizer": TEXT_TOKENIZER}


def write_text_data(root: Path, s: TextScale) -> int:
    """The six generated domains, prepared with the byte tokenizer under `root`/text/.

    The raw files go to `root`/raw/<corpus>.txt; a corpus is prepared again only when its
    generated text changed (or it was never prepared). Returns how many were prepared."""
    from .data import text as textdata
    from .data import textgen

    prepared = 0
    raw = root / "raw"
    for corpus in textgen.DOMAINS:
        path = raw / f"{corpus}.txt"
        content = textgen.render(corpus, textgen.generate(corpus, s.chars, seed=0))
        changed = not path.is_file() or path.read_text(encoding="utf-8") != content
        if changed:
            runs.atomic_write_text(path, content)
        if changed or not textdata.is_prepared(corpus, root):
            textdata.prepare(corpus, data_files=[path], tokenizer=TEXT_TOKENIZER, num_proc=1,
                             root=root, force=True)
            prepared += 1
    return prepared


# ---------------------------------------------------------------------------------------
# The plan: what is left to train and to measure (made in a worker, see `prepare_job`)
# ---------------------------------------------------------------------------------------


@dataclass
class PairTask:
    study: str  # "image" or "text"
    experiment: str  # config name (demo_ds, ...)
    cfg: dict
    seed: int
    frac: float
    folder: Path
    steps: list[int]  # optimisation steps of model 0 and model 1

    @property
    def label(self) -> str:
        return f"{self.cfg['name']} seed {self.seed} frac {self.frac:g}"


@dataclass
class Plan:
    cfgs: dict[str, dict]  # experiment -> resolved config
    todo: list[PairTask]  # pairs still to train
    finished: int  # pairs trained before this run
    measure: dict[str, list[Path]]  # experiment -> pair folders without a current measurement
    device: str
    written: int  # data files written (0: all reused)


def _train_labels(cfg: dict):
    """The image experiment's training labels (what its splits are drawn from); None for text."""
    if cfg["kind"] == "text":
        return None
    from .train import image

    return image.read_labels(cfg, image.beton(cfg, "train"))


def _model_steps(cfg: dict, seed: int, frac: float, labels) -> list[int]:
    """Optimisation steps of both models (for the progress bar); `labels`: _train_labels."""
    if cfg["kind"] == "text":
        from .train import text

        return [text.recipe(cfg)["iters"]] * 2
    from .train import image

    split = image.make_split(cfg, labels, frac, seed)
    r = cfg["recipe"]
    per_epoch = [len(idx) // r["batch_size"] if r.get("drop_last", True)
                 else math.ceil(len(idx) / r["batch_size"]) for idx in (split.a, split.b)]
    return [r["epochs"] * n for n in per_epoch]


def _check_same_config(folder: Path, cfg: dict) -> None:
    """A pair folder trained with another config (another demo scale setting) is refused:
    the trainer skips a finished pair without looking at its config."""
    from .train.common import config_mismatch

    path = folder / "args.json"
    if not path.is_file():
        return
    diff = config_mismatch(runs.read_json(path).get("config", {}), cfg)
    if diff:
        raise UserError(f"{folder} was trained with another demo setting "
                        f"({diff}); delete {folder.parent.parent} and "
                        f"run the demo again")


def pair_tasks(study: str, cfgs: dict[str, dict]) -> tuple[list[PairTask], int]:
    """(the pairs still to train, how many are finished already)."""
    todo, finished = [], 0
    for experiment, cfg in cfgs.items():
        exp_dir = experiments.experiment_dir(cfg)
        labels = None  # read once per experiment, when a pair is left to train
        for seed, frac in experiments.tasks(cfg):
            folder = runs.pair_dir(exp_dir, seed, frac)
            _check_same_config(folder, cfg)
            if runs.is_done(folder):
                finished += 1
                continue
            if labels is None:
                labels = _train_labels(cfg)
            todo.append(PairTask(study, experiment, cfg, seed, frac, folder,
                                 _model_steps(cfg, seed, frac, labels)))
    return todo, finished


def _checkpoints(folder: Path) -> list[Path]:
    return [p for p in folder.glob("split_*/*") if p.suffix in (".pth", ".pt")]


def is_measured(folder: Path) -> bool:
    """A measurement newer than the pair's checkpoints (the measurer itself decides what is
    current; this only sizes the progress bar)."""
    result = folder / "measure.json"
    if not result.is_file():
        return False
    newest = max((p.stat().st_mtime for p in _checkpoints(folder)), default=0.0)
    return result.stat().st_mtime >= newest


def make_plan(text: bool, scale_name: str, root: Path) -> Plan:
    """Write the data under `root` (or reuse it), resolve the configs, list what is left."""
    import torch

    scale = get_scale(scale_name)
    study = study_of(text, scale)
    with data_root_at(root):
        written = study.write_data(root, study.spec)
        cfgs = {e: demo_config(e, scale, study.name, study.data_record) for e in study.experiments}
        todo, finished = pair_tasks(study.name, cfgs)
        measure = {e: [runs.pair_dir(experiments.experiment_dir(cfg), s, f)
                       for s, f in experiments.tasks(cfg)] for e, cfg in cfgs.items()}
    measure = {e: [f for f in folders if not is_measured(f)] for e, folders in measure.items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Plan(cfgs, todo, finished, measure, device, written)


def _last_json_step(path: Path) -> int:
    """The image trainer's log.txt: one JSON row per finished epoch, with the step count."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def _last_text_iter(path: Path) -> int:
    """The text trainer's log.txt: '... iter N: train loss ...' every log_interval steps."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0
    for line in reversed(tail):
        marker = line.find(" iter ")
        if marker >= 0 and ": train loss" in line:
            with contextlib.suppress(ValueError):
                return int(line[marker + 6:line.index(":", marker)])
    return 0


def steps_done(task: PairTask) -> int:
    """How many of the pair's optimisation steps are done, read from its run folder."""
    if runs.is_done(task.folder):
        return sum(task.steps)
    done = 0
    for i, total in enumerate(task.steps):
        model = task.folder / f"split_{i}"
        if task.study == "image":
            finished = (model / "checkpoint.pth").is_file()
            done += total if finished else min(total, _last_json_step(model / "log.txt"))
        else:
            finished = (model / "state.json").is_file()
            done += total if finished else min(total, _last_text_iter(model / "log.txt"))
    return done


# ---------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------

# What a worker imports before its first job (in the fork server, once for all workers):
# importing FFCV compiles numba code (tens of seconds on a loaded 2-core machine), which a
# worker forked from the server does not pay again.
_ANALYSIS = ["repr_sim.analysis", "repr_sim.plots", "sklearn.feature_selection", "scipy.stats",
             "matplotlib.pyplot"]
PRELOAD = {
    "image": ["torch", "repr_sim.train.image", "repr_sim.models.resnet", "repr_sim.measure",
              "repr_sim.measure_image", "repr_sim.data.shapes", "ffcv.fields", "ffcv.reader",
              "ffcv.writer", *_ANALYSIS],
    "text": ["torch", "repr_sim.train.text", "repr_sim.measure", "repr_sim.measure_text",
             "repr_sim.data.text", "datasets", *_ANALYSIS],
}


def worker_env(root: Path) -> dict[str, str]:
    """The environment of every job: the demo's data root, the runs root, quiet and offline."""
    env = {"REPRSIM_DATA": str(root), "REPRSIM_RUNS": str(runs_root()), "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    if "REPRSIM_VERIFY" in os.environ:
        env["REPRSIM_VERIFY"] = os.environ["REPRSIM_VERIFY"]
    return env


def _worker_init(env: dict[str, str], log_path: str, threads: int) -> None:
    """A worker: the jobs' environment, `threads` torch threads, its output to the log."""
    import multiprocessing as mp

    os.environ.update(env)
    if sys.platform.startswith("linux"):
        # A worker inherits the fork server as its default start method; processes that the
        # libraries start (FFCV's writer, datasets' map) are then set up through the server,
        # ~9 s each here. Forking the single-threaded worker itself is immediate.
        mp.set_start_method("fork", force=True)
    log = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (lives with the process)
    sys.stdout = sys.stderr = log
    import torch

    torch.set_num_threads(threads)


def log_line(text: str) -> None:
    """A line of the demo log (a job's stdout is the log), with the time."""
    print(f"{time.strftime('%H:%M:%S')} demo: {text}", flush=True)


def prepare_job(text: bool, scale_name: str, root: str) -> Plan:
    started = time.perf_counter()
    log_line(f"preparing the {'text' if text else 'image'} data ({scale_name})")
    plan = make_plan(text, scale_name, Path(root))
    log_line(f"prepared in {time.perf_counter() - started:.1f} s")
    return plan


def train_job(study: str, cfg: dict, seed: int, frac: float, device: str) -> float:
    started = time.perf_counter()
    if study == "image":
        from .train import image as trainer
    else:
        from .train import text as trainer
    log_line(f"training {cfg['name']} seed {seed} frac {frac:g}")
    trainer.train_pair(cfg, seed, frac, device=device)
    seconds = time.perf_counter() - started
    log_line(f"trained {cfg['name']} seed {seed} frac {frac:g} in {seconds:.1f} s")
    return seconds


def finish_job(text: bool, experiment: str, cfg: dict, out: str, probe_size: int | None,
               device: str) -> tuple[list[Path], list[str]]:
    """Measure one experiment, then copy its CSVs to `out`, render their tables and figures
    and return (the files written, its lines of the summary)."""
    from . import measure

    folder = experiments.experiment_dir(cfg)
    started = time.perf_counter()
    log_line(f"measuring {folder}")
    code = measure.measure([folder], measure.Options(probe_size=probe_size, device=device))
    if code != 0:
        raise UserError(f"measuring {folder} failed")
    log_line(f"measured {folder.name} in {time.perf_counter() - started:.1f} s")
    outputs = TEXT_OUTPUTS if text else IMAGE_OUTPUTS
    written = []
    for csv in collect(Path(out), experiment, cfg, outputs):
        written += [csv, *render(csv)]
    lines = experiment_summary(experiment, cfg, *result_paths(Path(out), experiment, outputs))
    log_line(f"wrote the outputs of {experiment} after {time.perf_counter() - started:.1f} s")
    return written, lines


class Pool:
    """Jobs in `workers` processes forked from a fork server that preloaded the study's
    modules (the server starts clean: no threads, nothing of this process's state), one
    torch thread each; or in this process when workers == 0 (no start-up to pay)."""

    def __init__(self, workers: int, study: str, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, str(log_path)
        self.executor = None
        if workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import forkserver

            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD[study])  # used when the server starts
            with environ(env):  # the server's environment (tqdm reads it at import)
                forkserver.ensure_running()
            self.executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                                initargs=(env, self.log_path, 1))

    def submit(self, fn, *args):
        from concurrent.futures import Future

        if self.executor is not None:
            return self.executor.submit(fn, *args)
        future = Future()
        with open(self.log_path, "a", buffering=1, encoding="utf-8") as log, \
                environ(self.env), contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            try:
                future.set_result(fn(*args))
            except Exception as e:  # delivered by future.result(), as from a process
                future.set_exception(e)
        return future

    def close(self, *, cancel: bool = False) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=not cancel, cancel_futures=cancel)


# ---------------------------------------------------------------------------------------
# The progress bar
# ---------------------------------------------------------------------------------------

# Relative costs of the parts of the work, in seconds of one CPU of this 2-core machine,
# for the bar's ETA (the bar shows a percentage; only the ratios matter).
COST_START = {"image": 25.0, "text": 15.0}  # a fork server importing torch (+ FFCV / datasets)
COST_DATA = {"image": 5.0, "text": 15.0}  # generating and writing the data
COST_RENDER = 4.0  # tables and figures of one result file
COST_IMAGE = 1.0 / (1200 * 16 * 16 * 64)  # one training image at side s, width w: s^2 w^2 units
COST_TEXT = 1.0 / 1.9e6  # one training token through one layer of width 1 (tokens * n_embd * n_layer)
COST_MEASURE = 3.0  # one measured pair


def step_cost(cfg: dict) -> float:
    """Estimated CPU seconds of one optimisation step of one model."""
    r = cfg["recipe"]
    if cfg["kind"] == "image":
        side = int(cfg.get("demo", {}).get("data", {}).get("size", 32))
        return r["batch_size"] * side * side * int(cfg.get("width", 64)) ** 2 * COST_IMAGE
    m = cfg["model"]
    tokens = r["batch_size"] * r.get("grad_accum", 1) * m["block_size"]
    return tokens * m["n_embd"] * m["n_layer"] * COST_TEXT


class Progress:
    """One tqdm bar over the whole run: parts with a weight and a function giving how much
    of the part is done (0..1, read from the run folders); a thread refreshes it twice a
    second, so it moves while the main thread waits."""

    def __init__(self, desc: str):
        import threading

        from tqdm.auto import tqdm

        self.parts: dict[str, tuple[float, object]] = {}
        self.lock = threading.Lock()
        self.bar = tqdm(total=1.0, desc=desc, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                                   "[{elapsed}<{remaining}{postfix}]")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            self.refresh()

    def add(self, name: str, weight: float, done=None) -> None:
        """A part of the work: its weight, and how much of it is done (a function, 0..1)."""
        with self.lock:
            self.parts[name] = (max(float(weight), 1e-9), done or (lambda: 0.0))
            self.bar.total = sum(w for w, _ in self.parts.values())

    def finish(self, name: str) -> None:
        with self.lock:
            weight, _ = self.parts[name]
            self.parts[name] = (weight, lambda: 1.0)
        self.refresh()

    def set_stage(self, text: str) -> None:
        with self.lock:
            self.bar.set_postfix_str(text, refresh=False)
        self.refresh()

    def refresh(self) -> None:
        with self.lock:
            n = 0.0
            for weight, done in self.parts.values():
                with contextlib.suppress(OSError, ValueError):  # a file mid-rename
                    n += weight * min(1.0, max(0.0, float(done())))
            self.bar.n = min(n, self.bar.total)
            self.bar.refresh()

    def write(self, line: str) -> None:
        with self.lock:
            self.bar.write(line)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.refresh()
        self.bar.close()


# ---------------------------------------------------------------------------------------
# Outputs: the result files, their tables and figures
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    source: str  # CSV name in the experiment folder (written by the measurer)
    suffix: str  # `<experiment><suffix>.csv` in the results folder


IMAGE_OUTPUTS = (Output("platonic_ffcv.csv", "_platonic"), Output("platonic_acc_ffcv.csv", "_platonic_acc"))
TEXT_OUTPUTS = (Output("platonic.csv", "_platonic"), Output("platonic_loss.csv", "_platonic_loss"))


def undefined_as_missing(text: str) -> tuple[str, list[str]]:
    """The CSV text with undefined scores ('nan': a metric undefined on degenerate features,
    which the measurer warns about) written as -1, the files' "no value" marker, so that
    the analysis leaves them out of the fits instead of refusing the file; and a note
    "seed S frac F metric M column C" for each."""
    lines = text.splitlines()
    header = lines[0].split(",")
    notes = []
    for i, line in enumerate(lines[1:], start=1):
        cells = line.split(",")
        for j, cell in enumerate(cells):
            if cell.strip().lower() == "nan":
                cells[j] = "-1.000000"
                row = dict(zip(header, cells, strict=False))
                notes.append(f"seed {row.get('seed')} frac {row.get('frac_overlap')} metric "
                             f"{row.get('metric', '-')} column {header[j]}")
        lines[i] = ",".join(cells)
    return "\n".join(lines) + "\n", notes


def result_paths(out: Path, experiment: str, outputs) -> list[Path]:
    return [out / f"{experiment}{o.suffix}.csv" for o in outputs]


def collect(out: Path, experiment: str, cfg: dict, outputs) -> list[Path]:
    """Copy the experiment's CSVs (and sidecars) into `out` under the demo's names."""
    exp_dir = experiments.experiment_dir(cfg)
    copied = []
    for o, dst in zip(outputs, result_paths(out, experiment, outputs), strict=True):
        src = exp_dir / o.source
        if not src.is_file():
            raise UserError(f"the measurement wrote no {src}; see the demo log")
        text, undefined = undefined_as_missing(src.read_text(encoding="utf-8"))
        for note in undefined:
            log_line(f"{src}: undefined (NaN) score at {note}, written as -1 in {dst.name}")
        runs.write_if_changed(dst, text.encode("utf-8"))
        side = src.with_suffix(".json")
        if side.is_file():
            meta = {**runs.read_json(side), "demo_scale": cfg["demo"]["scale"],
                    "source": str(src)}
            if undefined:
                meta["undefined_written_as_-1"] = undefined
            runs.write_if_changed(dst.with_suffix(".json"), runs.json_bytes(meta))
        copied.append(dst)
    return copied


def rendered_paths(csv: Path, has_metrics: bool) -> list[Path]:
    """What `render` writes beside a result file (the notebook's naming, summary.render_folder)."""
    stem = csv.with_suffix("")
    tag = f"_{METRIC}" if has_metrics else ""
    paths = [Path(f"{stem}{tag}_table.csv"), Path(f"{stem}{tag}.png"), Path(f"{stem}{tag}.pdf")]
    if has_metrics:
        paths.append(Path(f"{stem}_all_metrics_table.csv"))
    return paths


def render(csv: Path) -> list[Path]:
    """The analysis table(s) and the box plots of one result file, unless they are newer."""
    from . import analysis, plots

    result = analysis.read_result(csv)
    targets = rendered_paths(csv, result.has_metrics)
    if all(p.is_file() and p.stat().st_mtime >= csv.stat().st_mtime for p in targets):
        return targets
    metric = METRIC if result.has_metrics else None
    table = analysis.analyze(result, metric)
    analysis.write_table(table, targets[0])
    fig = plots.plot_result(result, metric, table=table)
    for path in targets[1:3]:
        plots.save_figure(fig, path)
    plots.close(fig)
    if result.has_metrics:
        analysis.write_table(analysis.analyze_all_metrics(result), targets[3])
    return targets


# ---------------------------------------------------------------------------------------
# The summary printed last
# ---------------------------------------------------------------------------------------


def in_distribution_column(result) -> str:
    """The in-distribution probe column: metric_overlap (images), metric_common (text task
    overlap), metric_<trained corpus> (text dataset overlap)."""
    columns = result.value_columns
    for name in ("metric_overlap", "metric_common"):
        if name in columns:
            return name
    corpus = str(result.meta.get("dataset") or "")
    for column in columns:
        if corpus and column in (f"metric_{corpus}", f"metric_{corpus.split('_')[0]}"):
            return column
    return columns[0]


def _mean_std(values) -> str:
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return "n/a"
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return f"{values.mean():.4g} +- {std:.2g}"


def describe(cfg: dict) -> str:
    """'dataset overlap, resnet18_cifar width 8 on shapes 16x16; fractions 0, 0.5, 1 x 3 seeds'"""
    kind = "dataset overlap" if cfg["split"] == "dataset" else "task overlap"
    if cfg["kind"] == "image":
        side = cfg["demo"]["data"]["size"]
        what = f"{cfg['arch']} width {cfg.get('width', 64)} on {cfg['dataset']} {side}x{side}"
    else:
        m = cfg["model"]
        data = cfg["corpus"] if cfg["split"] == "dataset" else f"{len(cfg['corpora'])} corpora"
        what = f"GPT {m['n_layer']} layers x {m['n_embd']} on generated {data}"
    fracs = ", ".join(f"{f:.3g}" for f in cfg["fracs"])
    return f"{kind}, {what}; fractions {fracs} x {len(cfg['seeds'])} seeds"


def experiment_summary(experiment: str, cfg: dict, sim_csv: Path, per_model_csv: Path) -> list[str]:
    """The summary lines of one experiment: accuracy (or validation loss) and the CKA fit
    on the in-distribution probe (read from the CKA table `render` wrote)."""
    import pandas as pd

    from . import analysis

    sim = analysis.read_result(sim_csv)
    per_model = analysis.read_result(per_model_csv)
    column = per_model.value_columns[0]  # acc or val_loss
    values = per_model.data[column]
    values = values[~values.round(9).eq(analysis.EMPTY)]  # -1: no shared class
    if column == "acc":
        what = "test accuracy" + (" on the shared classes" if sim.split == "task" else "")
        quantity = f"{what}: {_mean_std(100 * values)} % ({len(values)} models)"
    else:
        quantity = f"best validation loss: {_mean_std(values)} ({len(values)} models)"
    lines = [f"{experiment} ({describe(cfg)})", f"  {quantity}"]
    probe = in_distribution_column(sim)
    table = pd.read_csv(rendered_paths(sim_csv, True)[0], index_col="probe")
    row = table.loc[probe]
    lines.append(f"  {METRIC} on the in-distribution probe ({probe}) against overlap: "
                 f"slope {row['slope']:+.4f}, R^2 {row['r_squared']:.3f}, Spearman rho "
                 f"{row['spearman_rho']:+.3f} (p {row['spearman_p']:.3g}), n {int(row['n'])}")
    return lines


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


@dataclass
class Study:
    name: str  # "image" or "text"
    experiments: tuple[str, ...]
    outputs: tuple
    spec: ImageScale | TextScale
    data_record: dict
    write_data: object  # (root, spec) -> files written


def study_of(text: bool, scale: Scale) -> Study:
    if text:
        return Study("text", TEXT_EXPERIMENTS, TEXT_OUTPUTS, scale.text,
                     text_data_record(scale.text), write_text_data)
    return Study("image", IMAGE_EXPERIMENTS, IMAGE_OUTPUTS, scale.image,
                 image_data_record(scale.image), write_image_data)


def resolve_out(out: str | Path | None) -> Path:
    folder = Path(out) if out else repo_root() / DEFAULT_OUT
    folder = folder.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def n_workers(requested: int | None = None) -> int:
    """Worker processes: one per usable CPU (each with one torch thread: two single-threaded
    processes train these small models faster than one process with two threads, see
    benchmarks/bench_demo.py). REPRSIM_DEMO_WORKERS overrides; 0 runs everything here."""
    if requested is None:
        env = os.environ.get("REPRSIM_DEMO_WORKERS", "").strip()
        if env and not env.isdigit():
            raise UserError(f"REPRSIM_DEMO_WORKERS={env!r}: expected a whole number")
        requested = int(env) if env else None
    return usable_cpus() if requested is None else max(0, int(requested))


def run(*, text: bool = False, scale: str = "full", out: str | Path | None = None,
        workers: int | None = None) -> dict:
    """The whole demo. Returns {"outputs": [paths], "summary": [lines], "trained": pairs
    trained now, "reused": pairs found finished, "log": path, "data_root": path,
    "seconds": {stage: wall seconds}}."""
    scale = get_scale(scale)
    study = study_of(text, scale)
    out = resolve_out(out)
    root = demo_data_root(study.name, scale)
    log_path = runs_root() / f"demo-{study.name}-{scale.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    clock = {"start": time.perf_counter()}
    progress = Progress(f"reprsim demo{' --text' if text else ''} ({scale.name})")
    pool = None
    try:
        progress.add("prepare", COST_START[study.name] + COST_DATA[study.name])
        progress.set_stage("starting workers, writing the built-in data")
        workers = n_workers(workers)
        pool = Pool(workers, study.name, worker_env(root), log_path)
        plan = pool.submit(prepare_job, text, scale.name, str(root)).result()
        progress.finish("prepare")
        clock["prepared"] = time.perf_counter()
        if plan.written:
            progress.write(f"demo: wrote the built-in {study.name} data under {root}")
        if plan.finished:
            progress.write(f"demo: {plan.finished} pair(s) already trained, reusing them")
        in_flight = max(1, workers) if plan.device == "cpu" else 1
        trained, outputs, reports = train_and_finish(study, plan, pool, progress, log_path, out,
                                                     in_flight)
        pool.close()
        pool = None
        progress.set_stage("done")
    except BaseException:
        if pool is not None:
            pool.close(cancel=True)
        raise
    finally:
        progress.close()
    clock["end"] = time.perf_counter()
    seconds = {"prepare": clock["prepared"] - clock["start"],
               "train_measure_render": clock["end"] - clock["prepared"],
               "total": clock["end"] - clock["start"]}
    summary = [f"Built-in {study.name} study, scale {scale.name}: {seconds['total']:.0f} s "
               f"({trained} pair(s) trained now, {plan.finished} reused)",
               f"  runs in {runs_root()}, results in {out}, log {log_path}"]
    for e in study.experiments:
        summary += reports[e]
    return {"outputs": outputs, "summary": summary, "trained": trained,
            "reused": plan.finished, "log": log_path, "data_root": root, "seconds": seconds}


def train_and_finish(study: Study, plan: Plan, pool: Pool, progress: Progress, log_path: Path,
                     out: Path, in_flight: int) -> tuple[int, list[Path], dict[str, list[str]]]:
    """Train every pending pair (at most `in_flight` jobs at a time); as soon as all pairs of
    an experiment are trained, measure it and write its outputs (finish_job). Returns
    (pairs trained, files written, summary lines per experiment)."""
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, wait

    for task in plan.todo:
        progress.add(f"train {task.label}", step_cost(task.cfg) * sum(task.steps),
                     lambda t=task: steps_done(t) / max(1, sum(t.steps)))
    for e, folders in plan.measure.items():
        if folders:
            progress.add(f"measure {e}", COST_MEASURE * len(folders),
                         lambda fs=folders: sum(map(is_measured, fs)) / len(fs))
        progress.add(f"render {e}", COST_RENDER * len(study.outputs))
    # Longest pairs first: the workers run out of work close together.
    queue = deque(sorted(plan.todo, key=lambda t: -sum(t.steps) * step_cost(t.cfg)))
    left = {e: sum(t.experiment == e for t in plan.todo) for e in plan.cfgs}
    ready = deque(e for e in plan.cfgs if left[e] == 0)  # experiments to finish
    running: dict = {}
    trained, outputs, reports = 0, [], {}

    def start_next() -> None:
        while len(running) < in_flight and (ready or queue):
            if ready:  # an experiment's outputs first: they need nothing else
                e = ready.popleft()
                future = pool.submit(finish_job, study.name == "text", e, plan.cfgs[e], str(out),
                                     study.spec.probe_size, plan.device)
                running[future] = e
            else:
                t = queue.popleft()
                running[pool.submit(train_job, t.study, t.cfg, t.seed, t.frac, plan.device)] = t

    progress.set_stage(f"training {len(plan.todo)} pair(s)" if plan.todo else "measuring")
    start_next()
    while running:
        done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
        for future in done:
            item = running.pop(future)
            where = item.label if isinstance(item, PairTask) else f"measuring {item}"
            try:
                value = future.result()
            except (UserError, ValueError, FileNotFoundError) as e:
                raise UserError(f"{where}: {e} (details in {log_path})") from None
            except Exception as e:  # a worker that died, or a bug: one line, the log has more
                raise UserError(f"{where} failed: {type(e).__name__}: {e} "
                                f"(details in {log_path})") from None
            if isinstance(item, PairTask):
                trained += 1
                left[item.experiment] -= 1
                if left[item.experiment] == 0:
                    ready.append(item.experiment)
            else:
                outputs += value[0]
                reports[item] = value[1]
                progress.finish(f"render {item}")
        start_next()
        pairs = len(queue) + sum(isinstance(i, PairTask) for i in running.values())
        measuring = [i for i in running.values() if not isinstance(i, PairTask)]
        progress.set_stage(", ".join(([f"training, {pairs} pair(s) left"] if pairs else [])
                                     + [f"measuring {e}" for e in measuring]))
    return trained, outputs, reports


def cli_demo(args) -> int:
    result = run(text=args.text, scale=args.scale, out=args.out)
    print("\n".join(result["summary"]))
    return 0
