"""Helpers for the SLURM integration tests (tests/test_slurm_sweeps.py).

Tiny inputs in the real on-disk formats, and the user's commands run the way a user runs
them against the session's cluster (tests/slurm_cluster.py):

    write_image_data(root)        raw CIFAR-10/100, MNIST, SVHN, then run_write_ffcv_data.sh
    write_text_data(root)         six generated corpora, then `reprsim prepare-text --tokenizer bytes`
    sub = submit_wrapper(cluster, CIFAR_DIR, "cifar10_ds", env)
    sub.job, sub.task_file, sub.tasks, sub.output
    wait_for_file(path), job_output(cluster, job_key), read_csv(path)

The wrappers always put their task files and SLURM output under `log_dir/` of their own
training folder (git-ignored); `LogDirCleanup` removes what these tests made there.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repr_sim.data import fake, textgen

REPO = Path(__file__).resolve().parents[1]
CIFAR_DIR = REPO / "train_cifar_ffcv"
NANOGPT_DIR = REPO / "train_nanoGPT"
METRICS_SCRIPT = REPO / "repr_sim" / "run_metrics.sh"
TEXT_CORPORA = ("tinycodes", "tinystories", "tinytextbooks", "tinywebtext", "wikitext",
                "shakespeare_all")

# CIFAR-10 with 4 training images per class: the constrained dataset split gives each model
# 2 per class (20 images, one batch of 16 with drop_last); 2 test images per class. Probe sets
# hold 20 images, above the metrics' minimum (N > k + 1 = 11).
CIFAR_TRAIN_PER_CLASS, CIFAR_TEST_PER_CLASS = 4, 2
PROBE_SIZE = 20


def balanced(n_per_class: int, n_classes: int, seed: int, side: int = 32):
    """Random images with exactly n_per_class of every label, shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(n_classes), n_per_class)).astype(np.int64)
    images = rng.integers(0, 256, size=(len(labels), side, side, 3), dtype=np.uint8)
    return images, labels


def write_image_data(root: Path, timeout_s: float = 300) -> dict[str, Path]:
    """Raw files in torchvision's layout under root, then betons by run_write_ffcv_data.sh.

    Returns {"<dataset>/<split>": beton path} of the betons the script reports writing.
    """
    root.mkdir(parents=True, exist_ok=True)
    fake.write_cifar10(root, balanced(CIFAR_TRAIN_PER_CLASS, 10, 0),
                       balanced(CIFAR_TEST_PER_CLASS, 10, 1))
    fake.fake_cifar100(root, n_train=20, n_test=20, seed=2)  # the script writes it too
    fake.fake_mnist(root, n_train=12, n_test=PROBE_SIZE, seed=3)
    fake.fake_svhn(root, n_train=12, n_test=PROBE_SIZE, seed=4)
    env = {**os.environ, "REPRSIM_DATA": str(root), "REPRSIM_VERIFY": "0"}
    done = subprocess.run(["bash", str(CIFAR_DIR / "run_write_ffcv_data.sh"), "--workers", "1"],
                          env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = {}
    for line in done.stdout.splitlines():
        if line.startswith("wrote "):
            path = Path(line.split(" ", 1)[1].strip())
            written[f"{path.parent.name}/{path.stem}"] = path
    return written


def write_text_data(root: Path, chars: int = 20_000) -> Path:
    """The six generated domains, each prepared by `reprsim prepare-text --tokenizer bytes`.

    Run in this process through the CLI's own entry point (six interpreters would cost
    about 3 s each for no extra coverage). Returns the data root.
    """
    from repr_sim import cli

    files = textgen.write_corpora(root / "generated", chars, seed=0)
    for corpus in TEXT_CORPORA:
        code = cli.main(["prepare-text", corpus, "--data-files", str(files[corpus]),
                         "--tokenizer", "bytes", "--num-proc", "1", "--data-root",
                         str(root / "data")])
        assert code == 0, f"prepare-text {corpus} exited {code}"
    return root / "data"


def fake_gpu_node(bin_dir: Path, gpus: int = 4) -> Path:
    """An `nvidia-smi` that lists `gpus` GPUs, as on a GPU node: a job given none must not
    count them. Returns the folder to put first on the PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"echo 'GPU {i}: NVIDIA Test GPU (UUID: GPU-{i:08d})'\n" for i in range(gpus))
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/bash\n{lines}")
    script.chmod(0o755)
    return bin_dir


@dataclass
class Submission:
    """What one run of a sweep wrapper did."""

    output: str  # the wrapper's stdout and stderr
    jobs: list[str]  # ids of the jobs submitted during the run (jobs_since)
    task_file: Path | None
    tasks: list[tuple[str, int, float]] = field(default_factory=list)

    @property
    def job(self) -> str:
        assert len(self.jobs) == 1, f"expected one job array, got {self.jobs}:\n{self.output}"
        return self.jobs[0]


def read_tasks(path: Path) -> list[tuple[str, int, float]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        experiment, seed, frac = line.split("\t")
        rows.append((experiment, int(seed), float(frac)))
    return rows


def submit_wrapper(cluster, folder: Path, experiment: str, env: dict[str, str],
                   cwd: Path | None = None, timeout_s: float = 120) -> Submission:
    """`bash run_train_wrapper.sh EXPERIMENT` in the training `folder` (or
    `bash <folder>/run_train_wrapper.sh EXPERIMENT` in `cwd`), as a user runs it on a
    login node."""
    before = cluster.last_job_id()
    script = "run_train_wrapper.sh" if cwd is None else str(folder / "run_train_wrapper.sh")
    done = subprocess.run(["bash", script, experiment], cwd=cwd or folder,
                          env={**cluster.env, **env}, capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"run_train_wrapper.sh exited {done.returncode}:\n{output}"
    found = re.search(r"^tasks: (.+)$", done.stdout, re.MULTILINE)
    task_file = Path(found.group(1)) if found else None
    tasks = read_tasks(task_file) if task_file else []
    return Submission(output, cluster.jobs_since(before), task_file, tasks)


def submit_metrics(cluster, folders: list[Path], env: dict[str, str],
                   sbatch_options: tuple[str, ...] = ()) -> tuple[str, str]:
    """`sbatch [options] run_metrics.sh FOLDER...` in repr_sim/; returns (job id, sbatch's output).

    Plain sbatch, as a user types it ("Submitted batch job N"), not --parsable.
    """
    before = cluster.last_job_id()
    done = cluster.run(["sbatch", *sbatch_options, METRICS_SCRIPT.name, *map(str, folders)],
                       cwd=METRICS_SCRIPT.parent, env=env)
    submitted = cluster.jobs_since(before)
    assert len(submitted) == 1, (submitted, done.stdout, done.stderr)
    assert done.stdout.strip() == f"Submitted batch job {submitted[0]}", done.stdout
    return submitted[0], done.stdout


def job_output(cluster, key: str) -> str:
    """The StdOut file of job `key` ("123" or "123_4"), as scontrol reports it."""
    job, _, task = key.partition("_")
    for record in cluster.jobs(job):
        if not task or record.get("ArrayTaskId") == task:
            return Path(record["StdOut"]).read_text(errors="replace")
    raise AssertionError(f"no job {key} known to slurmctld")


def wait_for_file(path: Path, what: str, timeout_s: float = 300, poll_s: float = 0.1,
                  stop=None) -> None:
    """Poll until `path` exists; `stop()` true first (e.g. the job ended) is a failure."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if stop is not None and stop():
            raise AssertionError(f"{what}: ended before {path} appeared")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {path} did not appear within {timeout_s} s")
        time.sleep(poll_s)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as dicts of the raw text) of a CSV file."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


class LogDirCleanup:
    """Remember the task files and jobs the tests submit through a wrapper, and remove
    exactly their files under the wrapper's log_dir/ at the end (REPRSIM_SLURM_KEEP=1
    keeps them)."""

    def __init__(self):
        self.task_files: list[Path] = []
        self.jobs: list[str] = []
        self.folders: list[Path] = []
        self.cluster = None

    def watch(self, log_dir: Path) -> None:
        """Call before the first submission: log_dir is removed at the end if it is new."""
        for folder in (log_dir, log_dir / "tasks", log_dir / "slurm_out"):
            if not folder.exists():
                self.folders.append(folder)

    def add(self, cluster, submission: Submission) -> None:
        self.cluster = cluster
        if submission.task_file:
            self.task_files.append(submission.task_file)
        self.jobs += submission.jobs

    def output_files(self) -> list[Path]:
        """StdOut/StdErr of every task, asked at the end: a pending array is one record
        with an unexpanded name, a finished one has a record per task."""
        paths = []
        for job in self.jobs:
            for record in self.cluster.jobs(job):
                paths += [Path(record[k]) for k in ("StdOut", "StdErr") if record.get(k)]
        return paths

    def clean(self) -> None:
        if os.environ.get("REPRSIM_SLURM_KEEP") == "1":
            return
        paths = list(self.task_files)
        if self.cluster is not None:
            with contextlib.suppress(Exception):  # a dead controller: leave the outputs
                paths += self.output_files()
        for path in paths:
            path.unlink(missing_ok=True)
        for folder in reversed(self.folders):  # children before their parent
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
