"""repr_sim.summary: the headline tables on hand-made folders (answers computed here), on the
published files, the CLI and bad input."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pandas as pd
import pytest
from _result_fixtures import copy_reference, needs_reference, similarity_file, write_csv
from sklearn.feature_selection import mutual_info_regression

from repr_sim import summary as S
from repr_sim.cli import main

X4 = [0.0, 0.0, 1.0, 1.0]
X6 = [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
PART6 = ["partition1", "partition1", "partition2", "partition2", "partition3", "partition3"]


def mi(x, y, *, standardize=False) -> float:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = y != -1
    x, y = x[keep], y[keep]
    if standardize:
        x = (x - x.mean()) / x.std()
    return float(mutual_info_regression(x.reshape(-1, 1), y, random_state=42)[0])


# Probe columns and their R^2, worked out by hand (x, y -> slope, intercept, SS_res, SS_tot):
#   X4, [1,3,4,6]          slope 3, intercept 2, SS_res 4, SS_tot 13    -> 9/13
#   X4, [.1,.1,.5,.5]      on a line                                   -> 1
#   X4, [.2,.3,.6,.7]      slope .4, intercept .25, SS_res .01, SS_tot .17 -> 16/17
#   X4, [1,2,2,1]          slope 0                                      -> 0
#   X4, [0,1,1,2]          slope 1, intercept .5, SS_res 1, SS_tot 2    -> 1/2
#   X6, [-1,-1,.2,.4,.6,.8] (x .5,.5,1,1) slope .8, SS_res .04, SS_tot .2 -> 4/5
#   X6, [.1,.3,.2,.4,-1,-1] (x 0,0,.5,.5) slope .2, SS_res .04, SS_tot .05 -> 1/5
#   X6, [0,2,1,3,2,4]      slope 2, intercept 1, SS_res 6, SS_tot 10    -> 2/5
DS = {
    "resnet_a_ds_platonic.csv": (X4, {"metric_overlap": [1, 3, 4, 6],
                                      "metric_ood_all_mnist": [0.1, 0.1, 0.5, 0.5]}),
    "resnet_b_ds_platonic.csv": (X4, {"metric_overlap": [0.2, 0.3, 0.6, 0.7]}),
    "vae_platonic_ds_cifar10.csv": (X4, {"metric_overlap": [1, 2, 2, 1]}),
    "nanogpt_shakespeare_ds_platonic.csv": (X4, {"metric_shakespeare": [0, 1, 1, 2]}),
}
TASK = {
    "resnet_c_task_platonic.csv": (X6, {"metric_overlap": [-1, -1, 0.2, 0.4, 0.6, 0.8],
                                        "metric_ood_one": [0.1, 0.3, 0.2, 0.4, -1, -1]}),
    "vae_platonic_task_cifar10.csv": (X4, {"metric_ood_one": [1, 3, 4, 6]}),
}
PARTITION = {"partition_metric": [0.1 + 0.6 * x for x in X6], "cifar10": [0, 2, 1, 3, 2, 4],
             "mnist": [1 - 0.5 * x for x in X6], "svhn": [0, 2, 1, 3, 2, 4],
             "digit": [5, 0, 5, 0, 5, 0], "shape": [0, 5, 0, 5, 0, 5]}


def hand_made_folder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, cols) in {**DS, **TASK}.items():
        similarity_file(folder / name, x, cols)
    header = ["seed", "metric", "partition", "model0", "model1", "cifar10", "digit", "mnist",
              "partition_metric", "shape", "svhn"]
    rows = []
    for i, part in enumerate(PART6):
        rows.append([i, "cka", part, "a", "b", *(float(PARTITION[c][i]) for c in header[5:])])
        rows.append([i, "svcca", part, "a", "b", *(9.0 for _ in header[5:])])
    write_csv(folder / "resnet_partition_platonic.csv", header, rows)
    write_csv(folder / "resnet_a_ds_platonic_acc.csv", ["seed", "frac_overlap", "model_idx", "acc"],
              [[0, 0.0, 1, 0.90], [0, 0.0, 2, 0.92], [1, 1.0, 1, 0.94]])
    write_csv(folder / "resnet_c_task_platonic_acc.csv",
              ["seed", "frac_overlap", "model_idx", "acc"],
              [[0, 0.0, 1, -1.0], [0, 0.0, 2, -1.0], [0, 0.5, 1, 0.80], [0, 0.5, 2, 0.84],
               [0, 1.0, 1, 0.82], [0, 1.0, 2, 0.86]])
    write_csv(folder / "resnet_partition_platonic_acc.csv", ["seed", "partition", "model", "acc"],
              [[0, "partition1", "shape", 0.99], [1, "partition1", "shape", 0.98],
               [0, "partition1", "digit", 0.97], [1, "partition1", "digit", 0.95],
               [0, "partition3", "all0", 0.90], [0, "partition3", "all1", 0.92]])
    write_csv(folder / "nanogpt_shakespeare_ds_platonic_loss.csv",
              ["seed", "frac_overlap", "model_idx", "val_loss"],
              [[0, 0.0, 1, 3.0], [0, 0.0, 2, 3.2], [0, 1.0, 1, 3.1]])
    return folder


def file_mi(name: str) -> float:
    x, cols = {**DS, **TASK}[name]
    return float(np.mean([mi(x, y) for y in cols.values()]))


def test_hand_made_headline(tmp_path):
    folder = hand_made_folder(tmp_path / "results")
    s = S.summarize(folder)
    # R^2: per file over its columns, per architecture over its files, then over architectures
    r2_ds = np.mean([np.mean([np.mean([9 / 13, 1.0]), 16 / 17]), 0.0, 0.5])
    r2_task = np.mean([np.mean([4 / 5, 1 / 5]), 9 / 13])
    r2_partition = np.mean([1.0, 2 / 5, 1.0, 2 / 5])  # the four headline columns only
    assert s.mi.loc["r_squared", "Dataset Overlap"] == pytest.approx(r2_ds, abs=1e-12)
    assert s.mi.loc["r_squared", "Task + Dataset Overlap"] == pytest.approx(r2_task, abs=1e-12)
    assert s.mi.loc["r_squared", "Task Overlap"] == pytest.approx(r2_partition, abs=1e-12)
    mi_ds = np.mean([np.mean([file_mi("resnet_a_ds_platonic.csv"),
                              file_mi("resnet_b_ds_platonic.csv")]),
                     file_mi("vae_platonic_ds_cifar10.csv"),
                     file_mi("nanogpt_shakespeare_ds_platonic.csv")])
    mi_task = np.mean([file_mi("resnet_c_task_platonic.csv"),
                       file_mi("vae_platonic_task_cifar10.csv")])
    mi_part = np.mean([mi(X6, PARTITION[c], standardize=True)
                       for c in ("partition_metric", "cifar10", "mnist", "svhn")])
    assert s.mi.loc["mutual_information", "Dataset Overlap"] == pytest.approx(mi_ds, abs=1e-12)
    assert s.mi.loc["mutual_information", "Task + Dataset Overlap"] == pytest.approx(mi_task,
                                                                                     abs=1e-12)
    assert s.mi.loc["mutual_information", "Task Overlap"] == pytest.approx(mi_part, abs=1e-12)
    assert list(s.mi.index) == ["mutual_information", "r_squared"]
    assert list(s.mi.columns) == ["Dataset Overlap", "Task Overlap", "Task + Dataset Overlap"]
    # which file went where, and why
    placed = s.files.set_index("file")
    assert placed.loc["vae_platonic_ds_cifar10.csv", "placed_in"] == "Dataset Overlap"
    assert placed.loc["nanogpt_shakespeare_ds_platonic.csv", "architecture"] == "gpt"
    assert placed.loc["resnet_c_task_platonic.csv", "placed_in"] == "Task + Dataset Overlap"
    assert placed.loc["resnet_partition_platonic.csv", "placed_in"] == "Task Overlap"
    assert placed.loc["resnet_partition_platonic.csv", "columns"] == \
        "partition_metric cifar10 mnist svhn"
    assert placed.loc["resnet_a_ds_platonic_acc.csv", "placed_in"] == S.ACCURACY_TABLE
    assert set(placed["arch_from"]) == {"file name"}


def test_hand_made_accuracy_table(tmp_path):
    s = S.summarize(hand_made_folder(tmp_path / "results"))
    acc = s.acc.set_index(["file", "label_set"])

    def check(file, label_set, values, decimals=2, overlap=None):
        row = acc.loc[(file, label_set)]
        mean, std = statistics.mean(values), statistics.stdev(values)
        assert row["mean"] == pytest.approx(mean, abs=1e-9)
        assert row["std"] == pytest.approx(std, abs=1e-9)
        assert row["n"] == len(values)
        assert row["value"] == f"{mean:.{decimals}f} \u00b1 {std:.{decimals}f}"
        if overlap:
            assert row["overlap"] == overlap

    check("resnet_a_ds_platonic_acc.csv", "", [90, 92, 94], overlap="Dataset Overlap")
    check("resnet_c_task_platonic_acc.csv", "", [80, 84, 82, 86],  # the -1 rows left out
          overlap="Task + Dataset Overlap")
    check("resnet_partition_platonic_acc.csv", "partition1: shape", [99, 98],
          overlap="Task Overlap")
    check("resnet_partition_platonic_acc.csv", "partition1: digit", [97, 95])
    check("resnet_partition_platonic_acc.csv", "partition3: all", [90, 92])
    check("nanogpt_shakespeare_ds_platonic_loss.csv", "", [3.0, 3.2, 3.1], decimals=3)
    assert acc.loc[("nanogpt_shakespeare_ds_platonic_loss.csv", ""), "quantity"] == \
        "validation loss"


def test_metadata_and_companion_files(tmp_path):
    """Architecture from <stem>.json; an accuracy file takes its similarity file's split;
    a file nothing names is an architecture of its own."""
    folder = tmp_path / "r"
    folder.mkdir()
    similarity_file(folder / "platonic_ffcv.csv", X6,
                    {"metric_overlap": [-1, -1, 0.2, 0.4, 0.6, 0.8],
                     "metric_ood_one": [0.1, 0.3, 0.2, 0.4, -1, -1]})
    (folder / "platonic_ffcv.json").write_text(json.dumps({"arch": "resnet18_cifar"}))
    write_csv(folder / "platonic_acc_ffcv.csv", ["seed", "frac_overlap", "model_idx", "acc"],
              [[0, 0.5, 1, 0.5], [0, 0.5, 2, 0.7]])
    (folder / "platonic_acc_ffcv.json").write_text(json.dumps({"arch": "resnet18_cifar",
                                                               "dataset": "cifar100"}))
    similarity_file(folder / "demo_ds_platonic.csv", X4, {"metric_overlap": [0, 1, 1, 2]})
    similarity_file(folder / "vae_x_ds.csv", X4, {"metric_overlap": [1, 2, 2, 1]})
    s = S.summarize(folder)
    placed = s.files.set_index("file")
    assert placed.loc["platonic_ffcv.csv", "architecture"] == "resnet"
    assert placed.loc["platonic_ffcv.csv", "arch_from"] == "metadata"
    assert placed.loc["demo_ds_platonic.csv", "architecture"] == "unknown"
    row = s.acc.iloc[0]
    assert (row["architecture"], row["dataset"], row["overlap"]) == \
        ("resnet", "CIFAR-100", "Task + Dataset Overlap")
    # two architectures in Dataset Overlap (unknown: R^2 1/2, vae: 0) -> 1/4
    assert s.mi.loc["r_squared", "Dataset Overlap"] == pytest.approx(0.25, abs=1e-12)
    assert "averaged as an architecture of its own" in S.format_files(s.files)
    assert np.isnan(s.mi.loc["mutual_information", "Task Overlap"])  # no partition file


def test_cli_summary_writes_tables_and_latex(tmp_path, capsys):
    folder = hand_made_folder(tmp_path / "results")
    out = tmp_path / "out"
    assert main(["summary", str(folder), "--out", str(out), "--latex"]) == 0
    text = capsys.readouterr().out
    assert "Dataset Overlap:" in text and "resnet_a_ds_platonic.csv" in text
    assert r"\begin{tabular}" in text and r"\pm" in text
    mi_table = pd.read_csv(out / "summary_mi.csv", index_col=0)
    assert list(mi_table.index) == ["mutual_information", "r_squared"]
    assert list(mi_table.columns) == ["Dataset Overlap", "Task Overlap", "Task + Dataset Overlap"]
    pd.testing.assert_frame_equal(mi_table, S.summarize(folder).mi, check_names=False)
    acc = pd.read_csv(out / "summary_acc.csv", keep_default_na=False)
    assert list(acc.columns) == list(S.ACC_COLUMNS)
    assert (out / "summary_mi.tex").read_text().startswith(r"\begin{tabular}")
    assert r"accuracy (\%)" in (out / "summary_acc.tex").read_text()  # escaped for LaTeX
    # the default output folder is the results folder, and a second run skips our own tables
    assert main(["summary", str(folder)]) == 0
    assert main(["summary", str(folder)]) == 0
    assert "skipped: a table written by reprsim" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(folder / "summary_mi.csv", index_col=0), mi_table)


def test_cli_exclude(tmp_path, capsys):
    folder = hand_made_folder(tmp_path / "results")
    assert main(["summary", str(folder), "--exclude", "vae_*", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "summary_mi.csv", index_col=0)
    r2 = np.mean([np.mean([np.mean([9 / 13, 1.0]), 16 / 17]), 0.5])
    assert table.loc["r_squared", "Dataset Overlap"] == pytest.approx(r2, abs=1e-12)


@needs_reference
def test_published_files(tmp_path):
    folder = tmp_path / "published"
    copy_reference(folder)
    s = S.summarize(folder)
    assert np.isfinite(s.mi.to_numpy(dtype=float)).all()
    assert np.isfinite(s.acc[["mean", "std"]].to_numpy(dtype=float)).all()
    assert set(s.files["placed_in"]) == {"Dataset Overlap", "Task Overlap",
                                         "Task + Dataset Overlap", S.ACCURACY_TABLE}
    assert set(s.files["architecture"]) == {"resnet", "vae", "gpt"}
    # the study's published headline: Task Overlap 0.566; Dataset Overlap 0.360 from the
    # VAE's CIFAR-10 files only (the study's VAE experiment, docs/protocol.md section 2)
    assert s.mi.loc["mutual_information", "Task Overlap"] == pytest.approx(0.566, abs=5e-4)
    cifar_vae = S.summarize(folder, exclude=("vae_*mnist*",))
    assert cifar_vae.mi.loc["mutual_information", "Dataset Overlap"] == pytest.approx(0.360,
                                                                                      abs=5e-4)
    # 7 accuracy files: 6 splits + 6 label sets
    assert len(s.acc) == 12


def bad_folder(tmp_path, files: dict[str, str]):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("files, needle", [
    ({}, "no result files"),
    ({"notes.txt": "hello", "summary_mi.csv": ",Dataset Overlap\nr_squared,1\n"},
     "no result files"),
    ({"weird.csv": "a,b\n1,2\n"}, "weird.csv: not a result file"),
    ({"e.csv": ""}, "e.csv: empty file"),
    ({"p.csv": "seed,metric,partition,model0,model1,svhn\n"
               + "".join(f"{i},cka,partition{1 + i % 3},a,b,0.{i}\n" for i in range(6))},
     "lacks column 'partition_metric'"),
])
def test_bad_folders_are_one_line(tmp_path, capsys, files, needle):
    folder = bad_folder(tmp_path, files)
    assert main(["summary", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (folder / "summary_acc.csv").exists()


def test_missing_folder_and_bad_metric(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    folder = hand_made_folder(tmp_path / "results")
    assert main(["summary", str(folder), "--metric", "foo"]) == 2
    assert "unknown metric 'foo'" in capsys.readouterr().err


def test_latex_escaping():
    assert S._tex("shape_digit & 5% #1 $x$ {a} \\") == \
        r"shape\_digit \& 5\% \#1 \$x\$ \{a\} \textbackslash{}"
