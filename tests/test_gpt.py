"""The GPT model: attention against a float64 formula, causality, init, ties, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from repr_sim.cli import main
from repr_sim.errors import UserError
from repr_sim.models import gpt

torch.set_num_threads(2)
ARGS = dict(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)


def small(**kw):
    torch.manual_seed(0)
    return gpt.build_gpt(**{**ARGS, **kw}).eval()


def test_attention_matches_the_formula_in_float64():
    torch.manual_seed(1)
    cfg = gpt.GPTConfig(**{**ARGS, "bias": True})
    attn = gpt.CausalSelfAttention(cfg).double().eval()
    x = torch.randn(3, 7, cfg.n_embd, dtype=torch.float64)
    h, d = cfg.n_head, cfg.n_embd // cfg.n_head
    w, b = attn.qkv.weight, attn.qkv.bias
    qkv = x @ w.T + b
    q, k, v = qkv.split(cfg.n_embd, dim=-1)
    out = torch.empty_like(x)
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d)
        mask = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)  # j > i is the future
        scores = scores.masked_fill(mask, -math.inf)
        out[..., sl] = torch.softmax(scores, dim=-1) @ v[..., sl]
    want = out @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), want, rtol=1e-10, atol=1e-10)


def test_logits_do_not_see_the_future():
    model = small()
    idx = torch.randint(0, 64, (2, 12))
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 64
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_tied_embeddings_and_gpt2_init():
    model = gpt.build_gpt(vocab_size=512, block_size=16, n_layer=4, n_head=4, n_embd=256)
    assert model.lm_head.weight is model.tok_emb.weight
    resid = torch.cat([torch.cat([b.attn.proj.weight.flatten(), b.mlp.proj.weight.flatten()])
                       for b in model.blocks])
    plain = torch.cat([torch.cat([b.attn.qkv.weight.flatten(), b.mlp.fc.weight.flatten()])
                       for b in model.blocks])
    assert resid.std().item() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.03)
    assert plain.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_hidden_state_is_layer_normed_and_features_are_its_mean():
    model = small()
    idx = torch.randint(0, 64, (5, 16))
    seen = {}
    model.ln_f.register_forward_hook(lambda mod, inp, out: seen.update(stream=inp[0]))
    hidden = model.hidden(idx)
    # the final layer norm at init (gain 1, no bias), in float64: (x - mean) / sqrt(var + eps)
    x = seen["stream"].double()
    want = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(hidden.double(), want, atol=1e-5, rtol=1e-5)
    assert seen["stream"].shape == (5, 16, 32)  # after the last block: hidden is the final state
    feats = gpt.text_features(model, idx)
    assert feats.shape == (5, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, hidden.mean(1))
    logits, _ = model(idx)  # the head reads that same hidden state through the tied matrix
    torch.testing.assert_close(logits, hidden @ model.tok_emb.weight.T)


def test_loss_is_cross_entropy_and_dropout_only_in_training():
    model = small(dropout=0.5)
    idx, tgt = torch.randint(0, 64, (2, 10)), torch.randint(0, 64, (2, 10))
    logits, loss = model(idx, tgt)
    logp = torch.log_softmax(logits.double(), -1)
    want = -logp.gather(-1, tgt.unsqueeze(-1)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.equal(model(idx)[0], model(idx)[0])  # eval: deterministic
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


def test_weight_decay_only_on_matrices():
    model = small(bias=True)
    opt = model.optimizer(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_unique
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_generate_never_samples_padding_rows():
    model = small()
    g = torch.Generator().manual_seed(0)
    out = model.generate(torch.zeros(4, 1, dtype=torch.long), 40, top_k=None, n_vocab=10, generator=g)
    assert out.shape == (4, 41) and out.max().item() < 10
    again = model.generate(torch.zeros(4, 1, dtype=torch.long), 40, top_k=None, n_vocab=10,
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_checkpoint_round_trip_weights_only(tmp_path):
    model = small()
    path = tmp_path / "ckpt.pt"
    torch.save(gpt.checkpoint_dict(model, iter_num=7, best_val_loss=1.5, tokenizer="bytes"), path)
    raw = torch.load(path, weights_only=True)
    assert raw["iter_num"] == 7 and raw["model_args"]["n_layer"] == 2
    loaded, ckpt = gpt.load_checkpoint(path)
    idx = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])
    assert loaded.lm_head.weight is loaded.tok_emb.weight


def test_not_a_gpt_checkpoint_is_one_clear_line(tmp_path, capsys):
    image_like = tmp_path / "checkpoint.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), image_like)
    with pytest.raises(UserError, match="not a GPT checkpoint"):
        gpt.load_checkpoint(image_like)
    garbage = tmp_path / "junk.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable"):
        gpt.load_checkpoint(garbage)
    for path in (image_like, garbage, tmp_path / "missing.pt"):
        rc = main(["sample", str(path), "--device", "cpu"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and str(path) in err[0]


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        gpt.GPTConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="unknown GPT argument"):
        gpt.GPTConfig.from_dict({"vocab_size": 10, "layers": 2})
    with pytest.raises(ValueError, match="longer than block_size"):
        small()(torch.zeros(1, 17, dtype=torch.long))
