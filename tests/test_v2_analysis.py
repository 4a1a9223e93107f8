"""`--study v2`: the study's v2 tables from its published files (docs/protocol.md section 6.7).

The published files are copied into a temporary folder. Where ../shared is absent the tests
are skipped, unless CI is set (CI has it beside its clone): then they fail. References are
independent of repr_sim: scikit-learn on rows chosen here from the protocol's table, and the
numbers the protocol quotes from the study.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _result_fixtures import REPO, similarity_file, write_csv
from sklearn.feature_selection import mutual_info_regression
from sklearn.linear_model import LinearRegression

from repr_sim import analysis as A
from repr_sim.cli import main

SHARED = REPO.parent / "shared" / "reference"
V2_REFERENCE = SHARED / "v2" / "plotting_results_iclr2026"
V1_REFERENCE = SHARED / "plotting_results"
NANOGPT = ("nanogpt_shakespeare_ds_platonic.csv", "nanogpt_tinystories_ds_platonic.csv",
           "nanogpt_all_task_platonic.csv")


def v2_reference(dst: Path) -> Path:
    """The study's published v2 layout (plus the three nanoGPT files it reuses) in dst."""
    if not V2_REFERENCE.is_dir() or not V1_REFERENCE.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"published files not found at {SHARED} (CI is set)")
        pytest.skip(f"published files not found at {SHARED}")
    shutil.copytree(V2_REFERENCE, dst)
    for name in NANOGPT:
        shutil.copyfile(V1_REFERENCE / name, dst / name)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> Path:
    return v2_reference(tmp_path_factory.mktemp("published") / "v2")


# ---- kinds, by header ----------------------------------------------------------------------
# (pattern under the folder, kind, split), from docs/protocol.md section 6.7's table of files
EXPECTED = [
    ("different_model_size_ds/ds_platonic_ffcv_*", "similarity", "dataset"),
    ("different_model_size_ds/ds_acc_*", "accuracy", "dataset"),
    ("different_model_size_ds/ds_transfer_asr_*", "transfer", "dataset"),
    ("different_model_size_task/task_platonic_ffcv_*", "similarity", "task"),
    ("different_model_size_task/task_acc_*", "accuracy", "task"),
    ("different_model_size_task/task_transfer_asr_*", "transfer", "task"),
    ("different_model_size_csd/csd_platonic_ffcv_*", "partition", "partition"),
    ("different_model_size_csd/csd_acc_ffcv_*", "partition_accuracy", "partition"),
    ("diffusion_cifar10_ds.csv", "similarity", "dataset"),
    ("diffusion_cifar10_task.csv", "similarity", "task"),
    ("llm_ds/ds_meta-llama_Llama-3.2-*-Instruct.csv", "similarity", "dataset"),
    ("llm_ds/*_jailbreaking.csv", "jailbreak", "dataset"),
    ("llm_task/task_meta-llama_Llama-3.2-*-Instruct.csv", "similarity", "task"),
    ("llm_task/*_jailbreaking.csv", "jailbreak", "task"),
    ("nanogpt_*_ds_platonic.csv", "similarity", "dataset"),
    ("nanogpt_all_task_platonic.csv", "similarity", "task"),
]


def expected_arch(name: str) -> str:
    for token, arch in (("resnet", "resnet"), ("vit_", "vit"), ("llama", "llama"),
                        ("diffusion", "unet"), ("nanogpt", "gpt")):
        if token in name.lower():
            return arch
    raise AssertionError(name)


def test_every_published_file_has_its_kind(v2):
    seen = set()
    for pattern, kind, split in EXPECTED:
        paths = sorted(v2.glob(pattern))
        assert paths, pattern
        for path in paths:
            result = A.read_result(path)
            assert (result.kind, result.split) == (kind, split), path.name
            assert A.architecture(result)[0] == expected_arch(path.name), path.name
            seen.add(path)
    assert seen == set(v2.rglob("*.csv"))  # every published file is covered above
    # the model of each file, from its name
    assert A.read_result(next(v2.glob("*_ds/ds_acc_resnet152_cifar100.csv"))).model == "resnet152"
    jail = A.read_result(next(v2.glob("llm_task/gpt5_judge_*1B-Instruct_jailbreaking.csv")))
    assert (jail.model, A.architecture(jail)[0]) == ("Llama-3.2-1B-Instruct", "llama")


@pytest.mark.parametrize("pattern", ["*_ds/ds_platonic_ffcv_resnet18_cifar100.csv",
                                     "*_ds/ds_transfer_asr_resnet18_tinyimagenet.csv",
                                     "llm_ds/ds_meta-llama_Llama-3.2-1B-Instruct_jailbreaking.csv",
                                     "*_csd/csd_platonic_ffcv_resnet18.csv",
                                     "*_csd/csd_acc_ffcv_resnet18.csv",
                                     "diffusion_cifar10_ds.csv"])
def test_kind_comes_from_the_header_not_the_name(v2, tmp_path, pattern):
    path = next(v2.glob(pattern))
    renamed = shutil.copyfile(path, tmp_path / "x.csv")
    assert A.read_result(renamed).kind == A.read_result(path).kind


def test_transfer_files_put_transfer_asr_first(v2):
    for pattern in ("*_ds/ds_transfer_asr_vit_tiny*", "llm_ds/*1B-Instruct_jailbreaking.csv"):
        result = A.read_result(next(v2.glob(pattern)))
        assert result.value_columns == ("transfer_asr", "normal_asr")


# ---- the tables ----------------------------------------------------------------------------
def reference_table(path: Path, metric: str, columns, *, drop_x=None, partition=False):
    """The v2 notebook's numbers, from pandas and scikit-learn alone (no repr_sim)."""
    data = pd.read_csv(path)
    data = data[data["metric"] == metric]
    if partition:
        x = data["partition"].map({"partition1": 0.0, "partition2": 0.5, "partition3": 1.0})
    else:
        x = data["frac_overlap"]
    keep = np.ones(len(data), dtype=bool) if drop_x is None else (x != drop_x).to_numpy()
    x = x.to_numpy(dtype=float)[keep]
    x_mi = (x - x.mean()) / x.std() if partition else x
    out = {}
    for column in columns:
        y = data[column].to_numpy(dtype=float)[keep]
        mi = mutual_info_regression(x_mi.reshape(-1, 1), y, random_state=42)[0]
        r2 = LinearRegression().fit(x.reshape(-1, 1), y).score(x.reshape(-1, 1), y)
        out[column] = (mi, r2)
    return out


SAMPLE = [  # file, metric, probe columns, left-out overlap, index of the study's table
    ("different_model_size_ds/ds_platonic_ffcv_resnet18_tinyimagenet.csv", "cka",
     ["metric_tinyimagenet"], None, None),
    ("different_model_size_ds/ds_platonic_ffcv_vit_large_patch32_224_cifar100.csv", "cka",
     ["metric_cifar100"], None, None),
    ("different_model_size_task/task_platonic_ffcv_vit_base_patch32_224_cifar100.csv", "cka",
     ["metric_ood_one"], 1.0, None),
    ("different_model_size_csd/csd_platonic_ffcv_resnet50.csv", "cka", ["partition_metric"],
     None, None),
    ("llm_ds/ds_meta-llama_Llama-3.2-3B-Instruct.csv", "cka", ["metric_tinycodes"], None,
     ["Tiny-Codes"]),
    ("llm_task/task_meta-llama_Llama-3.2-11B-Vision-Instruct.csv", "cka",
     ["metric_OOD_for_one"], 1.0, ["OOD"]),
    ("diffusion_cifar10_ds.csv", "cknna", ["metric_train_ds"], None, None),
    ("diffusion_cifar10_task.csv", "cknna", ["metric_ood_one"], 1.0, None),
    # the nanoGPT task table keeps its -1 rows (the study's slip)
    ("nanogpt_all_task_platonic.csv", "cka",
     ["metric_common", "metric_OOD_for_one", "metric_OOD_for_all"], None, None),
]


@pytest.mark.parametrize("name, metric, columns, drop_x, index", SAMPLE,
                         ids=[s[0].split("/")[-1] for s in SAMPLE])
def test_sample_of_v2_tables(v2, name, metric, columns, drop_x, index):
    table = A.analyze_v2(v2 / name, n_perm=0, n_boot=0)
    assert table.attrs["metric"] == metric
    assert list(table.index) == (index or columns)
    expected = reference_table(v2 / name, metric, columns, drop_x=drop_x,
                               partition="csd_" in name)
    for row, column in zip(table.index, columns, strict=True):
        mi, r2 = expected[column]
        assert table.loc[row, "mutual_information"] == pytest.approx(mi, abs=1e-6)
        assert table.loc[row, "r_squared"] == pytest.approx(r2, abs=1e-6)


def test_nanogpt_task_table_keeps_minus_one_rows_only_under_v2(v2):
    path = v2 / "nanogpt_all_task_platonic.csv"
    study = A.analyze_v2(path, n_perm=0, n_boot=0)
    ours = A.analyze(path, "cka", n_perm=0, n_boot=0)
    assert set(study["n"]) == {24}  # 4 seeds x 4 overlaps x ... every cka row
    assert (ours["n"] < 24).all()  # the -1 rows left out


def test_diffusion_with_cka_reads_as_the_protocol_says(v2):
    """docs/protocol.md section 6.7: with cka instead of cknna, MI 0.039 / 0.000, R^2 0.024 / 0.016."""
    ds = A.analyze_v2(v2 / "diffusion_cifar10_ds.csv", "cka", n_perm=0, n_boot=0)
    task = A.analyze_v2(v2 / "diffusion_cifar10_task.csv", "cka", n_perm=0, n_boot=0)
    assert ds["mutual_information"].iloc[0] == pytest.approx(0.039, abs=5e-4)
    assert task["mutual_information"].iloc[0] == pytest.approx(0.000, abs=5e-4)
    assert ds["r_squared"].iloc[0] == pytest.approx(0.024, abs=5e-4)
    assert task["r_squared"].iloc[0] == pytest.approx(0.016, abs=5e-4)


# R^2 of transfer ASR on overlap, dataset / task (docs/protocol.md section 6.7, two decimals)
TRANSFER_R2 = {"resnet18": (0.42, 0.78), "resnet50": (0.32, 0.77), "resnet101": (0.10, 0.21),
               "resnet152": (0.30, 0.77), "vit_tiny_patch16_224": (0.40, 0.83),
               "vit_small_patch32_224": (0.32, 0.79), "vit_base_patch32_224": (0.10, 0.60),
               "vit_large_patch32_224": (0.36, 0.65)}


def test_transfer_success_against_overlap(v2):
    for model, (ds, task) in TRANSFER_R2.items():
        for kind, expected in (("ds", ds), ("task", task)):
            path = v2 / f"different_model_size_{kind}/{kind}_transfer_asr_{model}_tinyimagenet.csv"
            table = A.analyze_v2(path, n_perm=0, n_boot=0)
            assert table.loc["transfer_asr", "r_squared"] == pytest.approx(expected, abs=0.0051)
            assert table.loc["transfer_asr", "slope"] > 0
            assert table.loc["transfer_asr", "n"] == (24 if kind == "ds" else 20)


# ---- the CLI -------------------------------------------------------------------------------
def test_cli_analyze_study_v2_writes_the_table(v2, tmp_path, capsys):
    out = tmp_path / "t.csv"
    path = v2 / "llm_task/task_meta-llama_Llama-3.2-1B-Instruct.csv"
    assert main(["analyze", str(path), "--study", "v2", "--out", str(out)]) == 0
    assert "metric_OOD_for_one; overlap 1 left out" in capsys.readouterr().out
    table = pd.read_csv(out, index_col=0)
    assert list(table.columns[:2]) == ["mutual_information", "r_squared"]
    assert list(table.index) == ["OOD"]
    mi, r2 = reference_table(path, "cka", ["metric_OOD_for_one"], drop_x=1.0)["metric_OOD_for_one"]
    assert table.loc["OOD", "mutual_information"] == pytest.approx(mi, abs=1e-6)
    assert table.loc["OOD", "r_squared"] == pytest.approx(r2, abs=1e-6)


def test_default_rules_are_unchanged_by_v2(tmp_path):
    """Without --study the -1 rows are left out and every probe column is used."""
    path = similarity_file(tmp_path / "resnet_cifar10_task_platonic.csv",
                           [0, 0, 0.5, 0.5, 1, 1],
                           {"metric_overlap": [-1, -1, 0.2, 0.4, 0.6, 0.8],
                            "metric_ood_one": [0.1, 0.3, 0.2, 0.4, -1, -1]})
    ours = A.analyze(path, "cka", n_perm=0, n_boot=0)
    assert list(ours.index) == ["metric_overlap", "metric_ood_one"]
    assert list(ours["n"]) == [4, 4]
    study = A.analyze_v2(path, n_perm=0, n_boot=0)
    assert list(study.index) == ["metric_ood_one"] and study["n"].iloc[0] == 4  # x = 1 dropped


@pytest.mark.parametrize("header, needle", [
    ("seed,frac_overlap,normal_asr,success\n", "column 4 is 'success'"),
    ("a,b\n", "not a result file"),
])
def test_bad_headers_are_one_line(tmp_path, capsys, header, needle):
    path = tmp_path / "bad.csv"
    path.write_text(header + "0,0.5,0.1,0.2\n")
    assert main(["analyze", str(path), "--study", "v2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_accuracy_file_has_no_v2_table(tmp_path, capsys):
    path = write_csv(tmp_path / "ds_acc_resnet18_cifar100.csv",
                     ["seed", "frac_overlap", "model_idx", "acc"],
                     [[0, 0.0, 1, 0.5], [0, 1.0, 1, 0.6]])
    assert main(["analyze", str(path), "--study", "v2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "makes no table of accuracy files" in err, err
