"""Penultimate features of the study's models.

Images: the output of the ResNet's final global pool, flattened (the "flatten" node of
torchvision's graph, 512-d for ResNet-18, 8*width for a narrowed one). It is captured as
the *input of the classifier* `model.fc` by a forward pre-hook during the model's own
forward pass, so the features are by construction what the head sees: nothing here
re-implements the network.

Text: `text_features`, the GPT's mean-pooled final hidden state (repr_sim.models.gpt).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def _head(model: nn.Module) -> nn.Module:
    head = getattr(model, "fc", None)
    if not isinstance(head, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `fc` classifier to read features from")
    return head


@contextlib.contextmanager
def capture_head_input(model: nn.Module):
    """Within the block, `captured[0]` holds the input of `model.fc` of the last forward."""
    captured: list[torch.Tensor] = []

    def hook(_module, inputs):
        captured[:] = [inputs[0]]

    handle = _head(model).register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def image_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[B, D] float32 penultimate features of `images` ([B, 3, H, W], on the model's device).

    Runs the model's forward without gradients and in whatever mode the caller set
    (call `model.eval()` first for measurement). On CUDA the caller's autocast applies;
    the result is returned as float32 on the images' device.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    with torch.no_grad(), capture_head_input(model) as captured:
        model(images)
    return captured[0].float()


def text_features(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """[B, n_embd] float32: a GPT's last hidden state after the final layer norm, mean-pooled
    over the block (docs/protocol.md section 3). The model's own code: repr_sim.models.gpt.text_features."""
    from .models.gpt import text_features as gpt_text_features

    return gpt_text_features(model, idx)
