"""Several pairs per GPU: `reprsim sweep --pairs-per-gpu M` (repr_sim.sweep).

The pool launcher runs M pairs at once per device (DevicePool: a sub-pool per GPU, jobs to
the device with free workers); the SLURM launcher submits ceil(n / M) array elements and the
array body runs M tasks of its element at once. A pair's checkpoints must not depend on what
it was packed with: trained alone and trained next to another pair, through the real array
body, on the CPU at one thread per process, they are equal bit for bit.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import torch

from repr_sim import cli, experiments, kinds, runs, sweep
from repr_sim.paths import environ

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
kind = "image"
dataset = "cifar10"
width = 8
fracs = [0.5]
seeds = [0, 1, 2]
[recipe]
epochs = 2
batch_size = 16
[loader]
backend = "device"
[augment]
cutout = 4
"""
TRAIN_ARGS = "--device cpu"


# ---- the device pool --------------------------------------------------------------------------
class FakePool:
    """repr_sim.pool.Pool's interface; jobs finish when the test says so."""

    made: list = []

    def __init__(self, workers, preload, env, threads=1):
        self.workers, self.env, self.threads, self.jobs = workers, env, threads, []
        FakePool.made.append(self)

    def submit(self, log_path, fn, *args):
        future = Future()
        self.jobs.append((future, args))
        return future

    def close(self, *, cancel=False):
        self.closed = cancel


def test_device_pool_runs_at_most_m_per_device(monkeypatch):
    monkeypatch.setattr("repr_sim.pool.Pool", FakePool)
    FakePool.made = []
    pool = sweep.DevicePool(["2", "5"], 2, [], {"A": "1"}, threads=3)
    assert [p.env for p in FakePool.made] == [{"A": "1", "CUDA_VISIBLE_DEVICES": "2"},
                                             {"A": "1", "CUDA_VISIBLE_DEVICES": "5"}]
    outer = [pool.submit("log", print, i) for i in range(7)]
    running = lambda: [len([f for f, _ in p.jobs if not f.done()]) for p in FakePool.made]  # noqa: E731
    assert running() == [2, 2] and len(pool.queue) == 3
    FakePool.made[1].jobs[0][0].set_result(0)  # a job on GPU 5 ends: the next one goes there
    assert running() == [2, 2] and len(pool.queue) == 2
    assert outer[1].result(timeout=1) == 0 or outer[3].result(timeout=1) == 0
    for _ in range(10):  # finish everything, whatever runs where
        for p in FakePool.made:
            for f, _args in p.jobs:
                if not f.done():
                    f.set_exception(ValueError("boom")) if _args == (6,) else f.set_result(0)
    assert all(f.done() for f in outer) and not pool.queue
    assert isinstance(outer[6].exception(), ValueError)
    assert sorted(a for p in FakePool.made for _, (a,) in p.jobs) == list(range(7))


def test_device_pool_on_a_machine_without_gpus(monkeypatch):
    monkeypatch.setattr("repr_sim.pool.Pool", FakePool)
    monkeypatch.setattr(sweep, "visible_gpus", lambda: [])
    monkeypatch.setattr(sweep, "usable_cpus", lambda: 8)
    monkeypatch.setattr(sweep, "preload_of", lambda tasks: [])
    FakePool.made = []
    pool, workers = sweep.packed_pool([], 4)
    assert workers == 4 and len(FakePool.made) == 1
    assert FakePool.made[0].workers == 4 and FakePool.made[0].threads == 2
    assert "CUDA_VISIBLE_DEVICES" not in FakePool.made[0].env


@pytest.mark.parametrize("value,ids", [("", []), ("-1", []), ("3", ["3"]), ("0, 2", ["0", "2"])])
def test_visible_gpus_reads_cuda_visible_devices(monkeypatch, value, ids):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert sweep.visible_gpus() == ids


# ---- SLURM: M tasks per array element ---------------------------------------------------------
@pytest.fixture
def config(reprsim_env):
    path = reprsim_env / "exp" / "packed_ds.toml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def fake_sbatch(bin_dir: Path) -> Path:
    record = bin_dir / "record.txt"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "sbatch").write_text(
        f'#!/bin/bash\n{{ echo "PAIRS_PER_GPU=${{PAIRS_PER_GPU:-}}"; printf "%s\\n" "$@"; }} '
        f'> {record}\necho "Submitted batch job 7"\n')
    (bin_dir / "sbatch").chmod(0o755)
    return record


def test_slurm_launcher_packs_m_tasks_per_element(config, tmp_path, monkeypatch, capsys):
    record = fake_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    script = tmp_path / "body.sh"
    script.write_text("#!/bin/bash\n")
    argv = ["sweep", str(config), "--launcher", "slurm", "--sbatch-script", str(script),
            "--log-dir", str(tmp_path / "logs"), "--pairs-per-gpu", "2"]
    assert cli.main(argv) == 0
    lines = record.read_text().splitlines()
    assert lines[0] == "PAIRS_PER_GPU=2"
    assert f"--array=0-{math.ceil(3 / 2) - 1}" in lines
    assert "3 task(s) in 2 element(s) of 2" in capsys.readouterr().out
    assert cli.main(argv[:-2]) == 0  # unpacked: one element per task, nothing exported
    lines = record.read_text().splitlines()
    assert lines[0] == "PAIRS_PER_GPU=" and "--array=0-2" in lines


def test_packing_input_errors_are_one_line(config, tmp_path, capsys):
    assert cli.main(["sweep", str(config), "--pairs-per-gpu", "0", "--launcher", "pool"]) == 2
    assert "--pairs-per-gpu must be at least 1" in capsys.readouterr().err
    assert cli.main(["sweep", str(config), "--pairs-per-gpu", "2", "--workers", "2"]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli.main(["sweep", str(config), "--pairs-per-gpu", "2", "--launcher", "local"]) == 2
    assert "use --launcher pool or slurm" in capsys.readouterr().err
    task_file = tmp_path / "tasks.tsv"
    task_file.write_text(f"{config}\t0\t0.5\n{config}\t1\t0.5\n{config}\t2\t0.5\n")
    assert cli.main(["sweep", "--task", "2", "--task-file", str(task_file),
                     "--pairs-per-gpu", "2"]) == 2
    assert "there is no task 4" in capsys.readouterr().err


def test_packed_element_runs_its_m_tasks(config, tmp_path, monkeypatch):
    got = {}

    def fake_run_pool(tasks, train_args, *, workers, log_dir, per_device):
        got.update(tasks=[(t.seed, t.frac) for t in tasks], per_device=per_device,
                   log_dir=log_dir)
        return 0

    monkeypatch.setattr(sweep, "run_pool", fake_run_pool)
    task_file = tmp_path / "logs" / "tasks" / "t.tsv"
    task_file.parent.mkdir(parents=True)
    task_file.write_text("".join(f"{config}\t{s}\t0.5\n" for s in range(5)))
    args = ["sweep", "--task", "1", "--task-file", str(task_file), "--pairs-per-gpu", "2"]
    assert cli.main(args) == 0
    assert got == {"tasks": [(2, 0.5), (3, 0.5)], "per_device": 2,
                   "log_dir": (tmp_path / "logs").resolve()}
    assert cli.main(["sweep", "--task", "2", *args[3:]]) == 0  # the last, partial element
    assert got["tasks"] == [(4, 0.5)]


# ---- a pair alone and packed: the same checkpoints -----------------------------------------------
def write_data() -> None:
    from repr_sim.data import betons

    for part, seed in (("train", 0), ("test", 1)):
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(10), 8 if part == "train" else 3)
        images = rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
        betons.write_beton(images, labels, betons.beton_path("cifar10", part), workers=1,
                           info={"dataset": "cifar10", "split": part, "resolution": 8})


def checkpoints(config: Path, runs_root: Path, seed: int) -> list[dict]:
    with environ({"REPRSIM_RUNS": str(runs_root)}):
        pair = runs.pair_dir(experiments.experiment_dir(kinds.load(config)), seed, 0.5)
        assert runs.is_finished(pair), f"{pair} not trained"
        return [torch.load(pair / f"split_{i}" / "checkpoint.pth", weights_only=True)
                for i in (0, 1)]


@pytest.mark.slow
def test_a_pair_packed_with_another_trains_bit_identically(config, reprsim_env, tmp_path,
                                                           monkeypatch):
    write_data()
    # One torch thread per process in both runs: CPU kernels are deterministic at a fixed
    # thread count, so any difference would come from the packing.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    alone, packed = tmp_path / "alone", tmp_path / "packed"
    with environ({"REPRSIM_RUNS": str(alone), "SLURM_CPUS_PER_TASK": "1"}):
        assert cli.main(["sweep", str(config), "--seeds", "0", "--launcher", "pool",
                         "--pairs-per-gpu", "1", "--train-args", TRAIN_ARGS,
                         "--log-dir", str(tmp_path / "logs_alone")]) == 0
    # Packed: array element 0 of a two-per-element sweep, through the study's array body
    # (run_train.sh -> train_task.sh -> reprsim sweep --task 0 --pairs-per-gpu 2).
    task_file = tmp_path / "logs" / "tasks" / "packed.tsv"
    task_file.parent.mkdir(parents=True)
    task_file.write_text(f"{config}\t1\t0.5\n{config}\t0\t0.5\n")
    body = tmp_path / "spool" / "slurm_script"
    body.parent.mkdir()
    shutil.copy(REPO / "train_cifar_ffcv" / "run_train.sh", body)
    env = dict(os.environ, REPRSIM_RUNS=str(packed), SLURM_CPUS_PER_TASK="2",
               SLURM_SUBMIT_DIR=str(REPO / "train_cifar_ffcv"), SLURM_ARRAY_TASK_ID="0",
               PAIRS_PER_GPU="2")
    done = subprocess.run(["bash", str(body), str(task_file), "--device", "cpu"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tasks 0..1 of" in done.stdout and "(2 per device)" in done.stdout
    for seed, frac in ((0, 0.5), (1, 0.5)):
        log = tmp_path / "logs" / "pool" / f"{config.stem}_seed{seed}_frac{frac:g}.log"
        assert log.is_file()
    solo, next_to_another = checkpoints(config, alone, 0), checkpoints(config, packed, 0)
    for a, b in zip(solo, next_to_another, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = checkpoints(config, packed, 1)  # the neighbour really trained something else
    assert not all(torch.equal(other[0][k], solo[0][k]) for k in solo[0])
