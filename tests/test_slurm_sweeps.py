"""The study's SLURM entry points on a real one-node cluster (tests/slurm_cluster.py).

Driven exactly as a user drives them, unchanged: `bash run_train_wrapper.sh cifar10_ds` in
train_cifar_ffcv/, `sbatch run_metrics.sh <experiment folder>` in repr_sim/, and
`bash run_train_wrapper.sh nanogpt_task` in train_nanoGPT/. The study's `#SBATCH` defaults
(a GPU, 8-10 CPUs, 26-32 GB, 16-24 h) are overridden only the SLURM way: sbatch's input
variables (SBATCH_GRES=none, SBATCH_MEM_PER_NODE, SBATCH_TIMELIMIT, SBATCH_OUTPUT) and,
for --cpus-per-task, which has no input variable in Slurm 22.05, SBATCH_ARGS for the
wrappers and the sbatch option for run_metrics.sh. The sweeps are narrowed with SEEDS,
FRACS and TRAIN_ARGS to two tiny pairs each; the measurement runs on the CPU
(MEASURE_ARGS="--device cpu"). Two situations of real clusters are staged on the way: the
interrupted sweep is started from the user's own folder with relative REPRSIM_RUNS and
REPRSIM_DATA, and the nanoGPT jobs run on a "GPU node" (an nvidia-smi listing GPUs the
job was not given).

Data are tiny but in the real formats: raw CIFAR-10/100, MNIST and SVHN files written in
torchvision's layout, turned into betons by the user's `run_write_ffcv_data.sh`; six
generated text corpora prepared by `reprsim prepare-text --tokenizer bytes`.

Determinism. The CIFAR training runs on the CPU with augmentation off, one loader worker
and one thread per job (OMP_NUM_THREADS=1); a pair is then bit-reproducible (the FFCV
sample order is seeded, the split and initialisation depend on the seed, torch's CPU
kernels are deterministic at a fixed thread count). So a sweep interrupted by `scancel`
and completed by running the wrapper again must give the same result CSVs, value for
value, as an uninterrupted one, and the test compares them exactly. (With FFCV's
augmentations on it could not: they draw from numba's per-thread generators, which are
not seeded, so only the structure -- (seed, frac) rows, frac_overlap, columns -- would be
comparable.)

Cost. FFCV compiles each loader pipeline once per process (10-60 s here), so the jobs are
few: two pairs per sweep, one measurement job per sweep, and the measurement of the
uninterrupted sweep is queued before the interrupted sweep starts, so that the node's two
CPUs stay busy. Module-scoped fixtures do the SLURM work once; each test checks one part.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from _slurm_data import (
    CIFAR_DIR,
    CIFAR_TRAIN_PER_CLASS,
    METRICS_SCRIPT,
    NANOGPT_DIR,
    REPO,
    LogDirCleanup,
    balanced,
    fake_gpu_node,
    files_under,
    job_output,
    read_csv,
    submit_metrics,
    submit_wrapper,
    wait_for_file,
    write_image_data,
    write_text_data,
)

from repr_sim import runs

pytestmark = pytest.mark.slurm

SEED, FRACS, TEXT_FRACS = 0, (0.0, 0.5), (0.0, 1.0)
JOB_TIMEOUT_S = 300  # a tiny job takes under a minute, even on a loaded 2-core machine
NO_AUGMENT = " ".join(f"--set augment.{k}=0" for k in ("flip", "jitter_p", "translate", "cutout"))
IMAGE_TRAIN_ARGS = f"--epochs 1 --batch-size 16 --workers 1 --device cpu {NO_AUGMENT}"
TEXT_TRAIN_ARGS = ("--iters 4 --batch-size 4 --block-size 16 --eval-iters 2 --device cpu "
                   "--set model.n_layer=1 --set model.n_head=2 --set model.n_embd=32 "
                   "--set recipe.eval_interval=2 --set recipe.grad_accum=1")
MEMORY, TIME_LIMIT = "2G", "00:15:00"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
PAIR_FILES = {"args.json", "done", "status.json", "split_indices/a.npy", "split_indices/b.npy",
              "split_indices/shared.npy", "split_indices/split.json",
              "split_0/checkpoint.pth", "split_0/log.txt", "split_1/checkpoint.pth",
              "split_1/log.txt"}
TEXT_PAIR_FILES = {"args.json", "done", "status.json", "split_indices/split.json",
                   *(f"split_{i}/{name}" for i in (0, 1)
                     for name in ("ckpt.pt", "evals.jsonl", "log.txt", "state.json"))}
# docs/protocol.md section 3: the eight metrics, and the result files of a dataset-overlap experiment.
METRICS = {"mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cka", "unbiased_cka",
           "cknna", "svcca"}
SIM_CSV, ACC_CSV = "platonic_ffcv.csv", "platonic_acc_ffcv.csv"
SIM_HEADER = ["seed", "metric", "frac_overlap", "metric_overlap", "metric_ood_all_mnist",
              "metric_ood_all_svhn"]
ACC_HEADER = ["seed", "frac_overlap", "model_idx", "acc"]
# Value ranges: lcs_knn is a length (0..k, k = 10); the kernel metrics may be a little
# negative (the unbiased estimators), never above 1 (+ rounding).
RANGES = {"mutual_knn": (0, 1), "cycle_knn": (0, 1), "lcs_knn": (0, 10),
          "edit_distance_knn": (0, 1), "cka": (0, 1), "unbiased_cka": (-1, 1),
          "cknna": (-1, 1), "svcca": (0, 1)}


def slurm_env(data) -> dict[str, str]:
    """What a user exports on this cluster: the data, and the study's resources overridden."""
    return {
        "REPRSIM_DATA": str(data),
        "REPRSIM_VERIFY": "0",  # synthetic raw files: not the published checksums
        "SBATCH_GRES": "none",
        "SBATCH_MEM_PER_NODE": MEMORY,
        "SBATCH_TIMELIMIT": TIME_LIMIT,
        # The node has no cgroups or CPU binding (task/none): one thread per job, as a
        # one-CPU allocation gives, and a fixed count for bit-reproducible training.
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }


def sweep_env(data, runs_root, train_args: str, fracs) -> dict[str, str]:
    return {**slurm_env(data), "REPRSIM_RUNS": str(runs_root), "SEEDS": str(SEED),
            "FRACS": " ".join(str(f) for f in fracs), "TRAIN_ARGS": train_args,
            "SBATCH_ARGS": "--cpus-per-task=1"}


def pair_folder(runs_root, experiment: str, frac: float):
    return runs.pair_dir(runs_root / experiment, SEED, frac)


def snapshot(runs_root, experiment: str, fracs) -> dict[float, set[str]]:
    """The files of each pair folder now (measurement adds its own files later)."""
    return {frac: files_under(pair_folder(runs_root, experiment, frac)) for frac in fracs}


# ---- fixtures: the module's SLURM work -------------------------------------------------------
@pytest.fixture(scope="module")
def log_dirs():
    cleanup = LogDirCleanup()
    for folder in (CIFAR_DIR, NANOGPT_DIR):
        cleanup.watch(folder / "log_dir")
    yield cleanup
    cleanup.clean()


@pytest.fixture(scope="module")
def image_sweep(slurm_cluster, log_dirs, tmp_path_factory):
    """The uninterrupted CIFAR-10 sweep: the wrapper once, every task waited for."""
    data = tmp_path_factory.mktemp("slurm_image_data")
    betons = write_image_data(data)
    runs_root = tmp_path_factory.mktemp("slurm_runs_uninterrupted")
    env = sweep_env(data, runs_root, IMAGE_TRAIN_ARGS, FRACS)
    sub = submit_wrapper(slurm_cluster, CIFAR_DIR, "cifar10_ds", env)
    log_dirs.add(slurm_cluster, sub)
    states = slurm_cluster.wait_for_jobs(sub.jobs, timeout_s=JOB_TIMEOUT_S)
    outputs = tmp_path_factory.mktemp("slurm_measure_out")
    # On the CPU even where a GPU is present: the CSVs of two sweeps are compared exactly.
    metrics_env = {**slurm_env(data), "SBATCH_OUTPUT": str(outputs / "%x-%j.out"),
                   "MEASURE_ARGS": "--device cpu"}
    return SimpleNamespace(data=data, betons=betons, runs=runs_root, env=env, sub=sub,
                           states=states, files=snapshot(runs_root, "cifar10_ds", FRACS),
                           metrics_env=metrics_env)


@pytest.fixture(scope="module")
def interrupted_sweep(slurm_cluster, image_sweep, measurement, log_dirs, tmp_path_factory):
    """The same sweep in another runs root: task 1 scancel'ed while it trains, the wrapper
    run again to finish it.

    This time the user starts the wrapper from their own folder, with the roots relative to
    it (`REPRSIM_RUNS=runs bash .../run_train_wrapper.sh`): the jobs run in the training
    folder, yet must write where the wrapper looks for finished pairs.
    """
    home = tmp_path_factory.mktemp("slurm_user_folder")
    runs_root = home / "runs"
    env = {**image_sweep.env, "REPRSIM_RUNS": "runs",
           "REPRSIM_DATA": os.path.relpath(image_sweep.data, home)}
    first = submit_wrapper(slurm_cluster, CIFAR_DIR, "cifar10_ds", env, cwd=home)
    log_dirs.add(slurm_cluster, first)
    victim = f"{first.job}_1"
    folder = pair_folder(runs_root, "cifar10_ds", FRACS[1])

    def ended() -> bool:  # (a pending array is one record "0-1"; a started task, its own)
        return any(r.get("ArrayTaskId") == "1" and r["JobState"] in FINAL_STATES
                   for r in slurm_cluster.jobs(first.job))

    # Model 0 finished, model 1 training: the pair is half done when the cancel comes.
    wait_for_file(folder / "split_0" / "checkpoint.pth", f"job {victim}",
                  timeout_s=JOB_TIMEOUT_S, stop=ended)
    assert not runs.is_done(folder), "the pair finished before it could be cancelled"
    slurm_cluster.run(["scancel", victim])
    first_states = slurm_cluster.wait_for_jobs(first.jobs, timeout_s=JOB_TIMEOUT_S)
    after_cancel = files_under(folder)

    second = submit_wrapper(slurm_cluster, CIFAR_DIR, "cifar10_ds", env, cwd=home)
    log_dirs.add(slurm_cluster, second)
    second_states = slurm_cluster.wait_for_jobs(second.jobs, timeout_s=JOB_TIMEOUT_S)
    return SimpleNamespace(runs=runs_root, first=first, second=second, first_states=first_states,
                           second_states=second_states, after_cancel=after_cancel,
                           files=snapshot(runs_root, "cifar10_ds", FRACS))


def submit_measurement(cluster, runs_root, env) -> SimpleNamespace:
    """`sbatch --cpus-per-task=1 run_metrics.sh <runs root>/cifar10_ds` (not waited for)."""
    folder = runs_root / "cifar10_ds"
    job, sbatch_out = submit_metrics(cluster, [folder], env, ("--cpus-per-task=1",))
    return SimpleNamespace(job=job, folder=folder, sbatch_out=sbatch_out, sbatch_env=env)


@pytest.fixture(scope="module")
def measurement(slurm_cluster, image_sweep):
    """The uninterrupted sweep's measurement, submitted: it runs beside the interrupted
    sweep's first task (the node's other CPU), waited for by `measured`."""
    return submit_measurement(slurm_cluster, image_sweep.runs, image_sweep.metrics_env)


@pytest.fixture(scope="module")
def measured(slurm_cluster, measurement):
    """The uninterrupted sweep, measured."""
    states = slurm_cluster.wait_for_jobs([measurement.job], timeout_s=JOB_TIMEOUT_S)
    return SimpleNamespace(**vars(measurement), states=states)


@pytest.fixture(scope="module")
def measured_interrupted(slurm_cluster, image_sweep, interrupted_sweep):
    """The interrupted (and completed) sweep, measured the same way."""
    job = submit_measurement(slurm_cluster, interrupted_sweep.runs, image_sweep.metrics_env)
    states = slurm_cluster.wait_for_jobs([job.job], timeout_s=JOB_TIMEOUT_S)
    return SimpleNamespace(**vars(job), states=states)


@pytest.fixture(scope="module")
def text_sweep(slurm_cluster, log_dirs, tmp_path_factory):
    """The nanoGPT task-overlap sweep: the wrapper once, every task waited for."""
    data = write_text_data(tmp_path_factory.mktemp("slurm_text_data"))
    runs_root = tmp_path_factory.mktemp("slurm_runs_text")
    # A node whose nvidia-smi lists GPUs this job was not given (SBATCH_GRES=none): it must
    # still start one process. LOGLEVEL=INFO: torchrun logs what it starts.
    fake_bin = fake_gpu_node(tmp_path_factory.mktemp("slurm_gpu_node_bin"))
    env = {**sweep_env(data, runs_root, TEXT_TRAIN_ARGS, TEXT_FRACS), "LOGLEVEL": "INFO",
           "PATH": f"{fake_bin}{os.pathsep}{slurm_cluster.env['PATH']}"}
    sub = submit_wrapper(slurm_cluster, NANOGPT_DIR, "nanogpt_task", env)
    log_dirs.add(slurm_cluster, sub)
    states = slurm_cluster.wait_for_jobs(sub.jobs, timeout_s=JOB_TIMEOUT_S)
    return SimpleNamespace(runs=runs_root, sub=sub, states=states)


# ---- CIFAR-10: one job array, every task finished, complete run folders --------------------
def test_cifar_wrapper_submits_one_array_and_every_task_finishes(slurm_cluster, image_sweep):
    sub = image_sweep.sub
    assert len(sub.jobs) == 1, sub.output  # one array for the experiment, not a job per pair
    job = sub.job
    assert "cifar10_ds: 2 task(s), 0 done, 2 to run" in sub.output
    assert "cifar10_ds: submitting a job array of 2 task(s)" in sub.output
    assert f"Submitted batch job {job}" in sub.output
    assert sub.task_file.parent == CIFAR_DIR / "log_dir" / "tasks"
    assert sub.tasks == [("cifar10_ds", SEED, frac) for frac in FRACS]
    assert image_sweep.states == {f"{job}_{i}": "COMPLETED" for i in range(len(FRACS))}
    for i, frac in enumerate(FRACS):
        out = job_output(slurm_cluster, f"{job}_{i}")
        assert f"task {i}: cifar10_ds seed {SEED} frac {frac} on {slurm_cluster.node}" in out
        assert f"{pair_folder(image_sweep.runs, 'cifar10_ds', frac)}: done" in out


def test_cifar_run_folders_are_complete(slurm_cluster, image_sweep):
    # The betons came from the user's script, for every dataset the CIFAR experiments use.
    assert set(image_sweep.betons) == {"cifar10/train", "cifar10/test", "cifar100/train",
                                       "cifar100/test", "mnist/test", "svhn/test"}
    _, train_labels = balanced(CIFAR_TRAIN_PER_CLASS, 10, 0)  # what the raw files hold
    per_model = CIFAR_TRAIN_PER_CLASS // 2  # constrained dataset split: m // 2 per class
    for frac in FRACS:
        assert image_sweep.files[frac] == PAIR_FILES
        folder = pair_folder(image_sweep.runs, "cifar10_ds", frac)
        args = json.loads((folder / "args.json").read_text())
        assert (args["seed"], args["frac"]) == (SEED, frac)
        assert args["end_time"] is not None
        a = np.load(folder / "split_indices" / "a.npy", allow_pickle=False)
        b = np.load(folder / "split_indices" / "b.npy", allow_pickle=False)
        for indices in (a, b):
            assert Counter(train_labels[indices].tolist()) == {c: per_model for c in range(10)}
        assert len(np.intersect1d(a, b)) == round(frac * per_model) * 10  # k per class
        for model in (0, 1):
            rows = [json.loads(line) for line in
                    (folder / f"split_{model}" / "log.txt").read_text().splitlines()]
            assert [r["epoch"] for r in rows] == [1]  # TRAIN_ARGS reached `reprsim train`


def test_cifar_jobs_got_the_resources_asked_for(slurm_cluster, image_sweep):
    job = image_sweep.sub.job
    records = slurm_cluster.jobs(job)
    assert sorted(r["ArrayTaskId"] for r in records) == [str(i) for i in range(len(FRACS))]
    for record in records:
        assert record["ArrayJobId"] == job
        assert record["JobName"] == "reprsim_train"  # from run_train.sh's #SBATCH lines
        assert record["CPUs/Task"] == "1" and record["NumCPUs"] == "1"
        assert record["MinMemoryNode"] == MEMORY
        assert record["TimeLimit"] == TIME_LIMIT
        assert "gres" not in record.get("TresPerNode", "") and "gpu" not in record["TRES"]
        assert {"cpu=1", f"mem={MEMORY}"} <= set(record["TRES"].split(","))
        assert record["Partition"] == slurm_cluster.partition
        assert record["WorkDir"] == str(CIFAR_DIR)  # submitted from the script's folder
        assert record["Command"].split()[:2] == [str(CIFAR_DIR / "run_train.sh"),
                                                 str(image_sweep.sub.task_file)]
        task = record["ArrayTaskId"]
        assert record["StdOut"] == str(CIFAR_DIR / "log_dir" / "slurm_out" /
                                       f"reprsim_train_{job}_{task}.out")


# ---- a task cancelled mid-run, then the wrapper again ------------------------------------------
def test_cancelled_task_is_resubmitted_alone_and_completes(slurm_cluster, interrupted_sweep):
    sweep = interrupted_sweep
    job = sweep.first.job
    assert sweep.first_states == {f"{job}_0": "COMPLETED", f"{job}_1": "CANCELLED"}
    # What the cancel left: model 0 complete, no done marker, no checkpoint of model 1.
    assert "done" not in sweep.after_cancel
    assert {"split_0/checkpoint.pth", "split_0/log.txt", "args.json"} <= sweep.after_cancel
    assert "split_1/checkpoint.pth" not in sweep.after_cancel

    again = sweep.second
    assert "cifar10_ds: 2 task(s), 1 done, 1 to run" in again.output
    assert again.task_file != sweep.first.task_file
    assert again.tasks == [("cifar10_ds", SEED, FRACS[1])]  # only the missing pair
    assert [r["ArrayTaskId"] for r in slurm_cluster.jobs(again.job)] == ["0"]  # an array of 1
    assert sweep.second_states == {f"{again.job}_0": "COMPLETED"}
    out = job_output(slurm_cluster, f"{again.job}_0")
    assert f"task 0: cifar10_ds seed {SEED} frac {FRACS[1]}" in out
    assert "split_0: already trained, keeping it" in out  # resumed, not started over
    assert sweep.files == {frac: PAIR_FILES for frac in FRACS}  # all under the user's runs/


# ---- run_metrics.sh: the measurement issue's CSVs ----------------------------------------------
def test_run_metrics_job_ran_with_the_resources_asked_for(slurm_cluster, measured):
    job = measured.job
    assert measured.states == {job: "COMPLETED"}, job_output(slurm_cluster, job)
    (record,) = slurm_cluster.jobs(job)
    assert record["CPUs/Task"] == "1"
    assert record["MinMemoryNode"] == MEMORY
    assert record["TimeLimit"] == TIME_LIMIT
    assert "gres" not in record.get("TresPerNode", "") and "gpu" not in record["TRES"]
    assert record["WorkDir"] == str(METRICS_SCRIPT.parent)
    # SBATCH_OUTPUT put the log in the test's folder, not slurm-<job>.out in repr_sim/.
    assert record["StdOut"] == measured.sbatch_env["SBATCH_OUTPUT"].replace(
        "%x", "reprsim_measure").replace("%j", job)
    assert not (METRICS_SCRIPT.parent / f"slurm-{job}.out").exists()
    out = job_output(slurm_cluster, job)
    # The spooled script found the project from the submit folder, and its .venv.
    assert f"run_metrics.sh: project {REPO}, {REPO / '.venv' / 'bin' / 'reprsim'}" in out, out
    assert f"{measured.folder}: 2 measured, 0 already measured" in out, out


def test_run_metrics_writes_the_similarity_csv(slurm_cluster, image_sweep, measured):
    header, rows = read_csv(measured.folder / SIM_CSV)
    assert header == SIM_HEADER
    assert len(rows) == len(METRICS) * len(FRACS)  # one row per metric per pair
    for frac in FRACS:
        folder = pair_folder(image_sweep.runs, "cifar10_ds", frac)
        a = np.load(folder / "split_indices" / "a.npy", allow_pickle=False)
        b = np.load(folder / "split_indices" / "b.npy", allow_pickle=False)
        realised = len(np.intersect1d(a, b)) / len(a)  # |A ∩ B| / |A| from the saved indices
        pair_rows = [r for r in rows if float(r["frac_overlap"]) == realised]
        assert {r["metric"] for r in pair_rows} == METRICS and len(pair_rows) == len(METRICS)
        assert {r["seed"] for r in pair_rows} == {str(SEED)}
        for row in pair_rows:
            low, high = RANGES[row["metric"]]
            for column in SIM_HEADER[3:]:  # 20 probe inputs each: none is empty
                text = row[column]
                assert len(text.split(".")[1]) == 6, text  # the study's 6 decimals
                assert low - 1e-6 <= float(text) <= high + 1e-6, (row["metric"], column, text)
    # Sorted by seed, then frac (the measurement issue's order).
    fracs_in_order = [float(r["frac_overlap"]) for r in rows]
    assert fracs_in_order == sorted(fracs_in_order)


def test_run_metrics_writes_the_accuracy_csv(slurm_cluster, image_sweep, measured):
    header, rows = read_csv(measured.folder / ACC_CSV)
    assert header == ACC_HEADER
    expected = []
    for frac in FRACS:
        folder = pair_folder(image_sweep.runs, "cifar10_ds", frac)
        for model in (0, 1):
            # The trainer's own test accuracy after its last (only) epoch: the checkpoint's.
            last = json.loads((folder / f"split_{model}" / "log.txt").read_text().splitlines()[-1])
            expected.append((str(SEED), frac, str(model + 1), last["test_acc"]))
    got = [(r["seed"], float(r["frac_overlap"]), r["model_idx"], float(r["acc"])) for r in rows]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert math.isclose(g[3], e[3], abs_tol=1e-9), (g, e)


def test_interrupted_sweep_measures_to_the_same_csvs(slurm_cluster, measured,
                                                     measured_interrupted):
    assert measured_interrupted.states == {measured_interrupted.job: "COMPLETED"}
    folder = measured_interrupted.folder
    for name in (SIM_CSV, ACC_CSV):
        header, rows = read_csv(folder / name)
        ref_header, ref_rows = read_csv(measured.folder / name)
        assert header == ref_header
        # Structure first (the part that holds even for non-deterministic training) ...
        key = ("seed", "frac_overlap", "metric") if name == SIM_CSV else ("seed", "frac_overlap",
                                                                          "model_idx")
        assert [tuple(r[k] for k in key) for r in rows] == [tuple(r[k] for k in key)
                                                            for r in ref_rows]
        # ... then every value: the training is deterministic here (module docstring).
        assert rows == ref_rows
        assert (folder / name).read_bytes() == (measured.folder / name).read_bytes()


# ---- nanoGPT: one job array, each task training under torchrun ---------------------------------
def test_nanogpt_wrapper_trains_every_task_under_torchrun(slurm_cluster, text_sweep):
    sub = text_sweep.sub
    assert len(sub.jobs) == 1, sub.output
    job = sub.job
    assert "nanogpt_task: 2 task(s), 0 done, 2 to run" in sub.output
    assert sub.tasks == [("nanogpt_task", SEED, frac) for frac in TEXT_FRACS]
    assert text_sweep.states == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}
    for i, frac in enumerate(TEXT_FRACS):
        out = job_output(slurm_cluster, f"{job}_{i}")
        assert (f"task {i}: nanogpt_task seed {SEED} frac {frac} on {slurm_cluster.node}, "
                "1 process(es)") in out
        # torchrun's own log: it started one worker process running `-m repr_sim`.
        assert "Using nproc_per_node=1." in out
        assert "entrypoint               : repr_sim" in out
        assert "starting workers for entrypoint" in out
        assert f"nanogpt_task seed {SEED} frac {frac:g} model 1: finished" in out
        folder = pair_folder(text_sweep.runs, "nanogpt_task", frac)
        assert files_under(folder) == TEXT_PAIR_FILES
        args = json.loads((folder / "args.json").read_text())
        assert args["world_size"] == 1 and args["tokenizer"] == "bytes"
        for model in (0, 1):
            evals = [json.loads(line) for line in
                     (folder / f"split_{model}" / "evals.jsonl").read_text().splitlines()]
            assert [e["iter"] for e in evals] == [0, 2, 4]  # --iters 4, evaluated every 2


def test_nanogpt_jobs_got_the_resources_asked_for(slurm_cluster, text_sweep):
    records = slurm_cluster.jobs(text_sweep.sub.job)
    assert len(records) == len(TEXT_FRACS)
    for record in records:
        assert record["JobName"] == "reprsim_nanogpt"  # from its run_train.sh
        assert record["CPUs/Task"] == "1"
        assert record["MinMemoryNode"] == MEMORY
        assert record["TimeLimit"] == TIME_LIMIT
        assert "gres" not in record.get("TresPerNode", "") and "gpu" not in record["TRES"]
        assert record["WorkDir"] == str(NANOGPT_DIR)
