"""Model registry: `build(arch, num_classes, **kwargs)`.

Image architectures (repr_sim.models.resnet): "resnet18_cifar" (32x32 inputs) and
"resnet18" (64x64 inputs), both with a `width` keyword (64 = torchvision's model).
Their penultimate features are the input of `model.fc` (see repr_sim.features).
Text: "gpt" (repr_sim.models.gpt; `num_classes` is the vocabulary size, the other
keywords are GPTConfig fields).
VAE: "vae" (repr_sim.models.vae; no classifier, `num_classes` is unused; keywords
latent_dim and channels).

Builders are imported on first use, so a text process never pays for torchvision.
"""

from __future__ import annotations

import importlib

from torch import nn

# arch -> "module:function" inside this package; the function takes (num_classes, **kwargs).
ARCHS: dict[str, str] = {
    "resnet18_cifar": "resnet:resnet18_cifar",
    "resnet18": "resnet:resnet18",
    "gpt": "gpt:build_for_registry",
    "vae": "vae:build_for_registry",
    "timm": "timm_models:build_for_registry",  # any timm model: build("timm", n, name=...)
}
IMAGE_ARCHS = ("resnet18_cifar", "resnet18")


def names() -> list[str]:
    return sorted(ARCHS)


def _builder(arch: str):
    module, func = ARCHS[arch].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), func)


def build(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """A freshly initialised model `arch` with a `num_classes`-way head (or vocabulary)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture '{arch}' (known: {', '.join(names())})")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if arch in IMAGE_ARCHS:
        width = kwargs.get("width", 64)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
    try:
        return _builder(arch)(num_classes, **kwargs)
    except TypeError as e:  # an unknown keyword for this architecture
        raise ValueError(f"{arch}: {e}") from None
