"""The study's v2 figures: one panel per model size, partitions 1..3, transfer success."""

from __future__ import annotations

import pytest
from test_v2_analysis import v2_reference

from repr_sim import analysis as A
from repr_sim import plots as P
from repr_sim import summary as S


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return v2_reference(tmp_path_factory.mktemp("published") / "v2")


def test_one_panel_per_model_size(v2):
    files = sorted(v2.glob("different_model_size_task/task_platonic_ffcv_vit_*_cifar100.csv"))
    fig = P.plot_model_sizes([A.read_result(f) for f in files])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["ViT-T", "ViT-S", "ViT-B", "ViT-L"]
    assert "Task + Dataset Overlap" in fig.get_suptitle() and "CKA" in fig.get_suptitle()
    for ax, name in zip(axes, ["tiny", "small", "base", "large"], strict=True):
        path = next(f for f in files if f"_{name}_" in f.name)
        table = A.analyze_v2(path, n_perm=0, n_boot=0)  # the legend shows the v2 table
        legend = ax.get_legend().get_texts()[0].get_text()
        assert f"R\u00b2 = {table['r_squared'].iloc[0]:.2f}" in legend
        assert len(ax.patches) == 5  # overlap 1 is left out of the task tables
    P.close(fig)


def test_partitions_one_to_three(v2):
    files = sorted(v2.glob("different_model_size_csd/csd_platonic_ffcv_resnet*.csv"))
    fig = P.plot_model_sizes([A.read_result(f) for f in files])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["ResNet-18", "ResNet-50", "ResNet-101",
                                               "ResNet-152"]
    for ax in axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]
        assert len(ax.patches) == 3
    P.close(fig)


def test_figure_groups_of_the_published_layout(v2):
    results, _ = S.scan(v2)
    groups = S.v2_figure_groups(results)
    assert {k: len(v) for k, v in groups.items() if k.startswith("resnet")} == {
        "resnet_cifar100_ds": 4, "resnet_tinyimagenet_ds": 4, "resnet_cifar100_task": 4,
        "resnet_tinyimagenet_task": 4, "resnet_csd": 4,
        "resnet_tinyimagenet_ds_transfer_asr": 4, "resnet_tinyimagenet_task_transfer_asr": 4}
    assert len(groups["llama_ds"]) == 3 and len(groups["llama_task_gpt5_judge_transfer_asr"]) == 3
    fig = P.plot_model_sizes(groups["resnet_tinyimagenet_task_transfer_asr"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert axes[0].get_ylabel() == "Transfer attack success"
    assert all(len(ax.patches) == 5 for ax in axes)  # overlap 0 (no shared class) left out
    P.close(fig)


def test_cli_plot_several_files_one_figure(v2, tmp_path, capsys):
    from repr_sim.cli import main

    files = sorted(v2.glob("llm_ds/ds_meta-llama_Llama-3.2-*-Instruct.csv"))
    out = tmp_path / "llm_ds_overlap.pdf"
    assert main(["plot", *map(str, files), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"%PDF")
    assert main(["plot", str(files[0]), "--metric", "foo", "--out", str(out)]) == 2
    assert "unknown metric 'foo'" in capsys.readouterr().err


@pytest.mark.parametrize("pattern", ["different_model_size_task/task_transfer_asr_vit_tiny*",
                                     "llm_task/gpt5_judge_*1B-Instruct_jailbreaking.csv",
                                     "different_model_size_csd/csd_acc_ffcv_vit_large*",
                                     "different_model_size_ds/ds_platonic_ffcv_resnet18_cifar100*"])
def test_every_v2_kind_gets_a_figure(v2, tmp_path, pattern):
    result = A.read_result(next(v2.glob(pattern)))
    fig = P.plot_result(result)
    out = P.save_figure(fig, tmp_path / "f.png", dpi=60)
    P.close(fig)
    assert out.read_bytes().startswith(b"\x89PNG")
