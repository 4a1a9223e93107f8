"""`reprsim demo` end to end at the tiny scale: the same code path as `make demo`.

The image demo and the text demo each run once for the module (data, training in worker
processes, measurement, outputs), then once more to check that a rerun reuses everything.
The outputs are read back through repr_sim.analysis.read_result and checked against what
the run folders say (seeds, fractions, realised overlaps from the saved split indices, -1
exactly where a probe set is empty) and against numbers computed here (the least-squares
slope the summary prints). Generator determinism and OOD disjointness are tested in
tests/test_shapes.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repr_sim import analysis, cli, demo, paths, runs, summary
from repr_sim.metrics import METRICS

IMAGE_OOD = ["metric_ood_all_sklearn_digits", "metric_ood_all_sample_patches"]
IMAGE_HEADERS = {
    "demo_ds_platonic.csv": ["seed", "metric", "frac_overlap", "metric_overlap", *IMAGE_OOD],
    "demo_task_platonic.csv": ["seed", "metric", "frac_overlap", "metric_overlap",
                               "metric_ood_one", *IMAGE_OOD],
    "demo_ds_platonic_acc.csv": ["seed", "frac_overlap", "model_idx", "acc"],
    "demo_task_platonic_acc.csv": ["seed", "frac_overlap", "model_idx", "acc"],
}
TEXT_HEADERS = {
    "demo_text_ds_platonic.csv": ["seed", "metric", "frac_overlap", "metric_shakespeare",
                                  "metric_tinystories", "metric_wikitext"],
    "demo_text_task_platonic.csv": ["seed", "metric", "frac_overlap", "metric_common",
                                    "metric_OOD_for_one", "metric_OOD_for_all"],
    "demo_text_ds_platonic_loss.csv": ["seed", "frac_overlap", "model_idx", "val_loss"],
    "demo_text_task_platonic_loss.csv": ["seed", "frac_overlap", "model_idx", "val_loss"],
}
TINY = demo.SCALES["tiny"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


class Run:
    """One demo study run twice, with REPRSIM_DATA, REPRSIM_RUNS and --out in a fresh folder."""

    def __init__(self, root: Path, text: bool):
        self.root, self.text = root, text
        self.data, self.runs, self.out = root / "data", root / "runs", root / "results"
        self.env = {"REPRSIM_DATA": str(self.data), "REPRSIM_RUNS": str(self.runs),
                    "REPRSIM_VERIFY": "0"}
        self.argv = ["demo", "--scale", "tiny", "--out", str(self.out)] + (["--text"] if text else [])
        self.code, self.stdout, self.stderr = self.demo()
        self.first = self.snapshot() if self.code == 0 else {}
        self.code2, self.stdout2, self.stderr2 = self.demo() if self.code == 0 else (None, "", "")
        self.second = self.snapshot() if self.code2 == 0 else {}

    def demo(self) -> tuple[int, str, str]:
        with paths.environ(self.env):
            return run_cli(self.argv)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(mtime_ns, size) of every checkpoint, measurement and result file."""
        files = [*self.runs.rglob("split_*/*.pt*"), *self.runs.rglob("measure.json"),
                 *self.out.glob("*.csv")]
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in files}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("image_demo"), text=False)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("text_demo"), text=True)


def check_ok(run: Run) -> None:
    assert run.code == 0, run.stderr
    assert run.code2 == 0, run.stderr2


def config(experiment: str) -> dict:
    return demo.demo_config(experiment, TINY, "text" if "text" in experiment else "image", {})


def realised_overlaps(exp_dir: Path) -> dict[tuple[int, float], float]:
    """(seed, frac) -> |a & b| / |a| from each pair's saved split (examples or chunks or corpora)."""
    out = {}
    for seed, frac, folder in runs.iter_pairs(exp_dir):
        info = json.loads((folder / "split_indices" / "split.json").read_text())
        if (folder / "split_indices" / "a.npy").is_file():
            a = np.load(folder / "split_indices" / "a.npy", allow_pickle=False)
            b = np.load(folder / "split_indices" / "b.npy", allow_pickle=False)
            out[(seed, frac)] = len(np.intersect1d(a, b)) / len(a)
        else:
            out[(seed, frac)] = float(info["overlap"])
    return out


def check_similarity_file(path: Path, header: list[str], cfg: dict, exp_dir: Path) -> pd.DataFrame:
    result = analysis.read_result(path)
    assert analysis.read_header(path) == header
    assert result.kind == "similarity"
    data = pd.read_csv(path)
    pairs = [(s, f) for s in cfg["seeds"] for f in cfg["fracs"]]
    assert len(data) == len(METRICS) * len(pairs)  # one row per metric per pair
    for seed in cfg["seeds"]:
        rows = data[data["seed"] == seed]
        assert len(rows) == len(METRICS) * len(cfg["fracs"])
        assert sorted(set(rows["metric"])) == sorted(METRICS)
    overlaps = realised_overlaps(exp_dir)
    assert len(overlaps) == len(pairs)
    got = sorted(zip(data["seed"], data["frac_overlap"], strict=True))
    want = sorted((s, round(v, 12)) for (s, _), v in overlaps.items() for _ in METRICS)
    assert [(s, round(v, 12)) for s, v in got] == want
    return data


def test_image_demo_outputs(image_run):
    check_ok(image_run)
    out = image_run.out
    for name, header in IMAGE_HEADERS.items():
        path = out / name
        assert path.is_file(), name
        assert analysis.read_header(path) == header
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["arch"] == "resnet"
        assert meta["dataset"] == ("shapes" if "_ds_" in name else "shapes_color")
        assert meta["kind"] == ("ds" if "_ds_" in name else "task")
    for experiment in demo.IMAGE_EXPERIMENTS:
        cfg = config(experiment)
        exp_dir = image_run.runs / demo.run_name(experiment, TINY)
        data = check_similarity_file(out / f"{experiment}_platonic.csv",
                                     IMAGE_HEADERS[f"{experiment}_platonic.csv"], cfg, exp_dir)
        acc = analysis.read_result(out / f"{experiment}_platonic_acc.csv").data
        assert len(acc) == 2 * len(cfg["seeds"]) * len(cfg["fracs"])
        assert sorted(set(acc["model_idx"])) == [1, 2]
        # The task split shares no class at frac 0 and every class at frac 1: exactly there
        # the shared-class probe (and accuracy), resp. the one-model probe, are empty (-1).
        values = data.drop(columns=["seed", "metric"])
        empty = values.eq(-1)
        if experiment == "demo_task":
            assert (empty["metric_overlap"] == (data["frac_overlap"] == 0)).all()
            assert (empty["metric_ood_one"] == (data["frac_overlap"] == 1)).all()
            assert (acc["acc"].eq(-1) == (acc["frac_overlap"] == 0)).all()
        else:
            assert not empty.any().any()
            assert not acc["acc"].eq(-1).any()
        kept = acc["acc"][acc["acc"] != -1]
        assert ((kept >= 0) & (kept <= 1)).all()
        cka = data[data["metric"] == "cka"]
        assert ((cka[IMAGE_OOD] > -1) & (cka[IMAGE_OOD] <= 1.0 + 1e-6)).all().all()


def test_image_demo_tables_and_figures(image_run):
    check_ok(image_run)
    for name in IMAGE_HEADERS:
        csv = image_run.out / name
        result = analysis.read_result(csv)
        paths = demo.rendered_paths(csv, result.has_metrics)
        for path in paths:
            assert path.is_file() and path.stat().st_size > 0, path
        table = pd.read_csv(paths[0], index_col="probe")
        assert list(table.index) == list(result.value_columns)
        assert {"mutual_information", "r_squared", "slope", "spearman_rho"} <= set(table.columns)
        assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[2].read_bytes()[:5] == b"%PDF-"
        if result.has_metrics:
            everything = pd.read_csv(paths[3], index_col=["metric", "probe"])
            assert sorted(set(everything.index.get_level_values("metric"))) == sorted(METRICS)


def printed_slope(stdout: str, experiment: str) -> float:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{experiment} ("))
    fit = next(line for line in lines[start:] if "against overlap" in line)
    return float(fit.split("slope ")[1].split(",")[0])


def test_image_demo_summary(image_run):
    check_ok(image_run)
    stdout = image_run.stdout
    assert "Built-in image study, scale tiny" in stdout
    for experiment in demo.IMAGE_EXPERIMENTS:
        block = stdout[stdout.index(f"{experiment} ("):]
        assert "test accuracy" in block.splitlines()[1]
        assert "R^2" in block and "Spearman rho" in block and "(p " in block
        # The calibrated view: raw and calibrated CKA and mutual kNN, pairs significant.
        for metric in ("cka", "mutual_knn"):
            line = next(ln for ln in block.splitlines() if ln.startswith(f"  {metric} ("))
            assert "calibrated rho" in line and "significant at 0.05 by overlap" in line
        companion = image_run.out / f"{experiment}_platonic_calibrated.csv"
        assert analysis.read_calibrated(image_run.out / f"{experiment}_platonic.csv").path == companion
        # The printed slope is the least-squares slope of CKA on the in-distribution probe
        # against the realised overlap, -1 rows (no shared class) left out.
        data = pd.read_csv(image_run.out / f"{experiment}_platonic.csv")
        cka = data[(data["metric"] == "cka") & (data["metric_overlap"] != -1)]
        slope = np.polyfit(cka["frac_overlap"], cka["metric_overlap"], 1)[0]
        assert printed_slope(stdout, experiment) == pytest.approx(slope, abs=1e-4)


def test_image_demo_honours_roots_and_summary_reads_it(image_run):
    check_ok(image_run)
    root = image_run.data / "demo" / "image-tiny" / "ffcv"
    for part in ("shapes/train.beton", "shapes/test.beton", "shapes_color/train.beton",
                 "shapes_color/test.beton", "sklearn_digits/test.beton",
                 "sample_patches/test.beton"):
        assert (root / part).is_file(), part
    for experiment in demo.IMAGE_EXPERIMENTS:
        assert runs.is_done(next((image_run.runs / f"{experiment}_tiny").glob("seed_*/frac_*")))
    result = summary.summarize(image_run.out)
    placed = result.files.set_index("file")["placed_in"]
    assert placed["demo_ds_platonic.csv"] == "Dataset Overlap"
    assert placed["demo_task_platonic.csv"] == "Task + Dataset Overlap"
    assert set(result.files.set_index("file").loc[list(IMAGE_HEADERS), "architecture"]) == {"resnet"}


ASR_HEADER = ["seed", "frac_overlap", "normal_asr", "transfer_asr"]


def test_image_demo_transfer_attacks(image_run):
    """The consequence: each pair attacked (split_0 -> split_1), the study's transfer file
    beside the similarity file with a box plot, transfer success against CKA drawn, and the
    summary's lines on it; `reprsim consequences` reads the folder."""
    check_ok(image_run)
    for experiment in demo.IMAGE_EXPERIMENTS:
        cfg = config(experiment)
        asr_csv = image_run.out / f"{experiment}_transfer_attack.csv"
        assert analysis.read_header(asr_csv) == ASR_HEADER
        asr = pd.read_csv(asr_csv)
        assert len(asr) == len(cfg["seeds"]) * len(cfg["fracs"])
        sim = pd.read_csv(image_run.out / f"{experiment}_platonic.csv")
        assert set(zip(asr["seed"], asr["frac_overlap"].round(6), strict=True)) == \
            set(zip(sim["seed"], sim["frac_overlap"].round(6), strict=True))
        rates = asr[["normal_asr", "transfer_asr"]]
        if experiment == "demo_task":  # no shared class at frac 0: nothing to attack
            assert (rates.eq(-1).all(axis=1) == (asr["frac_overlap"] == 0)).all()
        kept = rates[~rates.eq(-1).any(axis=1)].to_numpy()
        assert kept.size and ((kept >= 0) & (kept <= 1)).all()
        result = analysis.read_result(asr_csv)
        for path in demo.rendered_paths(asr_csv, result.has_metrics):
            assert path.is_file() and path.stat().st_size > 0, path
        block = image_run.stdout[image_run.stdout.index(f"{experiment} ("):]
        assert "transfer attack success (split_0 -> split_1)" in block
        n_pairs = int((~rates.eq(-1).any(axis=1)).sum())
        if n_pairs >= 4:
            assert "transfer success against overlap: Spearman rho" in block
            assert (image_run.out / f"{experiment}_transfer_attack_cka.png").is_file()
    code, stdout, err = run_cli(["consequences", str(image_run.out), "--metric", "cka"])
    assert code == 0, err
    assert "demo_ds_transfer_attack.csv" in stdout


def test_image_demo_reused_model_a_is_the_model_trained_there(image_run):
    """demo_ds reuses model A across the fractions of a seed: wherever it was copied, and
    wherever two workers trained it at once, model A of a seed is the same model."""
    import torch

    check_ok(image_run)
    exp_dir = image_run.runs / demo.run_name("demo_ds", TINY)
    for seed in config("demo_ds")["seeds"]:
        folders = sorted(exp_dir.glob(f"seed_{seed}/frac_*"))
        states = [torch.load(f / "split_0" / "checkpoint.pth", weights_only=True) for f in folders]
        for other in states[1:]:
            assert all(torch.equal(states[0][k], other[k]) for k in states[0])
        for folder in folders:
            for model, source in runs.read_json(folder / "args.json").get("reused_models", {}).items():
                assert source.startswith(f"seed_{seed}/frac_") and model == "split_0"


def test_image_demo_rerun_reuses_everything(image_run):
    check_ok(image_run)
    assert "0 pair(s) trained now" in image_run.stdout2
    pairs = sum(len(config(e)["seeds"]) * len(config(e)["fracs"]) for e in demo.IMAGE_EXPERIMENTS)
    assert f"{pairs} reused" in image_run.stdout2
    assert image_run.first and image_run.first == image_run.second  # nothing rewritten


def test_demo_refuses_pairs_of_another_setting(image_run):
    check_ok(image_run)
    folder = next((image_run.runs / "demo_ds_tiny").glob("seed_*/frac_*"))
    args_path = folder / "args.json"
    saved = args_path.read_text()
    args = json.loads(saved)
    args["config"]["recipe"]["epochs"] = 99
    args_path.write_text(json.dumps(args))
    try:
        code, _, err = image_run.demo()
    finally:
        args_path.write_text(saved)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("reprsim demo: error")]
    assert len(lines) == 1 and str(folder) in lines[0] and "recipe.epochs" in lines[0]


def test_text_demo_outputs_and_rerun(text_run):
    check_ok(text_run)
    out = text_run.out
    for name, header in TEXT_HEADERS.items():
        assert analysis.read_header(out / name) == header
        assert json.loads((out / name).with_suffix(".json").read_text())["arch"] == "gpt"
    for experiment in demo.TEXT_EXPERIMENTS:
        cfg = config(experiment)
        exp_dir = text_run.runs / demo.run_name(experiment, TINY)
        data = check_similarity_file(out / f"{experiment}_platonic.csv",
                                     TEXT_HEADERS[f"{experiment}_platonic.csv"], cfg, exp_dir)
        loss = analysis.read_result(out / f"{experiment}_platonic_loss.csv").data
        assert len(loss) == 2 * len(cfg["seeds"]) * len(cfg["fracs"])
        assert (loss["val_loss"] > 0).all()
        if experiment == "demo_text_task":
            frac = data["frac_overlap"]
            assert (data["metric_common"].eq(-1) == (frac == 0)).all()
            assert (data["metric_OOD_for_all"].eq(-1) == (frac == 0)).all()
            assert (data["metric_OOD_for_one"].eq(-1) == (frac == 1)).all()
        else:
            assert not data.eq(-1).any().any()
        for path in demo.rendered_paths(out / f"{experiment}_platonic.csv", True):
            assert path.is_file()
        assert f"{experiment} (" in text_run.stdout
    assert (text_run.data / "demo" / "text-tiny" / "text" / "tinystories" / "train.bin").is_file()
    assert "0 pair(s) trained now" in text_run.stdout2
    assert text_run.first and text_run.first == text_run.second


def test_bad_input_is_one_line(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    code, _, err = run_cli(["demo", "--scale", "tiny", "--out", str(not_a_folder)])
    assert code == 2
    assert err.strip().splitlines() == [f"reprsim demo: error: --out {not_a_folder}: exists "
                                        "and is not a folder"]
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
        cli.main(["demo", "--scale", "huge"])
    assert e.value.code == 2


def test_demo_output_reads_well_without_a_terminal(image_run):
    """Redirected (no terminal): plain lines, no carriage-return bar frames, one line per
    finished pair, and few lines in all."""
    check_ok(image_run)
    text = image_run.stdout + image_run.stderr
    assert "\r" not in text
    pairs = sum(len(config(e)["seeds"]) * len(config(e)["fracs"]) for e in demo.IMAGE_EXPERIMENTS)
    assert sum(": trained" in line for line in text.splitlines()) == pairs
    assert len(text.splitlines()) < 60
