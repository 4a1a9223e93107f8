"""`reprsim demo`: the built-in study, end to end, offline, on this machine's CPUs.

    reprsim demo [--scale full|tiny] [--out FOLDER]          the image study (make demo)
    reprsim demo --text [--scale full|tiny] [--out FOLDER]   the text study (make demo-text)

A thin flow over the parts every study uses:
1. Data. The built-in generator (repr_sim.data.shapes through the registry entries
   `shapes`, `sklearn_digits`, `sample_patches`; for --text the six generated domains of
   repr_sim.data.textgen, byte-tokenised) is written under a data root of the demo's own,
   `$REPRSIM_DATA/demo/<study>-<scale>/` (apart from `reprsim write-data shapes`'s files);
   training and measurement see it as their data root.
2. Training. The experiments `demo_ds` and `demo_task` (`demo_text_ds`, `demo_text_task`),
   configs in repr_sim/configs/, with the scale's overrides (SCALES), planned by the sweep
   (repr_sim.sweep.plan) and trained by its pool launcher: one worker per usable CPU, one
   torch thread each (small convolutions scale badly over threads: two single-threaded
   processes beat one with two threads, benchmarks/bench_demo.py). Run folders
   `$REPRSIM_RUNS/<experiment>[_<scale>]/` (the tiny scale's names end in `_tiny`).
3. Measurement. `reprsim measure` (repr_sim.measure.measure) on each experiment folder,
   the two experiments in two workers.
4. Outputs in `plotting/plotting_results/` (or --out): `<experiment>_platonic.csv` and its
   `_acc` (`_loss` for text) file with their `.json` sidecars, the CKA table and box plots
   of each (repr_sim.summary.render_result, what the notebook draws), the table over all
   eight metrics; then a summary: per experiment the accuracy (or validation loss) and the
   CKA fit on the in-distribution probe against overlap.

A rerun reuses what is done: written data, finished pairs, current measurements, outputs
newer than their CSV. A pair trained at another scale setting is refused with a line
naming its folder. What the workers print goes to `$REPRSIM_RUNS/demo-<study>-<scale>.log`;
the terminal gets a progress bar (on a terminal) and one line per finished pair.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import experiments, kinds, sweep
from .errors import UserError
from .paths import data_root, environ, repo_root, runs_root, usable_cpus

IMAGE_EXPERIMENTS = ("demo_ds", "demo_task")
TEXT_EXPERIMENTS = ("demo_text_ds", "demo_text_task")
DEFAULT_OUT = Path("plotting") / "plotting_results"
METRIC = "cka"  # the metric the summary and the figures report (the study's)


# ---------------------------------------------------------------------------------------
# Scales
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One study at one scale: what its data holds, its probe size, its config overrides."""

    data: dict  # image: size, n_train, n_test (generated images); text: chars per domain
    probe_size: int | None  # inputs per probe set for the measurement (None: whole sets)
    # Config overrides, dotted key -> value, for every experiment, then per experiment.
    common: dict = field(default_factory=dict)
    per_experiment: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scale:
    name: str
    image: Part
    text: Part


SCALES = {
    # Tuned so that `make demo` fits in 10 minutes on a 2-core laptop CPU (the timings are
    # in benchmarks/README.md) and `make demo-text` in 5; see README, "The built-in study".
    "full": Scale(
        name="full",
        # Dataset overlap trains 20 epochs (at 8 epochs the seeds' spread of CKA was several
        # times the effect), peak lr 0.2, no augmentation (lr 0.1, or a flip and a 2-pixel
        # translate, made test accuracy vary from 55 to 90% between models), six seeds, model
        # A trained once per seed (reuse_models). Task overlap splits the colours (shape
        # tasks left some models near chance), 5 epochs, 12 seeds, fraction 0 left out (no
        # shared class: its in-distribution probe is empty). benchmarks/README.md, "The
        # built-in study's effect", has what was tried.
        image=Part(data={"size": 16, "n_train": 5000, "n_test": 500}, probe_size=None,
                         common={"width": 8, "recipe.batch_size": 64, "recipe.lr": 0.2},
                         per_experiment={"demo_ds": {"fracs": [0.0, 0.5, 1.0],
                                                     "seeds": [0, 1, 2, 3, 4, 5],
                                                     "recipe.epochs": 20,
                                                     "recipe.peak_epoch": 4},
                                         "demo_task": {"fracs": [0.2, 0.4, 1.0],
                                                       "seeds": list(range(12)),
                                                       "recipe.epochs": 5,
                                                       "recipe.peak_epoch": 1}}),
        text=Part(data={"chars": 200_000}, probe_size=500,
                       common={"seeds": [0, 1, 2], "recipe.iters": 150, "recipe.eval_interval": 25},
                       per_experiment={"demo_text_ds": {"fracs": [0.0, 0.5, 1.0]},
                                       "demo_text_task": {"fracs": [0.0, 1 / 3, 2 / 3, 1.0]}}),
    ),
    # The same code path at the smallest scale that still gives every output (what the
    # tests run): 8x8 images, one epoch (width 8: narrower CPU convolutions on channels-last
    # inputs crash torch 2.14, see README); a 1-layer GPT, a few steps.
    "tiny": Scale(
        name="tiny",
        image=Part(data={"size": 8, "n_train": 160, "n_test": 120}, probe_size=24,
                         common={"width": 8, "recipe.epochs": 1, "recipe.batch_size": 16,
                                 "recipe.peak_epoch": 1, "seeds": [0, 1]},
                         per_experiment={"demo_ds": {"fracs": [0.0, 1.0]},
                                         "demo_task": {"fracs": [0.0, 0.4, 1.0]}}),
        text=Part(data={"chars": 12_000}, probe_size=24,
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


def run_name(experiment: str, scale: Scale) -> str:
    """The run folder's experiment name: the config's at full scale, `<name>_<scale>` else,
    so that a tiny run never meets a full one."""
    return experiment if scale.name == "full" else f"{experiment}_{scale.name}"


def demo_config(experiment: str, scale: Scale, study: str, data: dict) -> dict:
    """The experiment's config with the scale's overrides, named for the scale.

    `data` (what the data root holds: sizes, seed) goes into the config, so the trainer
    records it in args.json and a pair trained on other data is recognised."""
    spec = scale.image if study == "image" else scale.text
    cfg = kinds.load(experiment)
    for key, value in {**spec.common, **spec.per_experiment.get(experiment, {})}.items():
        experiments.set_key(cfg, key, value)
    cfg["name"] = run_name(experiment, scale)
    cfg["demo"] = {"scale": scale.name, "data": data}
    return experiments.validate(cfg, cfg["config_path"])


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def demo_data_root(study: str, scale: Scale) -> Path:
    return data_root() / "demo" / f"{study}-{scale.name}"


def write_data(text: bool, scale_name: str, root: str) -> tuple[int, str]:
    """A pool job: the study's data under `root`; returns (files written, 0: all there; the
    device the jobs train on)."""
    import torch

    study = study_of(text, get_scale(scale_name))
    return study.write_data(Path(root)), "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------
# Measurement and outputs (a pool job per experiment)
# ---------------------------------------------------------------------------------------


def finish_job(text: bool, experiment: str, cfg: dict, out: str, probe_size: int | None,
               device: str) -> tuple[list[Path], list[str]]:
    """Measure one experiment, copy its CSVs to `out`, render their tables and figures;
    returns (the files written, its lines of the summary)."""
    from . import attack, measure

    folder = experiments.experiment_dir(cfg)
    if measure.measure([folder], measure.Options(probe_size=probe_size, device=device)) != 0:
        raise UserError(f"measuring {folder} failed")
    attacked = attack.has_attack(cfg["kind"])
    if attacked and attack.attack_experiment(folder, device)[1]:
        raise UserError(f"attacking the pairs of {folder} failed")
    written = []
    for csv in collect(Path(out), experiment, cfg, attacked):  # calibrated: summarised only
        written += [csv, *([] if "_calibrated" in csv.name else render(csv))]
    paths = result_paths(Path(out), experiment, cfg)
    lines = experiment_summary(experiment, cfg, *paths)
    if attacked:
        written += render_consequences(paths[0], transfer_path(Path(out), experiment))
        lines += consequence_lines(paths[0], transfer_path(Path(out), experiment))
    return written, lines


def transfer_path(out: Path, experiment: str) -> Path:
    return out / f"{experiment}_transfer_attack.csv"


def render_consequences(sim_csv: Path, asr_csv: Path) -> list[Path]:
    """Transfer success against CKA on the in-distribution probe, unless newer than both."""
    from . import consequences

    target = asr_csv.with_name(f"{asr_csv.stem}_{METRIC}")
    paths = [target.with_suffix(".png"), target.with_suffix(".pdf")]
    newest = max(sim_csv.stat().st_mtime, asr_csv.stat().st_mtime)
    if all(p.is_file() and p.stat().st_mtime >= newest for p in paths):
        return paths
    return consequences.render_pair(sim_csv, asr_csv, target, metric=METRIC)


def consequence_lines(sim_csv: Path, asr_csv: Path) -> list[str]:
    from . import consequences

    return consequences.summary_lines(sim_csv, asr_csv, metric=METRIC)


def result_paths(out: Path, experiment: str, cfg: dict) -> list[Path]:
    return [out / f"{experiment}{o.suffix}.csv" for o in kinds.get(cfg["kind"]).outputs]


def collect(out: Path, experiment: str, cfg: dict, attacked: bool = False) -> list[Path]:
    """The experiment's result files (and companions) in `out` under the demo's names."""
    from . import summary
    from .results import TRANSFER_ATTACK_CSV

    outputs = [(o.file, dst.name) for o, dst in
               zip(kinds.get(cfg["kind"]).outputs, result_paths(out, experiment, cfg), strict=True)]
    if attacked:
        outputs.append((TRANSFER_ATTACK_CSV, transfer_path(out, experiment).name))
    return summary.collect_results(experiments.experiment_dir(cfg), out, outputs,
                                   extra_meta={"demo_scale": cfg["demo"]["scale"]})


def rendered_paths(csv: Path, has_metrics: bool) -> list[Path]:
    """What `render` writes beside a result file (summary.rendered_paths, all metrics too)."""
    from . import summary

    return summary.rendered_paths(Path(csv), has_metrics, metric=METRIC, all_metrics=True)


def render(csv: Path) -> list[Path]:
    """The tables and box plots of one result file, unless they are newer than it."""
    from . import analysis, summary

    result = analysis.read_result(csv)
    targets = rendered_paths(csv, result.has_metrics)
    if all(p.is_file() and p.stat().st_mtime >= csv.stat().st_mtime for p in targets):
        return targets
    return summary.render_result(result, metric=METRIC, all_metrics=True)["paths"]


# ---------------------------------------------------------------------------------------
# The summary printed last
# ---------------------------------------------------------------------------------------


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
    """The summary lines of one experiment: what it is, then summary.experiment_lines."""
    from . import summary

    return [f"{experiment} ({describe(cfg)})",
            *summary.experiment_lines(sim_csv, per_model_csv, metric=METRIC),
            *summary.calibrated_lines(sim_csv)]


def ending(out: Path, sim_csvs: dict[str, Path]) -> list[str]:
    """Where the figures are, and one paragraph on what the numbers show."""
    from . import consequences, summary

    figures = ", ".join(p.with_name(f"{p.stem}_{METRIC}.png").name for p in sim_csvs.values())
    said = [summary.overlap_sentence(p, metric=METRIC) for p in sim_csvs.values()]
    attacked = {e: transfer_path(out, e) for e in sim_csvs if transfer_path(out, e).is_file()}
    lines = ["", f"Figures (box plots of {METRIC} against overlap, .png and .pdf) and tables are "
                 f"in {out}: {figures}; `reprsim summary {out}` gives the headline table."]
    if attacked:
        names = ", ".join(f"{p.stem}.png, {p.stem}_{METRIC}.png" for p in attacked.values())
        lines.append(f"Transfer attacks (success against overlap, and against {METRIC}): "
                     f"{names}; `reprsim consequences {out}` gives their table.")
        said += [consequences.transfer_sentence(sim_csvs[e], p, metric=METRIC)
                 for e, p in attacked.items()]
    return [*lines, " ".join(said)]


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


@dataclass
class Study:
    name: str  # "image" or "text"
    experiments: tuple[str, ...]
    spec: Part

    @property
    def data_record(self) -> dict:
        from .data import builtin

        return (builtin.text_record if self.name == "text" else builtin.image_record)(**self.spec.data)

    def write_data(self, root: Path) -> int:
        from .data import builtin

        write = builtin.write_text if self.name == "text" else builtin.write_images
        return write(root, **self.spec.data)


def study_of(text: bool, scale: Scale) -> Study:
    if text:
        return Study("text", TEXT_EXPERIMENTS, scale.text)
    return Study("image", IMAGE_EXPERIMENTS, scale.image)


def resolve_out(out: str | Path | None) -> Path:
    folder = Path(out) if out else repo_root() / DEFAULT_OUT
    folder = folder.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def n_workers(requested: int | None = None) -> int:
    """Worker processes: one per usable CPU; REPRSIM_DEMO_WORKERS overrides."""
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
    from .pool import Pool

    scale = get_scale(scale)
    study = study_of(text, scale)
    out = resolve_out(out)
    root = demo_data_root(study.name, scale)
    log_path = runs_root() / f"demo-{study.name}-{scale.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workers = n_workers(workers)
    env = {**sweep.worker_env(), "REPRSIM_DATA": str(root), "REPRSIM_RUNS": str(runs_root())}
    preload = [*kinds.get(study.name).preload, *ANALYSIS_MODULES]
    with Pool(workers, preload, env) as pool:
        written, device = _result(pool.submit(log_path, write_data, text, scale.name, str(root)),
                                  "writing the data", log_path)
        if written:
            print(f"demo: wrote the built-in {study.name} data under {root}", flush=True)
        with environ({"REPRSIM_DATA": str(root)}):
            cfgs = {e: demo_config(e, scale, study.name, study.data_record)
                    for e in study.experiments}
            plans = [sweep.plan(cfg) for cfg in cfgs.values()]
        for p in plans:
            sweep.refuse_other_configs(p, "another demo setting")
        pending = [t for p in plans for t in p.pending]
        reused = sum(len(p.tasks) for p in plans) - len(pending)
        if reused:
            print(f"demo: {reused} pair(s) already trained, reusing them", flush=True)
        prepared = time.perf_counter()
        jobs = {}

        def finish(experiment: str) -> None:  # measured as soon as its pairs are trained
            jobs[experiment] = pool.submit(log_path, finish_job, text, experiment,
                                           cfgs[experiment], str(out), study.spec.probe_size,
                                           device)

        left = {e: sum(t.experiment == cfg["name"] for t in pending) for e, cfg in cfgs.items()}
        names = {cfg["name"]: e for e, cfg in cfgs.items()}

        def pair_done(task, code: int) -> None:
            left[names[task.experiment]] -= 1
            if code == 0 and left[names[task.experiment]] == 0:
                finish(names[task.experiment])

        for e in [e for e, n in left.items() if n == 0]:
            finish(e)
        if pending and sweep.run_pool(pending, ["--device", device], workers=max(1, workers),
                                      log_dir=log_path.parent, pool=pool,
                                      log_for=lambda t: log_path, on_done=pair_done) != 0:
            raise UserError(f"training failed; details in {log_path}")
        outputs, reports = [], {}
        for e in study.experiments:
            outputs_e, reports[e] = _result(jobs[e], f"measuring {e}", log_path)
            outputs += outputs_e
            print(f"demo: measured {e}", flush=True)
    seconds = {"prepare": prepared - started, "train_measure_render": time.perf_counter() - prepared,
               "total": time.perf_counter() - started}
    summary = [f"Built-in {study.name} study, scale {scale.name}: {seconds['total']:.0f} s "
               f"({len(pending)} pair(s) trained now, {reused} reused)",
               f"  runs in {runs_root()}, results in {out}, log {log_path}"]
    for e in study.experiments:
        summary += reports[e]
    summary += ending(out, {e: result_paths(out, e, cfg)[0] for e, cfg in cfgs.items()})
    return {"outputs": outputs, "summary": summary, "trained": len(pending), "reused": reused,
            "log": log_path, "data_root": root, "seconds": seconds}


# What the workers import once besides the kind's stack: the analysis and plotting.
ANALYSIS_MODULES = ("repr_sim.analysis", "repr_sim.attack", "repr_sim.plots", "repr_sim.summary",
                    "sklearn.feature_selection", "scipy.stats", "matplotlib.pyplot")


def _result(future, where: str, log_path: Path):
    """A job's value; its failure as one UserError line naming the log."""
    try:
        return future.result()
    except (UserError, ValueError, FileNotFoundError) as e:
        raise UserError(f"{where}: {e} (details in {log_path})") from None
    except Exception as e:  # a worker that died, or a bug: one line, the log has more
        raise UserError(f"{where} failed: {type(e).__name__}: {e} (details in {log_path})") from None


def cli_demo(args) -> int:
    result = run(text=args.text, scale=args.scale, out=args.out)
    print("\n".join(result["summary"]))
    return 0
