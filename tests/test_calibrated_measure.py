"""`reprsim measure --calibrate` and the readers of its calibrated companions (issue 14).

Run folders: the tiny trained image experiments of tests/_run_fixtures.py (cifar10_ds,
cifar10_task), copied before measuring. The companion's values are checked against
calibrate_all recomputed here on the features the measurement saved (--save-features) with
the same permutations (drawn here with numpy from the seed, as docs/calibration.md says);
the significance fractions and the Benjamini-Hochberg counts against a hand computation and
scipy.stats.false_discovery_control.
"""

from __future__ import annotations

import json
from pathlib import Path

import _run_fixtures as fixtures
import numpy as np
import pandas as pd
import pytest
import torch
from _run_fixtures import copy_experiment, provide_image_runs

from repr_sim import analysis, results, runs, scoring
from repr_sim.cli import main as cli_main
from repr_sim.metrics import METRICS, calibrate_all, prepare, score_all

torch.set_num_threads(2)
RUN = ["--workers", "1", "--device", "cpu"]
K = 12  # permutations: small, the tests check the plumbing, not the statistics
SEED = 3
SIM, COMPANION = "platonic_ffcv.csv", "platonic_calibrated_ffcv.csv"


def run_measure(*argv) -> int:
    return fixtures.run_measure(RUN, *argv)


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory):
    yield from provide_image_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def measured(image_runs, tmp_path_factory):
    """Both experiments measured with calibration (K, SEED, features saved), and copies of
    them measured without."""
    cal_root, raw_root = tmp_path_factory.mktemp("cal"), tmp_path_factory.mktemp("raw")
    cal = {n: copy_experiment(getattr(image_runs, n), cal_root) for n in ("ds", "task")}
    raw = {n: copy_experiment(getattr(image_runs, n), raw_root) for n in ("ds", "task")}
    assert run_measure(*cal.values(), "--calibrate", "--permutations", K,
                       "--calibration-seed", SEED, "--save-features") == 0
    assert run_measure(*raw.values(), "--no-calibrate") == 0
    return {"cal": cal, "raw": raw}


def frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# ---- the companion ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ds", "task"])
def test_companion_has_the_same_rows_and_a_triple_per_probe(measured, name):
    folder = measured["cal"][name]
    sim, comp = frame(folder / SIM), frame(folder / COMPANION)
    keys = list(results.SIMILARITY_KEYS)
    probes = list(sim.columns[len(keys):])
    assert list(comp.columns) == keys + [f"{c}{s}" for c in probes for s in ("", "_p", "_tau")]
    pd.testing.assert_frame_equal(comp[keys], sim[keys])
    meta = json.loads((folder / COMPANION).with_suffix(".json").read_text())
    assert meta["calibration"] == {"permutations": K, "alpha": 0.05, "seed": SEED}
    # read back as its own kind, with the probe columns as value columns
    read = analysis.read_result(folder / COMPANION)
    assert read.kind == "similarity_calibrated"
    assert list(read.value_columns) == probes
    assert analysis.read_result(folder / SIM).kind == "similarity"


@pytest.mark.parametrize("name", ["ds", "task"])
def test_companion_values_equal_calibrate_all_on_the_saved_features(measured, name):
    folder = measured["cal"][name]
    sim, comp = frame(folder / SIM), frame(folder / COMPANION)
    probes = list(sim.columns[3:])
    checked = 0
    for _, _, pair in runs.iter_pairs(folder):
        args = runs.read_json(pair / "args.json")
        mine = sim["seed"].eq(str(args["seed"]))
        split = json.loads((pair / "measure.json").read_text())["files"][SIM]["rows"]
        frac = split[0][2]
        mine &= sim["frac_overlap"].eq(frac)
        for column in probes:
            one = pair / "features" / f"{column}_model1.npy"
            rows = comp[mine].set_index("metric")
            if not one.is_file():  # an empty probe set: -1 in all three columns
                for s in ("", "_p", "_tau"):
                    assert set(rows[column + s]) == {"-1.000000"}, (pair, column)
                assert set(sim[mine][column]) == {"-1.000000"}
                continue
            a = np.load(one)
            b = np.load(pair / "features" / f"{column}_model2.npy")
            n = a.shape[0]
            rng = np.random.default_rng(SEED)  # the documented draw, written out here
            perms = np.stack([rng.permutation(n) for _ in range(K)])
            want = calibrate_all(prepare(a), prepare(b), permutations=perms, alpha=0.05)
            raw = score_all(prepare(a), prepare(b))
            raw_rows = sim[mine].set_index("metric")
            for metric in METRICS:
                c = want[metric]
                assert raw_rows.loc[metric, column] == f"{raw[metric]:.6f}"
                assert rows.loc[metric, column] == f"{c.calibrated:.6f}", (pair, column, metric)
                assert rows.loc[metric, column + "_p"] == f"{c.p_value:.6f}"
                assert rows.loc[metric, column + "_tau"] == f"{c.tau:.6f}"
                p = float(rows.loc[metric, column + "_p"])
                assert round(p * (K + 1)) in range(1, K + 2)  # (1 + hits) / (K + 1)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("name", ["ds", "task"])
def test_raw_csvs_are_byte_identical_with_and_without_calibration(measured, name):
    cal, raw = measured["cal"][name], measured["raw"][name]
    for csv in ("platonic_ffcv.csv", "platonic_acc_ffcv.csv", "platonic_ffcv.json"):
        assert (cal / csv).read_bytes() == (raw / csv).read_bytes(), csv
    assert not (raw / COMPANION).exists()


def test_task_split_has_minus_one_triples_where_a_probe_is_empty(measured):
    comp = frame(measured["cal"]["task"] / COMPANION)
    sim = frame(measured["cal"]["task"] / SIM)
    empty = 0
    for column in sim.columns[3:]:
        where = sim[column].eq("-1.000000")
        empty += int(where.sum())
        for s in ("", "_p", "_tau"):
            assert (comp.loc[where, column + s] == "-1.000000").all()
            assert (comp.loc[~where, column + s] != "-1.000000").all()
    assert empty > 0  # the task split at overlap 0 / 1 has an empty probe set


def test_changing_k_alpha_or_seed_measures_again_and_keeps_the_raw_csv(image_runs, tmp_path,
                                                                       capsys):
    folder = copy_experiment(image_runs.ds, tmp_path)
    assert run_measure(folder, "--permutations", "5") == 0
    raw = (folder / SIM).read_bytes()
    first = (folder / COMPANION).read_text()
    capsys.readouterr()
    assert run_measure(folder, "--permutations", "5") == 0  # current: nothing measured
    out = capsys.readouterr().out
    assert "0 measured" in out and "measuring again" not in out
    for option in (["--permutations", "6"], ["--permutations", "6", "--alpha", "0.2"],
                   ["--permutations", "6", "--alpha", "0.2", "--calibration-seed", "1"]):
        assert run_measure(folder, *option) == 0
        out = capsys.readouterr().out
        assert "measuring again (calibration" in out and "0 measured" not in out, option
        assert (folder / SIM).read_bytes() == raw
    meta = json.loads((folder / COMPANION).with_suffix(".json").read_text())
    assert meta["calibration"] == {"permutations": 6, "alpha": 0.2, "seed": 1}
    assert (folder / COMPANION).read_text() != first
    # without calibration: the calibrated results are current, nothing changes on disk
    before = (folder / COMPANION).read_bytes()
    assert run_measure(folder, "--no-calibrate") == 0
    assert "0 measured" in capsys.readouterr().out
    assert (folder / COMPANION).read_bytes() == before and (folder / SIM).read_bytes() == raw


@pytest.mark.parametrize("option, message", [
    (["--permutations", "0"], "--permutations must be a positive integer"),
    (["--alpha", "1.5"], "--alpha must be in (0, 1)"),
    (["--alpha", "0"], "--alpha must be in (0, 1)"),
])
def test_bad_calibration_options_are_one_error_line(image_runs, tmp_path, capsys, option,
                                                    message):
    folder = copy_experiment(image_runs.ds, tmp_path)
    capsys.readouterr()
    assert run_measure(folder, *option) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (folder / SIM).exists()


def test_partition_rows_get_their_companion_through_metric_rows():
    """The partition kinds build their rows with metric_rows(seed, [partition, a, b], ...):
    the recorder gives each row its companion row (keys kept, triples per probe)."""
    rng = np.random.default_rng(0)
    feats = {c: [torch.from_numpy(rng.standard_normal((40, 6)).astype(np.float32))
                 for _ in range(3)] for c in ("partition_metric", "svhn")}
    settings = {"permutations": 7, "alpha": 0.1, "seed": 2}
    with scoring.calibrating(settings) as recorder:
        rows = []
        for a, b, i, j in (("shape", "digit", 0, 1), ("shape", "all", 0, 2)):
            scores = {c: scoring.score_probe(f[i], f[j], name=c, where="t") for c, f in feats.items()}
            scores["empty"] = scoring.score_probe(None, None, name="empty", where="t")
            rows += scoring.metric_rows(4, ["partition2", a, b], scores)
    companion = recorder.companion(rows)
    assert [r[:5] for r in companion] == [r[:5] for r in rows]
    for comp in companion:
        assert len(comp) == 5 + 3 * 3 and comp[-3:] == ["-1.000000"] * 3
    # the first row: shape/digit, cycle_knn, partition_metric
    rng2 = np.random.default_rng(2)
    perms = np.stack([rng2.permutation(40) for _ in range(7)])
    f = feats["partition_metric"]
    want = calibrate_all(prepare(f[0]), prepare(f[1]), permutations=perms, alpha=0.1)
    first = want[METRICS[0]]
    assert companion[0][5:8] == [f"{first.calibrated:.6f}", f"{first.p_value:.6f}",
                                 f"{first.tau:.6f}"]
    assert rows[0][5] == f"{score_all(prepare(f[0]), prepare(f[1]))[METRICS[0]]:.6f}"
    header = results.partition_header(["partition_metric", "svhn", "empty"])
    comp_header = [*results.PARTITION_KEYS, *results.calibrated_columns(["partition_metric",
                                                                          "svhn", "empty"])]
    assert analysis.detect_kind(header)[0] == "partition"
    assert analysis.detect_kind(comp_header) == ("partition_calibrated",
                                                 ("partition_metric", "svhn", "empty"))


# ---- analyze --calibrated, plot --calibrated, summary ------------------------------------------
def synthetic(folder: Path, stem: str = "resnet_cifar10_ds_platonic", *, seed: int = 0,
              alpha: float = 0.05) -> tuple[Path, pd.DataFrame]:
    """A similarity file and its companion (known p-values on a grid of 1/(K+1) counts)."""
    rng = np.random.default_rng(seed)
    probes = ["metric_overlap", "metric_ood_all_mnist"]
    rows, comp = [], []
    for s in range(5):
        for frac in (0.0, 0.25, 0.5, 1.0):
            for metric in METRICS:
                raw = [rng.random() for _ in probes]
                rows.append([str(s), metric, repr(frac), *(f"{v:.6f}" for v in raw)])
                cells = []
                for j, _ in enumerate(probes):
                    if j == 1 and s == 0:  # an empty probe
                        cells += ["-1.000000"] * 3
                        continue
                    p = (1 + rng.integers(0, 21)) / 21 if rng.random() < 0.6 else 1 / 21
                    cells += [f"{rng.random():.6f}", f"{p:.6f}", f"{rng.random():.6f}"]
                comp.append([str(s), metric, repr(frac), *cells])
    sim = folder / f"{stem}.csv"
    header = results.similarity_header(probes)
    sim.write_text("\n".join([",".join(header), *map(",".join, rows)]) + "\n")
    companion = folder / results.calibrated_name(sim.name)
    comp_header = [*results.SIMILARITY_KEYS, *results.calibrated_columns(probes)]
    companion.write_text("\n".join([",".join(comp_header), *map(",".join, comp)]) + "\n")
    meta = {"arch": "resnet", "dataset": "cifar10", "kind": "ds"}
    sim.with_suffix(".json").write_text(json.dumps(meta))
    companion.with_suffix(".json").write_text(json.dumps(
        {**meta, "calibration": {"permutations": 20, "alpha": alpha, "seed": 0}}))
    return sim, pd.read_csv(companion)


def hand_significance(comp: pd.DataFrame, metric: str, column: str, alpha: float):
    """{overlap: (n, significant, significant after BH)} written out with scipy's BH."""
    from scipy.stats import false_discovery_control

    rows = comp[comp["metric"] == metric]
    p = rows[column + "_p"].to_numpy(float)
    x = rows["frac_overlap"].to_numpy(float)
    keep = p != -1
    p, x = p[keep], x[keep]
    q = false_discovery_control(p, method="bh")
    return {float(v): (int((x == v).sum()), int((p[x == v] <= alpha).sum()),
                       int((q[x == v] <= alpha).sum())) for v in np.unique(x)}


def test_bh_matches_scipy():
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 50):
        p = rng.random(n) ** 3
        p[: n // 3] = p[0]  # ties
        np.testing.assert_allclose(analysis.bh_adjust(p), false_discovery_control(p), rtol=1e-12)


@pytest.mark.parametrize("given", ["similarity", "companion"])
def test_analyze_calibrated_fractions_and_fdr(tmp_path, capsys, given):
    sim, comp = synthetic(tmp_path)
    path = sim if given == "similarity" else sim.with_name(results.calibrated_name(sim.name))
    out = tmp_path / "table.csv"
    assert cli_main(["analyze", str(path), "--calibrated", "--fdr", "--metric", "cknna",
                     "--out", str(out)]) == 0
    assert "calibrated scores" in capsys.readouterr().out
    sig = pd.read_csv(tmp_path / "table_significance.csv")
    for column in ("metric_overlap", "metric_ood_all_mnist"):
        want = hand_significance(comp, "cknna", column, 0.05)
        got = sig[sig["probe"] == column].set_index("overlap")
        assert sorted(got.index) == sorted(want)
        for level, (n, hits, hits_q) in want.items():
            assert got.loc[level, "n"] == n and got.loc[level, "significant"] == hits
            assert got.loc[level, "fraction"] == pytest.approx(hits / n)
            assert got.loc[level, "significant_fdr"] == hits_q
    # the MI table is the default analysis of the calibrated scores
    table = pd.read_csv(out, index_col="probe")
    companion = analysis.read_result(sim.with_name(results.calibrated_name(sim.name)))
    want_table = analysis.analyze(companion, "cknna")
    np.testing.assert_allclose(table["r_squared"], want_table["r_squared"])
    x, y = companion.xy("metric_overlap", "cknna")
    _, _, r2 = analysis.ols(x, y)
    assert table.loc["metric_overlap", "r_squared"] == pytest.approx(r2)


def test_analyze_calibrated_alpha_option_and_bad_input(tmp_path, capsys):
    sim, comp = synthetic(tmp_path, alpha=0.2)
    # the sidecar's alpha is the default; --alpha overrides it
    for alpha, argv in ((0.2, []), (0.5, ["--alpha", "0.5"])):
        out = tmp_path / f"t{alpha}.csv"
        assert cli_main(["analyze", str(sim), "--calibrated", "--out", str(out), *argv]) == 0
        sig = pd.read_csv(out.with_name(out.stem + "_significance.csv"))
        want = hand_significance(comp, "cka", "metric_overlap", alpha)
        got = sig[sig["probe"] == "metric_overlap"].set_index("overlap")["significant"]
        assert {k: v[1] for k, v in want.items()} == got.to_dict()
    capsys.readouterr()
    assert cli_main(["analyze", str(sim), "--calibrated", "--alpha", "1"]) == 2
    assert "--alpha must be in (0, 1)" in capsys.readouterr().err
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "platonic_ffcv.csv").write_bytes(sim.read_bytes())
    assert cli_main(["analyze", str(lone / "platonic_ffcv.csv"), "--calibrated"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no calibrated companion platonic_calibrated_ffcv.csv" in err[0]


def test_plot_calibrated_draws_the_companion(tmp_path):
    sim, _ = synthetic(tmp_path)
    out = tmp_path / "fig.png"
    assert cli_main(["plot", str(sim), "--calibrated", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_summary_writes_the_calibrated_table_and_leaves_the_raw_one(tmp_path):
    with_comp, without = tmp_path / "with", tmp_path / "without"
    with_comp.mkdir()
    without.mkdir()
    comps = []
    for i, stem in enumerate(("resnet_cifar10_ds_platonic", "vae_cifar10_ds_platonic")):
        sim, comp = synthetic(with_comp, stem, seed=i)
        comps.append((stem, comp))
        for f in (sim, sim.with_suffix(".json")):
            (without / f.name).write_bytes(f.read_bytes())
        meta = json.loads(sim.with_suffix(".json").read_text())
        meta["arch"] = stem.split("_")[0]
        for f in (sim.with_suffix(".json"), without / f"{stem}.json"):
            f.write_text(json.dumps(meta))
        side = with_comp / f"{results.calibrated_name(sim.name)[:-4]}.json"
        side.write_text(json.dumps({**meta, "calibration": {"alpha": 0.05}}))
    assert cli_main(["summary", str(with_comp)]) == 0
    assert cli_main(["summary", str(without)]) == 0
    assert (with_comp / "summary_mi.csv").read_bytes() == (without / "summary_mi.csv").read_bytes()
    assert not (without / "summary_mi_calibrated.csv").exists()
    table = pd.read_csv(with_comp / "summary_mi_calibrated.csv", index_col=0)
    assert list(table.index) == ["mutual_information", "r_squared", "significant_fraction"]
    # dataset overlap: mean over the two architectures of each file's mean over its columns
    fractions, r2s = [], []
    for _stem, comp in comps:
        rows = comp[comp["metric"] == "cka"]
        per_col, per_r2 = [], []
        for column in ("metric_overlap", "metric_ood_all_mnist"):
            p = rows[column + "_p"].to_numpy(float)
            keep = p != -1
            per_col.append(float(np.mean(p[keep] <= 0.05)))
            x, y = rows["frac_overlap"].to_numpy(float)[keep], rows[column].to_numpy(float)[keep]
            per_r2.append(np.corrcoef(x, y)[0, 1] ** 2)
        fractions.append(np.mean(per_col))
        r2s.append(np.mean(per_r2))
    assert table.loc["significant_fraction", "Dataset Overlap"] == pytest.approx(np.mean(fractions))
    assert table.loc["r_squared", "Dataset Overlap"] == pytest.approx(np.mean(r2s))
