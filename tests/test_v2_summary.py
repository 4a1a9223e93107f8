"""`reprsim summary --study v2`: the study's v2 headline and accuracy tables from its published
layout (docs/protocol.md section 6.7's numbers), `--compare`, and the recursive folder scan."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from _result_fixtures import similarity_file
from test_v2_analysis import V1_REFERENCE, v2_reference

from repr_sim import summary as S
from repr_sim.cli import main


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return v2_reference(tmp_path_factory.mktemp("published") / "v2")


@pytest.fixture(scope="module")
def study(v2):
    return S.summarize(v2, study="v2")


def test_headline_as_published(study):
    """Published: MI 0.584 / 0.771 / 0.891 (Dataset / Task + Dataset / Task); the same
    two-level mean of R^2: 0.470 / 0.726 / 0.798."""
    mi, r2 = study.mi.loc["mutual_information"], study.mi.loc["r_squared"]
    assert mi["Dataset Overlap"] == pytest.approx(0.584, abs=5e-4)
    assert mi["Task + Dataset Overlap"] == pytest.approx(0.771, abs=5e-4)
    assert mi["Task Overlap"] == pytest.approx(0.891, abs=5e-4)
    assert r2["Dataset Overlap"] == pytest.approx(0.470, abs=5e-4)
    assert r2["Task + Dataset Overlap"] == pytest.approx(0.726, abs=5e-4)
    assert r2["Task Overlap"] == pytest.approx(0.798, abs=5e-4)
    assert list(study.mi.index) == ["mutual_information", "r_squared"]
    assert list(study.mi.columns) == list(S.HEADLINE)


# Per architecture (docs/protocol.md section 6.7, three decimals). The protocol's 0.846 for the
# ResNet partitions is 0.84546 from the files (mean of 0.68845 twice and 1.00248 twice):
# the only value that needs the looser tolerance.
PER_ARCH = {"Dataset Overlap": {"resnet": 1.303, "vit": 1.120, "gpt": 0.198, "llama": 0.083,
                                "unet": 0.217},
            "Task + Dataset Overlap": {"resnet": 0.734, "vit": 0.932, "gpt": 1.052,
                                       "llama": 0.301, "unet": 0.835},
            "Task Overlap": {"resnet": 0.846, "vit": 0.936}}


def test_per_architecture_as_published(study):
    mi = study.by_arch.xs("mutual_information", level="statistic")
    for column, values in PER_ARCH.items():
        for arch, value in values.items():
            assert mi.loc[arch, column] == pytest.approx(value, abs=6e-4), (column, arch)
    assert set(mi.index) == {"resnet", "vit", "gpt", "llama", "unet"}


def test_files_are_placed_by_header(study):
    placed = study.files.set_index("file")
    assert (placed["placed_in"] == f"skipped: {S.TRANSFER_NOTE}").sum() == 16 + 9
    assert placed.loc["different_model_size_csd/csd_platonic_ffcv_resnet18.csv",
                      "placed_in"] == "Task Overlap"
    assert placed.loc["llm_task/task_meta-llama_Llama-3.2-1B-Instruct.csv",
                      "columns"] == "metric_OOD_for_one"
    assert placed.loc["diffusion_cifar10_ds.csv", "architecture"] == "unet"
    assert (placed["placed_in"] == S.ACCURACY_TABLE).sum() == 32 + 8


# Accuracy per model, CIFAR-100 dataset/task; TinyImageNet dataset/task (docs/protocol.md section 6.7)
ACCURACY = {"ResNet-18": (76.19, 84.36, 72.77, 81.02), "ResNet-50": (81.57, 88.12, 82.77, 88.15),
            "ResNet-101": (83.43, 89.55, 86.47, 91.01), "ResNet-152": (85.42, 90.96, 85.45, 90.42),
            "ViT-T": (84.21, 90.73, 77.04, 85.10), "ViT-S": (86.90, 92.09, 79.80, 86.57),
            "ViT-B": (90.09, 94.12, 84.72, 89.70), "ViT-L": (90.24, 94.10, 86.89, 91.18)}


def test_accuracy_table_per_model(study):
    table = study.acc_by_model.set_index(["title", "row"])
    for title, (c_ds, c_task, t_ds, t_task) in ACCURACY.items():
        for row, ds, task in (("CIFAR-100", c_ds, c_task), ("TinyImageNet", t_ds, t_task)):
            cells = table.loc[(title, row)]
            assert cells["Dataset Overlap"].startswith(f"{ds:.2f} \u00b1")
            assert cells["Task + Dataset Overlap"].startswith(f"{task:.2f} \u00b1")
    # the printed ResNet-152 row, standard deviations included
    assert table.loc[("ResNet-152", "CIFAR-100"), "Dataset Overlap"] == "85.42 \u00b1 0.27"
    assert table.loc[("ResNet-152", "CIFAR-100"), "Task + Dataset Overlap"] == "90.96 \u00b1 1.06"
    assert table.loc[("ResNet-152", "TinyImageNet"), "Dataset Overlap"] == "85.45 \u00b1 0.22"
    assert table.loc[("ResNet-152", "TinyImageNet"), "Task + Dataset Overlap"] == \
        "90.42 \u00b1 0.85"
    labels = table.loc["ResNet-152", "Task Overlap"].drop(["CIFAR-100", "TinyImageNet"])
    assert len(labels) == 6  # the six label sets (all0 and all1 are one)
    means = [float(v.split()[0]) for v in labels]
    assert min(means) == pytest.approx(99.55) and max(means) == pytest.approx(99.89)


def test_cli_study_v2_and_compare(v2, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["summary", str(v2), "--study", "v2", "--compare", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "study v2 rules" in text and "Project rules vs the study's v2 rules" in text
    mi = pd.read_csv(out / "summary_mi.csv", index_col=0)
    assert list(mi.index) == ["mutual_information", "r_squared"]
    assert list(mi.columns) == list(S.HEADLINE)
    assert mi.loc["mutual_information", "Dataset Overlap"] == pytest.approx(0.584, abs=5e-4)
    both = pd.read_csv(out / "summary_compare.csv", index_col=[0, 1, 2])
    ours = S.summarize(v2)  # this project's rules on the same files
    for column in S.HEADLINE:
        for stat in ("mutual_information", "r_squared"):
            a = both.loc[("all", stat, "project"), column]
            b = both.loc[("all", stat, "study v2"), column]
            assert a == pytest.approx(ours.mi.loc[stat, column], abs=1e-12)
            assert b == pytest.approx(pd.read_csv(out / "summary_mi.csv", index_col=0)
                                      .loc[stat, column], abs=1e-9)
            assert both.loc[("all", stat, "difference"), column] == pytest.approx(b - a)
    assert (out / "summary_acc_by_model.csv").is_file()


def test_recursion_skips_the_folders_the_study_does_not_read(tmp_path):
    folder = tmp_path / "r"
    (folder / "sub").mkdir(parents=True)
    similarity_file(folder / "sub" / "resnet_a_ds_platonic.csv", [0, 0, 1, 1],
                    {"metric_overlap": [1, 3, 4, 6]})
    (folder / "pretrain_resnet18").mkdir(parents=True)
    shutil.copyfile(folder / "sub" / "resnet_a_ds_platonic.csv",
                    folder / "pretrain_resnet18" / "resnet_b_ds_platonic.csv")
    s = S.summarize(folder)
    placed = s.files.set_index("file")
    assert placed.loc["sub/resnet_a_ds_platonic.csv", "placed_in"] == "Dataset Overlap"
    assert placed.loc["pretrain_resnet18/resnet_b_ds_platonic.csv", "placed_in"].startswith(
        "skipped: v1 ResNet-18 copies")
    assert s.mi.loc["r_squared", "Dataset Overlap"] == pytest.approx(9 / 13, abs=1e-12)


def test_v1_published_files_under_v2_rules(tmp_path):
    """The v1 files read under the v2 rules: the in-distribution probe (metric_overlap) of
    the image files, every probe of the nanoGPT files; the partition file: partition_metric."""
    if not V1_REFERENCE.is_dir():
        pytest.skip("v1 files absent")
    folder = tmp_path / "v1"
    shutil.copytree(V1_REFERENCE, folder)
    s = S.summarize(folder, study="v2")
    placed = s.files.set_index("file")
    assert placed.loc["resnet_cifar10_ds_platonic.csv", "columns"] == "metric_overlap"
    assert placed.loc["resnet_partition_platonic.csv", "columns"] == "partition_metric"
    assert np.isfinite(s.mi.to_numpy(dtype=float)).all()
