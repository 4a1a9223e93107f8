"""`reprsim train` for image experiments: schedule, run folder, splits, resume, bad input.

Data: tiny CIFAR-10 betons (8x8 images, balanced classes) written by the data module's
`write_beton` where `reprsim write-data cifar10` puts them, then trained with the real
architecture (CIFAR ResNet-18, width 64) through real FFCV loaders on the CPU, from the
shipped configs. FFCV compiles every loader pipeline on first use (10-30 s for one with
the study's augmentations on this machine, a few seconds without), so only the task pair
trains with the augmentation (the shipped table, cutout and translate scaled to the 8 px
images); the dataset pair and the killed-and-resumed pair switch it off (the
augmentation itself is the data module's and is tested there).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import requires_cuda

from repr_sim import cli, experiments, kinds, models, runs, splits
from repr_sim.data import augment, betons
from repr_sim.kinds.image import train as image
from repr_sim.kinds.schedule import Triangular

torch.set_num_threads(2)

N_TRAIN_PER_CLASS, N_TEST_PER_CLASS = 8, 2
FAST = ["--epochs", "1", "--batch-size", "16", "--workers", "1", "--device", "cpu"]
NO_AUGMENT = [f"--set=augment.{k}=0" for k in ("flip", "jitter_p", "translate", "cutout")]
PAIR_FILES = {"args.json", "done", "status.json", "split_indices/a.npy", "split_indices/b.npy",
              "split_indices/shared.npy", "split_indices/split.json",
              "split_0/checkpoint.pth", "split_0/log.txt", "split_1/checkpoint.pth",
              "split_1/log.txt"}


SIDE = 8  # tiny images: the CIFAR ResNet runs on any side >= 8 (layer4 at 1x1)


def balanced(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), n_per_class)).astype(np.int64)
    images = rng.integers(0, 256, size=(len(labels), SIDE, SIDE, 3), dtype=np.uint8)
    return images, labels


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Data and runs roots for the module, with tiny cifar10 train and test betons."""
    root = tmp_path_factory.mktemp("train")
    mp = pytest.MonkeyPatch()
    mp.setenv("REPRSIM_DATA", str(root / "data"))
    mp.setenv("REPRSIM_RUNS", str(root / "runs"))
    mp.setenv("REPRSIM_VERIFY", "0")
    train, test = balanced(N_TRAIN_PER_CLASS, 0), balanced(N_TEST_PER_CLASS, 1)
    for part, (images, labels) in (("train", train), ("test", test)):
        betons.write_beton(images, labels, betons.beton_path("cifar10", part), workers=1,
                           info={"dataset": "cifar10", "split": part})
    yield {"root": root, "train": train, "test": test}
    mp.undo()


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- schedule (no data) -------------------------------------------------------------------
def test_schedule_study_shape():
    s = Triangular.from_epochs(50, 100, 10)  # 5000 iterations, peak at 1000
    assert (s.total, s.peak) == (5000, 1000)
    assert s(0) == 0.0 and s(1000) == 1.0 and s(5000) == 0.0
    assert s(500) == 0.5 and s(1) == 1 / 1000
    assert s(3000) == 0.5 and s(4999) == 1 / 4000


def test_schedule_short_run_peaks_at_20_percent():
    s = Triangular.from_epochs(5, 10, 10)  # epochs <= peak epoch: peak at 20% of 50
    assert (s.total, s.peak) == (50, 10)
    assert s(5) == 0.5 and s(10) == 1.0 and s(30) == 0.5 and s(50) == 0.0
    assert Triangular.from_epochs(10, 10, 10).peak == 20  # equal counts as short
    assert Triangular.from_epochs(11, 10, 10).peak == 100
    tiny = Triangular.from_epochs(1, 2, 10)  # 2 iterations: peak round(0.4) = 0
    assert (tiny.peak, tiny(0), tiny(1)) == (0, 1.0, 0.5)
    with pytest.raises(ValueError):
        Triangular(total=0, peak=0)


# ---- the shipped configs (no data) ----------------------------------------------------------
STUDY = {"cifar10": (10, "resnet18_cifar", 8, 10, 32), "cifar100": (100, "resnet18_cifar", 8, 10, 32),
         "tinyimagenet": (200, "resnet18", 12, 16, 64)}


@pytest.mark.parametrize("dataset", sorted(STUDY))
@pytest.mark.parametrize("split", ["ds", "task"])
def test_shipped_configs_carry_the_study_values(dataset, split):
    from repr_sim.data import registry

    classes, arch, translate, cutout, side = STUDY[dataset]
    cfg = kinds.load(f"{dataset}_{split}")
    image.check_config(cfg)
    assert (cfg["kind"], cfg["dataset"], cfg["arch"], cfg["mode"]) == ("image", dataset, arch, "constrained")
    assert cfg["split"] == ("dataset" if split == "ds" else "task")
    step = 10 if split == "ds" else 5
    assert cfg["fracs"] == [i / step for i in range(step + 1)] and cfg["seeds"] == list(range(10))
    assert cfg["recipe"] == {"epochs": 50, "batch_size": 512, "drop_last": True, "lr": 0.5,
                             "peak_epoch": 10, "momentum": 0.9, "nesterov": False,
                             "weight_decay": 5e-4, "label_smoothing": 0.1}
    assert registry.get(dataset).num_classes == classes
    aug = augment.resolve_augment(cfg["augment"])  # the loader accepts the table as written
    assert (aug.flip, aug.brightness, aug.contrast, aug.saturation, aug.jitter_p) == (0.5, 0.2, 0.2, 0.3, 0.3)
    assert (aug.translate, aug.cutout, aug.fill) == (translate, cutout, (125, 122, 113))
    # Probe betons are named as the data writer names them at the model's resolution.
    assert cfg["probes"]["ood"] == [registry.beton_name(n, side) for n in ("mnist", "svhn")]


# ---- one pair, dataset split, the shipped config --------------------------------------------
@pytest.fixture(scope="module")
def dataset_pair(env):
    """cifar10_ds (the shipped config), seed 0, frac 0.5, 1 epoch, no augmentation."""
    argv = ["train", "cifar10_ds", "--seed", "0", "--frac", "0.5", *FAST, *NO_AUGMENT]
    assert cli.main(argv) == 0
    cfg = kinds.load("cifar10_ds")
    return runs.pair_dir(experiments.experiment_dir(cfg), 0, 0.5), argv


def test_dataset_pair_folder_is_complete(env, dataset_pair):
    folder, _ = dataset_pair
    assert folder == Path(os.environ["REPRSIM_RUNS"]) / "cifar10_ds" / "seed_0" / "frac_0.5"
    assert files(folder) == PAIR_FILES
    args = runs.read_json(folder / "args.json")
    assert args["experiment"] == "cifar10_ds" and args["kind"] == "image"
    assert (args["seed"], args["frac"], args["num_classes"]) == (0, 0.5, [10, 10])
    assert args["arch"] == "resnet18_cifar" and args["dataset"] == "cifar10"
    assert args["config"]["recipe"]["epochs"] == 1 and args["config"]["recipe"]["batch_size"] == 16
    assert args["config"]["augment"]["cutout"] == 0  # --set reached the resolved config
    assert args["config"]["augment"]["brightness"] == 0.2  # the rest is the shipped table
    for key in ("version", "git_commit", "host", "start_time", "end_time"):
        assert key in args
    assert args["end_time"] >= args["start_time"]


def test_dataset_pair_split_equals_a_recomputed_split(env, dataset_pair):
    folder, _ = dataset_pair
    labels = env["train"][1]
    expected = splits.dataset_split(labels, 0.5, mode="constrained", seed=0)
    assert splits.load(folder / "split_indices") == expected
    # The beton's label field is the raw labels, so the split is the split of the dataset.
    np.testing.assert_array_equal(betons.read_labels(betons.beton_path("cifar10", "train")), labels)
    assert len(expected.a) == 10 * (N_TRAIN_PER_CLASS // 2)


def test_dataset_pair_checkpoints_and_logs(env, dataset_pair):
    folder, _ = dataset_pair
    iters = (10 * N_TRAIN_PER_CLASS // 2) // 16  # 40 images per model, drop-last
    schedule = Triangular.from_epochs(1, iters, 10)
    for i in (0, 1):
        state = torch.load(folder / f"split_{i}" / "checkpoint.pth", weights_only=True)
        model = models.build("resnet18_cifar", 10)
        model.load_state_dict(state)  # strict: every key, every shape
        rows = log_rows(folder / f"split_{i}" / "log.txt")
        assert [r["epoch"] for r in rows] == [1]
        assert rows[0]["step"] == iters
        assert rows[0]["lr"] == pytest.approx(0.5 * schedule(iters - 1))
        assert 0.0 <= rows[0]["test_acc"] <= 1.0 and 0.0 <= rows[0]["train_acc"] <= 1.0
        assert rows[0]["time_s"] > 0
    first = torch.load(folder / "split_0" / "checkpoint.pth", weights_only=True)
    second = torch.load(folder / "split_1" / "checkpoint.pth", weights_only=True)
    assert not torch.equal(first["fc.weight"], second["fc.weight"])  # two models, two seeds


def test_loaders_select_each_models_indices(env, dataset_pair):
    folder, _ = dataset_pair
    cfg = kinds.load("cifar10_ds")
    split = splits.load(folder / "split_indices")
    test_labels = env["test"][1]
    for i, indices in ((0, split.a), (1, split.b)):
        data = image.model_data(cfg, split, i, test_labels)
        np.testing.assert_array_equal(data.train_indices, indices)
        assert data.test_indices is None and data.label_map is None  # the whole test set


def test_finished_pair_is_skipped(env, dataset_pair, capsys):
    folder, argv = dataset_pair
    before = {name: (folder / name).stat().st_mtime_ns for name in PAIR_FILES}
    assert cli.main(argv) == 0
    assert "already trained, skipping" in capsys.readouterr().out
    assert {name: (folder / name).stat().st_mtime_ns for name in PAIR_FILES} == before
    # The library entry point skips too.
    cfg = kinds.load("cifar10_ds")
    assert image.train_pair(cfg, 0, 0.5, device="cpu") == folder
    assert {name: (folder / name).stat().st_mtime_ns for name in PAIR_FILES} == before


def test_resume_refuses_another_config(env, dataset_pair, capsys):
    folder, _ = dataset_pair
    other = folder.parent / "frac_0.25"  # an interrupted pair started with --epochs 1
    other.mkdir()
    args = runs.read_json(folder / "args.json")
    args["frac"] = 0.25
    runs.atomic_write_json(other / "args.json", args)
    code = cli.main(["train", "cifar10_ds", "--seed", "0", "--frac", "0.25", "--epochs", "3",
                     "--batch-size", "16", "--device", "cpu", *NO_AUGMENT])
    assert code == 2
    line = one_error_line(capsys)
    assert "another config" in line and "recipe.epochs: 1 then, 3 now" in line
    assert not (other / "split_0").exists()


# ---- task split -------------------------------------------------------------------------------
def test_task_pair_and_its_label_maps(env):
    argv = ["train", "cifar10_task", "--seed", "3", "--frac", "0.4", *FAST,
            "--set", "augment.cutout=4", "--set", "augment.translate=2"]
    assert cli.main(argv) == 0
    folder = runs.pair_dir(experiments.experiment_dir(kinds.load("cifar10_task")), 3, 0.4)
    cfg = runs.read_json(folder / "args.json")["config"]  # the config as trained
    assert cfg["recipe"]["batch_size"] == 16 and cfg["augment"]["flip"] == 0.5
    assert files(folder) == PAIR_FILES
    train_labels, test_labels = env["train"][1], env["test"][1]
    split = splits.load(folder / "split_indices")
    assert split == splits.task_split(train_labels, 0.4, mode="constrained", seed=3)
    assert len(split.shared_classes) == 2  # round(0.4 * 5)
    assert runs.read_json(folder / "args.json")["num_classes"] == [5, 5]
    for i, (classes, label_map, train_idx) in enumerate(
            ((split.classes_a, split.label_map_a, split.a), (split.classes_b, split.label_map_b, split.b))):
        state = torch.load(folder / f"split_{i}" / "checkpoint.pth", weights_only=True)
        assert state["fc.weight"].shape == (5, 512)  # a c-way head
        data = image.model_data(cfg, split, i, test_labels)
        assert data.num_classes == 5 and data.label_map == label_map
        np.testing.assert_array_equal(data.test_indices, splits.class_indices(test_labels, classes))
        # What the trainer's own loaders yield: labels mapped into 0..c-1.
        train_loader, test_loader = image.make_loaders(cfg, data, device="cpu",
                                                       seed=image.model_seed(3, i))
        test_seen = torch.cat([y for _, y in test_loader]).numpy()
        expected_test = splits.relabel(test_labels[data.test_indices], label_map)
        np.testing.assert_array_equal(test_seen, expected_test)  # sequential order
        train_seen = torch.cat([y for _, y in train_loader]).numpy()
        assert set(train_seen.tolist()) <= set(range(5))
        assert len(train_seen) == (len(train_idx) // 16) * 16  # drop-last
        expected_train = Counter(splits.relabel(train_labels[train_idx], label_map).tolist())
        assert not Counter(train_seen.tolist()) - expected_train  # a sub-multiset of the relabelled split


# ---- resume after a kill ---------------------------------------------------------------------
def test_killed_run_resumes_and_matches_an_uninterrupted_one(env, dataset_pair, capsys):
    reference, _ = dataset_pair
    epochs, frac = 3, 0.3
    argv = [sys.executable, "-m", "repr_sim", "train", "cifar10_ds", "--seed", "1", "--frac",
            str(frac), "--epochs", str(epochs), "--batch-size", "16", "--workers", "1",
            "--device", "cpu", *NO_AUGMENT]
    cfg = kinds.load("cifar10_ds")
    folder = runs.pair_dir(experiments.experiment_dir(cfg), 1, frac)
    epoch_file = folder / "split_1" / image.EPOCH_FILE

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not epoch_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the hardest interruption
    out, _ = proc.communicate(timeout=60)
    assert epoch_file.exists(), out
    assert not runs.is_done(folder) and not (folder / "split_1" / "checkpoint.pth").exists()
    saved = torch.load(epoch_file, weights_only=True)  # tensors and plain data only
    done_epochs = saved["epoch"]
    assert 1 <= done_epochs < epochs and saved["log"][-1]["epoch"] == done_epochs
    kept = sha(folder / "split_0" / "checkpoint.pth")

    # The rerun in this process (FFCV is imported already; a second interpreter would
    # only add its start-up time).
    assert cli.main(argv[3:]) == 0
    rerun = capsys.readouterr().out
    assert "split_0: already trained, keeping it" in rerun
    assert f"resuming after epoch {done_epochs} of {epochs}" in rerun
    assert runs.is_done(folder)
    assert files(folder) == files(reference) == PAIR_FILES  # no epoch or temporary files left
    assert sha(folder / "split_0" / "checkpoint.pth") == kept
    rows = log_rows(folder / "split_1" / "log.txt")
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert rows[:done_epochs] == saved["log"]  # the epochs before the kill are kept as logged
    # The schedule continued where it stopped: 2 iterations per epoch, total 6, peak at
    # round(0.2 * 6) = 1; the last step of each epoch is step 1, 3, 5.
    iters = (10 * N_TRAIN_PER_CLASS // 2) // 16
    assert [r["step"] for r in rows] == [iters * (e + 1) for e in range(epochs)]
    hand = [1.0, 3 / 5, 1 / 5]
    assert [r["lr"] for r in rows] == pytest.approx([0.5 * f for f in hand])
    args = runs.read_json(folder / "args.json")
    assert len(args["resumed"]) == 1 and args["end_time"] is not None


def state_of(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_reuse_models_copies_model_a_of_a_dataset_split(env, capsys):
    """With reuse_models, model A of a dataset split (its images do not depend on the
    fraction) is trained once per seed and copied to the seed's other fractions; the copy
    equals what training it again gives (CPU training is deterministic), model B is
    trained, and the copy is recorded. Without the option nothing is copied."""
    reuse = [*FAST, *NO_AUGMENT, "--set", "reuse_models=true", "--set", "name=reuse_ds"]
    for frac in ("0", "0.5"):
        assert cli.main(["train", "cifar10_ds", "--seed", "3", "--frac", frac, *reuse]) == 0
    out = capsys.readouterr().out
    base = Path(os.environ["REPRSIM_RUNS"]) / "reuse_ds" / "seed_3"
    first, second = base / "frac_0", base / "frac_0.5"
    assert f"{second / 'split_0'}: the same training as {first / 'split_0'}; copied it" in out
    assert sha(second / "split_0" / "checkpoint.pth") == sha(first / "split_0" / "checkpoint.pth")
    assert (second / "split_0" / "log.txt").read_bytes() == (first / "split_0" / "log.txt").read_bytes()
    args = runs.read_json(second / "args.json")
    assert args["reused_models"] == {"split_0": "seed_3/frac_0/split_0"}
    assert "reused_models" not in runs.read_json(first / "args.json")
    assert runs.is_finished(second)
    assert sha(second / "split_1" / "checkpoint.pth") != sha(first / "split_1" / "checkpoint.pth")

    # The same pair trained from scratch without the option: model A equal tensor by tensor.
    plain = [*FAST, *NO_AUGMENT, "--set", "name=plain_ds"]
    assert cli.main(["train", "cifar10_ds", "--seed", "3", "--frac", "0.5", *plain]) == 0
    fresh = Path(os.environ["REPRSIM_RUNS"]) / "plain_ds" / "seed_3" / "frac_0.5"
    a, b = state_of(fresh / "split_0" / "checkpoint.pth"), state_of(second / "split_0" / "checkpoint.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (fresh / "split_0" / "model_key.json").exists()  # the option off: no key files
    assert "reused_models" not in runs.read_json(fresh / "args.json")


def test_reuse_models_never_copies_a_model_trained_on_other_labels(env, capsys):
    """Task split: model A's classes are numbered differently at each fraction (shared ones
    first), so its key differs and it is trained at every fraction."""
    reuse = [*FAST, *NO_AUGMENT, "--set", "reuse_models=true", "--set", "name=reuse_task"]
    for frac in ("0.2", "0.6"):
        assert cli.main(["train", "cifar10_task", "--seed", "0", "--frac", frac, *reuse]) == 0
    assert "copied it" not in capsys.readouterr().out
    base = Path(os.environ["REPRSIM_RUNS"]) / "reuse_task" / "seed_0"
    keys = [runs.read_json(base / f / "split_0" / "model_key.json")["key"] for f in ("frac_0.2", "frac_0.6")]
    assert keys[0] != keys[1]


def test_training_output_off_a_terminal_has_no_bar_frames(env):
    """`reprsim train` into a file or pipe (a SLURM log): the per-epoch lines, no tqdm
    carriage-return frames, also when TQDM_DISABLE is not set."""
    environ = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    argv = [sys.executable, "-m", "repr_sim", "train", "cifar10_ds", "--seed", "4", "--frac",
            "0.5", "--set", "name=no_bars", *FAST, *NO_AUGMENT]
    out = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout + out.stderr
    assert "no_bars seed 4 frac 0.5 model 0 epoch 1/1: train acc" in out.stdout


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_exit_2(env, tmp_path, monkeypatch, capsys):
    def fails(*argv, expect):
        assert cli.main(["train", *argv]) == 2
        line = one_error_line(capsys)
        assert expect in line, line
        return line

    pair = ["--seed", "5", "--frac", "0.5"]
    fails("no_such_exp", *pair, expect="unknown experiment 'no_such_exp'")
    fails("cifar10_ds", "--seed", "5", "--frac", "1.5", expect="fraction 1.5 outside [0, 1]")
    fails("cifar10_ds", *pair, "--iters", "3", expect="--iters does not apply to image experiments")
    fails("cifar10_ds", *pair, "--epochs", "0", expect="--epochs must be positive")
    fails("cifar10_ds", *pair, "--set", "recipe.lr=-1", "--device", "cpu",
          expect="recipe.lr must be a non-negative number")
    fails("cifar10_ds", *pair, "--set", "augment.flip=2", "--device", "cpu",
          expect="augment.flip must be a probability")
    fails("cifar10_ds", "--seed", "-1", "--frac", "0.5", expect="--seed must be >= 0")
    if not torch.cuda.is_available():
        fails("cifar10_ds", *pair, "--device", "cuda", expect="no CUDA device")

    # A data root without betons: the error says which file and which command writes it.
    monkeypatch.setenv("REPRSIM_DATA", str(tmp_path / "empty"))
    line = fails("cifar10_ds", *pair, "--device", "cpu", expect="missing beton")
    assert str(tmp_path / "empty" / "ffcv" / "cifar10" / "train.beton") in line
    assert "bash train_cifar_ffcv/run_write_ffcv_data.sh" in line and "reprsim write-data cifar10" in line

    # Damaged betons: a truncated copy of the real train beton; garbage for the test part.
    corrupt = tmp_path / "corrupt"
    for part in ("train", "test"):
        path = betons.beton_path("cifar10", part, corrupt)
        path.parent.mkdir(parents=True, exist_ok=True)
        good = betons.beton_path("cifar10", part, env["root"] / "data").read_bytes()
        path.write_bytes(good[: len(good) // 3] if part == "train" else b"\x00garbage" * 100)
    monkeypatch.setenv("REPRSIM_DATA", str(corrupt))
    line = fails("cifar10_ds", *pair, "--device", "cpu", expect="train.beton")
    assert "not a valid FFCV beton" in line or "corrupt beton" in line
    # Nothing was written for the pair by any of the failures.
    assert not runs.pair_dir(experiments.experiment_dir(kinds.load("cifar10_ds")), 5, 0.5).exists()


def test_batch_larger_than_a_model_subset_is_a_clear_error(env, capsys):
    code = cli.main(["train", "cifar10_ds", "--seed", "2", "--frac", "0.5", "--epochs", "1",
                     "--batch-size", "64", "--device", "cpu"])
    assert code == 2
    assert "40 training images, fewer than one batch of 64" in one_error_line(capsys)
    assert not runs.pair_dir(experiments.experiment_dir(kinds.load("cifar10_ds")), 2, 0.5).exists()


# ---- CUDA ----------------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.parametrize("backend", ["ffcv", "memory"])
def test_cuda_pair_trains_with_amp_and_channels_last(env, backend):
    """The study's loaders (FFCV, skipped where FFCV is not installed) and the in-memory
    backend over the same betons (written without FFCV there: betons.py's own writer)."""
    if backend == "ffcv":
        pytest.importorskip("ffcv.loader", reason="FFCV is not installed: the ffcv loader "
                            "backend cannot run here (the memory backend case still does)")
    argv = ["train", "cifar10_ds", "--seed", "4", "--frac", "0.5", "--epochs", "2",
            "--batch-size", "16", "--workers", "1", "--device", "cuda",
            "--set=augment.cutout=4", "--set=augment.translate=2",  # scaled to the 8 px images
            f"--set=loader.backend={backend}", f"--set=name=cuda_{backend}"]
    assert cli.main(argv) == 0
    folder = runs.pair_dir(Path(os.environ["REPRSIM_RUNS"]) / f"cuda_{backend}", 4, 0.5)
    assert files(folder) == PAIR_FILES
    state = torch.load(folder / "split_0" / "checkpoint.pth", weights_only=True)
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in state.values())
    assert runs.read_json(folder / "args.json")["device"] == "cuda"
    models.build("resnet18_cifar", 10).load_state_dict(state)
