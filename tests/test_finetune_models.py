"""The fine-tuning kind's models and attack, without run folders: timm models at 32 px
(pretrained=False), weights written in the real formats and loaded through the pretrained
path, feature dimensions, CKA of a model with itself, and MI-FGSM against an independent
float64 reference and its defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_cuda

from repr_sim.attack import mi_fgsm
from repr_sim.errors import UserError
from repr_sim.kinds.finetune.train import Pipeline
from repr_sim.models import timm_models as tm

TINY_VIT = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2,
                                     "embed_dim": 32, "num_heads": 2})


def test_resnet_features_have_the_documented_dimension():
    model, w = tm.build("resnet18", 5)  # no tag, no file: random initialisation
    assert w.source == "random"
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    assert tm.pre_logits(model, x).shape == (3, 512)  # docs/protocol.md section 6.2: 512-d pooled
    assert [f.shape[1] for f in tm.layer_features(model, x)] == [64, 128, 256, 512]
    # the pre-logits are the classifier's input
    torch.testing.assert_close(tm.classifier(model)(tm.pre_logits(model, x)), model(x))


def test_vit_features_are_the_normed_cls_token():
    arch, kwargs = TINY_VIT
    model, _ = tm.build(arch, 4, model_kwargs=kwargs)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    feats = tm.pre_logits(model, x)
    assert feats.shape == (2, 32) and tm.feature_dim(model) == 32
    layers = tm.layer_features(model, x)
    assert len(layers) == 2
    # the last block's CLS token after the final LayerNorm is the pre-logit feature
    torch.testing.assert_close(model.norm(layers[-1]), feats)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_loads_through_the_pretrained_path(tmp_path, suffix):
    torch.manual_seed(1)
    source = tm.create("resnet18", 1000)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        tm.save_weights(source, path)
    else:
        torch.save(source.state_dict(), path)
    model, w = tm.build("resnet18", 7, pretrained_file=path)
    assert w.source == "file" and w.sha256 == tm.sha256(path) and len(w.sha256) == 64
    mine, theirs = model.state_dict(), source.state_dict()
    for key, value in theirs.items():
        if not key.startswith("fc."):
            assert torch.equal(mine[key], value), key
    assert model.fc.weight.shape == (7, 512)  # a fresh 7-way head


def test_missing_weights_are_one_clear_line(tmp_path, monkeypatch):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(UserError, match="missing pretrained weights file .*nope.safetensors"):
        tm.build("resnet18", 3, tag="a1_in1k", pretrained_file=missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(UserError, match="huggingface-cli download timm/resnet18.a1_in1k"):
        tm.build("resnet18", 3, tag="a1_in1k")


def test_corrupt_weights_file_is_an_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="corrupt pretrained weights file"):
        tm.build("resnet18", 3, pretrained_file=path)


def test_unknown_model_is_an_error():
    with pytest.raises(UserError, match="unknown timm model"):
        tm.build("resnet_nonexistent", 3)


def test_a_model_against_itself_scores_cka_one():
    from repr_sim.metrics import prepare, score_all

    model, _ = tm.build("resnet18", 5)
    model.eval()
    with torch.no_grad():
        f = tm.pre_logits(model, torch.rand(40, 3, 32, 32))
    scores = score_all(prepare(f), prepare(f.clone()), topk=5)
    assert scores["cka"] == pytest.approx(1.0, abs=1e-5)
    assert scores["mutual_knn"] == pytest.approx(1.0, abs=1e-6)


# ---- MI-FGSM ------------------------------------------------------------------------------------
def tiny_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 5))


def reference_mi_fgsm(net, x, y, eps, steps, mu, low, high):
    """Dong et al. (2018) Algorithm 1 in float64, written independently of the code:
    numpy for the momentum, the L1 normalisation, the projection and the clip."""
    net = net.double()
    x0 = x.double().numpy()
    g = np.zeros_like(x0)
    adv = x0.copy()
    for _ in range(steps):
        t = torch.tensor(adv, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(net(t), y)
        loss.backward()
        grad = t.grad.numpy()
        norms = np.maximum(np.abs(grad).reshape(len(grad), -1).sum(1), 1e-8)
        g = mu * g + grad / norms[:, None, None, None]
        adv = adv + (eps / steps) * np.sign(g)
        adv = np.clip(adv, x0 - eps, x0 + eps)
        adv = np.clip(adv, low, high)
    return adv


def test_mi_fgsm_matches_a_float64_reference():
    net = tiny_net()
    x = torch.rand(6, 3, 4, 4, dtype=torch.float64) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    eps, low, high = 0.1, -1.0, 255 / 127 - 1
    ours = mi_fgsm(net.double(), x, y, eps=eps, steps=3, momentum=1.0, low=low, high=high)
    ref = reference_mi_fgsm(tiny_net(), x, y, eps, 3, 1.0, low, high)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_mi_fgsm_stays_in_the_ball_and_range_and_raises_the_loss():
    net = tiny_net(1).eval()
    pipe = Pipeline(4, (127.0,) * 3, (127.0,) * 3)
    raw = torch.randint(0, 256, (8, 3, 4, 4)).float()
    raw[0] = 0
    raw[1] = 255  # images at the range's ends: the clip must act
    x = pipe(raw)
    y = torch.arange(8) % 5
    eps_pixel = 4 / 255
    eps = eps_pixel * pipe.eps_scale("cpu")
    low, high = pipe.bounds("cpu")
    adv = mi_fgsm(net, x, y, eps=eps, steps=3, momentum=1.0, low=low, high=high)
    assert float((adv - x).abs().max()) <= eps_pixel * 255 / 127 + 1e-6
    assert float(adv.min()) >= -1 - 1e-6 and float(adv.max()) <= 255 / 127 - 1 + 1e-6
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(net(adv), y)) > float(loss(net(x), y))
    unchanged = mi_fgsm(net, x, y, eps=0.0, steps=3, momentum=1.0, low=low, high=high)
    assert torch.equal(unchanged, x)


def test_transfer_to_an_identical_model_equals_the_white_box_rate():
    from repr_sim.attack import Settings, attack_direction

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)).eval()
    twin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)).eval()
    twin.load_state_dict(net.state_dict())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)  # upsampled 4 -> 8 px
    labels = rng.integers(0, 5, 20)
    s = Settings(eps=16 / 255, steps=3, momentum=1.0, images=20, batch_size=8, seed=0, probe="")
    out = attack_direction(net, twin, Pipeline(8, (127.0,) * 3, (127.0,) * 3), images, labels, s, "cpu")
    assert out["images"] == 20
    assert out["transfer_asr"] == out["normal_asr"] > 0


@requires_cuda
def test_cuda_fine_tune_steps_and_attack():
    """The CUDA paths: channels-last model, fp16 autocast with a grad scaler, the attack in fp32."""
    from repr_sim.attack import Settings, attack_direction
    from repr_sim.kinds.finetune import DEFAULTS
    from repr_sim.kinds.finetune.train import make_optimizer, to_device, train_step

    arch, kwargs = TINY_VIT
    for name, kw in (("resnet18", {}), (arch, kwargs)):
        torch.manual_seed(0)
        model = to_device(tm.create(name, 5, kw), "cuda")
        pipe = Pipeline(32, (127.0,) * 3, (127.0,) * 3)
        images = torch.randint(0, 256, (16, 3, 16, 16)).float()
        labels = torch.randint(0, 5, (16,))
        opt = make_optimizer({**DEFAULTS, "arch": name}, model)
        scaler = torch.amp.GradScaler("cuda")
        loss_fn = torch.nn.CrossEntropyLoss()
        losses = [float(train_step(model, pipe, images, labels, opt, scaler, loss_fn, "cuda")[0])
                  for _ in range(3)]
        assert all(np.isfinite(losses))
        for group in opt.param_groups:
            group["lr"] = 0.0  # lr 0: the weights must stay as they are
        model.eval()
        s = Settings(eps=8 / 255, steps=3, momentum=1.0, images=16, batch_size=8, seed=0, probe="")
        raw = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
        out = attack_direction(model, model, pipe, raw, labels.numpy(), s, "cuda")
        assert out["transfer_asr"] == out["normal_asr"]
