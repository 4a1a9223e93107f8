"""Text training: pairs in 1 and 2 (torchrun, gloo) processes, loss, resume after a kill,
early stopping, task batches, bad input, `reprsim sample`."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _text_fixtures import prepare_generated, tiny_text_config
from conftest import requires_cuda

from repr_sim import runs, splits
from repr_sim.cli import main
from repr_sim.data import text as textdata
from repr_sim.data import textgen
from repr_sim.kinds.text import train as texttrain
from repr_sim.models import gpt

torch.set_num_threads(2)
CORPORA = ["tinycodes", "tinystories", "tinytextbooks", "tinywebtext", "wikitext", "shakespeare_all"]


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> Path:
    """The six generated domains, prepared with the byte tokenizer (about 28k train tokens each)."""
    root = tmp_path_factory.mktemp("textdata")
    for corpus, path in textgen.write_corpora(root / "gen", 30_000, seed=0).items():
        prepare_generated(corpus, path, root=root / "data")  # without `datasets`: a stand-in
    return root / "data"


@pytest.fixture
def env(text_data, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("REPRSIM_DATA", str(text_data))
    monkeypatch.setenv("REPRSIM_RUNS", str(tmp_path / "runs"))
    return tmp_path


def pair(tmp: Path, name: str, seed: int, frac: float, runs_root: Path | None = None) -> Path:
    return runs.pair_dir((runs_root or tmp / "runs") / name, seed, frac)


def evals(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / texttrain.EVALS).read_text().splitlines()]


def train(cfg: Path, seed=0, frac=0.5, *extra) -> int:
    return main(["train", str(cfg), "--seed", str(seed), "--frac", str(frac), "--device", "cpu", *extra])


def check_pair(folder: Path, world: int) -> None:
    assert runs.is_done(folder)
    info = json.loads((folder / "args.json").read_text())
    assert info["kind"] == "text" and info["arch"] == "gpt" and info["world_size"] == world
    assert info["tokenizer"] == "bytes" and info["end_time"]
    for i in (0, 1):
        ckpt = torch.load(folder / f"split_{i}" / "ckpt.pt", weights_only=True)
        rows = evals(folder / f"split_{i}")
        best = min(rows, key=lambda r: r["val_loss"])
        assert ckpt["best_val_loss"] == pytest.approx(best["val_loss"], abs=1e-6)
        assert ckpt["iter_num"] == best["iter"]
        model, _ = gpt.load_checkpoint(folder / f"split_{i}" / "ckpt.pt")
        assert model.config.vocab_size == gpt.padded_vocab(257)
        assert not (folder / f"split_{i}" / texttrain.RESUME).exists()


def test_lr_schedule_is_warmup_then_cosine_to_a_tenth():
    lr, iters, warmup = 1e-3, 100, 10
    got = [texttrain.lr_at(s, lr=lr, iters=iters, warmup=warmup, min_lr=lr / 10) for s in range(iters)]
    for s in range(warmup):
        assert got[s] == pytest.approx(lr * (s + 1) / warmup)
    for s in range(warmup, iters):
        p = (s - warmup) / (iters - warmup)
        assert got[s] == pytest.approx(lr / 10 + 0.5 * (1 + math.cos(math.pi * p)) * (lr - lr / 10))
    assert all(a >= b for a, b in zip(got[warmup:], got[warmup + 1:], strict=False))
    assert got[-1] > lr / 10 and got[-1] == pytest.approx(lr / 10, rel=0.01)


def test_pair_in_one_process_then_two_with_torchrun(env):
    cfg = tiny_text_config(env, "ds_tiny", iters=4, eval_interval=2)
    assert train(cfg) == 0
    one = pair(env, "ds_tiny", 0, 0.5)
    check_pair(one, world=1)
    n = len(textdata.load_stream("tinystories", "train"))
    assert splits.load(one / "split_indices") == splits.chunk_split(n, 0.5, block_size=16, seed=0)

    runs2 = env / "runs_ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc_per_node=2", "-m", "repr_sim", "train", str(cfg),
           "--seed", "0", "--frac", "0.5", "--device", "cpu"]
    proc = subprocess.run(cmd, env={**os.environ, "REPRSIM_RUNS": str(runs2), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = pair(env, "ds_tiny", 0, 0.5, runs2)
    check_pair(two, world=2)
    assert splits.load(two / "split_indices") == splits.load(one / "split_indices")  # seed only
    assert "2 process(es)" in (two / "split_0" / "log.txt").read_text()


def test_loss_goes_down_over_50_iterations(env):
    cfg = tiny_text_config(env, "learn", iters=50, eval_interval=10, eval_iters=4, batch=8,
                           block=16, n_embd=32, lr=1e-2)
    assert train(cfg) == 0
    rows = evals(pair(env, "learn", 0, 0.5) / "split_0")
    assert [r["iter"] for r in rows] == [0, 10, 20, 30, 40, 50]
    first, last = rows[0]["val_loss"], rows[-1]["val_loss"]
    assert first == pytest.approx(math.log(gpt.padded_vocab(257)), abs=0.3)  # uniform guess at init
    assert last < first - 1.5, rows
    assert rows[-1]["train_loss"] < rows[1]["train_loss"]


def test_killed_run_resumes_and_completes(env):
    cfg = tiny_text_config(env, "killme", iters=30, eval_interval=5, patience=100)
    folder = pair(env, "killme", 0, 0.5)
    resume = folder / "split_0" / texttrain.RESUME
    cmd = [sys.executable, "-m", "repr_sim", "train", str(cfg), "--seed", "0", "--frac", "0.5",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if resume.is_file():
                state = torch.load(resume, weights_only=True)
                if state["iter_num"] > 0:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = state["iter_num"]
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None, "the run ended before it could be killed"
    assert proc.returncode == -signal.SIGKILL and not runs.is_done(folder)

    assert train(cfg) == 0
    log = (folder / "split_0" / "log.txt").read_text()
    resumed = [int(line.split("resumed from iteration ")[1].split()[0]) for line in log.splitlines()
               if "resumed from iteration" in line]
    assert resumed and resumed[0] >= killed_at
    assert {r["iter"] for r in evals(folder / "split_0")} == set(range(0, 31, 5))
    check_pair(folder, world=1)


def test_finished_pair_is_skipped(env, capsys):
    cfg = tiny_text_config(env, "skip", iters=2, eval_interval=1)
    assert train(cfg) == 0
    ckpt = pair(env, "skip", 0, 0.5) / "split_1" / "ckpt.pt"
    before = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    assert train(cfg) == 0
    assert "already trained, skipping" in capsys.readouterr().out
    assert ckpt.stat().st_mtime_ns == before


def test_early_stopping_keeps_the_best_checkpoint(env):
    # lr 0: the weights never change, so every evaluation after the first is no better
    cfg = tiny_text_config(env, "stop", iters=50, eval_interval=1, patience=3, lr=0.0)
    assert train(cfg) == 0
    folder = pair(env, "stop", 0, 0.5) / "split_0"
    state = json.loads((folder / texttrain.STATE).read_text())
    assert state["stopped_early"] and state["last_iter"] == 3 and state["best_iter"] == 0
    assert [r["iter"] for r in evals(folder)] == [0, 1, 2, 3]
    assert torch.load(folder / "ckpt.pt", weights_only=True)["iter_num"] == 0


def test_task_pair_trains_on_its_corpora(env):
    cfg = tiny_text_config(env, "task_tiny", split="task", corpora=CORPORA, iters=2, eval_interval=1)
    assert train(cfg, 1, 2 / 3) == 0
    folder = pair(env, "task_tiny", 1, 2 / 3)
    split = splits.load(folder / "split_indices")
    assert split == splits.corpus_split(CORPORA, 2 / 3, seed=1) and len(split.shared) == 2
    info = json.loads((folder / "args.json").read_text())
    assert info["corpora"] == [split.a, split.b]
    for i, names in enumerate((split.a, split.b)):
        assert torch.load(folder / f"split_{i}" / "ckpt.pt", weights_only=True)["corpora"] == names


def test_task_batches_come_only_from_the_models_corpora(tmp_path, monkeypatch, text_data):
    # corpus i is made of letter i only, so a window shows which corpus it came from
    monkeypatch.setenv("REPRSIM_DATA", str(tmp_path / "letters"))
    letters = {c: chr(ord("a") + i) for i, c in enumerate(CORPORA)}
    for corpus, letter in letters.items():
        f = tmp_path / f"{corpus}.txt"
        f.write_text("\n".join(letter * (20 + i % 7) for i in range(60)), encoding="utf-8")
        textdata.prepare(corpus, data_files=[f], tokenizer="bytes")
    cfg = {"split": "task", "corpora": CORPORA, "model": {"block_size": 8}}
    split = splits.corpus_split(CORPORA, 1 / 3, seed=4)
    eot = 256
    for i, names in enumerate((split.a, split.b)):
        allowed = {ord(letters[c]) for c in names}
        for sampler in texttrain.samplers(cfg, split, i):  # train and val
            w = sampler.windows(np.random.default_rng(i), 3000)
            assert w.shape[1] == 9
            seen = set()
            for row in w:
                tokens = set(row.tolist()) - {eot, ord("\n")}  # shakespeare_all keeps line breaks
                assert len(tokens) == 1 and tokens <= allowed  # one corpus per window, the model's
                seen |= tokens
            assert seen == allowed  # every corpus of the model is used


def test_bad_input_one_clear_line_each(env, tmp_path, capsys):
    def one_line(argv):
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, (rc, err)
        return err[0]

    cfg = tiny_text_config(env, "bad")
    assert "block_size 400 is too large" in one_line(
        ["train", str(cfg), "--seed", "0", "--frac", "0.5", "--block-size", "400", "--device", "cpu"])
    assert "--epochs does not apply to text" in one_line(
        ["train", str(cfg), "--seed", "0", "--frac", "0.5", "--epochs", "3"])
    unknown = tiny_text_config(env, "bad2", corpus="novels")
    assert "unknown corpus 'novels'" in one_line(["train", str(unknown), "--seed", "0", "--frac", "0"])
    empty = tmp_path / "empty_data"
    empty.mkdir()
    os.environ["REPRSIM_DATA"] = str(empty)  # restored by the env fixture's monkeypatch
    line = one_line(["train", str(cfg), "--seed", "0", "--frac", "0.5", "--device", "cpu"])
    assert "not prepared" in line and "prepare-text tinystories" in line
    assert not pair(env, "bad", 0, 0.5).exists()  # nothing half-written


def test_sample_generates_text_from_a_checkpoint(env, capsys):
    cfg = tiny_text_config(env, "sample", iters=2, eval_interval=1)
    assert train(cfg) == 0
    ckpt = pair(env, "sample", 0, 0.5) / "split_0" / "ckpt.pt"
    capsys.readouterr()
    assert main(["sample", str(ckpt), "--prompt", "Once upon", "--tokens", "20", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Once upon") and len(out.encode("utf-8", "replace")) >= len("Once upon") + 1


def test_run_train_sh_runs_a_task_line_under_torchrun(env):
    cfg = tiny_text_config(env, "sbatch_body", iters=2, eval_interval=1)
    tasks = env / "tasks.tsv"
    tasks.write_text(f"{cfg}\t0\t0.0\n{cfg}\t1\t1.0\n", encoding="utf-8")
    script = Path(__file__).resolve().parents[1] / "train_nanoGPT" / "run_train.sh"
    proc = subprocess.run(["bash", str(script), str(tasks), "--device", "cpu"],
                          env={**os.environ, "TASK_ID": "1", "NPROC": "1", "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task 1:" in proc.stdout and "1 process(es)" in proc.stdout
    check_pair(pair(env, "sbatch_body", 1, 1.0), world=1)
    assert not pair(env, "sbatch_body", 0, 0.0).exists()


def test_run_train_wrapper_plans_the_three_sweeps(env):
    script = Path(__file__).resolve().parents[1] / "train_nanoGPT" / "run_train_wrapper.sh"
    proc = subprocess.run(["bash", str(script), "--dry-run"], env={**os.environ, "SEEDS": "0"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nanogpt_shakespeare_ds: 6 task(s)" in proc.stdout
    assert "nanogpt_tinystories_ds: 6 task(s)" in proc.stdout
    assert "nanogpt_task: 4 task(s)" in proc.stdout
    assert "reprsim train nanogpt_task --seed 0 --frac 0.3333333333333333" in proc.stdout


@requires_cuda
def test_pair_on_cuda_with_bf16_and_compile(env):
    cfg = tiny_text_config(env, "cuda_tiny", iters=20, eval_interval=5, batch=8, block=32)
    rc = main(["train", str(cfg), "--seed", "0", "--frac", "0.5", "--device", "cuda",
               "--set", "recipe.compile=true"])
    assert rc == 0
    folder = pair(env, "cuda_tiny", 0, 0.5)
    check_pair(folder, world=1)
    rows = evals(folder / "split_0")
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    model, _ = gpt.load_checkpoint(folder / "split_0" / "ckpt.pt", map_location="cuda")
    idx = torch.randint(0, 257, (4, 32), device="cuda")
    assert gpt.text_features(model, idx).shape == (4, 32)
