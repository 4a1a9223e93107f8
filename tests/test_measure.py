"""`reprsim measure` on image experiments: schemas, consistency, resume, concurrency, bad input.

Run folders: pairs of the shipped cifar10_ds and cifar10_task configs trained by the real
trainer for one epoch on tiny betons (tests/_run_fixtures.py), copied before anything
changes them. Extra pairs are copies of real ones under other seeds (same models): a
"self" pair's second checkpoint is a link to its first, so it scores a model against
itself. Every run measures with one CPU thread (--workers 1: tiny batches gain nothing from
more, and a shared machine stalls them), so results are comparable bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _run_fixtures as fixtures
import numpy as np
import pytest
import torch
from _run_fixtures import (
    TEST_PER_CLASS,
    WIDTH,
    clone_pair,
    copy_experiment,
    csv_rows,
    provide_image_runs,
    self_pair,
)
from conftest import requires_cuda

from repr_sim import analysis, features, measure, models, runs, splits
from repr_sim.data import betons, registry
from repr_sim.metrics import METRICS

torch.set_num_threads(2)
RUN = ["--workers", "1", "--device", "cpu"]
DS_HEADER = "seed,metric,frac_overlap,metric_overlap,metric_ood_all_mnist,metric_ood_all_svhn"
TASK_HEADER = ("seed,metric,frac_overlap,metric_overlap,metric_ood_one,metric_ood_all_mnist,"
               "metric_ood_all_svhn")
ACC_HEADER = "seed,frac_overlap,model_idx,acc"
K = 10
RANGES = {"cycle_knn": (0, 1), "mutual_knn": (0, 1), "lcs_knn": (0, K), "cka": (0, 1),
          "unbiased_cka": (-1, 1), "cknna": (-1, 1), "svcca": (0, 1), "edit_distance_knn": (0, 1)}
SELF_SEED = 7


def run_measure(*argv) -> int:
    return fixtures.run_measure(RUN, *argv)


def stamp(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def pairs_of(exp: Path) -> list[Path]:
    return [p for _, _, p in runs.iter_pairs(exp)]


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory):
    yield from provide_image_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def measured(image_runs, tmp_path_factory):
    """Copies of both experiments plus a self pair each, measured once with --save-features."""
    root = tmp_path_factory.mktemp("measured")
    ds, task = copy_experiment(image_runs.ds, root), copy_experiment(image_runs.task, root)
    self_pair(ds, (0, 0.5), SELF_SEED)
    self_pair(task, (0, 0.6), SELF_SEED)
    assert run_measure(ds, task, "--save-features") == 0
    return {"ds": ds, "task": task}


def fresh(image_runs, tmp_path: Path, name: str = "ds") -> Path:
    return copy_experiment(getattr(image_runs, name), tmp_path)


# ---- schemas ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ds", "task"])
def test_similarity_schema_rows_and_ranges(measured, name):
    exp = measured[name]
    header, rows = csv_rows(exp / "platonic_ffcv.csv")
    assert header == (DS_HEADER if name == "ds" else TASK_HEADER)
    pairs = [(int(runs.read_json(p / "args.json")["seed"]), p) for p in pairs_of(exp)]
    assert len(rows) == 8 * len(pairs)  # one row per metric per pair
    for (seed, pair), start in zip(pairs, range(0, len(rows), 8), strict=True):
        block = rows[start:start + 8]
        assert [r[1] for r in block] == list(METRICS)  # metrics in METRICS order
        assert {r[0] for r in block} == {str(seed)}
        assert {r[2] for r in block} == {repr(splits.load(pair / "split_indices").overlap)}
        for row in block:
            for value in row[3:]:
                assert len(value.split(".")[1]) == 6  # 6 decimals
                v = float(value)
                if v != -1.0:
                    lo, hi = RANGES[row[1]]
                    assert lo - 1e-6 <= v <= hi + 1e-6, (row, value)
    keys = [(int(r[0]), float(r[2])) for r in rows[::8]]
    assert keys == sorted(keys)  # sorted by seed, then frac


def test_accuracy_schema(measured):
    for name in ("ds", "task"):
        header, rows = csv_rows(measured[name] / "platonic_acc_ffcv.csv")
        assert header == ACC_HEADER
        assert len(rows) == 2 * len(pairs_of(measured[name]))
        assert [r[2] for r in rows] == ["1", "2"] * (len(rows) // 2)
        for r in rows:
            assert r[3] == "-1" or 0.0 <= float(r[3]) <= 1.0


def test_minus_one_exactly_where_a_probe_set_is_empty(measured):
    _, rows = csv_rows(measured["task"] / "platonic_ffcv.csv")
    cols = TASK_HEADER.split(",")
    for row in rows:
        frac = float(row[2])
        for col, value in zip(cols[3:], row[3:], strict=True):
            empty = (col == "metric_overlap" and frac == 0.0) or (col == "metric_ood_one" and frac == 1.0)
            assert (value == "-1.000000") == empty, (row, col)
    _, acc = csv_rows(measured["task"] / "platonic_acc_ffcv.csv")
    for row in acc:
        assert (row[3] == "-1") == (float(row[1]) == 0.0)  # no shared class: -1
    for name in ("ds",):
        _, rows = csv_rows(measured[name] / "platonic_ffcv.csv")
        assert not any(v == "-1.000000" for r in rows for v in r[3:])


def test_frac_overlap_is_the_realised_overlap_of_the_saved_split(measured):
    for name in ("ds", "task"):
        _, acc = csv_rows(measured[name] / "platonic_acc_ffcv.csv")
        for pair, row in zip(pairs_of(measured[name]), acc[::2], strict=True):
            a = np.load(pair / "split_indices" / "a.npy")
            b = np.load(pair / "split_indices" / "b.npy")
            realised = len(np.intersect1d(a, b)) / len(a)  # |A ∩ B| / |A|
            assert float(row[1]) == pytest.approx(realised, abs=1e-12)
            assert row[1] == repr(splits.load(pair / "split_indices").overlap)


def test_sidecars_and_analysis_reads_every_csv(measured):
    for name, kind in (("ds", "ds"), ("task", "task")):
        exp = measured[name]
        for csv, result_kind in (("platonic_ffcv.csv", "similarity"), ("platonic_acc_ffcv.csv", "accuracy")):
            meta = json.loads((exp / csv).with_suffix(".json").read_text())
            assert meta == {"arch": "resnet", "model": "resnet18_cifar", "dataset": "cifar10",
                            "kind": kind, "experiment": exp.name}
            result = analysis.read_result(exp / csv)
            assert result.kind == result_kind
            assert result.split == ("dataset" if kind == "ds" else "task")
            assert analysis.architecture(result) == ("resnet", "metadata")
            assert result.dataset == "cifar10"
        table = analysis.read_result(exp / "platonic_ffcv.csv")
        assert len(table.rows("cka")) == len(pairs_of(exp))


# ---- consistency --------------------------------------------------------------------------
def _prepared64(x: np.ndarray) -> np.ndarray:
    """the protocol's preparation (docs/protocol.md section 3) in float64: clamp at the exact 0.95 order statistic of |x|, L2 rows."""
    flat = np.sort(np.abs(x.astype(np.float64)).ravel())
    t = flat[min(int(0.95 * flat.size), flat.size - 1)]
    c = np.clip(x.astype(np.float64), -t, t)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["ds", "task"])
def test_a_model_against_itself_scores_one_on_every_probe_set(measured, name):
    exp = measured[name]
    pair = runs.pair_dir(exp, SELF_SEED, 0.5 if name == "ds" else 0.6)
    assert (pair / "split_1" / "checkpoint.pth").resolve() == (pair / "split_0" / "checkpoint.pth").resolve()
    header, rows = csv_rows(exp / "platonic_ffcv.csv")
    cols = header.split(",")
    mine = {r[1]: dict(zip(cols[3:], r[3:], strict=True)) for r in rows if r[0] == str(SELF_SEED)}
    for col in cols[3:]:
        a = np.load(pair / "features" / f"{col}_model1.npy", allow_pickle=False)
        b = np.load(pair / "features" / f"{col}_model2.npy", allow_pickle=False)
        np.testing.assert_array_equal(a, b)  # the same model on the same inputs
        assert a.shape[1] == 8 * WIDTH
        p = _prepared64(a)
        pc = p - p.mean(axis=0)
        hsic = np.sum((pc.T @ pc) ** 2)  # trace(K H K H), biased, no 1/(N-1)^2
        expected_cka = hsic / (np.sqrt(hsic * hsic) + 1e-6)  # the study's guard
        assert float(mine["cka"][col]) == pytest.approx(expected_cka, abs=1.5e-6), col
        assert float(mine["cka"][col]) > 0.9999
        # (cycle_knn need not be 1: j in kNN(i) does not put i in kNN(j))
        for metric in ("mutual_knn", "edit_distance_knn"):
            assert mine[metric][col] == "1.000000", (metric, col)
        assert mine["lcs_knn"][col] == f"{K:.6f}"
        assert float(mine["svcca"][col]) == pytest.approx(1.0, abs=1e-5)


def _penultimate(model, x: torch.Tensor) -> torch.Tensor:
    """torchvision's forward up to the flatten node, written out (no hook)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def test_accuracy_and_features_match_an_independent_forward(measured, image_runs):
    exp = measured["task"]
    pair = runs.pair_dir(exp, 0, 0.6)
    split = splits.load(pair / "split_indices")
    images, labels = betons.load_arrays(betons.beton_path("cifar10", "test"))
    shared = np.flatnonzero(np.isin(labels, split.shared_classes))
    assert len(shared) == 3 * TEST_PER_CLASS
    mean = np.asarray(registry.MEAN, dtype=np.float32)
    std = np.asarray(registry.STD, dtype=np.float32)
    x = torch.from_numpy(((images[shared].astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy())
    _, acc = csv_rows(exp / "platonic_acc_ffcv.csv")
    acc = {int(r[2]): r[3] for r in acc if r[0] == "0" and float(r[1]) == 0.6}
    for i, label_map in ((0, split.label_map_a), (1, split.label_map_b)):
        model = models.build("resnet18_cifar", 5, width=WIDTH)
        model.load_state_dict(torch.load(pair / f"split_{i}" / "checkpoint.pth", weights_only=True))
        model.eval()
        with torch.no_grad():
            logits = model(x)
            feats = _penultimate(model, x)
        target = np.array([label_map[int(v)] for v in labels[shared]])
        assert acc[i + 1] == repr(float(np.mean(logits.argmax(1).numpy() == target)))
        saved = np.load(pair / "features" / f"metric_overlap_model{i + 1}.npy")
        # float32 sums in another batch layout: equal up to rounding at the features' scale
        np.testing.assert_allclose(saved, feats.numpy(), rtol=1e-4, atol=1e-6 * float(feats.abs().max()))


def test_both_models_get_identical_inputs(image_runs, tmp_path, monkeypatch):
    from repr_sim.kinds.image import measure as measure_image

    exp = fresh(image_runs, tmp_path, "task")
    seen: dict[int, list[str]] = {}
    real_features, real_load = features.image_features, measure_image.load_model

    def tagged_load(*args, **kwargs):  # number the models in the order they are loaded
        model = real_load(*args, **kwargs)
        model.probe_tag = len(seen)
        seen[model.probe_tag] = []
        return model

    def recording(model, images):
        digest = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        seen[model.probe_tag].append(digest)
        return real_features(model, images)

    monkeypatch.setattr(measure_image, "load_model", tagged_load)
    monkeypatch.setattr(features, "image_features", recording)
    assert run_measure(exp, "--batch-size", "16") == 0
    hashes = list(seen.values())
    assert len(hashes) == 2 * len(pairs_of(exp))  # two models per pair, none shared
    # Per pair (models in load order): the same batches, in the same order.
    for a, b in zip(hashes[::2], hashes[1::2], strict=True):
        assert a == b and len(a) > 0
    # 0.6 pair: 42 in-distribution images (3 shared + 4 one-model classes), 30 + 30 OOD.
    assert len(hashes[2]) == 3 + 2 + 2
    assert len(set(hashes[2])) == len(hashes[2])


def test_probe_subset_is_seeded_sorted_and_not_the_first_inputs():
    a = measure.probe_subset(1000, 100, "metric_overlap")
    np.testing.assert_array_equal(a, measure.probe_subset(1000, 100, "metric_overlap"))
    assert len(a) == 100 == len(np.unique(a)) and np.all(np.diff(a) > 0)
    assert a.max() > 500 and not np.array_equal(a, np.arange(100))
    assert not np.array_equal(a, measure.probe_subset(1000, 100, "metric_ood_all_mnist"))
    np.testing.assert_array_equal(measure.probe_subset(50, 100, "x"), np.arange(50))
    np.testing.assert_array_equal(measure.probe_subset(50, None, "x"), np.arange(50))


def test_small_probe_size_gives_minus_one_with_a_warning(measured, image_runs, tmp_path, capsys):
    exp = fresh(image_runs, tmp_path)
    assert run_measure(exp, "--probe-size", str(K + 1)) == 0
    err = capsys.readouterr().err
    for col in ("metric_overlap", "metric_ood_all_mnist", "metric_ood_all_svhn"):
        assert f"probe set {col} has {K + 1} inputs, too few" in err
    _, rows = csv_rows(exp / "platonic_ffcv.csv")
    assert rows and all(v == "-1.000000" for r in rows for v in r[3:])
    # Accuracy is always on the whole test set.
    _, small = csv_rows(exp / "platonic_acc_ffcv.csv")
    _, full = csv_rows(measured["ds"] / "platonic_acc_ffcv.csv")
    assert small == [r for r in full if r[0] != str(SELF_SEED)]
    # A bigger subset is measured again (the results were stale) and scores normally.
    assert run_measure(exp, "--probe-size", "20") == 0
    assert "measuring again (probe_size 11 then, 20 now)" in capsys.readouterr().out
    _, rows = csv_rows(exp / "platonic_ffcv.csv")
    assert not any(v == "-1.000000" for r in rows for v in r[3:])


def test_probe_columns_are_named_from_the_registry(tmp_path, monkeypatch):
    from repr_sim.kinds.image import measure as measure_image

    monkeypatch.setenv("REPRSIM_DATA", str(tmp_path))
    images = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    labels = np.zeros(4, dtype=np.int64)
    betons.write_beton(images, labels, betons.beton_path("mnist_64", "test"), workers=1,
                       info={"dataset": "mnist", "split": "test", "resolution": 64})
    betons.write_beton(images, labels, betons.beton_path("svhn_64", "test"), workers=1)  # no dataset
    assert measure_image.probe_dataset("mnist_64") == "mnist"  # the sidecar's dataset
    assert measure_image.probe_dataset("svhn_64") == "svhn"  # registry.beton_name at 64 px
    assert measure_image.probe_dataset("mnist") == "mnist"
    assert measure_image.probe_dataset("other_probe") == "other_probe"


# ---- rerun, resume, concurrency ----------------------------------------------------------
def test_rerun_with_nothing_new_leaves_the_csvs_byte_identical(measured, capsys):
    files = [p for name in ("ds", "task") for p in sorted(measured[name].glob("platonic*"))]
    # per experiment: platonic_ffcv, platonic_acc_ffcv, platonic_calibrated_ffcv (the
    # default calibration's companion, docs/calibration.md), each .csv and .json
    assert len(files) == 12
    before = [stamp(p) for p in files]
    results = [stamp(p / measure.RESULT) for name in ("ds", "task") for p in pairs_of(measured[name])]
    time.sleep(0.01)
    assert run_measure(measured["ds"], measured["task"], "--save-features") == 0
    out = capsys.readouterr().out
    assert "0 measured, 3 already measured" in out and "0 measured, 4 already measured" in out
    assert [stamp(p) for p in files] == before
    assert [stamp(p / measure.RESULT) for name in ("ds", "task") for p in pairs_of(measured[name])] == results


def test_force_measures_again_with_the_same_rows(image_runs, tmp_path, capsys):
    exp = fresh(image_runs, tmp_path)
    assert run_measure(exp) == 0
    before = stamp(exp / "platonic_ffcv.csv")
    result = (exp / "seed_0" / "frac_0.5" / measure.RESULT).stat().st_mtime_ns
    capsys.readouterr()
    assert run_measure(exp, "--force") == 0
    assert "2 measured, 0 already measured" in capsys.readouterr().out
    assert (exp / "seed_0" / "frac_0.5" / measure.RESULT).stat().st_mtime_ns > result
    assert stamp(exp / "platonic_ffcv.csv") == before  # same bytes: not rewritten


def test_unfinished_pairs_are_skipped_then_measured_once_done(image_runs, tmp_path, capsys):
    exp = fresh(image_runs, tmp_path)
    extra = clone_pair(exp, (0, 1.0), 3)
    (extra / runs.DONE).unlink()
    assert run_measure(exp) == 0
    out = capsys.readouterr().out
    assert "seed_3/frac_1: not finished (no done marker); skipped for now" in out
    _, rows = csv_rows(exp / "platonic_ffcv.csv")
    assert {r[0] for r in rows} == {"0"}
    runs.mark_done(extra)
    assert run_measure(exp) == 0
    assert "1 measured, 2 already measured" in capsys.readouterr().out
    _, rows = csv_rows(exp / "platonic_ffcv.csv")
    assert [r[0] for r in rows[::8]] == ["0", "0", "3"]
    assert rows[16:] == [["3", *r[1:]] for r in rows[8:16]]  # the copy of seed 0's frac 1 pair


def _with_clones(image_runs, root: Path) -> Path:
    """The ds experiment with three more pairs (copies under seeds 1 and 2): five in all."""
    exp = copy_experiment(image_runs.ds, root)
    for seed, pair in ((1, (0, 0.5)), (1, (0, 1.0)), (2, (0, 0.5))):
        clone_pair(exp, pair, seed)
    return exp


def _measure_process(exp: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "repr_sim", "measure", str(exp), *RUN],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})


CLONED = [(0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0), (2, 0.5)]  # the pairs of _with_clones


@pytest.fixture(scope="module")
def reference(measured) -> dict[str, bytes]:
    """What one uninterrupted run writes for _with_clones: the seed-0 rows of the measured
    ds experiment (the same models), repeated under each clone's seed, in (seed, frac) order."""
    out = {}
    for name in ("platonic_ffcv.csv", "platonic_acc_ffcv.csv"):
        header, rows = csv_rows(measured["ds"] / name)
        lines = [header]
        for seed, frac in CLONED:
            lines += [",".join([str(seed), *r[1:]]) for r in rows
                      if r[0] == "0" and float(r[2 if "metric" in header else 1]) == frac]
        out[name] = ("\n".join(lines) + "\n").encode()
    out["platonic_ffcv.json"] = (measured["ds"] / "platonic_ffcv.json").read_bytes()
    return out


def test_killed_measurement_resumes_with_the_same_rows(image_runs, reference, tmp_path):
    exp = _with_clones(image_runs, tmp_path)
    results = [p / measure.RESULT for p in pairs_of(exp)]
    proc = _measure_process(exp)
    deadline = time.monotonic() + 240
    while not any(r.exists() for r in results):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-way: after the first result, before the merge
    proc.wait()
    done_before = sum(r.exists() for r in results)
    assert not (exp / "platonic_ffcv.csv").exists()
    assert 1 <= done_before < len(results), "the measurement finished before it was killed"
    assert run_measure(exp) == 0
    for name, expected in reference.items():
        assert (exp / name).read_bytes() == expected, name
    assert not list(exp.rglob("*.tmp"))


def test_two_concurrent_processes_write_what_one_writes(image_runs, reference, tmp_path):
    exp = _with_clones(image_runs, tmp_path)
    procs = [_measure_process(exp) for _ in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for name, expected in reference.items():
        assert (exp / name).read_bytes() == expected, name
    # Every pair was measured by exactly one of them (the locks), the other reused it.
    measured_lines = [line for out in outputs for line in out.splitlines() if line.endswith(" s)")]
    assert sorted(line.split(":")[0] for line in measured_lines) == sorted(
        measure.pair_label(p) for p in pairs_of(exp))


# ---- bad input ------------------------------------------------------------------------------
def test_missing_checkpoint_is_listed_and_the_pair_skipped(image_runs, tmp_path, capsys):
    exp = fresh(image_runs, tmp_path)
    missing = exp / "seed_0" / "frac_1" / "split_1" / "checkpoint.pth"
    missing.unlink()
    assert run_measure(exp) == 0  # the other pair was measured
    err = capsys.readouterr().err
    assert f"warning: cifar10_ds/seed_0/frac_1: missing checkpoint {missing}; pair skipped" in err
    _, rows = csv_rows(exp / "platonic_ffcv.csv")
    assert {r[2] for r in rows} == {"0.5"}
    (exp / "seed_0" / "frac_0.5" / "split_0" / "checkpoint.pth").unlink()
    (exp / "seed_0" / "frac_0.5" / measure.RESULT).unlink()
    assert run_measure(exp) == 2  # nothing could be measured
    err = capsys.readouterr().err
    assert err.count("missing checkpoint") == 2 and "no pair could be measured" in err


def test_corrupt_and_mismatched_checkpoints_name_the_file(image_runs, tmp_path, capsys):
    exp = fresh(image_runs, tmp_path, "task")
    corrupt = exp / "seed_0" / "frac_0" / "split_0" / "checkpoint.pth"
    corrupt.write_bytes(corrupt.read_bytes()[:1000])
    other = exp / "seed_0" / "frac_1" / "split_1" / "checkpoint.pth"
    torch.save(models.build("resnet18_cifar", 5, width=8).state_dict(), other)  # another width
    unknown = clone_pair(exp, (0, 0.6), 1)
    args = runs.read_json(unknown / "args.json")
    runs.atomic_write_json(unknown / "args.json", {**args, "kind": "hologram"})
    assert run_measure(exp) == 0  # frac 0.6 was measured
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 3, err
    assert err[0].startswith("reprsim measure: error: cifar10_task/seed_0/frac_0: corrupt checkpoint "
                             f"{corrupt} (")
    assert err[1].startswith(f"reprsim measure: error: cifar10_task/seed_0/frac_1: checkpoint {other} "
                             f"does not match resnet18_cifar (width {WIDTH}, 5 classes)")
    assert err[2].startswith("reprsim measure: error: cifar10_task/seed_1/frac_0.6: no measurement "
                             "for experiment kind 'hologram' (known: ")
    assert "image" in err[2] and "text" in err[2]
    _, rows = csv_rows(exp / "platonic_acc_ffcv.csv")
    assert {r[1] for r in rows} == {"0.6"}


def test_not_an_experiment_folder_is_one_line(image_runs, tmp_path, capsys):
    def one_line(*argv) -> str:
        assert run_measure(*argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return err[0]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert one_line(empty) == (f"reprsim measure: error: {empty}: not an experiment folder "
                               f"(no seed_*/frac_* pairs with args.json)")
    line = one_line(image_runs.runs)
    assert "not an experiment folder" in line and "cifar10_ds, cifar10_task" in line
    assert one_line(tmp_path / "nope") == f"reprsim measure: error: {tmp_path / 'nope'}: no such folder"
    assert "must be a positive integer" in one_line(empty, "--probe-size", "0")


def test_nothing_finished_yet_is_not_an_error(image_runs, tmp_path, capsys):
    exp = fresh(image_runs, tmp_path)
    for pair in pairs_of(exp):
        (pair / runs.DONE).unlink()
    assert run_measure(exp) == 0
    out = capsys.readouterr().out
    assert out.count("not finished (no done marker)") == 2 and "nothing to measure yet" in out
    assert not list(exp.glob("platonic*"))


@requires_cuda
def test_measure_on_cuda_matches_the_cpu(image_runs, tmp_path):
    # The CPU reference without calibration (it does not change these two files; the CPU
    # calibration of the `measured` fixture would dominate the GPU check's time).
    cpu = fresh(image_runs, tmp_path / "cpu", "task")
    assert run_measure(cpu, "--no-calibrate") == 0
    exp = fresh(image_runs, tmp_path / "cuda", "task")
    assert run_measure(exp, "--device", "cuda") == 0  # fp16 autocast, calibrated on the GPU
    for name in ("platonic_ffcv.csv", "platonic_acc_ffcv.csv"):
        header, rows = csv_rows(exp / name)
        cpu_header, cpu_rows = csv_rows(cpu / name)
        assert header == cpu_header and len(rows) == len(cpu_rows)
        for row, cpu in zip(rows, cpu_rows, strict=True):
            assert row[:3] == cpu[:3]
            if name == "platonic_ffcv.csv" and row[1] == "cka":
                for v, w in zip(row[3:], cpu[3:], strict=True):
                    assert float(v) == pytest.approx(float(w), abs=0.02)


def test_precision_is_part_of_the_result_and_cpu_features_stay_float32(image_runs, tmp_path, capsys):
    """--precision picks the CUDA autocast dtype of the image features; on the CPU there is no
    autocast, so the rows are the same, but the result records it and is measured again."""
    exp = fresh(image_runs, tmp_path)
    assert run_measure(exp, "--no-calibrate") == 0
    before = (exp / "platonic_ffcv.csv").read_bytes()
    capsys.readouterr()
    assert run_measure(exp, "--no-calibrate", "--precision", "bf16") == 0
    out = capsys.readouterr().out
    assert "measuring again (precision" in out and "0 already measured" in out
    assert (exp / "platonic_ffcv.csv").read_bytes() == before
    assert run_measure(exp, "--no-calibrate", "--precision", "bf16") == 0
    assert "0 measured" in capsys.readouterr().out
