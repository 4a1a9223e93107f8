"""repr_sim.analysis: kinds by header, the -1 rule, the numbers, the CLI, bad input."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from _result_fixtures import (
    METRICS8,
    copy_reference,
    needs_reference,
    reference_files,
    similarity_file,
    write_csv,
)
from sklearn.feature_selection import mutual_info_regression

from repr_sim import analysis as A
from repr_sim.cli import main
from repr_sim.errors import UserError

NUMERIC = ["mutual_information", "r_squared", "slope", "intercept", "n", "spearman_rho",
           "spearman_p", "slope_ci_low", "slope_ci_high"]


def expected_kind(header: list[str]) -> str:
    """The kind docs/protocol.md section 3 gives a header, written out independently."""
    if header[:3] == ["seed", "metric", "frac_overlap"]:
        return "similarity"
    if header[:3] == ["seed", "metric", "partition"]:
        return "partition"
    return {"acc": "accuracy", "val_loss": "loss"}[header[-1]] if "frac_overlap" in header \
        else "partition_accuracy"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return copy_reference(tmp_path_factory.mktemp("reference"))


# ---- the published files -----------------------------------------------------------------
@needs_reference
def test_every_published_file_gives_a_finite_table(reference, tmp_path):
    assert len(reference) == len(reference_files()) >= 20
    for path in reference:
        header = path.read_text().splitlines()[0].split(",")
        # the kind comes from the header, not the name: a renamed copy reads the same
        renamed = tmp_path / "results.csv"
        shutil.copyfile(path, renamed)
        result = A.read_result(renamed)
        assert result.kind == expected_kind(header) == A.read_result(path).kind, path.name
        table = A.analyze(A.read_result(path), "cka")
        assert list(table.columns[:2]) == ["mutual_information", "r_squared"]
        assert list(table.index) == sorted(table.index, key=list(result.value_columns).index)
        assert set(table.index) == set(result.value_columns)
        values = table[NUMERIC].to_numpy(dtype=float)
        assert np.isfinite(values).all(), (path.name, table)
        assert (table["mutual_information"] >= 0).all()
        assert ((table["r_squared"] >= 0) & (table["r_squared"] <= 1)).all()
        assert (table["slope_ci_low"] <= table["slope"]).all()
        assert (table["slope"] <= table["slope_ci_high"]).all()
        assert all(isinstance(t, str) and t and not t.startswith("metric_")
                   for t in table["title"])


@needs_reference
def test_published_all_metrics_table(reference):
    path = next(p for p in reference if p.name == "resnet_cifar10_ds_platonic.csv")
    table = A.analyze_all_metrics(path)
    assert table.index.names == ["metric", "probe"]
    assert list(dict.fromkeys(table.index.get_level_values(0))) == list(METRICS8)
    assert len(table) == 8 * 3
    assert np.isfinite(table[NUMERIC].to_numpy(dtype=float)).all()
    # each block is the one-metric table
    pd.testing.assert_frame_equal(table.loc["svcca"], A.analyze(path, "svcca"))


@needs_reference
def test_published_mi_matches_the_definition(reference):
    """MI = mutual_info_regression on the cka rows in file order, -1 rows out."""
    path = next(p for p in reference if p.name == "resnet_cifar10_task_platonic.csv")
    raw = pd.read_csv(path)
    cka = raw[raw["metric"] == "cka"]
    table = A.analyze(path)
    for column in ("metric_overlap", "metric_ood_one", "metric_ood_all_mnist"):
        keep = cka[cka[column] != -1]
        mi = mutual_info_regression(keep[["frac_overlap"]].to_numpy(), keep[column].to_numpy(),
                                    random_state=42)[0]
        assert table.loc[column, "mutual_information"] == pytest.approx(mi, abs=1e-12)
        r = np.corrcoef(keep["frac_overlap"], keep[column])[0, 1]
        assert table.loc[column, "r_squared"] == pytest.approx(r * r, abs=1e-12)


@needs_reference
@pytest.mark.parametrize("name, dropped", [
    ("resnet_cifar10_task_platonic.csv", {"metric_overlap": 0.0, "metric_ood_one": 1.0,
                                          "metric_ood_all_mnist": None,
                                          "metric_ood_all_svhn": None}),
    ("nanogpt_all_task_platonic.csv", {"metric_common": 0.0, "metric_OOD_for_one": 1.0,
                                       "metric_OOD_for_all": 0.0}),
    ("resnet_cifar10_ds_platonic.csv", {"metric_overlap": None, "metric_ood_all_mnist": None,
                                        "metric_ood_all_svhn": None}),
])
def test_empty_probe_rows_left_out_as_protocol_says(reference, name, dropped):
    """docs/protocol.md section 4: image task files lose alpha 0 (shared classes) and alpha 1 (one
    model's classes); the text task file alpha 0 (common, neither) and alpha 1 (one)."""
    path = next(p for p in reference if p.name == name)
    raw = pd.read_csv(path)
    cka = raw[raw["metric"] == "cka"]
    result = A.read_result(path)
    table = A.analyze(result)
    for column, alpha in dropped.items():
        expected = cka if alpha is None else cka[~np.isclose(cka["frac_overlap"], alpha)]
        x, y = result.xy(column, "cka")
        np.testing.assert_array_equal(x, expected["frac_overlap"].to_numpy())
        np.testing.assert_array_equal(y, expected[column].to_numpy())
        assert table.loc[column, "n"] == len(expected)
        if alpha is not None:  # those rows were there, and were -1
            assert len(expected) < len(cka)
            assert (cka.loc[np.isclose(cka["frac_overlap"], alpha), column] == -1).all()
        assert (y != -1).all()


@needs_reference
def test_partition_file_uses_x_0_half_1(reference):
    path = next(p for p in reference if p.name == "resnet_partition_platonic.csv")
    raw = pd.read_csv(path)
    cka = raw[raw["metric"] == "cka"]
    x = cka["partition"].map({"partition1": 0.0, "partition2": 0.5, "partition3": 1.0})
    table = A.analyze(path)
    assert list(table.index[:4]) == ["partition_metric", "cifar10", "mnist", "svhn"]
    z = ((x - x.mean()) / x.std(ddof=0)).to_numpy().reshape(-1, 1)
    for column in ("partition_metric", "cifar10", "mnist", "svhn", "digit", "shape"):
        slope, intercept = np.polyfit(x, cka[column], 1)
        assert table.loc[column, "slope"] == pytest.approx(slope, rel=1e-9)
        assert table.loc[column, "intercept"] == pytest.approx(intercept, rel=1e-9, abs=1e-12)
        mi = mutual_info_regression(z, cka[column].to_numpy(), random_state=42)[0]
        assert table.loc[column, "mutual_information"] == pytest.approx(mi, abs=1e-12)


# ---- the numbers on hand-made files --------------------------------------------------------
def test_hand_computed_case(tmp_path):
    """x = 0,0,1,1; y = 1,3,4,6: slope 3, intercept 2, residuals +-1 so SS_res = 4,
    SS_tot = 13, R^2 = 9/13; Spearman on ranks (1.5,1.5,3.5,3.5) vs (1,2,3,4) is
    4/sqrt(20); of the 24 orderings of y, 8 reach |rho| = 4/sqrt(20), so p -> 1/3."""
    path = similarity_file(tmp_path / "hand.csv", [0, 0, 1, 1],
                           {"metric_overlap": [1, 3, 4, 6]})
    row = A.analyze(path).loc["metric_overlap"]
    assert row["slope"] == pytest.approx(3.0, abs=1e-12)
    assert row["intercept"] == pytest.approx(2.0, abs=1e-12)
    assert row["r_squared"] == pytest.approx(9 / 13, abs=1e-12)
    assert row["n"] == 4
    assert row["spearman_rho"] == pytest.approx(4 / math.sqrt(20), abs=1e-12)
    assert row["spearman_p"] == pytest.approx(1 / 3, abs=0.02)
    mi = mutual_info_regression(np.array([[0.0], [0], [1], [1]]), np.array([1.0, 3, 4, 6]),
                                random_state=42)[0]
    assert row["mutual_information"] == pytest.approx(mi, abs=1e-12)


def test_r_squared_is_one_on_a_line(tmp_path):
    fracs = np.repeat(np.round(np.arange(11) / 10, 1), 5)
    path = similarity_file(tmp_path / "line.csv", fracs,
                           {"metric_overlap": 0.2 + 0.5 * fracs,
                            "metric_ood_all_mnist": 0.9 - 0.3 * fracs})
    table = A.analyze(path)
    assert table["r_squared"].to_numpy() == pytest.approx([1.0, 1.0], abs=1e-9)
    assert table["slope"].to_numpy() == pytest.approx([0.5, -0.3], abs=1e-6)
    assert table["intercept"].to_numpy() == pytest.approx([0.2, 0.9], abs=1e-6)
    assert table["spearman_rho"].to_numpy() == pytest.approx([1.0, -1.0], abs=1e-12)
    assert table.loc["metric_overlap", "slope_ci_low"] == pytest.approx(0.5, abs=1e-6)
    assert table.loc["metric_overlap", "slope_ci_high"] == pytest.approx(0.5, abs=1e-6)
    assert table["mutual_information"].min() > 1.0  # y is a function of x


def test_mi_about_zero_for_an_independent_column(tmp_path):
    rng = np.random.default_rng(7)
    fracs = np.repeat(np.round(np.arange(11) / 10, 1), 40)
    path = similarity_file(tmp_path / "indep.csv", fracs,
                           {"metric_overlap": rng.normal(0.5, 0.1, fracs.size),
                            "metric_ood_all_svhn": 0.3 + 0.4 * fracs
                            + rng.normal(0, 0.02, fracs.size)})
    table = A.analyze(path)
    assert table.loc["metric_overlap", "mutual_information"] < 0.05
    assert table.loc["metric_overlap", "r_squared"] < 0.02
    assert table.loc["metric_overlap", "spearman_p"] > 0.01
    assert table.loc["metric_ood_all_svhn", "mutual_information"] > 1.0


def test_bootstrap_interval_contains_the_true_slope_and_is_seeded(tmp_path):
    rng = np.random.default_rng(3)
    fracs = np.repeat(np.round(np.arange(11) / 10, 1), 20)
    y = 0.3 + 0.4 * fracs + rng.normal(0, 0.05, fracs.size)
    path = similarity_file(tmp_path / "noisy.csv", fracs, {"metric_overlap": y})
    first = A.analyze(path).loc["metric_overlap"]
    assert first["slope_ci_low"] < 0.4 < first["slope_ci_high"]
    assert first["slope_ci_high"] - first["slope_ci_low"] < 0.1
    # the interval is the percentile interval of resampled OLS slopes: about +-1.96 SE
    x = fracs - fracs.mean()
    resid = y - (first["intercept"] + first["slope"] * fracs)
    se = math.sqrt(resid @ resid / (y.size - 2) / (x @ x))
    assert first["slope_ci_high"] - first["slope_ci_low"] == pytest.approx(2 * 1.96 * se,
                                                                           rel=0.25)
    again = A.analyze(path).loc["metric_overlap"]
    pd.testing.assert_series_equal(first, again)
    other = A.analyze(path, seed=1).loc["metric_overlap"]
    assert other["slope_ci_low"] != first["slope_ci_low"]


def test_minus_one_rows_left_out_of_each_column_only(tmp_path):
    fracs = [0, 0, 0.5, 0.5, 1, 1, 0.5, 0]
    shared = [-1, -1, 0.5, 0.6, 0.9, 1.0, 0.55, -1]
    one = [0.2, 0.3, 0.4, 0.5, -1, -1, 0.45, 0.25]
    path = similarity_file(tmp_path / "task.csv", fracs,
                           {"metric_overlap": shared, "metric_ood_one": one})
    result = A.read_result(path)
    assert result.split == "task"
    table = A.analyze(result)
    assert table.loc["metric_overlap", "n"] == 5
    assert table.loc["metric_ood_one", "n"] == 6
    keep = np.array(shared) != -1
    slope, intercept = np.polyfit(np.array(fracs)[keep], np.array(shared)[keep], 1)
    assert table.loc["metric_overlap", "slope"] == pytest.approx(slope)
    assert table.loc["metric_overlap", "intercept"] == pytest.approx(intercept)


def test_accuracy_and_loss_files(tmp_path):
    acc = write_csv(tmp_path / "a_acc.csv", ["seed", "frac_overlap", "model_idx", "acc"],
                    [[0, 0.0, 1, -1], [0, 0.0, 2, -1], [0, 0.5, 1, 0.8], [0, 0.5, 2, 0.82],
                     [1, 1.0, 1, 0.9], [1, 1.0, 2, 0.92], [1, 0.5, 1, 0.81]])
    table = A.analyze(acc, metric="svcca")  # accuracy files have no metric: ignored
    assert list(table.index) == ["acc"]
    assert table.loc["acc", "n"] == 5
    slope, _ = np.polyfit([0.5, 0.5, 1, 1, 0.5], [0.8, 0.82, 0.9, 0.92, 0.81], 1)
    assert table.loc["acc", "slope"] == pytest.approx(slope)
    loss = write_csv(tmp_path / "loss.csv", ["seed", "frac_overlap", "model_idx", "val_loss"],
                     [[s, f, m, 3.0 - f + 0.01 * m] for s in range(2) for f in (0.0, 0.5, 1.0)
                      for m in (1, 2)])
    result = A.read_result(loss)
    assert result.kind == "loss"
    assert A.analyze(result).loc["val_loss", "slope"] == pytest.approx(-1.0)


def test_partition_accuracy_file(tmp_path):
    rows = [[s, p, m, 0.99 - 0.01 * i] for s in range(2)
            for i, (p, m) in enumerate([("partition1", "shape"), ("partition1", "digit"),
                                        ("partition2", "shape_digit"),
                                        ("partition3", "all0"), ("partition3", "all1")])]
    path = write_csv(tmp_path / "p_acc.csv", ["seed", "partition", "model", "acc"], rows)
    result = A.read_result(path)
    assert result.kind == "partition_accuracy"
    assert A.analyze(result).loc["acc", "n"] == 10


def test_titles_in_words():
    t = A.probe_title
    assert t("metric_ood_all_mnist") == "MNIST (OOD)"
    assert t("metric_ood_all_svhn") == "SVHN (OOD)"
    assert t("metric_overlap", dataset="cifar10", split="dataset") == "CIFAR-10"
    assert t("metric_overlap") == "In-distribution"
    assert t("metric_overlap", dataset="cifar100", split="task") == "Shared classes (CIFAR-100)"
    assert t("metric_ood_one") == "Classes of one model"
    assert t("metric_shakespeare", dataset="shakespeare") == "Shakespeare (in-distribution)"
    assert t("metric_shakespeare", dataset="tinystories") == "Shakespeare"
    assert t("metric_common") == "Common corpora"
    assert t("metric_OOD_for_one") == "Corpora of one model"
    assert t("metric_OOD_for_all") == "Corpora of neither model"
    assert t("cifar10", split="partition") == "CIFAR-10 (OOD)"
    assert t("metric_ood_all_my_probe") == "My probe (OOD)"
    assert t("metric_texture_set") == "Texture set"


def test_architecture_from_metadata_then_name(tmp_path):
    path = similarity_file(tmp_path / "resnet_x_ds_platonic.csv", [0, 0, 1, 1],
                           {"metric_overlap": [1, 2, 3, 4]})
    assert A.architecture(A.read_result(path)) == ("resnet", "file name")
    (tmp_path / "resnet_x_ds_platonic.json").write_text('{"arch": "vae", "dataset": "mnist"}')
    result = A.read_result(path)
    assert A.architecture(result) == ("vae", "metadata")
    assert result.dataset == "mnist"
    for name, arch in [("nanogpt_a.csv", "gpt"), ("gpt_b.csv", "gpt"), ("demo_ds.csv", None),
                       ("resnet18_cifar_c.csv", "resnet")]:
        target = tmp_path / name
        shutil.copyfile(path, target)
        assert A.architecture(A.read_result(target))[0] == arch


# ---- the CLI ----------------------------------------------------------------------------------
def test_cli_analyze_prints_and_writes(tmp_path, capsys):
    fracs = np.repeat([0.0, 0.5, 1.0], 4)
    path = similarity_file(tmp_path / "r.csv", fracs,
                           {"metric_overlap": 0.1 + 0.2 * fracs + 0.01 * (np.arange(12) % 3),
                            "metric_ood_all_mnist": 0.5 + 0.1 * fracs})
    out = tmp_path / "tables" / "t.csv"
    assert main(["analyze", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "metric_overlap" in text and "mutual_information" in text
    written = pd.read_csv(out, index_col=0)
    assert list(written.columns[:2]) == ["mutual_information", "r_squared"]
    assert written.index.name == "probe"
    pd.testing.assert_frame_equal(written.drop(columns="title"),
                                  A.analyze(path).drop(columns="title"), check_dtype=False)
    assert main(["analyze", str(path), "--all-metrics", "--out", str(out)]) == 0
    both = pd.read_csv(out, index_col=[0, 1])
    assert both.index.names == ["metric", "probe"]
    assert sorted(set(both.index.get_level_values(0))) == ["cka", "svcca"]


def bad(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_HEADER = "seed,metric,frac_overlap,metric_overlap\n"
GOOD_ROWS = "".join(f"{i},cka,{f},{0.5 + f / 4}\n" for i, f in enumerate([0, 0, 1, 1, 0.5]))


@pytest.mark.parametrize("name, text, args, needle", [
    ("empty.csv", "", [], "empty file"),
    ("header.csv", GOOD_HEADER, [], "no rows"),
    ("frac.csv", "seed,metric,frac,metric_overlap\n0,cka,0,1\n", [], "'frac_overlap'"),
    ("noacc.csv", "seed,frac_overlap,model_idx\n0,0,1\n", [], "'acc'"),
    ("extra.csv", "seed,frac_overlap,model_idx,acc,x\n0,0,1,0.5,1\n", [], "'x'"),
    ("probe.csv", "seed,metric,frac_overlap,overlap\n0,cka,0,1\n", [], "'overlap'"),
    ("nonnum.csv", GOOD_HEADER + "0,cka,0.5,abc\n" + GOOD_ROWS, [], "'abc'"),
    ("missing.csv", GOOD_HEADER + "0,cka,,0.5\n" + GOOD_ROWS, [], "missing value"),
    ("frac2.csv", GOOD_HEADER + "0,cka,1.5,0.5\n" + GOOD_ROWS, [], "outside [0, 1]"),
    ("seed.csv", GOOD_HEADER + "0.5,cka,0.5,0.5\n" + GOOD_ROWS, [], "integer"),
    ("metric.csv", GOOD_HEADER + "0,bogus,0.5,0.5\n" + GOOD_ROWS, [], "unknown metric 'bogus'"),
    ("ok.csv", GOOD_HEADER + GOOD_ROWS, ["--metric", "foo"], "unknown metric 'foo'"),
    ("ok2.csv", GOOD_HEADER + GOOD_ROWS, ["--metric", "svcca"], "no rows for metric 'svcca'"),
    ("part.csv", "seed,metric,partition,model0,model1,svhn\n0,cka,partition9,a,b,0.1\n", [],
     "unknown partition 'partition9'"),
    ("junk.csv", "a,b,c\n1,2,3\n", [], "not a result file"),
    ("ours.csv", "probe,mutual_information,r_squared\nx,0.1,0.2\n", [], "written by reprsim"),
    ("few.csv", GOOD_HEADER + "0,cka,0,0.5\n1,cka,1,0.6\n", [], "at least 4"),
    ("one_x.csv", GOOD_HEADER + "".join(f"{i},cka,0.5,0.{i}\n" for i in range(5)), [],
     "single value"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, name, text, args, needle):
    path = bad(tmp_path, name, text)
    out = tmp_path / "table.csv"
    assert main(["analyze", str(path), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err
    if "--metric" not in args:
        assert name in err  # names the file
    assert not out.exists()


def test_missing_file_is_one_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_library_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown metric"):
        A.check_metric("nope")
    with pytest.raises(UserError, match="empty file"):
        A.read_result(bad(tmp_path, "e.csv", ""))
