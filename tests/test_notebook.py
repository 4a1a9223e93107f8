"""plotting/final_plotting.ipynb runs headless (nbconvert --execute) on a results folder and
on an empty one; the committed notebook carries no outputs; generated files stay untracked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from _result_fixtures import REPO, copy_reference, needs_reference
from test_v2_analysis import V2_REFERENCE

from repr_sim import summary as S

NOTEBOOK = REPO / "plotting" / "final_plotting.ipynb"


def execute(results, out_dir) -> str:
    """Run the notebook with REPRSIM_RESULTS pointing at `results`; its text outputs."""
    env = {**os.environ, "REPRSIM_RESULTS": str(results), "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=300", "--output-dir", str(out_dir),
         "--output", "executed.ipynb", str(NOTEBOOK)],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = json.loads((out_dir / "executed.ipynb").read_text())
    texts = []
    for cell in executed["cells"]:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            texts.append("".join(output.get("text", "")))
            texts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def test_committed_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    source = "".join("".join(c["source"]) for c in code)
    assert "REPRSIM_RESULTS" in source and "plotting_results" in source


V2_FILES = ["different_model_size_ds/ds_platonic_ffcv_resnet18_tinyimagenet.csv",
            "different_model_size_ds/ds_platonic_ffcv_resnet50_tinyimagenet.csv",
            "different_model_size_ds/ds_transfer_asr_resnet18_tinyimagenet.csv",
            "different_model_size_csd/csd_platonic_ffcv_resnet18.csv"]


def copy_v2(results):
    """A few of the study's v2 files, in its layout (subfolders) under `results`."""
    if not V2_REFERENCE.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"published v2 files not found at {V2_REFERENCE} (CI is set)")
        pytest.skip(f"published v2 files not found at {V2_REFERENCE}")
    for name in V2_FILES:
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(V2_REFERENCE / name, results / name)


@needs_reference
def test_notebook_runs_on_results_and_on_an_empty_folder(tmp_path):
    results = tmp_path / "results"
    copy_reference(results, ["resnet_cifar10_ds_platonic.csv",
                             "resnet_cifar10_ds_platonic_acc.csv"])
    copy_v2(results)
    text = execute(results, tmp_path)
    for stem, tag in [("resnet_cifar10_ds_platonic", "_cka"),
                      ("resnet_cifar10_ds_platonic_acc", "")]:
        for suffix in (".png", ".pdf", "_table.csv"):
            out = results / f"{stem}{tag}{suffix}"
            assert out.is_file() and out.stat().st_size > 0, out
    assert "metric_ood_all_mnist" in text and "mutual_information" in text
    # the two summary tables at its end, the same as the library's
    written = pd.read_csv(results / "summary_mi.csv", index_col=0)
    expected = S.summarize(results).mi
    pd.testing.assert_frame_equal(written, expected, check_names=False)
    assert "Dataset Overlap" in text and "Task Overlap" in text
    acc = 100 * pd.read_csv(results / "resnet_cifar10_ds_platonic_acc.csv")["acc"]
    assert f"{acc.mean():.2f} \u00b1 {acc.std(ddof=1):.2f}" in text  # the accuracy table
    # the v2 section: its tables, headline, figures (a panel per model size), consequences
    v2 = results / "reprsim_v2"
    assert "Headline table under the study's v2 rules" in text
    written = pd.read_csv(v2 / "summary_mi.csv", index_col=0)
    pd.testing.assert_frame_equal(written, S.summarize(results, study="v2").mi,
                                  check_names=False)
    table = pd.read_csv(v2 / "tables" / "ds_platonic_ffcv_resnet18_tinyimagenet_regression_mi.csv",
                        index_col=0)
    assert list(table.index) == ["metric_tinyimagenet"]
    assert list(table.columns) == ["mutual_information", "r_squared"]
    for name in ("resnet_tinyimagenet_ds.png", "resnet_tinyimagenet_ds.pdf", "resnet_csd.png",
                 "ds_transfer_asr_resnet18_tinyimagenet_vs_cka.png"):
        assert (v2 / "figures" / name).stat().st_size > 0, name
    assert (v2 / "consequences_cka.csv").is_file() and (v2 / "summary_compare.csv").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    text = execute(empty, tmp_path)
    assert "Nothing to plot" in text
    assert sorted(p.name for p in empty.iterdir()) == []


def test_results_folder_keeps_only_its_placeholders_in_git(tmp_path):
    folder = REPO / "plotting" / "plotting_results"
    assert (folder / ".gitkeep").is_file()
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    probe = ["x.csv", "x_cka.png", "summary_mi.csv", ".gitkeep", ".gitignore"]
    proc = subprocess.run(["git", "check-ignore", "--no-index",
                           *[str(folder / p) for p in probe]],
                          cwd=REPO, capture_output=True, text=True)
    ignored = {os.path.basename(line) for line in proc.stdout.split()}
    assert ignored == {"x.csv", "x_cka.png", "summary_mi.csv"}
