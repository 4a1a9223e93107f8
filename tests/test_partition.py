"""The label-partition experiment (docs/protocol.md sections 2-4, the study's train_task_only/).

Data: a small ColorShapeDigit tree written by the built-in generator under
$REPRSIM_DATA/ColorShapeDigit800k (the published layout), tiny fake CIFAR-10 / MNIST /
SVHN raw files in their real formats, all turned into betons by the experiment's own
preparation (`train_task_only/prepare_data.py`). Training: the real `reprsim train
partition` for the three partitions of one seed (7 models: the real plain ResNet-18
narrowed to width 4, 1 epoch, the in-memory loader backend, so that no FFCV pipeline is
compiled per model), then the real `reprsim measure`.
"""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from repr_sim import analysis, cli, kinds, summary
from repr_sim.data import augment, betons, fake, partition, registry, shapes
from repr_sim.data.prepare import prepare_partition

torch.set_num_threads(1)  # tiny models: one thread is faster than two on a busy machine

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference" / "plotting_results"
STUDY_HEADER = "seed,metric,partition,model0,model1,cifar10,digit,mnist,partition_metric,shape,svhn"
N_TRAIN, N_VAL, PROBE = 240, 60, 40
FAST = ["--epochs", "1", "--batch-size", "32", "--device", "cpu", "--set", "width=4",
        "--set", 'loader.backend="memory"']


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- label sets and pairs (no data) -----------------------------------------------------------
def test_the_five_pairs_are_protocols():
    assert partition.PAIRS == [
        ("partition1", "shape", "digit"),
        ("partition2", "shape_digit", "shape_color"),
        ("partition2", "shape_digit", "digit_color"),
        ("partition2", "shape_color", "digit_color"),
        ("partition3", "all0", "all1"),
    ]
    assert [len(partition.pairs(p)) for p in partition.PARTITIONS] == [1, 3, 1]
    assert sorted(itertools.chain(*partition.PARTITIONS.values())) == sorted(partition.MODELS)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the study's published files are not beside the project")
def test_the_pairs_and_models_are_those_of_the_published_files():
    import pandas as pd

    sim = pd.read_csv(REFERENCE / "resnet_partition_platonic.csv")
    assert ",".join(sim.columns) == STUDY_HEADER
    published = list(dict.fromkeys(zip(sim.partition, sim.model0, sim.model1, strict=True)))
    assert published == partition.PAIRS
    acc = pd.read_csv(REFERENCE / "resnet_partition_platonic_acc.csv")
    models = list(dict.fromkeys(zip(acc.partition, acc.model, strict=True)))
    assert models == [(p, m) for p, ms in partition.PARTITIONS.items() for m in ms]


def test_fracs_stand_for_the_partitions_as_the_analysis_places_them():
    assert partition.PARTITION_FRACS == analysis.PARTITION_X
    for name, frac in partition.PARTITION_FRACS.items():
        assert partition.partition_of_frac(frac) == name
    with pytest.raises(ValueError, match="0.3 is not a label partition"):
        partition.partition_of_frac(0.3)


def _expected_label(name: str, model: str) -> int:
    """The label of folder `name` for a model, from the definition: the index of the kept
    attributes' joined name among all such names, sorted as strings."""
    shape, digit, color = name.split("_")
    kept = {"shape": [shape], "digit": [digit], "color": [color]}
    attributes = ("shape", "digit", "color") if partition.MODELS[model] == "all" else \
        tuple(partition.MODELS[model].split("_"))
    values = {"shape": shapes.SHAPES, "digit": [str(d) for d in range(10)], "color": shapes.COLORS}
    everything = sorted("_".join(c) for c in itertools.product(*(values[a] for a in attributes)))
    return everything.index("_".join(kept[a][0] for a in attributes))


def test_label_map_of_every_model_follows_the_definition():
    names = shapes.label_names("all")
    for model in partition.MODELS:
        table = partition.label_map(model)
        assert sorted(table) == list(range(800))
        got = [table[i] for i in range(800)]
        assert got == [_expected_label(n, model) for n in names]
        assert len(set(got)) == partition.num_classes(model)
    assert partition.label_map("all0") == partition.label_map("all1") == {i: i for i in range(800)}


def test_the_shipped_config_carries_the_study_recipe():
    cfg = kinds.load("partition")
    assert (cfg["kind"], cfg["dataset"], cfg["arch"], cfg["split"]) == \
        ("partition", "colorshapedigit", "resnet18", "partition")
    assert cfg["fracs"] == [0.0, 0.5, 1.0] and cfg["seeds"] == list(range(10))
    r = cfg["recipe"]
    assert (r["epochs"], r["peak_epoch"], r["batch_size"], r["drop_last"]) == (20, 10, 512, False)
    assert (r["lr"], r["momentum"], r["weight_decay"], r["label_smoothing"]) == (0.5, 0.9, 5e-4, 0.1)
    a = augment.resolve_augment(cfg["augment"])
    assert (a.flip, a.translate, a.cutout, a.jitters()) == (0.5, 2, 4, [])
    # The probe betons the measurement reads are the ones the preparation writes.
    assert sorted(cfg["probes"]["ood"].values()) == sorted(
        registry.beton_name(p, partition.RESOLUTION) for p in partition.PROBES)


def test_the_sweep_is_seeds_times_partitions(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRSIM_RUNS", str(tmp_path))
    assert cli.main(["sweep", "partition", "--dry-run", "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "partition: 3 task(s), 0 done, 3 to run" in out
    for frac in ("0.0", "0.5", "1.0"):
        assert f"reprsim train partition --seed 3 --frac {frac}" in out


# ---- data: the tree, the betons, the label views -------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data root with a generated tree, fake raw CIFAR-10/MNIST/SVHN, and every beton."""
    root = tmp_path_factory.mktemp("partition")
    mp = pytest.MonkeyPatch()
    mp.setenv("REPRSIM_DATA", str(root / "data"))
    mp.setenv("REPRSIM_RUNS", str(root / "runs"))
    mp.setenv("REPRSIM_VERIFY", "0")
    mp.setattr(partition, "PROBE_SIZE", PROBE)
    data = root / "data"
    fake.fake_cifar10(data, 20, 30, seed=1)
    fake.fake_mnist(data, 10, 30, seed=2)
    fake.fake_svhn(data, 10, 30, seed=3)
    written = prepare_partition(data, generate=True, n_train=N_TRAIN, n_val=N_VAL, seed=0,
                                workers=1)
    yield {"root": root, "data": data, "written": written}
    mp.undo()


def test_prepare_writes_every_beton_and_keeps_them(data):
    names = sorted(str(w.path.relative_to(data["data"] / "ffcv")) for w in data["written"])
    assert names == sorted(["colorshapedigit/train.beton", "colorshapedigit/test.beton",
                            "cifar10_28/test.beton", "mnist_28/test.beton", "svhn_28/test.beton",
                            "digit_only/test.beton", "shape_only/test.beton"])
    again = prepare_partition(data["data"], workers=1)  # no --generate needed: nothing to write
    assert [w.written for w in again] == [False] * len(names)
    for name in ("cifar10_28", "mnist_28", "svhn_28", "digit_only", "shape_only"):
        images, _ = betons.load_arrays(betons.beton_path(name, "test"))
        assert images.shape[1:] == (28, 28, 3)
    digit_images, digit_labels = betons.load_arrays(betons.beton_path("digit_only", "test"))
    expected = shapes.digit_only(PROBE, size=28, seed=0)
    assert np.array_equal(digit_images, expected[0]) and np.array_equal(digit_labels, expected[1])


@pytest.mark.parametrize(("split", "folder", "n"), [("train", "train", N_TRAIN), ("test", "val", N_VAL)])
def test_every_image_of_the_tree_gets_its_label_in_every_label_set(data, split, folder, n):
    """Beton row i is the i-th PNG of the tree (class folder, then file name); its labels
    under every model's map are those its folder name defines, and its folder is the one the
    generator drew for that image."""
    images, full = betons.load_arrays(betons.beton_path("colorshapedigit", split))
    files = sorted((data["data"] / "ColorShapeDigit800k" / "partition3" / folder).glob("*/*.png"))
    assert len(files) == len(images) == n
    gen_split = {"train": "train", "test": "val"}[split]
    _, _, attrs = shapes.generate(n, size=28, seed=0, label="all", split=gen_split)
    maps = {m: partition.label_map(m) for m in partition.MODELS}
    for i, path in enumerate(files):
        name = path.parent.name
        assert np.array_equal(images[i], np.asarray(Image.open(path).convert("RGB")))
        index = int(path.stem)  # the image's position in the generator's stream
        assert name == shapes.class_name(attrs["shape"][index], attrs["digit"][index],
                                         attrs["color"][index])
        for model, table in maps.items():
            assert table[int(full[i])] == _expected_label(name, model), (path, model)


def test_an_unknown_folder_name_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRSIM_DATA", str(tmp_path))
    base = tmp_path / "ColorShapeDigit800k" / "partition3"
    for folder, cls in (("train", "circle_7_blue"), ("train", "circle_7_blu"), ("val", "star_1_red")):
        (base / folder / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(base / folder / cls / "0.png")
    assert cli.main(["write-data", "colorshapedigit", "--workers", "1"]) == 2
    line = one_error_line(capsys)
    assert "circle_7_blu" in line and "unknown class folder" in line
    assert not (tmp_path / "ffcv" / "colorshapedigit" / "train.beton").exists()


def test_preparing_without_a_tree_is_one_clear_error(tmp_path, capsys):
    script = REPO / "train_task_only" / "prepare_data.py"
    out = subprocess.run([sys.executable, str(script), "--data-root", str(tmp_path)],
                         capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no ColorShapeDigit800k tree" in lines[0] and "--generate" in lines[0]


# ---- a tiny run: train the 7 models, measure, read the files -------------------------------------
@pytest.fixture(scope="module")
def measured(data):
    for frac in ("0", "0.5", "1"):
        assert cli.main(["train", "partition", "--seed", "0", "--frac", frac, *FAST]) == 0
    exp = data["root"] / "runs" / "partition"
    assert cli.main(["measure", str(exp), "--batch-size", "64", "--save-features",
                     "--workers", "1"]) == 0
    return exp


def test_each_partition_folder_holds_its_models(measured):
    for part, frac in partition.PARTITION_FRACS.items():
        folder = measured / "seed_0" / f"frac_{frac:g}"
        args = json.loads((folder / "args.json").read_text())
        names = list(partition.PARTITIONS[part])
        assert (args["partition"], args["models"], args["kind"]) == (part, names, "partition")
        assert args["num_classes"] == [partition.num_classes(m) for m in names]
        assert (folder / "done").is_file() and not (folder / "split_indices").exists()
        for i, name in enumerate(names):
            state = torch.load(folder / f"split_{i}" / "checkpoint.pth", weights_only=True)
            assert state["fc.weight"].shape[0] == {"shape": 8, "digit": 10, "shape_digit": 80,
                                                  "shape_color": 80, "digit_color": 100,
                                                  "all0": 800, "all1": 800}[name]
            assert state["conv1.weight"].shape[-1] == 7  # the plain 7x7 stem
    all0, all1 = (torch.load(measured / "seed_0" / "frac_1" / f"split_{i}" / "checkpoint.pth",
                             weights_only=True) for i in (0, 1))
    assert not torch.equal(all0["conv1.weight"], all1["conv1.weight"])  # two models, two seeds


def test_the_result_files_have_the_study_schemas(measured):
    sim_path, acc_path = measured / "platonic_ffcv.csv", measured / "platonic_acc_ffcv.csv"
    lines = sim_path.read_text().splitlines()
    assert lines[0] == STUDY_HEADER
    keys = [tuple(row.split(",")[:5]) for row in lines[1:]]
    from repr_sim.metrics import METRICS

    assert keys == [("0", m, p, a, b) for p, a, b in partition.PAIRS for m in METRICS]
    acc_lines = acc_path.read_text().splitlines()
    assert acc_lines[0] == "seed,partition,model,acc"
    assert [tuple(r.split(",")[:3]) for r in acc_lines[1:]] == \
        [("0", p, m) for p, ms in partition.PARTITIONS.items() for m in ms]
    sim, acc = analysis.read_result(sim_path), analysis.read_result(acc_path)
    assert (sim.kind, sim.split, acc.kind) == ("partition", "partition", "partition_accuracy")
    assert sim.value_columns[:4] == analysis.PARTITION_PROBES
    values = sim.data[list(sim.value_columns)].to_numpy()
    assert np.isfinite(values).all() and (values != -1).all()
    assert acc.data["acc"].between(0, 1).all()
    meta = json.loads(sim_path.with_suffix(".json").read_text())
    assert (meta["arch"], meta["kind"], meta["dataset"]) == ("resnet", "partition", "colorshapedigit")


def test_accuracy_is_each_model_on_its_own_labels(measured):
    """Recomputed here from the checkpoints: argmax of the model on the val images against
    the val labels mapped through that model's label set."""
    from repr_sim import models
    from repr_sim.data.loaders import ArrayLoader

    images, full = betons.load_arrays(betons.beton_path("colorshapedigit", "test"))
    rows = [r.split(",") for r in (measured / "platonic_acc_ffcv.csv").read_text().splitlines()[1:]]
    for _, part, name, acc in rows:
        folder = measured / "seed_0" / f"frac_{partition.PARTITION_FRACS[part]:g}"
        model = models.build("resnet18", partition.num_classes(name), width=4)
        model.load_state_dict(torch.load(folder / f"split_{partition.PARTITIONS[part].index(name)}"
                                         / "checkpoint.pth", weights_only=True))
        model.eval()
        x = next(iter(ArrayLoader(images, full, batch_size=len(images), train=False)))[0]
        with torch.no_grad():
            pred = model(x).argmax(1).numpy()
        table = partition.label_map(name)
        target = np.array([table[int(v)] for v in full])
        assert float(acc) == pytest.approx(float((pred == target).mean()), abs=1e-12)


def test_saved_features_are_the_scored_ones_and_probes_are_shared(measured):
    """Every model of a partition has features on the same inputs; CKA in the file is the
    metric of the saved features (so the pairs are scored from the right models)."""
    from repr_sim.metrics import prepare, score

    folder = measured / "seed_0" / "frac_0.5"
    sim = analysis.read_result(measured / "platonic_ffcv.csv").data
    for column in ("partition_metric", "cifar10", "digit", "shape"):
        feats = [np.load(folder / "features" / f"{column}_model{i}.npy") for i in (1, 2, 3)]
        assert len({f.shape for f in feats}) == 1
        names = partition.PARTITIONS["partition2"]
        for a, b in partition.pairs("partition2"):
            fa, fb = (torch.from_numpy(feats[names.index(m)]) for m in (a, b))
            row = sim[(sim.metric == "cka") & (sim.model0 == a) & (sim.model1 == b)]
            assert float(row[column].iloc[0]) == pytest.approx(
                score("cka", prepare(fa), prepare(fb)), abs=2e-6)


def test_measuring_again_changes_nothing(measured):
    before = {p.name: p.read_bytes() for p in measured.glob("platonic*")}
    assert cli.main(["measure", str(measured), "--batch-size", "64", "--save-features",
                     "--workers", "1"]) == 0
    assert {p.name: p.read_bytes() for p in measured.glob("platonic*")} == before


def test_the_summary_places_the_files_under_task_overlap(measured, tmp_path):
    for name in ("platonic_ffcv", "platonic_acc_ffcv"):
        for suffix in (".csv", ".json"):
            (tmp_path / f"partition_{name}{suffix}").write_bytes((measured / f"{name}{suffix}").read_bytes())
    result = summary.summarize(tmp_path)
    placed = result.files.set_index("file")["placed_in"]
    assert placed["partition_platonic_ffcv.csv"] == "Task Overlap"
    assert placed["partition_platonic_acc_ffcv.csv"] == summary.ACCURACY_TABLE
    assert np.isfinite(result.mi.loc["mutual_information", "Task Overlap"])
    assert list(result.acc["label_set"]) == [  # all0 and all1: one label set
        "partition1: shape", "partition1: digit", "partition2: shape_digit",
        "partition2: shape_color", "partition2: digit_color", "partition3: all"]


def test_a_frac_that_is_no_partition_is_one_clear_error(data, capsys):
    assert cli.main(["train", "partition", "--seed", "0", "--frac", "0.3", *FAST]) == 2
    assert "0.3 is not a label partition" in one_error_line(capsys)
