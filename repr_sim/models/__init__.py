"""Model registry: `build(arch, num_classes, **kwargs)`.

Image architectures (repr_sim.models.resnet): "resnet18_cifar" (32x32 inputs) and
"resnet18" (64x64 inputs), both with a `width` keyword (64 = torchvision's model).
Their penultimate features are the input of `model.fc` (see repr_sim.features).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import resnet

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet18_cifar": resnet.resnet18_cifar,
    "resnet18": resnet.resnet18,
}


def names() -> list[str]:
    return sorted(ARCHS)


def build(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """A freshly initialised model `arch` with a `num_classes`-way head."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture '{arch}' (known: {', '.join(names())})")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    width = kwargs.get("width", resnet.TORCHVISION_WIDTH)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    try:
        return ARCHS[arch](num_classes, **kwargs)
    except TypeError as e:  # an unknown keyword for this architecture
        raise ValueError(f"{arch}: {e}") from None
