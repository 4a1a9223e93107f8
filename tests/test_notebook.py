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


@needs_reference
def test_notebook_runs_on_results_and_on_an_empty_folder(tmp_path):
    results = tmp_path / "results"
    copy_reference(results, ["resnet_cifar10_ds_platonic.csv",
                             "resnet_cifar10_ds_platonic_acc.csv"])
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
