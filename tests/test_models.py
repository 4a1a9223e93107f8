"""ResNet-18 variants and their penultimate features (repr_sim.models, repr_sim.features)."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from repr_sim import models
from repr_sim.features import image_features

torch.set_num_threads(2)


def shapes(model: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def stage_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """Output shape of every stage, recorded by forward hooks during one forward."""
    seen = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda _m, _i, out, name=name: seen.__setitem__(name, tuple(out.shape)))
        for name in ("layer1", "layer2", "layer3", "layer4")]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def test_cifar_stem_and_head():
    model = models.build("resnet18_cifar", 10)
    conv = model.conv1
    assert isinstance(conv, nn.Conv2d)
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert (conv.in_channels, conv.out_channels) == (3, 64)
    assert isinstance(model.maxpool, nn.Identity)
    assert (model.fc.in_features, model.fc.out_features) == (512, 10)


def test_cifar_variant_is_torchvision_resnet18_apart_from_stem_and_head():
    ours = shapes(models.build("resnet18_cifar", 5))
    theirs = shapes(torchvision.models.resnet18(num_classes=5))
    assert ours.keys() == theirs.keys()
    differ = {k for k in ours if ours[k] != theirs[k]}
    assert differ == {"conv1.weight"}
    assert ours["conv1.weight"] == (64, 3, 3, 3) and theirs["conv1.weight"] == (64, 3, 7, 7)


def test_plain_resnet18_is_torchvision_exactly():
    model = models.build("resnet18", 200)
    reference = torchvision.models.resnet18(num_classes=200)
    assert shapes(model) == shapes(reference)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert (model.conv1.kernel_size, model.conv1.stride) == ((7, 7), (2, 2))
    # Same initialisation as torchvision's: same seed, same weights.
    torch.manual_seed(3)
    a = models.build("resnet18", 7)
    torch.manual_seed(3)
    b = torchvision.models.resnet18(num_classes=7)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_spatial_sizes():
    # CIFAR stem keeps 32x32 through layer1 (stride 1, no max-pool): 32, 16, 8, 4.
    cifar = stage_outputs(models.build("resnet18_cifar", 10), torch.randn(2, 3, 32, 32))
    assert [cifar[f"layer{i}"][2] for i in range(1, 5)] == [32, 16, 8, 4]
    # Plain ResNet at 64x64: stem /2, max-pool /2 -> 16, then 8, 4, 2.
    plain = stage_outputs(models.build("resnet18", 200), torch.randn(2, 3, 64, 64))
    assert [plain[f"layer{i}"][2] for i in range(1, 5)] == [16, 8, 4, 2]
    assert [plain[f"layer{i}"][1] for i in range(1, 5)] == [64, 128, 256, 512]


@pytest.mark.parametrize("arch,side", [("resnet18_cifar", 32), ("resnet18", 64)])
def test_narrow_width_keeps_topology(arch, side):
    width = 16
    model = models.build(arch, 3, width=width)
    full = models.build(arch, 3)
    assert shapes(model).keys() == shapes(full).keys()
    out = stage_outputs(model, torch.randn(2, 3, side, side))
    assert [out[f"layer{i}"][1] for i in range(1, 5)] == [16, 32, 64, 128]
    assert model.conv1.out_channels == width
    feats = image_features(model.eval(), torch.randn(4, 3, side, side))
    assert feats.shape == (4, 8 * width)
    assert model(torch.randn(2, 3, side, side)).shape == (2, 3)


@pytest.mark.parametrize("arch,side", [("resnet18_cifar", 32), ("resnet18", 64)])
def test_features_are_the_flatten_node_and_the_input_of_fc(arch, side):
    torch.manual_seed(0)
    model = models.build(arch, 10).eval()
    x = torch.randn(3, 3, side, side)
    feats = image_features(model, x)
    assert feats.shape == (3, 512) and feats.dtype == torch.float32
    # torchvision's own graph extractor names the pooled, flattened output "flatten".
    reference = create_feature_extractor(model, return_nodes={"flatten": "f", "fc": "logits"})
    with torch.no_grad():
        ref = reference(x)
    torch.testing.assert_close(feats, ref["f"], rtol=0, atol=0)
    # ... and it is exactly what the classifier consumes.
    with torch.no_grad():
        torch.testing.assert_close(model.fc(feats), ref["logits"], rtol=1e-6, atol=1e-6)
    assert not model.fc._forward_pre_hooks  # the capture hook is removed again
    assert not model.training  # mode untouched


def test_features_reject_a_model_without_fc_and_bad_input():
    with pytest.raises(ValueError, match="fc"):
        image_features(nn.Sequential(nn.Flatten()), torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        image_features(models.build("resnet18_cifar", 2), torch.randn(3, 32, 32))


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        models.build("vgg", 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("resnet18", 0)
    with pytest.raises(ValueError, match="width"):
        models.build("resnet18", 10, width=0)
    with pytest.raises(ValueError, match="resnet18"):
        models.build("resnet18", 10, depth=3)
