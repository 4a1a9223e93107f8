"""The LLM kind (repr_sim.kinds.llm, docs/protocol.md section 6.5): prepare-text with a local HF
tokenizer, LoRA pairs on chunk and corpus splits, resume, features, adapter swap, result files,
bad input. A tiny random Llama (2 layers, width 32) and a BPE trained here stand in for a hub
model; everything offline on the CPU."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import requires_cuda

from repr_sim import analysis, results, runs
from repr_sim.cli import main
from repr_sim.data import hftext, textgen
from repr_sim.data import text as textdata
from repr_sim.errors import UserError
from repr_sim.models import llama

CORPORA = ["tinywebtext", "tinycodes", "shakespeare_all", "tinystories", "wikitext", "tinytextbooks"]
TINY = "llm/tiny_llama"
RECIPE = {"steps": 4, "sequences_per_step": 4, "batch_size": 2, "block_size": 32, "lr": 1e-2,
          "save_every": 2, "log_interval": 2, "val_windows": 4}


@pytest.fixture(scope="module")
def llm_root(tmp_path_factory):
    """A data root with the generated corpora, the tiny model and the six corpora prepared."""
    root = tmp_path_factory.mktemp("llm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a width-32 model: threads only contend (2 shared cores)
    old = {k: os.environ.get(k) for k in ("REPRSIM_DATA", "REPRSIM_RUNS")}
    os.environ["REPRSIM_DATA"] = str(root / "data")
    os.environ["REPRSIM_RUNS"] = str(root / "runs")
    raw = textgen.write_corpora(root / "data" / "llm" / "raw", 12_000, seed=0)
    texts = [line for p in raw.values() for line in p.read_text(encoding="utf-8").splitlines()]
    llama.write_tiny(root / "data" / TINY, texts, vocab=300)
    for corpus, path in raw.items():
        hftext.prepare(corpus, f"hf:{TINY}", preset="v2", data_files=[path])
    yield root, raw
    torch.set_num_threads(threads)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def write_config(root: Path, name: str, **over) -> Path:
    lines = ['kind = "llm"', f'base_model = "{TINY}"', "seeds = [0]"]
    recipe = {**RECIPE, **over.pop("recipe", {})}
    probes = over.pop("probes", {"windows": 40})
    for key, value in over.items():
        lines.append(f"{key} = {json.dumps(value)}")
    lines.append("[recipe]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in recipe.items()]
    lines.append("[probes]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in probes.items()]
    path = root / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def one_error_line(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, (rc, err)
    return err[0]


def train(cfg: Path, seed: int, frac: float) -> Path:
    assert main(["train", str(cfg), "--seed", str(seed), "--frac", str(frac), "--device", "cpu"]) == 0
    return runs.pair_dir(Path(os.environ["REPRSIM_RUNS"]) / cfg.stem, seed, frac)


# ---- data ------------------------------------------------------------------------------------
def test_prepare_text_with_a_local_tokenizer(llm_root, capsys):
    root, raw = llm_root
    from tokenizers import Tokenizer

    folder = root / "data" / TINY
    assert main(["prepare-text", "tinycodes", "--preset", "v2", "--tokenizer", f"hf:{folder}",
                 "--data-files", str(raw["tinycodes"]), "--dtype", "uint32", "--force"]) == 0
    ref = Tokenizer.from_file(str(folder / "tokenizer.json"))  # the tokenizers library itself
    eos = ref.token_to_id(llama.EOS)
    lines = raw["tinycodes"].read_text(encoding="utf-8").splitlines()
    n_val = max(1, int(len(lines) * 0.1))
    expected = [t for line in lines[:-n_val] for t in (*ref.encode(line, add_special_tokens=False).ids, eos)]
    tok = hftext.load_tokenizer(str(folder))
    out = hftext.data_dir("tinycodes", "v2", hftext.family(tok))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == ref.get_vocab_size()
    assert np.fromfile(out / "train.bin", dtype=np.uint32).tolist() == expected
    assert hftext.stream(out, "train").tolist() == expected
    assert meta["tokenizer_hash"] == hftext.tokenizer_hash(hftext.load_tokenizer(str(folder)))
    # the byte data of the same corpus coexist in text/tinycodes/, read as uint16
    textdata.prepare("tinycodes", data_files=[raw["tinycodes"]], tokenizer="bytes")
    assert textdata.load_stream("tinycodes", "train").dtype == np.uint16
    assert (out / "train.bin").is_file()
    # back to the default dtype for the other tests
    hftext.prepare("tinycodes", f"hf:{TINY}", preset="v2", data_files=[raw["tinycodes"]], force=True)


def test_text_reader_takes_the_dtype_from_meta(llm_root):
    root, _ = llm_root
    folder = textdata.corpus_dir("wikitext")
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.array([1, 70_000, 5, 123_456], dtype=np.uint32)
    ids.tofile(folder / "train.bin")
    ids[:2].tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"corpus": "wikitext", "dtype": "uint32",
                                                  "train_tokens": 4, "val_tokens": 2}))
    assert textdata.load_stream("wikitext", "train").tolist() == ids.tolist()


def big_vocab_tokenizer(folder: Path, n: int = 70_000) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(n)} | {"[UNK]": n, llama.EOS: n + 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=llama.EOS, unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_large_vocabulary_uint32_and_refused_as_uint16(llm_root, tmp_path, capsys):
    folder = big_vocab_tokenizer(tmp_path / "bigtok")
    text = tmp_path / "docs.txt"
    text.write_text("w1 w69999\nw65536 w2\nw3\n")
    line = one_error_line(capsys, ["prepare-text", "tinystories", "--preset", "v2", "--tokenizer",
                                   f"hf:{folder}", "--data-files", str(text), "--dtype", "uint16"])
    assert "do not fit uint16" in line and "70,002" in line
    meta = hftext.prepare("tinystories", f"hf:{folder}", preset="v2", data_files=[text])
    assert meta["dtype"] == "uint32"
    out = hftext.data_dir("tinystories", "v2", meta["family"])
    assert hftext.stream(out, "train").tolist() == [1, 69999, 70001, 65536, 2, 70001]


# ---- training --------------------------------------------------------------------------------
def test_pairs_train_only_lora_on_both_splits(llm_root, monkeypatch):
    root, _ = llm_root
    from repr_sim.kinds.llm import train as llm_train

    built = []
    real = llm_train.build_model
    monkeypatch.setattr(llm_train, "build_model", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    ds = train(write_config(root, "t_ds", split="dataset", corpus="tinycodes"), 0, 0.5)
    task = train(write_config(root, "t_task", split="task", corpora=CORPORA), 1, 1 / 3)
    assert len(built) == 4
    fresh = llama.load(llama.resolve(TINY)).state_dict()
    for model in built:
        trained = {n: p for n, p in model.named_parameters()}
        base = {n.replace("base_model.model.", "", 1).replace(".base_layer", ""): p
                for n, p in trained.items() if "lora_" not in n}
        assert set(base) == set(fresh)  # every base weight is there, and bit-identical
        assert all(torch.equal(base[n], fresh[n]) for n in fresh)
        assert all(not p.requires_grad for p in base.values())
        assert any(p.abs().sum() > 0 for n, p in trained.items() if "lora_B" in n)  # B starts at 0
    from safetensors.torch import load_file

    for pair in (ds, task):
        assert runs.is_finished(pair)
        for i in (0, 1):
            keys = load_file(pair / f"split_{i}" / "adapter_model.safetensors").keys()
            assert keys and all("lora_" in k for k in keys)  # the adapter only
        args = json.loads((pair / "args.json").read_text())
        weights = root / "data" / TINY / "model.safetensors"
        assert args["base_model"]["files"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    split = json.loads((ds / "split_indices" / "split.json").read_text())
    assert len(split["shared"]) == 20 and len(split["chunks_a"]) == 40
    corpora = json.loads((task / "args.json").read_text())["corpora"]
    assert [len(c) for c in corpora] == [3, 3] and len(set(corpora[0]) & set(corpora[1])) == 1


def test_resume_after_a_kill_gives_the_uninterrupted_adapter(llm_root, monkeypatch):
    root, _ = llm_root
    from safetensors.torch import load_file

    from repr_sim.kinds.llm import train as llm_train

    recipe = {"steps": 6, "save_every": 2}
    whole = train(write_config(root, "r_whole", split="task", corpora=CORPORA, recipe=recipe), 0, 0.0)
    cfg = write_config(root, "r_killed", split="task", corpora=CORPORA, recipe=recipe)
    real = llm_train.Trainer.step_loss

    def killed(self, ddp, windows, step, accum):
        if step == 3 and self.index == 1:
            raise KeyboardInterrupt  # what a kill leaves: resume.pt at step 2, model 0 finished
        return real(self, ddp, windows, step, accum)

    monkeypatch.setattr(llm_train.Trainer, "step_loss", killed)
    assert main(["train", str(cfg), "--seed", "0", "--frac", "0.0", "--device", "cpu"]) == 130
    pair = runs.pair_dir(Path(os.environ["REPRSIM_RUNS"]) / "r_killed", 0, 0.0)
    assert (pair / "split_1" / "resume.pt").is_file() and not runs.is_finished(pair)
    monkeypatch.setattr(llm_train.Trainer, "step_loss", real)
    train(cfg, 0, 0.0)
    assert "resuming at step 2" in (pair / "split_1" / "log.txt").read_text()
    for i in (0, 1):
        a = load_file(whole / f"split_{i}" / "adapter_model.safetensors")
        b = load_file(pair / f"split_{i}" / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- features and measurement -------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")  # peft -> transformers
def test_adapter_swap_equals_two_separate_loads(llm_root):
    from peft import PeftModel

    from repr_sim.kinds.llm import measure

    root, _ = llm_root
    pair = runs.pair_dir(Path(os.environ["REPRSIM_RUNS"]) / "t_task", 1, 1 / 3)
    if not pair.is_dir():
        pair = train(write_config(root, "t_task", split="task", corpora=CORPORA), 1, 1 / 3)
    found = llama.resolve(TINY)
    windows = np.random.default_rng(0).integers(0, 300, size=(6, 32))
    swapped = measure.with_adapters({}, found, measure.adapter_dirs(pair), ["a", "b"],
                                    dtype=torch.float32, device="cpu")
    for i, name in enumerate(["a", "b"]):
        one, _ = measure.features(swapped, name, windows, batch=4, device="cpu",
                                  dtype=torch.float32, per_block=False)
        alone = PeftModel.from_pretrained(llama.load(found), str(pair / f"split_{i}")).eval()
        with torch.no_grad():
            ref = alone(input_ids=torch.from_numpy(windows), output_hidden_states=True)
        expected = ref.hidden_states[-1].mean(dim=1)  # the final norm's output, pooled
        assert one.shape == (6, 32) and one.dtype == torch.float32
        torch.testing.assert_close(one, expected, rtol=1e-5, atol=1e-6)
    a, _ = measure.features(swapped, "a", windows, batch=4, device="cpu", dtype=torch.float32, per_block=False)
    b, _ = measure.features(swapped, "b", windows, batch=4, device="cpu", dtype=torch.float32, per_block=False)
    assert not torch.equal(a, b)  # the swap really changes the model


def test_measure_writes_the_schemas_and_self_cka_is_one(llm_root):
    import pandas as pd

    root, _ = llm_root
    cfg = write_config(root, "m_task", split="task", corpora=CORPORA,
                       probes={"windows": 40, "per_block": True})
    pair = train(cfg, 0, 1.0)
    exp = Path(os.environ["REPRSIM_RUNS"]) / "m_task"
    assert main(["measure", str(exp)]) == 0
    sim, loss = exp / results.LLM_SIM_CSV, exp / results.LLM_LOSS_CSV
    header = sim.read_text().splitlines()[0].split(",")
    assert header == results.similarity_header(results.TEXT_TASK_PROBES)
    assert analysis.detect_kind(header)[0] == "similarity"
    assert analysis.detect_kind(loss.read_text().splitlines()[0].split(","))[0] == "loss"
    frame = pd.read_csv(sim)
    assert len(frame) == 8 and (frame.metric_OOD_for_one == -1).all()  # frac 1: no corpus of one
    states = [json.loads((pair / f"split_{i}" / "state.json").read_text())["val_loss"] for i in (0, 1)]
    assert pd.read_csv(loss).val_loss.tolist() == pytest.approx(states)
    blocks = sorted((pair / "features" / "blocks").glob("metric_common_model1_block*.npy"))
    assert len(blocks) == 2 and np.load(blocks[0]).shape == (40, 32)
    # model 1 := model 0: every similarity of a model with itself is maximal, CKA 1
    for name in ("adapter_model.safetensors", "adapter_config.json", "state.json"):
        shutil.copy(pair / "split_0" / name, pair / "split_1" / name)
    assert main(["measure", str(exp), "--force"]) == 0
    cka = pd.read_csv(sim).set_index("metric").loc["cka"]
    assert cka.metric_common == pytest.approx(1.0, abs=1e-6)
    assert cka.metric_OOD_for_all == pytest.approx(1.0, abs=1e-6)


def test_bad_input_is_one_line(llm_root, capsys):
    root, _ = llm_root
    cfg = write_config(root, "bad_model", split="task", corpora=CORPORA)
    cfg.write_text(cfg.read_text().replace(f'base_model = "{TINY}"', 'base_model = "/no/such/model"'))
    line = one_error_line(capsys, ["train", str(cfg), "--seed", "0", "--frac", "0", "--device", "cpu"])
    assert "/no/such/model" in line and "token" in line
    line = one_error_line(capsys, ["prepare-text", "tinycodes", "--preset", "v2",
                                   "--tokenizer", "hf:/no/such/folder"])
    assert "/no/such/folder" in line
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        llama.resolve("meta-llama/Llama-3.2-1B-Instruct")  # HF_HUB_OFFLINE=1, nothing cached


@requires_cuda
def test_cuda_pair_bf16_and_measure(llm_root):
    """On CUDA: bf16 autocast training, bf16 features with float32 pooling, close to fp32."""
    import pandas as pd

    from repr_sim.kinds.llm import measure

    root, _ = llm_root
    cfg = write_config(root, "c_task", split="task", corpora=CORPORA,
                       probes={"windows": 40, "dtype": "bfloat16"})
    assert main(["train", str(cfg), "--seed", "0", "--frac", "0.0", "--device", "cuda"]) == 0
    exp = Path(os.environ["REPRSIM_RUNS"]) / "c_task"
    assert main(["measure", str(exp), "--device", "cuda"]) == 0
    assert len(pd.read_csv(exp / results.LLM_SIM_CSV)) == 8
    pair = runs.pair_dir(exp, 0, 0.0)
    found = llama.resolve(TINY)
    windows = np.random.default_rng(0).integers(0, 300, size=(8, 32))
    feats = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = measure.with_adapters({}, found, measure.adapter_dirs(pair), ["a", "b"],
                                      dtype=dtype, device="cuda")
        feats[dtype], _ = measure.features(model, "a", windows, batch=8, device="cuda",
                                           dtype=dtype, per_block=False)
    assert feats[torch.bfloat16].dtype == torch.float32
    torch.testing.assert_close(feats[torch.bfloat16], feats[torch.float32], rtol=0.05, atol=0.05)


def test_torchrun_two_processes_share_a_pair(llm_root, tmp_path):
    """Two CPU ranks (gloo) train one pair: 4 sequences per step = 1 x 2 per rank x 2 ranks."""
    import subprocess
    import sys

    root, _ = llm_root
    cfg = write_config(root, "d_task", split="task", corpora=CORPORA, recipe={"steps": 2})
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "repr_sim",
                          "train", str(cfg), "--seed", "0", "--frac", "0", "--device", "cpu"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    pair = runs.pair_dir(Path(os.environ["REPRSIM_RUNS"]) / "d_task", 0, 0.0)
    assert runs.is_finished(pair) and json.loads((pair / "args.json").read_text())["world_size"] == 2
    assert "1 x 2 x 2 sequences" in (pair / "split_0" / "log.txt").read_text()
