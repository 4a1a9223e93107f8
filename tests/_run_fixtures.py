"""Real trained run folders, built cheaply, for the measurement, SLURM and demo tests.

Images (`build_image_runs(root)`): tiny betons (8x8 random images, 10 balanced classes) for
cifar10 train/test and the OOD probes mnist/svhn (test), written by the data module's
`write_beton` where `reprsim write-data` puts them (sidecar naming the dataset), then pairs
of the SHIPPED configs cifar10_ds and cifar10_task trained by the real trainer
(`reprsim train`, repr_sim.kinds.image.train) for 1 epoch of batch 16, no augmentation, stage
width 16 (a narrowed ResNet-18: 128-d features, and a check that the width recorded in
args.json is the one rebuilt), with the trainer's in-memory loader backend
(`loader.backend = "memory"`: loaders.ArrayLoader over the decoded beton): FFCV compiles
every loader pipeline on first use in a process (10-60 s each on this machine), which
would dominate.

Text (`build_text_runs(root)`): the six generated domains (repr_sim.data.textgen) prepared
with the byte tokenizer, and tiny GPT pairs (1 layer, 32 wide, block 16, a few
iterations) of a dataset-split experiment on tinystories (probes shakespeare_all,
tinystories, wikitext) and a task-split experiment over the six corpora, trained by
`reprsim train` (repr_sim.kinds.text.train).

Both builders are idempotent (the trainer skips finished pairs) and take a lock, so
module-scoped fixtures made from `provide_image_runs` / `provide_text_runs` build once per
test session under pytest's base temporary folder and later modules reuse the folders.
Treat them as read-only: copy an experiment (`copy_experiment`) before changing it. While
such a fixture is active, REPRSIM_DATA / REPRSIM_RUNS / REPRSIM_VERIFY point at its folders.

    @pytest.fixture(scope="module")
    def image_runs(tmp_path_factory):
        yield from provide_image_runs(tmp_path_factory)

    def test_x(image_runs):
        image_runs.ds / "seed_0" / "frac_0.5"     # a finished pair folder
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from repr_sim import cli
from repr_sim.paths import environ

SIDE = 8  # the CIFAR ResNet runs on any side >= 8
TRAIN_PER_CLASS, TEST_PER_CLASS, OOD_N = 8, 6, 30
WIDTH = 16
IMAGE_TRAIN_ARGS = ["--epochs", "1", "--batch-size", "16", "--workers", "1", "--device", "cpu",
                    f"--set=width={WIDTH}", "--set=loader.backend=memory",
                    *(f"--set=augment.{k}=0" for k in ("flip", "jitter_p", "translate", "cutout"))]
DS_PAIRS = ((0, 0.5), (0, 1.0))
TASK_PAIRS = ((0, 0.0), (0, 0.6), (0, 1.0))  # 5 of 10 classes each: 0, 3 and 5 shared

TEXT_CORPORA = ["tinycodes", "tinystories", "tinytextbooks", "tinywebtext", "wikitext", "shakespeare_all"]
TEXT_DS_PROBES = ["shakespeare_all", "tinystories", "wikitext"]
TEXT_DS_PAIRS = ((0, 0.0), (0, 1.0))
TEXT_TASK_PAIRS = ((0, 0.0), (0, 2 / 3), (0, 1.0))
TEXT_DS, TEXT_TASK = "text_ds_tiny", "text_task_tiny"


def roots(data: Path, runs: Path):
    """REPRSIM_DATA / REPRSIM_RUNS set (checksums off) for the block, then restored."""
    return environ({"REPRSIM_DATA": str(data), "REPRSIM_RUNS": str(runs), "REPRSIM_VERIFY": "0"})


def run_measure(run: list[str], *argv) -> int:
    """`reprsim measure` with the options `run`, then `argv` (the caller's options win)."""
    threads = torch.get_num_threads()  # reprsim measure sets its own (--workers)
    try:
        return cli.main(["measure", *run, *map(str, argv)])
    finally:
        torch.set_num_threads(threads)


def csv_rows(path: Path) -> tuple[str, list[list[str]]]:
    """(header line, the other lines split on commas)."""
    lines = path.read_text().splitlines()
    return lines[0], [line.split(",") for line in lines[1:]]


def balanced(n_per_class: int, seed: int, classes: int = 10, side: int = SIDE):
    """Random uint8 images with `n_per_class` of every class, in shuffled order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(classes), n_per_class)).astype(np.int64)
    images = rng.integers(0, 256, size=(len(labels), side, side, 3), dtype=np.uint8)
    return images, labels


def write_image_data(data: Path) -> None:
    """cifar10 train/test and mnist/svhn test betons (with their sidecars) under data/ffcv/."""
    from repr_sim.data import betons

    sets = {("cifar10", "train"): balanced(TRAIN_PER_CLASS, 0),
            ("cifar10", "test"): balanced(TEST_PER_CLASS, 1),
            ("mnist", "test"): balanced(OOD_N // 10, 2),
            ("svhn", "test"): balanced(OOD_N // 10, 3)}
    for (name, part), (images, labels) in sets.items():
        betons.write_beton(images, labels, betons.beton_path(name, part, data), workers=1,
                           info={"dataset": name, "split": part, "resolution": SIDE})


def train(experiment: str, seed: int, frac: float, extra: list[str]) -> None:

    code = cli.main(["train", experiment, "--seed", str(seed), "--frac", repr(float(frac)), *extra])
    assert code == 0, f"training {experiment} seed {seed} frac {frac} failed"


@dataclass
class ImageRuns:
    root: Path
    data: Path
    runs: Path

    @property
    def ds(self) -> Path:
        return self.runs / "cifar10_ds"

    @property
    def task(self) -> Path:
        return self.runs / "cifar10_task"


def build_image_runs(root: Path, ds_pairs=DS_PAIRS, task_pairs=TASK_PAIRS) -> ImageRuns:
    from repr_sim import runs as runs_mod

    built = ImageRuns(Path(root), Path(root) / "data", Path(root) / "runs")
    built.runs.mkdir(parents=True, exist_ok=True)
    with runs_mod.file_lock(Path(root) / ".build.lock"), roots(built.data, built.runs):
        write_image_data(built.data)
        for experiment, pairs in (("cifar10_ds", ds_pairs), ("cifar10_task", task_pairs)):
            for seed, frac in pairs:
                train(experiment, seed, frac, IMAGE_TRAIN_ARGS)
    return built


@dataclass
class TextRuns:
    root: Path
    data: Path
    runs: Path

    @property
    def ds(self) -> Path:
        return self.runs / TEXT_DS

    @property
    def task(self) -> Path:
        return self.runs / TEXT_TASK


def _text_config(folder: Path, name: str, probes: list[str], **kwargs) -> Path:
    from _text_fixtures import tiny_text_config

    path = tiny_text_config(folder, name, **kwargs)
    listed = ", ".join(f'"{c}"' for c in probes)
    path.write_text(path.read_text() + f"\n[probes]\ncorpora = [{listed}]\n", encoding="utf-8")
    return path


def build_text_runs(root: Path, ds_pairs=TEXT_DS_PAIRS, task_pairs=TEXT_TASK_PAIRS) -> TextRuns:
    from repr_sim import runs as runs_mod
    from repr_sim.data import text as textdata
    from repr_sim.data import textgen

    root = Path(root)
    built = TextRuns(root, root / "data", root / "runs")
    built.runs.mkdir(parents=True, exist_ok=True)
    with runs_mod.file_lock(root / ".build.lock"), roots(built.data, built.runs):
        for corpus, path in textgen.write_corpora(root / "gen", 30_000, seed=0).items():
            if not textdata.is_prepared(corpus):
                textdata.prepare(corpus, data_files=[path], tokenizer="bytes")
        common = dict(iters=4, eval_interval=2, eval_iters=2, block=16, batch=8)
        ds_cfg = _text_config(root, TEXT_DS, TEXT_DS_PROBES, corpus="tinystories", **common)
        task_cfg = _text_config(root, TEXT_TASK, TEXT_CORPORA, split="task", corpora=TEXT_CORPORA, **common)
        for cfg, pairs in ((ds_cfg, ds_pairs), (task_cfg, task_pairs)):
            for seed, frac in pairs:
                train(str(cfg), seed, frac, ["--device", "cpu"])
    return built


# ---- changing copies ------------------------------------------------------------------------
def copy_experiment(src: Path, dst_root: Path) -> Path:
    """A writable copy of an experiment folder under dst_root (same name), without results."""
    from repr_sim import measure

    dst = Path(dst_root) / Path(src).name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(measure.RESULT, measure.LOCK, "*.csv",
                                                             "platonic*.json", measure.FEATURES_DIR))
    return dst


def clone_pair(exp: Path, pair: tuple[int, float], seed: int) -> Path:
    """Copy a pair folder to another seed (same models and split, args.json's seed changed):
    a cheap extra pair."""
    from repr_sim import runs as runs_mod

    src = runs_mod.pair_dir(exp, *pair)
    dst = runs_mod.pair_dir(exp, seed, pair[1])
    shutil.copytree(src, dst)
    args = runs_mod.read_json(dst / "args.json")
    args["seed"] = int(seed)
    runs_mod.atomic_write_json(dst / "args.json", args)
    return dst


def self_pair(exp: Path, pair: tuple[int, float], seed: int) -> Path:
    """A copy of a pair whose second checkpoint is the first one (a model against itself)."""
    dst = clone_pair(exp, pair, seed)
    for checkpoint in (dst / "split_0").iterdir():
        if checkpoint.suffix in (".pth", ".pt"):
            twin = dst / "split_1" / checkpoint.name
            twin.unlink()
            twin.symlink_to(checkpoint)
    return dst


# ---- fixtures -------------------------------------------------------------------------------
# Generator bodies for module-scoped fixtures; a test module declares its own fixture with
# them (importing a fixture object would clash with its use as an argument name):
#
#     @pytest.fixture(scope="module")
#     def image_runs(tmp_path_factory):
#         yield from provide_image_runs(tmp_path_factory)
def _shared(tmp_path_factory, name: str) -> Path:
    return tmp_path_factory.getbasetemp() / "run_fixtures" / name


def provide_image_runs(tmp_path_factory) -> Iterator[ImageRuns]:
    """The image runs of this session (built on first use), with the roots set while in use."""
    built = build_image_runs(_shared(tmp_path_factory, "image"))
    with roots(built.data, built.runs):
        yield built


def provide_text_runs(tmp_path_factory) -> Iterator[TextRuns]:
    """The text runs of this session (built on first use), with the roots set while in use."""
    built = build_text_runs(_shared(tmp_path_factory, "text"))
    with roots(built.data, built.runs):
        yield built
