"""timm models for the fine-tuning kind (docs/protocol.md section 6.1): builders, offline weights,
pre-logit and layer-wise features.

`build(arch, num_classes, tag=..., pretrained_file=..., model_kwargs=...)` returns a timm
model with a fresh `num_classes`-way head and a `Weights` record (which file, its sha256,
the tag). Weights never come from the network:

- `pretrained_file`: a local `.safetensors` (read with safetensors) or `.pth/.bin/.pt`
  (torch.load with weights_only=True) file, loaded through timm's own pretrained path
  (`pretrained_cfg_overlay={"file": ...}`), which drops a classifier of another size and
  adapts what must be adapted (e.g. a ViT's position embedding to another image size);
- else the Hugging Face cache (`timm/<arch>.<tag>`: model.safetensors, else
  pytorch_model.bin), as a user filled it with `huggingface-cli download` on a machine with
  internet; the cache location follows HF_HOME / HF_HUB_CACHE, and nothing is fetched
  whatever HF_HUB_OFFLINE says;
- `tag` "none" (or an empty tag and no file): random initialisation.

A missing file is one UserError naming the file and how to get it.

Features (`pre_logits`): timm's `forward_head(forward_features(x), pre_logits=True)`, i.e.
the globally pooled last stage of a ResNet (`num_features` = 512 for resnet18, 2048 for
resnet50/101/152) and the CLS token after the final LayerNorm of a ViT (its embed_dim).
`layer_features` gives one vector per stage/block: each ResNet stage (layer1..layer4)
globally average-pooled, each ViT block's CLS token (no final norm); the last ViT entry is
therefore the pre-norm version of the pre-logits.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

# The study's models (docs/protocol.md section 6.1) and timm 1.0.15's default tag of each, which
# the study used implicitly; the configs name them explicitly.
STUDY_TAGS = {
    "resnet18": "a1_in1k",
    "resnet50": "a1_in1k",
    "resnet101": "a1h_in1k",
    "resnet152": "a1h_in1k",
    "vit_tiny_patch16_224": "augreg_in21k_ft_in1k",
    "vit_small_patch32_224": "augreg_in21k_ft_in1k",
    "vit_base_patch32_224": "augreg_in21k_ft_in1k",
    "vit_large_patch32_224": "orig_in21k",
}
NO_WEIGHTS = ("", "none")  # tags meaning random initialisation
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's HF repos hold
TORCH_SUFFIXES = (".pth", ".pt", ".bin")


@dataclass(frozen=True)
class Weights:
    """Where a model's initial weights came from (recorded in args.json)."""

    source: str  # "file", "hf-cache" or "random"
    file: str | None
    sha256: str | None
    tag: str | None

    def record(self) -> dict:
        return {"source": self.source, "file": self.file, "sha256": self.sha256, "tag": self.tag}


def family(arch: str) -> str:
    """"vit" for a vision transformer, "resnet" (the SGD recipe) for anything else."""
    return "vit" if arch.startswith(("vit", "deit", "eva")) else "resnet"


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hf_repo(arch: str, tag: str) -> str:
    return f"timm/{arch}.{tag}"


def download_hint(arch: str, tag: str) -> str:
    repo = hf_repo(arch, tag)
    return (f"on a machine with internet run `huggingface-cli download {repo}` (the same HF_HOME), "
            f"or download its model.safetensors and set pretrained_file")


def cached_file(arch: str, tag: str) -> Path:
    """The weights of timm/<arch>.<tag> in the Hugging Face cache (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    repo = hf_repo(arch, tag)
    for name in WEIGHT_FILES:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    from huggingface_hub import constants

    raise UserError(f"pretrained weights {repo} ({' or '.join(WEIGHT_FILES)}) are not in the "
                    f"Hugging Face cache {constants.HF_HUB_CACHE}: {download_hint(arch, tag)}")


def check_weights_file(path: Path, arch: str, tag: str | None) -> Path:
    if not path.is_file():
        how = download_hint(arch, tag) if tag and tag not in NO_WEIGHTS else "write or copy it there"
        raise UserError(f"missing pretrained weights file {path}: {how}")
    if path.suffix != ".safetensors" and path.suffix not in TORCH_SUFFIXES:
        raise UserError(f"pretrained weights file {path}: expected .safetensors or "
                        f"{'/'.join(TORCH_SUFFIXES)}")
    return path


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A weights file as a state_dict (safetensors, or torch with weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, wrong format, or objects we refuse to unpickle
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"corrupt pretrained weights file {path} ({first})") from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"pretrained weights file {path} is not a state_dict of tensors")
    return state


def resolve_weights(arch: str, tag: str | None, pretrained_file: str | Path | None) -> Weights:
    """Which weights a model starts from; the file is checked, hashed, not loaded."""
    tag = None if tag is None else str(tag)
    if pretrained_file:
        path = check_weights_file(Path(pretrained_file).expanduser(), arch, tag)
        return Weights("file", str(path), sha256(path), tag)
    if tag is None or tag in NO_WEIGHTS:
        return Weights("random", None, None, None)
    path = cached_file(arch, tag)
    return Weights("hf-cache", str(path), sha256(path), tag)


def create(arch: str, num_classes: int, model_kwargs: dict | None = None,
           weights: Weights | None = None) -> nn.Module:
    """timm.create_model with a fresh head; the weights through timm's pretrained path."""
    import timm

    kwargs = dict(model_kwargs or {})
    if weights is not None and weights.file:
        # timm's own loader (safetensors, or torch.load weights_only=True) with its filters:
        # the classifier of another size dropped, position embeddings resampled.
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": weights.file})
        read_weights(Path(weights.file))  # a clear error for a bad file before timm's assert
    try:
        return timm.create_model(arch, num_classes=num_classes, **kwargs)
    except RuntimeError as e:  # weights that do not fit this architecture
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{arch}: the weights in {weights.file if weights else '?'} do not fit "
                        f"({first})") from None
    except (TypeError, ValueError) as e:  # unknown model kwargs, or unknown model
        raise UserError(f"{arch}: {e}") from None


def build(arch: str, num_classes: int, *, tag: str | None = None,
          pretrained_file: str | Path | None = None, model_kwargs: dict | None = None
          ) -> tuple[nn.Module, Weights]:
    """A timm model `arch` with a `num_classes`-way head, from the weights the config names."""
    check_arch(arch)
    weights = resolve_weights(arch, tag, pretrained_file)
    return create(arch, num_classes, model_kwargs, weights), weights


def build_for_registry(num_classes: int, **kwargs) -> nn.Module:
    """repr_sim.models.build("timm", n, name=..., ...): a random-init timm model."""
    name = kwargs.pop("name", "resnet18")
    check_arch(name)
    return create(name, num_classes, kwargs)


def check_arch(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        raise UserError(f"unknown timm model {arch!r} (see timm.list_models())")


def save_weights(model: nn.Module, path: Path) -> str:
    """Write a model's weights as safetensors, atomically; returns the file's sha256."""
    from safetensors.torch import save_file

    from ..atomic import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(Path(path)) as tmp:
        save_file(state, str(tmp))
    return sha256(Path(path))


# ---- features ---------------------------------------------------------------------------------
def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, num_features]: the input of the classifier (pooled ResNet, normed ViT CLS)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def classifier(model: nn.Module) -> nn.Module:
    return model.get_classifier()


def feature_dim(model: nn.Module) -> int:
    return int(model.num_features)


def layer_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """One [B, D_l] tensor per ResNet stage (pooled) or per ViT block (its CLS token)."""
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return _vit_layers(model, x)
    if hasattr(model, "layer1"):
        return _resnet_layers(model, x)
    raise UserError(f"layer-wise features are defined for timm ResNets and ViTs, not "
                    f"{type(model).__name__}")


def _resnet_layers(model, x):
    x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    out = []
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = stage(x)
        out.append(x.mean(dim=(2, 3)))
    return out


def _vit_layers(model, x):
    # The same steps as timm's VisionTransformer.forward_features, one block at a time.
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    out = []
    for block in model.blocks:
        x = block(x)
        out.append(x[:, 0])
    return out
