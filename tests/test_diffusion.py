"""The diffusion kind (docs/protocol.md section 6.4): the UNet presets, the schedule and the EMA
against diffusers' own implementations, a tiny UNet (channels 8/16/16 at 16x16) trained on
the generated shapes data (the loss falls, the saved weights are the EMA recomputed here
in float64 from the raw weights of every step, a run stopped after a checkpoint resumes
bit for bit), the features (dimension, pooling recomputed with numpy, identical for
identical models, reproducible), the result files against the schemas, and `reprsim
sample` on a diffusion checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import requires_cuda

from repr_sim import analysis, kinds, results, runs, splits
from repr_sim.cli import main
from repr_sim.kinds.diffusion import measure as dmeasure
from repr_sim.kinds.diffusion import train as dtrain
from repr_sim.metrics import METRICS
from repr_sim.models import unet as unet_model
from repr_sim.scoring import Options

REPO = Path(__file__).resolve().parent.parent
STEPS = 16
SIDE = 16

CONFIG = """
kind = "diffusion"
dataset = "shapes"
resolution = 16
split = "{split}"
fracs = [0.5]
seeds = [0]

[unet]
preset = "tiny"

[recipe]
steps = {steps}
batch_size = 16
lr = 3e-3
lr_batch = 16
warmup_steps = 2
checkpoint_every = 4
log_every = 4
keep_raw = true
threads = 1

[features]
blocks = true
"""


def write_config(folder: Path, name: str, split: str = "dataset", steps: int = STEPS) -> dict:
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(CONFIG.format(split=split, steps=steps)))
    return kinds.load(str(path))


def write_shapes(root: Path) -> None:
    """Small shapes betons at 16x16 (the generator's first images) under `root`."""
    from repr_sim.data import betons, shapes

    for split, n in (("train", 320), ("test", 160)):
        images, labels, _ = shapes.generate(n, size=SIDE, seed=0, split=split)
        betons.write_beton(images, labels, betons.beton_path("shapes_16", split, root),
                           workers=1, info={"dataset": "shapes", "split": split})


@pytest.fixture(scope="module")
def data_env(tmp_path_factory):
    """The data and runs roots of this module, with small shapes betons written."""
    root = tmp_path_factory.mktemp("diffusion")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPRSIM_DATA", str(root / "data"))
        mp.setenv("REPRSIM_RUNS", str(root / "runs"))
        mp.setenv("REPRSIM_VERIFY", "0")
        write_shapes(root / "data")
        yield root
    torch.set_num_threads(threads)  # the configs train on one thread


@pytest.fixture(scope="module")
def env(data_env):
    """One trained dataset-split pair, with the raw parameters of every optimiser step."""
    seen: list[list[torch.Tensor]] = []
    original = dtrain.Ema.update

    def update(self, model):
        seen.append([p.detach().double().clone() for p in model.parameters()])
        original(self, model)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dtrain.Ema, "update", update)
        cfg = write_config(data_env, "dtest_ds")
        folder = dtrain.train_pair(cfg, 0, 0.5, device="cpu")
    return {"root": data_env, "cfg": cfg, "pair": folder, "raw_steps": seen}


def test_study_unet_configuration():
    cfg = unet_model.unet_config(10)
    assert cfg["block_out_channels"] == [96, 192, 192] and cfg["layers_per_block"] == 2
    assert cfg["class_embed_type"] == "timestep" and cfg["num_class_embeds"] == 11
    model = unet_model.build_unet(10)
    assert unet_model.feature_width(model) == 96  # 192-d features
    attn = [type(b).__name__ for b in model.down_blocks]
    assert attn == ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
    assert model.down_blocks[1].attentions[0].heads == 192 // 8  # head dim 8
    wide = unet_model.unet_config(200, "tinyimagenet64")
    assert wide["sample_size"] == 64 and wide["block_out_channels"] == [96, 96, 192, 192]
    sched = unet_model.make_scheduler().config
    assert sched.num_train_timesteps == 1000 and sched.beta_schedule == "linear"
    assert sched.prediction_type == "epsilon"
    with pytest.raises(ValueError, match="divisible by norm_num_groups"):
        unet_model.unet_config(10, "tiny", block_out_channels=[6, 16, 16])


def test_cosine_schedule_matches_diffusers():
    from diffusers.optimization import get_cosine_schedule_with_warmup

    peak, warmup, total = 5e-4, 7, 33
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = get_cosine_schedule_with_warmup(opt, warmup, total)
    for step in range(30):
        want = opt.param_groups[0]["lr"]
        got = dtrain.cosine_lr(step, peak, warmup, total)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()
    recipe = {"lr": 5e-4, "batch_size": 512, "lr_batch": 1280, "steps": 30000,
              "schedule_factor": 1.1}
    assert dtrain.peak_lr(recipe) == pytest.approx(2e-4)  # the study's 2e-4 x batch / 512
    assert dtrain.schedule_length(recipe) == 33000


def test_ema_matches_diffusers_ema_model():
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ours, theirs = dtrain.Ema(model, 0.999), EMAModel(model.parameters(), decay=0.999)
    for _ in range(25):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ours.update(model)
        theirs.step(model.parameters())
    for a, b in zip(ours.shadow, theirs.shadow_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_training_loss_falls(env):
    for i in (0, 1):
        log = (env["pair"] / f"split_{i}" / "log.txt").read_text()
        rows = [json.loads(line) for line in log.splitlines()]
        assert [r["step"] for r in rows] == [4, 8, 12, 16]
        assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    status = runs.read_status(env["pair"])
    assert status["finished"] and [m["steps_done"] for m in status["models"]] == [STEPS, STEPS]
    assert not (env["pair"] / "split_0" / dtrain.STATE).exists()  # removed when done


def test_saved_weights_are_the_ema(env):
    """ckpt.pth = the EMA of model 0's raw weights, recomputed in float64 with the study's
    rule (decay 0 at the first update, then min((1 + s) / (10 + s), 0.999))."""
    seen = env["raw_steps"][:STEPS]  # model 0 trains first
    ema = [p.clone() for p in seen[0]]
    for n, params in enumerate(seen[1:], start=2):
        s = n - 1
        decay = min((1 + s) / (10 + s), 0.999)
        ema = [decay * e + (1 - decay) * p for e, p in zip(ema, params, strict=True)]
    model = dtrain.build(env["cfg"], 8)
    saved = torch.load(env["pair"] / "split_0" / dtrain.CHECKPOINT, weights_only=True)
    raw = torch.load(env["pair"] / "split_0" / dtrain.RAW, weights_only=True)
    names = [n for n, _ in model.named_parameters()]
    for name, want, last in zip(names, ema, seen[-1], strict=True):
        torch.testing.assert_close(saved[name].double(), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(raw[name].double(), last, rtol=0, atol=0)
    assert any(not torch.equal(saved[n], raw[n]) for n in names)


KILL_AT_STEP_6 = """
import os, signal, sys
from repr_sim.cli import main
from repr_sim.kinds.diffusion import train

def kill(model_dir, step):  # SIGKILL itself after step 6 (checkpoint at step 4): no clean-up
    if model_dir.name == "split_0" and step == 6:
        os.kill(os.getpid(), signal.SIGKILL)

train._after_step = kill
sys.exit(main(["train", sys.argv[1], "--seed", "0", "--frac", "0.5", "--device", "cpu"]))
"""


def test_resume_after_a_kill_is_bit_identical(env, capsys):
    write_config(env["root"], "dtest_resume")
    config = str(env["root"] / "dtest_resume.toml")
    proc = subprocess.run([sys.executable, "-c", KILL_AT_STEP_6, config],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    cfg = kinds.load(str(env["root"] / "dtest_resume.toml"))
    folder = runs.pair_dir(Path(env["root"]) / "runs" / "dtest_resume", 0, 0.5)
    state = torch.load(folder / "split_0" / dtrain.STATE, weights_only=True)
    assert state["step"] == 4 and not runs.is_finished(folder)
    assert runs.read_status(folder)["models"][0]["steps_done"] == 4
    capsys.readouterr()
    dtrain.train_pair(cfg, 0, 0.5, device="cpu")
    assert "resuming from step 4 of 16" in capsys.readouterr().out
    for i in (0, 1):
        a = torch.load(folder / f"split_{i}" / dtrain.CHECKPOINT, weights_only=True)
        b = torch.load(env["pair"] / f"split_{i}" / dtrain.CHECKPOINT, weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        log_a = (folder / f"split_{i}" / "log.txt").read_text().splitlines()
        log_b = (env["pair"] / f"split_{i}" / "log.txt").read_text().splitlines()
        assert [json.loads(r)["loss"] for r in log_a] == [json.loads(r)["loss"] for r in log_b]


def _pair_models(env):
    args = runs.read_json(env["pair"] / "args.json")
    return [dmeasure.load_unet(env["pair"] / f"split_{i}" / dtrain.CHECKPOINT, env["cfg"], 8, "cpu")
            for i in (0, 1)], args


def test_features_dimension_pooling_and_reproducibility(env):
    (m0, m1), _ = _pair_models(env)
    x0, _ = dmeasure.cached_test({}, dtrain.beton_path(env["cfg"], "test"))
    idx = np.arange(0, 40, dtype=np.int64)
    noisy = [dmeasure.draws(len(x0), tuple(x0.shape[1:]), timestep=-1, seed=0, k=0)]
    again = [dmeasure.draws(len(x0), tuple(x0.shape[1:]), timestep=-1, seed=0, k=0)]
    assert all(torch.equal(a, b) for a, b in zip(noisy[0], again[0], strict=True))
    final, blocks, _ = dmeasure.extract([m0, m1], [8, 8], x0, idx, noisy, batch_size=16,
                                        device="cpu", blocks=True)
    assert final[0].shape == (40, 2 * 8)  # 2 x channels of the last norm (8 for the tiny UNet)
    assert set(blocks[0]) == {"down_0", "down_1", "down_2", "mid", "up_0", "up_1", "up_2"}
    # The pooling recomputed from the raw conv_act output with numpy (float64).
    raw = []
    handle = m0.conv_act.register_forward_hook(lambda _m, _i, out: raw.append(out.double().numpy()))
    sched = unet_model.make_scheduler()
    t, noise = noisy[0][0][idx], noisy[0][1][idx]
    with torch.no_grad():
        m0(sched.add_noise(x0[idx], noise, t), t, class_labels=torch.full((40,), 8))
    handle.remove()
    act = raw[0]
    want = np.concatenate([act.mean(axis=(2, 3)), act.std(axis=(2, 3))], axis=1)
    np.testing.assert_allclose(final[0].numpy(), want, rtol=1e-4, atol=1e-5)
    # Identical models give identical features; another seed gives other noisy inputs.
    same, _, _ = dmeasure.extract([m0, m0], [8, 8], x0, idx, noisy, batch_size=16, device="cpu")
    assert torch.equal(same[0], same[1])
    other = [dmeasure.draws(len(x0), tuple(x0.shape[1:]), timestep=-1, seed=1, k=0)]
    moved, _, _ = dmeasure.extract([m0, m1], [8, 8], x0, idx, other, batch_size=16, device="cpu")
    assert not torch.equal(moved[0], final[0])
    fixed = dmeasure.draws(len(x0), tuple(x0.shape[1:]), timestep=250, seed=0, k=0)
    assert (fixed[0] == 250).all() and torch.equal(fixed[1], noisy[0][1])


def test_measure_writes_the_study_schemas_reproducibly(env):
    exp = env["pair"].parent.parent
    assert main(["measure", str(exp), "--probe-size", "96", "--device", "cpu"]) == 0
    sim_path, loss_path = exp / results.DIFFUSION_SIM_CSV, exp / results.DIFFUSION_LOSS_CSV
    sim, loss = pd.read_csv(sim_path), pd.read_csv(loss_path)
    assert list(sim.columns) == results.similarity_header([results.DIFFUSION_PROBE])
    assert analysis.detect_kind(list(sim.columns))[0] == "similarity"
    assert analysis.detect_kind(list(loss.columns))[0] == "loss"
    split = splits.load(env["pair"] / "split_indices")
    realised = len(np.intersect1d(split.a, split.b)) / len(split.a)
    assert list(sim["metric"]) == list(METRICS) and np.allclose(sim["frac_overlap"], realised)
    assert 0 <= sim.loc[sim["metric"] == "cka", "metric_train_ds"].item() <= 1
    assert list(loss["model_idx"]) == [1, 2] and (loss["val_loss"] > 0).all()
    assert json.loads((exp / "platonic_ffcv.json").read_text())["arch"] == "unet"
    # Layer-wise features of every block, saved for the calibration.
    block = np.load(env["pair"] / "features" / "metric_train_ds_mid_model1.npy", allow_pickle=False)
    assert block.shape == (96, 2 * 16)
    before = sim_path.read_bytes()
    assert main(["measure", str(exp), "--probe-size", "96", "--device", "cpu", "--force"]) == 0
    assert sim_path.read_bytes() == before  # seeded timesteps and noise: the same numbers


def test_task_split_probes(env):
    cfg = write_config(env["root"], "dtest_task", split="task", steps=2)
    folder = dtrain.train_pair(cfg, 0, 0.5, device="cpu")
    args = runs.read_json(folder / "args.json")
    assert args["num_classes"] == [4, 4] and args["null_class"] == [4, 4]
    rows = dmeasure.measure_pair(folder, args, Options(probe_size=48), {})
    assert dmeasure.csv_files(args)[results.DIFFUSION_SIM_CSV] == results.similarity_header(
        ["metric_overlap", "metric_ood_one"])
    split = splits.load(folder / "split_indices")
    assert len(rows[results.DIFFUSION_SIM_CSV]) == len(METRICS)
    if not split.shared_classes:
        assert all(r[3] == "-1.000000" for r in rows[results.DIFFUSION_SIM_CSV])


def test_sample_writes_a_png_grid(env, tmp_path, capsys):
    from PIL import Image

    ckpt = env["pair"] / "split_0" / dtrain.CHECKPOINT
    out = tmp_path / "grid.png"
    args = ["sample", str(ckpt), "--per-class", "2", "--ddim-steps", "3", "--out", str(out),
            "--device", "cpu", "--fid", "4"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "FID" in text  # the FID line: a value or why it is skipped
    image = Image.open(out)
    assert image.size == (2 * (SIDE + 2) + 2, 8 * (SIDE + 2) + 2)  # 2 columns, 8 classes
    first = out.read_bytes()
    assert main([*args[:-2]]) == 0 and out.read_bytes() == first  # seeded


def test_bad_config_is_one_error_line(env, capsys):
    path = Path(env["root"]) / "dtest_bad.toml"
    text = textwrap.dedent(CONFIG.format(split="dataset", steps=2))
    bad = 'preset = "tiny"\nblock_out_channels = [6, 16, 16]'  # 6 channels, groups of 4
    path.write_text(text.replace('preset = "tiny"', bad))
    assert main(["train", str(path), "--seed", "0", "--frac", "0.5", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "divisible by norm_num_groups" in err[0]


@requires_cuda
def test_cuda_mixed_precision_steps(data_env):
    pytest.importorskip("diffusers", reason="diffusers is not installed (the GPU check "
                        "installs it from the wheels in .whl/)")
    cfg = write_config(data_env, "dtest_cuda", steps=4)
    folder = dtrain.train_pair(cfg, 0, 0.5, device="cuda")
    assert runs.is_finished(folder)
    state = torch.load(folder / "split_0" / dtrain.CHECKPOINT, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())
