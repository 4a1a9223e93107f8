"""The experiment-kind contract: a toy kind added from one new file plus a config runs
through `reprsim sweep --launcher pool`, `reprsim measure` and `reprsim summary` with no
other change to the project; and the pair-status record that the sweep, the measurer and
the progress bar read.

The toy kind (written below into a temporary folder and named in $REPRSIM_KINDS) trains
tiny MLPs on Gaussian blobs. Its numbers are checked against values computed here: the
realised overlap of the saved split, the accuracy of the saved weights recomputed with
numpy, and CKA 1 for a probe compared with itself is not needed: the measured CKA is
recomputed in float64 from the saved features.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repr_sim import kinds, runs, splits
from repr_sim.metrics import METRICS

REPO = Path(__file__).resolve().parent.parent

TOY_KIND = '''
"""A toy experiment kind in one file: MLPs on Gaussian blobs, dataset overlap."""

import numpy as np
import torch

from repr_sim import pair, results, runs, splits
from repr_sim.atomic import atomic_torch_save
from repr_sim.kinds.base import Kind, Output
from repr_sim.scoring import (per_model_rows, read_state_dict, score_probes,
                              similarity_rows)

KIND = Kind(
    name="toykind",
    description="two-layer MLPs on Gaussian blobs",
    defaults={"split": "dataset", "n_train": 240, "n_probe": 60, "fracs": [0.0, 1.0],
              "seeds": [0, 1], "recipe": {"steps": 30, "lr": 0.5}},
    outputs=(Output(results.IMAGE_SIM_CSV, "_platonic"),
             Output(results.IMAGE_ACC_CSV, "_platonic_acc")),
    data="generated in memory",
    preload=("torch",),
)
OPTION_KEYS = {"lr": "recipe.lr"}
CHECKPOINT = "model.pt"


def blobs(n, seed):
    centres = np.random.default_rng(123).normal(size=(4, 8)) * 3
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    return (centres[labels] + rng.normal(size=(n, 8))).astype(np.float32), labels


def build():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def prepare_pair(cfg, seed, frac, device):
    x, y = blobs(cfg["n_train"], 0)
    split = splits.dataset_split(y, frac, seed=seed)
    steps = cfg["recipe"]["steps"]

    def train_model(i, model_dir):
        idx = split.a if i == 0 else split.b
        torch.manual_seed(seed * 2 + i)
        model = build()
        opt = torch.optim.SGD(model.parameters(), lr=cfg["recipe"]["lr"])
        xs, ys = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
        for step in range(steps):
            loss = torch.nn.functional.cross_entropy(model(xs), ys)
            opt.zero_grad()
            loss.backward()
            opt.step()
            runs.record_steps(model_dir, step + 1, steps)
        atomic_torch_save(model.state_dict(), model_dir / CHECKPOINT)

    return pair.PairJob(fields={"arch": "mlp", "dataset": "blobs"}, n_models=2,
                        train_model=train_model, checkpoint=CHECKPOINT, split=split,
                        steps=[steps, steps])


def train_pair(cfg, seed, frac, *, device=None):
    return pair.train(cfg, seed, frac, prepare_pair, device="cpu", defaults=KIND.defaults)


def csv_files(args):
    return {results.IMAGE_SIM_CSV: results.similarity_header([results.OVERLAP_PROBE]),
            results.IMAGE_ACC_CSV: list(results.ACCURACY_COLUMNS)}


def sidecar(args):
    return {"arch": "mlp", "dataset": "blobs", "kind": "ds"}


def inputs(pair_dir, args):
    return [pair_dir / f"split_{i}" / CHECKPOINT for i in (0, 1)]


def measure_pair(pair_dir, args, opts, cache):
    x, y = blobs(args["config"]["n_probe"], 1)
    feats, accs = [], []
    for path in inputs(pair_dir, args):
        model = build()
        model.load_state_dict(read_state_dict(path))
        with torch.no_grad():
            hidden = model[1](model[0](torch.from_numpy(x)))
            accs.append(float((model[2](hidden).argmax(1).numpy() == y).mean()))
        feats.append(hidden)
    scores = score_probes({results.OVERLAP_PROBE: feats}, [results.OVERLAP_PROBE],
                          pair_dir=pair_dir, where=str(pair_dir), opts=opts)
    overlap = float(splits.load(pair_dir / "split_indices").overlap)
    return {results.IMAGE_SIM_CSV: similarity_rows(args["seed"], overlap, scores),
            results.IMAGE_ACC_CSV: per_model_rows(args["seed"], overlap, accs)}
'''

CONFIG = 'kind = "toykind"\nfracs = [0.0, 0.5, 1.0]\n'


def reprsim(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repr_sim", *args], env=env, cwd=env["HOME_DIR"],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    (root / "toykind.py").write_text(textwrap.dedent(TOY_KIND))
    (root / "toy_ds.toml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)]),
           "REPRSIM_KINDS": "toykind", "REPRSIM_RUNS": str(root / "runs"),
           "REPRSIM_DATA": str(root / "data"), "HOME_DIR": str(root), "TQDM_DISABLE": "1"}
    config = str(root / "toy_ds.toml")
    sweep = reprsim(["sweep", config, "--launcher", "pool", "--workers", "2",
                     "--log-dir", str(root / "logs")], env)
    measure = reprsim(["measure", str(root / "runs" / "toy_ds"), "--save-features"], env)
    results = root / "results"
    results.mkdir()
    exp = root / "runs" / "toy_ds"
    for name, stem in (("platonic_ffcv", "toy_ds_platonic"), ("platonic_acc_ffcv", "toy_ds_platonic_acc")):
        if (exp / f"{name}.csv").is_file():
            (results / f"{stem}.csv").write_bytes((exp / f"{name}.csv").read_bytes())
            (results / f"{stem}.json").write_bytes((exp / f"{name}.json").read_bytes())
    summary = reprsim(["summary", str(results)], env)
    again = reprsim(["sweep", config, "--launcher", "pool", "--workers", "2",
                     "--log-dir", str(root / "logs")], env)
    return {"root": root, "exp": exp, "results": results, "sweep": sweep, "measure": measure,
            "summary": summary, "again": again, "env": env}


def test_toy_kind_trains_through_the_pool_launcher(toy):
    assert toy["sweep"].returncode == 0, toy["sweep"].stderr
    out = toy["sweep"].stdout
    assert "toy_ds: 6 task(s), 0 done, 6 to run" in out
    assert out.count(": trained") == 6
    for seed, frac, folder in runs.iter_pairs(toy["exp"]):
        status = runs.read_status(folder)
        assert status["finished"] and runs.is_finished(folder)
        assert [m["steps_done"] for m in status["models"]] == [30, 30]
        assert runs.checkpoints(folder) == [folder / "split_0/model.pt", folder / "split_1/model.pt"]
        assert (toy["root"] / "logs" / "pool" / f"toy_ds_seed{seed}_frac{frac:g}.log").is_file()
    assert len(runs.iter_pairs(toy["exp"])) == 6
    # The rerun finds every pair finished through the status records.
    assert toy["again"].returncode == 0
    assert "toy_ds: 6 task(s), 6 done, 0 to run" in toy["again"].stdout


def test_toy_kind_is_measured_with_the_contract(toy):
    assert toy["measure"].returncode == 0, toy["measure"].stderr
    sim = pd.read_csv(toy["exp"] / "platonic_ffcv.csv")
    assert list(sim.columns) == ["seed", "metric", "frac_overlap", "metric_overlap"]
    assert len(sim) == 6 * len(METRICS)
    acc = pd.read_csv(toy["exp"] / "platonic_acc_ffcv.csv")
    for (seed, _frac, folder) in runs.iter_pairs(toy["exp"]):
        split = splits.load(folder / "split_indices")
        realised = len(np.intersect1d(split.a, split.b)) / len(split.a)
        rows = sim[(sim["seed"] == seed) & np.isclose(sim["frac_overlap"], realised)]
        assert len(rows) == len(METRICS)
        # CKA recomputed in float64 from the saved features (the measurer's own input).
        a, b = (np.load(folder / "features" / f"metric_overlap_model{i}.npy") for i in (1, 2))
        cka = rows[rows["metric"] == "cka"]["metric_overlap"].item()
        assert cka == pytest.approx(linear_cka(prepare(a), prepare(b)), abs=2e-6)
        accs = acc[(acc["seed"] == seed) & np.isclose(acc["frac_overlap"], realised)]["acc"]
        assert len(accs) == 2 and ((accs >= 0) & (accs <= 1)).all()


def prepare(x: np.ndarray) -> np.ndarray:
    """What repr_sim.metrics.prepare does, in float64: clamp at the 0.95 quantile of |x| (the
    exact order statistic at position int(0.95 n)), then L2-normalise rows."""
    x = x.astype(np.float64)
    flat = np.sort(np.abs(x).ravel())
    q = flat[min(int(0.95 * flat.size), flat.size - 1)]
    x = np.clip(x, -q, q)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(0), b - b.mean(0)
    return float(np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


def test_toy_kind_reaches_the_summary(toy):
    assert toy["summary"].returncode == 0, toy["summary"].stderr
    table = pd.read_csv(toy["results"] / "summary_mi.csv", index_col=0)
    assert "Dataset Overlap" in table.columns
    files = toy["summary"].stdout
    assert "toy_ds_platonic.csv" in files


def test_registry_lists_built_in_and_external_kinds(monkeypatch, tmp_path):
    assert {"image", "text", "partition", "vae"} <= set(kinds.names())
    monkeypatch.setenv("REPRSIM_KINDS", "not_a_module_anywhere")
    assert "not_a_module_anywhere" in kinds.names()
    from repr_sim.errors import UserError

    with pytest.raises(UserError, match="cannot import not_a_module_anywhere"):
        kinds.get("not_a_module_anywhere")
    with pytest.raises(UserError, match="unknown experiment kind 'hologram'"):
        kinds.get("hologram")


def test_configs_list_only_what_differs_from_the_kind_defaults():
    cifar10 = (REPO / "train_cifar_ffcv/configs/cifar10_ds.toml").read_text().splitlines()
    cifar100 = (REPO / "train_cifar_ffcv/configs/cifar100_ds.toml").read_text().splitlines()
    code = [(a, b) for a, b in zip(cifar10, cifar100, strict=True)
            if not a.startswith("#") and a != b]
    assert len(code) == 1 and code[0][0].startswith("dataset = ")
    # The resolved configs are the study's recipe.
    cfg = kinds.load("cifar100_ds")
    assert cfg["recipe"]["epochs"] == 50 and cfg["recipe"]["lr"] == 0.5
    assert cfg["augment"]["cutout"] == 10 and cfg["probes"]["ood"] == ["mnist", "svhn"]


def test_status_record_of_a_folder_without_one(tmp_path):
    """A pair folder written before the record: `done` decides, no checkpoints listed."""
    folder = tmp_path / "seed_0" / "frac_0.5"
    folder.mkdir(parents=True)
    assert not runs.is_finished(folder) and runs.steps_fraction(folder) == 0.0
    runs.mark_done(folder)
    assert runs.is_finished(folder) and runs.steps_fraction(folder) == 1.0
    assert runs.checkpoints(folder) is None


def test_steps_fraction_reads_the_record(tmp_path):
    folder = tmp_path / "seed_0" / "frac_0"
    (folder / "split_1").mkdir(parents=True)
    runs.write_status(folder, fingerprint="x", finished=False,
                      models=[{"checkpoint": "split_0/c.pt", "steps_done": 10, "steps_total": 10},
                              {"checkpoint": "split_1/c.pt", "steps_done": 0, "steps_total": 30}])
    assert runs.steps_fraction(folder) == pytest.approx(10 / 40)
    runs.record_steps(folder / "split_1", 15)
    assert runs.steps_fraction(folder) == pytest.approx(25 / 40)
    assert json.loads((folder / runs.STATUS).read_text())["models"][1]["steps_done"] == 15


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_results_get_the_users_umask(tmp_path, mask):
    """Atomic writes give files the mode a plain open() gives: 0644 under umask 022, so a
    lab-mate on a shared cluster can read the results; 0600 under 077."""
    from repr_sim import atomic

    old = os.umask(mask)
    try:
        atomic.atomic_write_text(tmp_path / "a.csv", "x\n")
        atomic.atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    want = 0o666 & ~mask
    for name in ("a.csv", "sub/b.json", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name
