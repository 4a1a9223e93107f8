"""The fine-tuning kind end to end on generated data: a pair trained a few steps through
`reprsim train`, measured, attacked; resume after a kill; bad input as one error line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from repr_sim import cli, runs
from repr_sim.kinds.finetune import tinydata

SIDE = 16
CONFIG = f"""
kind = "finetune"
dataset = "shapes"
betons = "shapes_{SIDE}"
split = "dataset"
arch = "resnet18"
pretrained = "none"
pretrained_file = "weights/tiny_resnet.safetensors"
input_size = 32
fracs = [0.0, 1.0]
seeds = [0]

[model_kwargs]
layers = [1, 1, 1, 1]

[recipe]
epochs = 1
batch_size = 64

[augment]
translate = 2
cutout = 4

[loader]
backend = "memory"

[probes]
sets = ["shapes_{SIDE}"]

[attack]
eps = 0.03
images = 24
batch_size = 16
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data, weights and one trained experiment (two pairs), shared by the tests here."""
    root = tmp_path_factory.mktemp("finetune")
    data, runs_dir = root / "data", root / "runs"
    mp = pytest.MonkeyPatch()
    mp.setenv("REPRSIM_DATA", str(data))
    mp.setenv("REPRSIM_RUNS", str(runs_dir))
    mp.setenv("REPRSIM_VERIFY", "0")
    tinydata.write_images(data, SIDE, probes=False, n_train=256, n_test=64)
    tinydata.write_weights(data)
    config = root / "ft_ds.toml"
    config.write_text(CONFIG)
    for frac in ("0", "1"):
        assert cli.main(["train", str(config), "--seed", "0", "--frac", frac, "--device", "cpu"]) == 0
    yield {"data": data, "runs": runs_dir, "config": config, "exp": runs_dir / "ft_ds"}
    mp.undo()


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_pair_is_trained_with_its_weights_recorded(world):
    pair = world["exp"] / "seed_0" / "frac_0"
    assert runs.is_finished(pair)
    args = json.loads((pair / "args.json").read_text())
    weights = world["data"] / "weights" / "tiny_resnet.safetensors"
    from repr_sim.models.timm_models import sha256

    assert args["weights"]["sha256"] == sha256(weights)
    assert args["num_classes"] == [8, 8]
    for i in (0, 1):
        assert (pair / f"split_{i}" / "checkpoint.pth").is_file()
        assert not (pair / f"split_{i}" / "epoch.pt").exists()


def test_measure_and_attack_write_the_study_files(world, capsys):
    exp = world["exp"]
    assert cli.main(["measure", str(exp), "--device", "cpu"]) == 0
    sim = rows(exp / "platonic_ffcv.csv")
    assert list(sim[0]) == ["seed", "metric", "frac_overlap", "metric_shapes"]
    assert {r["frac_overlap"] for r in sim} == {"0.0", "1.0"}
    acc = rows(exp / "platonic_acc_ffcv.csv")
    assert len(acc) == 4 and all(0 <= float(r["acc"]) <= 1 for r in acc)

    assert cli.main(["attack", str(exp), "--device", "cpu"]) == 0
    study = rows(exp / "transfer_attack.csv")
    assert list(study[0]) == ["seed", "frac_overlap", "normal_asr", "transfer_asr"]
    assert len(study) == 2
    both = rows(exp / "transfer_attack_directions.csv")
    assert {r["direction"] for r in both} == {"A->B", "B->A"}
    for r in both:
        assert r["images"] == "24"
        assert 0 <= float(r["normal_asr"]) <= 1 and 0 <= float(r["transfer_asr"]) <= 1
    # the study's file is the A -> B direction of the companion
    ab = [(r["normal_asr"], r["transfer_asr"]) for r in both if r["direction"] == "A->B"]
    assert ab == [(r["normal_asr"], r["transfer_asr"]) for r in study]

    # resume: one pair's result lost (a killed run) -> only that pair is attacked again
    (exp / "seed_0" / "frac_1" / "attack.json").unlink()
    before = (exp / "transfer_attack.csv").read_bytes()
    capsys.readouterr()
    assert cli.main(["attack", str(exp), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "1 attacked, 1 already attacked" in out
    assert (exp / "transfer_attack.csv").read_bytes() == before  # seeded: same numbers


def test_training_resumes_after_a_kill(world):
    pair = world["exp"] / "seed_0" / "frac_1"
    kept = (pair / "split_0" / "checkpoint.pth").stat().st_mtime_ns
    # as if killed while training model 1: no done marker, no checkpoint of model 1
    (pair / runs.DONE).unlink()
    (pair / "split_1" / "checkpoint.pth").unlink()
    assert cli.main(["train", str(world["config"]), "--seed", "0", "--frac", "1", "--device", "cpu"]) == 0
    assert runs.is_finished(pair)
    assert (pair / "split_0" / "checkpoint.pth").stat().st_mtime_ns == kept
    assert (pair / "split_1" / "checkpoint.pth").is_file()


@pytest.mark.parametrize("change, message", [
    ('split = "dataset"', "split must be one of"),
    ('pretrained_file = "weights/tiny_resnet.safetensors"', "missing pretrained weights file"),
    ('arch = "resnet18"', "unknown timm model"),
    ('input_size = 32', "normalisation must be one of"),
])
def test_bad_input_is_one_error_line(world, tmp_path, capsys, change, message):
    bad = {
        'split = "dataset"': 'split = "sideways"',
        'pretrained_file = "weights/tiny_resnet.safetensors"': 'pretrained_file = "weights/gone.safetensors"',
        'arch = "resnet18"': 'arch = "resnet_nonexistent"',
        'input_size = 32': 'input_size = 32\nnormalisation = "imagenet"',
    }[change]
    config = tmp_path / "bad.toml"
    config.write_text(CONFIG.replace(change, bad, 1))
    capsys.readouterr()
    assert cli.main(["train", str(config), "--seed", "0", "--frac", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (world["runs"] / "bad").exists()


def test_attack_on_a_folder_that_is_not_an_experiment(tmp_path, capsys):
    assert cli.main(["attack", str(tmp_path)]) == 2
    assert "not an experiment folder" in capsys.readouterr().err


# ---- a task split and a label partition, with a random-init tiny ViT -------------------------------
VIT = """
kind = "finetune"
arch = "vit_tiny_patch16_224"
pretrained = "none"
input_size = 16
seeds = [0]

[model_kwargs]
img_size = 16
patch_size = 8
depth = 1
embed_dim = 16
num_heads = 2

[recipe]
epochs = 1
batch_size = 32

[augment]
translate = 1
cutout = 2

[loader]
backend = "memory"

[probes]
sets = []

[attack]
images = 16
batch_size = 16
"""


def test_task_split_pair(world, tmp_path, capsys):
    config = tmp_path / "ft_task.toml"
    config.write_text(f'dataset = "shapes"\nbetons = "shapes_{SIDE}"\nsplit = "task"\n' + VIT)
    assert cli.main(["train", str(config), "--seed", "0", "--frac", "0.5", "--device", "cpu"]) == 0
    exp = world["runs"] / "ft_task"
    pair = exp / "seed_0" / "frac_0.5"
    args = json.loads((pair / "args.json").read_text())
    assert args["num_classes"] == [4, 4]  # 8 shapes, half each
    assert cli.main(["measure", str(exp), "--device", "cpu"]) == 0
    sim = rows(exp / "platonic_ffcv.csv")
    assert list(sim[0])[3:] == ["metric_overlap", "metric_ood_one"]
    assert cli.main(["attack", str(exp), "--device", "cpu"]) == 0
    from repr_sim import splits

    split = splits.load(pair / "split_indices")
    both = rows(exp / "transfer_attack_directions.csv")
    assert both[0]["eps"] == f"{2 / 255:g}"  # the study's task eps
    import numpy as np

    labels = np.asarray(tinydata_labels(world["data"]))
    shared = splits.class_indices(labels, split.shared_classes)
    assert int(both[0]["images"]) == min(16, len(shared))


def tinydata_labels(data: Path):
    from repr_sim.data import betons

    return betons.read_labels(betons.beton_path(f"shapes_{SIDE}", "test", data))


def test_partition_pair(world, tmp_path, capsys):
    import numpy as np

    from repr_sim.data import betons

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 48)):
        images = rng.integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8)
        labels = rng.integers(0, 800, n)
        betons.write_beton(images, labels, betons.beton_path("csd_fake", split, world["data"]),
                           workers=1, info={"dataset": "colorshapedigit", "split": split})
    config = tmp_path / "ft_csd.toml"
    config.write_text('dataset = "colorshapedigit"\nbetons = "csd_fake"\nsplit = "partition"\n'
                      'mode = "none"\nfracs = [0.0]\n' + VIT)
    assert cli.main(["train", str(config), "--seed", "0", "--frac", "0", "--device", "cpu"]) == 0
    exp = world["runs"] / "ft_csd"
    args = json.loads((exp / "seed_0" / "frac_0" / "args.json").read_text())
    assert args["partition"] == "partition1" and args["num_classes"] == [8, 10]
    assert cli.main(["measure", str(exp), "--device", "cpu"]) == 0
    sim = rows(exp / "platonic_ffcv.csv")
    assert list(sim[0]) == ["seed", "metric", "partition", "model0", "model1", "partition_metric"]
    assert [(r["model0"], r["model1"]) for r in sim] == [("shape", "digit")] * 8
    acc = rows(exp / "platonic_acc_ffcv.csv")
    assert [r["model"] for r in acc] == ["shape", "digit"]
    assert all(len(r["acc"].split(".")[1]) == 6 for r in acc)  # the study's 6 decimals
    capsys.readouterr()
    assert cli.main(["attack", str(exp), "--device", "cpu"]) == 0  # partitions are not attacked
    assert "1 skipped" in capsys.readouterr().out
