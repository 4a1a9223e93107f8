"""ResNet-18 variants built from torchvision (docs/protocol.md section 2).

- `resnet18_cifar`: torchvision's ResNet-18 with the first convolution replaced by a 3x3,
  stride 1, padding 1 convolution without bias and the max-pool removed (32x32 inputs).
  The replaced convolution keeps PyTorch's default initialisation, as a plain
  `model.conv1 = nn.Conv2d(...)` replacement does.
- `resnet18`: torchvision's ResNet-18 unchanged (7x7 stride-2 stem, max-pool; 64x64 inputs).

`width` narrows every stage of the same topology: stage widths (w, 2w, 4w, 8w), so the
penultimate features have 8*w dimensions. width=64 is exactly torchvision's model (nothing
is rebuilt); other widths rebuild the stem and the four stages with torchvision's own
`_make_layer` and initialisation rules. Narrow models exist for the CPU demo and tests.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

TORCHVISION_WIDTH = 64
LAYERS = (2, 2, 2, 2)  # ResNet-18: two basic blocks per stage


def _init_like_torchvision(module: nn.Module) -> None:
    """torchvision's ResNet initialisation, for the layers rebuilt at another width."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _narrow(model: ResNet, width: int, num_classes: int) -> None:
    """Rebuild stem, stages and head of `model` with stage widths (w, 2w, 4w, 8w)."""
    model.inplanes = width  # _make_layer reads and advances this
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    stages = []
    for i, blocks in enumerate(LAYERS):
        stages.append(model._make_layer(BasicBlock, width * 2**i, blocks, stride=1 if i == 0 else 2))
    model.layer1, model.layer2, model.layer3, model.layer4 = stages
    model.fc = nn.Linear(8 * width * BasicBlock.expansion, num_classes)
    for part in (model.conv1, model.bn1, *stages):
        _init_like_torchvision(part)


def resnet18(num_classes: int, *, width: int = TORCHVISION_WIDTH) -> ResNet:
    """torchvision ResNet-18 (7x7 stem, max-pool) with a `num_classes` head."""
    model = ResNet(BasicBlock, list(LAYERS), num_classes=num_classes)
    if width != TORCHVISION_WIDTH:
        _narrow(model, width, num_classes)
    return model


def resnet18_cifar(num_classes: int, *, width: int = TORCHVISION_WIDTH) -> ResNet:
    """ResNet-18 for 32x32 inputs: 3x3 stride-1 stem without bias, no max-pool."""
    model = resnet18(num_classes, width=width)
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
