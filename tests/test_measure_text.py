"""`reprsim measure` on text experiments, and repr_sim/run_metrics.sh.

Run folders: tiny GPT pairs trained by the real text trainer on the six generated domains
(byte tokenizer), a dataset split of tinystories probed on shakespeare_all, tinystories
and wikitext, and a task split over the six corpora (tests/_run_fixtures.py). Measured
with 200 windows per probe set (the study's 20,500 would only cost time here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import _run_fixtures as fixtures
import numpy as np
import pytest
import torch
from _run_fixtures import clone_pair, copy_experiment, csv_rows, provide_text_runs, self_pair

from repr_sim import analysis, runs, splits
from repr_sim.data import text as textdata
from repr_sim.kinds.text import measure as measure_text
from repr_sim.metrics import METRICS

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "repr_sim" / "run_metrics.sh"
PROBES = 200
RUN = ["--probe-size", str(PROBES), "--workers", "1", "--device", "cpu"]
DS_HEADER = "seed,metric,frac_overlap,metric_shakespeare,metric_tinystories,metric_wikitext"
TASK_HEADER = "seed,metric,frac_overlap,metric_common,metric_OOD_for_one,metric_OOD_for_all"
LOSS_HEADER = "seed,frac_overlap,model_idx,val_loss"
SELF_SEED = 7
K = 10


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    yield from provide_text_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def measured(text_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("measured_text")
    ds, task = copy_experiment(text_runs.ds, root), copy_experiment(text_runs.task, root)
    self_pair(ds, (0, 1.0), SELF_SEED)
    self_pair(task, (0, 2 / 3), SELF_SEED)
    assert run_measure(ds, task, "--save-features") == 0
    return {"ds": ds, "task": task}


def run_measure(*argv) -> int:
    return fixtures.run_measure(RUN, *argv)


def pairs_of(exp: Path) -> list[Path]:
    return [p for _, _, p in runs.iter_pairs(exp)]


@pytest.mark.parametrize("name", ["ds", "task"])
def test_similarity_schema(measured, name):
    exp = measured[name]
    header, rows = csv_rows(exp / "platonic.csv")
    assert header == (DS_HEADER if name == "ds" else TASK_HEADER)
    pairs = pairs_of(exp)
    assert len(rows) == 8 * len(pairs)
    for pair, start in zip(pairs, range(0, len(rows), 8), strict=True):
        block = rows[start:start + 8]
        args = runs.read_json(pair / "args.json")
        assert [r[1] for r in block] == list(METRICS)
        assert {r[0] for r in block} == {str(args["seed"])}
        assert {r[2] for r in block} == {repr(splits.load(pair / "split_indices").overlap)}
        for row in block:
            for value in row[3:]:
                assert len(value.split(".")[1]) == 6
                v = float(value)
                assert v == -1.0 or -1.0 <= v <= (K if row[1] == "lcs_knn" else 1.0) + 1e-6


def test_dataset_split_probes_are_never_empty(measured):
    _, rows = csv_rows(measured["ds"] / "platonic.csv")
    assert not any(v == "-1.000000" for r in rows for v in r[3:])


def test_task_split_groups_are_minus_one_exactly_when_empty(measured):
    _, rows = csv_rows(measured["task"] / "platonic.csv")
    cols = TASK_HEADER.split(",")[3:]
    for row in rows:
        frac = float(row[2])
        empty = {"metric_common": frac == 0.0, "metric_OOD_for_one": frac == 1.0,
                 "metric_OOD_for_all": frac == 0.0}  # 3 + 3 of 6 corpora at frac 0: none left
        for col, value in zip(cols, row[3:], strict=True):
            assert (value == "-1.000000") == empty[col], (row, col)


def test_probe_groups_follow_the_split(measured):
    for pair in pairs_of(measured["task"]):
        args = runs.read_json(pair / "args.json")
        split = splits.load(pair / "split_indices")
        groups = measure_text.probe_groups(args, split)
        a, b = set(split.a), set(split.b)
        assert set(groups["metric_common"]) == a & b
        assert set(groups["metric_OOD_for_one"]) == a ^ b
        assert set(groups["metric_OOD_for_all"]) == set(args["config"]["corpora"]) - a - b


def test_loss_file_holds_each_models_best_validation_loss(measured):
    for name in ("ds", "task"):
        exp = measured[name]
        header, rows = csv_rows(exp / "platonic_loss.csv")
        assert header == LOSS_HEADER
        pairs = pairs_of(exp)
        assert len(rows) == 2 * len(pairs)
        for pair, (r1, r2) in zip(pairs, zip(rows[::2], rows[1::2], strict=True), strict=True):
            assert (r1[2], r2[2]) == ("1", "2")
            for i, row in enumerate((r1, r2)):
                path = pair / f"split_{i}" / "ckpt.pt"
                ckpt = torch.load(path, weights_only=True)
                assert row[3] == repr(float(ckpt["best_val_loss"]))
                log = path.resolve().parent / "evals.jsonl"  # (a self pair links model 0's)
                evals = [json.loads(line) for line in log.read_text().splitlines()]
                assert float(row[3]) == pytest.approx(min(e["val_loss"] for e in evals), abs=1e-6)


def test_sidecars_and_analysis_reads_the_files(measured):
    for name, dataset in (("ds", "tinystories"), ("task", "all")):
        exp = measured[name]
        for csv, kind in (("platonic.csv", "similarity"), ("platonic_loss.csv", "loss")):
            meta = json.loads((exp / csv).with_suffix(".json").read_text())
            assert meta == {"arch": "gpt", "dataset": dataset, "kind": name, "experiment": exp.name}
            result = analysis.read_result(exp / csv)
            assert result.kind == kind
            assert analysis.architecture(result) == ("gpt", "metadata")
        sim = analysis.read_result(exp / "platonic.csv")
        assert sim.split == ("dataset" if name == "ds" else "task")


def _prepared64(x: np.ndarray) -> np.ndarray:
    flat = np.sort(np.abs(x.astype(np.float64)).ravel())
    t = flat[min(int(0.95 * flat.size), flat.size - 1)]
    c = np.clip(x.astype(np.float64), -t, t)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["ds", "task"])
def test_a_model_against_itself_scores_one(measured, name):
    exp = measured[name]
    pair = runs.pair_dir(exp, SELF_SEED, 1.0 if name == "ds" else 2 / 3)
    header, rows = csv_rows(exp / "platonic.csv")
    cols = header.split(",")
    mine = {r[1]: dict(zip(cols[3:], r[3:], strict=True)) for r in rows if r[0] == str(SELF_SEED)}
    scored = [c for c in cols[3:] if mine["cka"][c] != "-1.000000"]
    assert len(scored) == (3 if name == "ds" else 3)  # 2/3: every group has corpora
    for col in scored:
        a = np.load(pair / "features" / f"{col}_model1.npy", allow_pickle=False)
        b = np.load(pair / "features" / f"{col}_model2.npy", allow_pickle=False)
        np.testing.assert_array_equal(a, b)
        assert a.shape == (PROBES, 32)
        p = _prepared64(a)
        pc = p - p.mean(axis=0)
        hsic = np.sum((pc.T @ pc) ** 2)
        assert float(mine["cka"][col]) == pytest.approx(hsic / (hsic + 1e-6), abs=1.5e-6), col
        assert mine["mutual_knn"][col] == "1.000000" and mine["lcs_knn"][col] == f"{K:.6f}"


def test_probe_windows_are_seeded_val_windows_of_the_groups_corpora(text_runs):
    length = 16
    corpora = ["tinycodes", "wikitext", "shakespeare_all"]
    first = measure_text.probe_windows({}, corpora, length, 300, "test", "metric_x")
    again = measure_text.probe_windows({}, corpora, length, 300, "test", "metric_x")
    np.testing.assert_array_equal(first, again)
    assert first.shape == (300, length)
    streams = {c: np.asarray(textdata.load_stream(c, "val"), dtype=np.int64) for c in corpora}
    views = {c: {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(s, length)}
             for c, s in streams.items()}
    sources = []
    for w in first:
        owners = [c for c in corpora if tuple(w) in views[c]]
        assert owners, "a window that is not inside any val stream of the group"
        sources.append(owners[0])
    counts = [sources.count(c) for c in corpora]
    assert min(counts) > 60, counts  # each corpus about a third (uniform choice per window)


def test_rerun_with_nothing_new_keeps_the_files(measured, capsys):
    files = sorted(measured["ds"].glob("platonic*"))
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in files]
    assert run_measure(measured["ds"], "--save-features") == 0
    assert "0 measured, 3 already measured" in capsys.readouterr().out
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in files] == before


def test_checkpoint_of_another_architecture_names_the_file(text_runs, tmp_path, capsys):
    from repr_sim import models

    exp = copy_experiment(text_runs.ds, tmp_path)
    bad = exp / "seed_0" / "frac_0" / "split_1" / "ckpt.pt"
    torch.save(models.build("resnet18_cifar", 10, width=8).state_dict(), bad)
    missing = exp / "seed_0" / "frac_1" / "split_0" / "ckpt.pt"
    missing.unlink()
    assert run_measure(exp) == 2  # nothing could be measured
    err = capsys.readouterr().err.splitlines()
    assert f"reprsim measure: error: {exp.name}/seed_0/frac_0: {bad}: not a GPT checkpoint" in err[0]
    assert any(f"missing checkpoint {missing}; pair skipped" in line for line in err)
    assert err[-1] == "reprsim measure: error: no pair could be measured"


# ---- run_metrics.sh -------------------------------------------------------------------------
def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(TQDM_DISABLE="1", **extra)
    return env


def test_run_metrics_help():
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "sbatch run_metrics.sh [FOLDER...]" in out and "MEASURE_ARGS" in out
    assert not any(line.startswith("#SBATCH") for line in out.splitlines())
    header = SCRIPT.read_text().splitlines()
    sbatch = [line for line in header if line.startswith("#SBATCH")]
    assert any("--gres=gpu:1" in line for line in sbatch) and any("--time=" in line for line in sbatch)
    assert not any("--account" in line or "--partition" in line for line in sbatch)


def test_run_metrics_with_plain_bash_on_an_experiment(text_runs, tmp_path):
    exp = copy_experiment(text_runs.ds, tmp_path)
    out = subprocess.run(["bash", str(SCRIPT), str(exp), "--", *RUN],
                         env=_env(MEASURE_ARGS="--save-features"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"run_metrics.sh: project {REPO}, {REPO}/.venv/bin/reprsim" in out.stdout
    header, rows = csv_rows(exp / "platonic.csv")
    assert header == DS_HEADER and len(rows) == 8 * len(pairs_of(exp))
    assert list((exp / "seed_0" / "frac_0" / "features").glob("*.npy"))  # MEASURE_ARGS reached it


def test_run_metrics_from_a_spooled_copy_over_a_root(text_runs, tmp_path):
    root = tmp_path / "runs"
    ds, task = copy_experiment(text_runs.ds, root), copy_experiment(text_runs.task, root)
    clone_pair(ds, (0, 0.0), 1)
    spool = tmp_path / "spool" / "job42"
    spool.mkdir(parents=True)
    shutil.copy(SCRIPT, spool / "slurm_script")  # what slurmd runs: a copy, far from the project
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not p.startswith(str(REPO)))  # reprsim only through the .venv
    env = _env(SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=str(REPO / "repr_sim"), REPRSIM_RUNS=str(root),
               PATH=path, MEASURE_ARGS=" ".join(RUN))
    out = subprocess.run(["bash", str(spool / "slurm_script")], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"run_metrics.sh: project {REPO}, {REPO}/.venv/bin/reprsim" in out.stdout
    assert "2 experiment folder(s)" in out.stdout  # reprsim measure --below found both
    for exp, n in ((ds, 3), (task, 3)):
        _, rows = csv_rows(exp / "platonic.csv")
        assert len(rows) == 8 * n
    # Not an experiment folder: reprsim's one line, exit 2.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run(["bash", str(spool / "slurm_script"), str(empty)], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(f"{empty}: not an experiment folder "
                                                        f"(no seed_*/frac_* pairs with args.json)")
