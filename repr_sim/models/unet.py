"""The class-conditional diffusion UNet of the study (docs/protocol.md section 6.4) and its noise schedule.

`build_unet(num_classes, preset=..., **overrides)` is a diffusers `UNet2DModel`:

- "cifar32" (the study's): 32x32, channels (96, 192, 192), two layers per block, down
  blocks (DownBlock2D, AttnDownBlock2D, AttnDownBlock2D), up blocks mirrored (attention at
  16 and 8 px and in the mid block), attention head dim 8, dropout 0.1, GroupNorm 32;
- "tinyimagenet64": 64x64, channels (96, 96, 192, 192), two plain then two attention blocks;
- "tiny": channels (8, 16, 16), one layer per block, GroupNorm 4, for tests and the CPU
  experiment (16x16 by default; any side divisible by 4).

Class conditioning as the study's: `class_embed_type="timestep"` embeds the integer class
id with the sinusoidal timestep projection and a second timestep MLP, added to the time
embedding. The null ("unconditional") id is `num_classes`, so ids run 0..num_classes;
diffusers ignores `num_class_embeds` in this mode, it is recorded for the reader.

`make_scheduler()` is `DDPMScheduler(num_train_timesteps=1000)` at its defaults (linear
betas 1e-4..0.02, epsilon prediction), used for training, the features and sampling.
diffusers is imported on first use.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "cifar32": {
        "sample_size": 32, "block_out_channels": [96, 192, 192], "layers_per_block": 2,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": 8, "dropout": 0.1, "norm_num_groups": 32,
    },
    "tinyimagenet64": {
        "sample_size": 64, "block_out_channels": [96, 96, 192, 192], "layers_per_block": 2,
        "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "attention_head_dim": 8, "dropout": 0.1, "norm_num_groups": 32,
    },
    "tiny": {
        "sample_size": 16, "block_out_channels": [8, 16, 16], "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": 8, "dropout": 0.1, "norm_num_groups": 4,
    },
}
TRAIN_TIMESTEPS = 1000
OVERRIDABLE = ("sample_size", "block_out_channels", "layers_per_block", "attention_head_dim",
               "dropout", "norm_num_groups", "down_block_types", "up_block_types")


def unet_config(num_classes: int, preset: str = "cifar32", **overrides) -> dict:
    """The UNet2DModel keyword arguments of a preset with `overrides` over it."""
    if preset not in PRESETS:
        raise ValueError(f"unknown UNet preset {preset!r} (known: {', '.join(PRESETS)})")
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(f"unknown UNet setting(s) {', '.join(unknown)} "
                         f"(known: {', '.join(OVERRIDABLE)})")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    cfg = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    channels = [int(c) for c in cfg["block_out_channels"]]
    groups = int(cfg["norm_num_groups"])
    if any(c % groups for c in channels):
        raise ValueError(f"every UNet channel count {channels} must be divisible by "
                         f"norm_num_groups {groups}")
    if len(cfg["down_block_types"]) != len(channels) or len(cfg["up_block_types"]) != len(channels):
        raise ValueError("the UNet needs one down and one up block type per channel count")
    side, levels = int(cfg["sample_size"]), len(channels) - 1
    if side < 1 or side % (2 ** levels):
        raise ValueError(f"UNet sample_size {side} must be divisible by {2 ** levels}")
    return {"in_channels": 3, "out_channels": 3, **cfg,
            "block_out_channels": channels, "down_block_types": list(cfg["down_block_types"]),
            "up_block_types": list(cfg["up_block_types"]),
            "class_embed_type": "timestep", "num_class_embeds": num_classes + 1}


def build_unet(num_classes: int, preset: str = "cifar32", **overrides):
    """A freshly initialised class-conditional UNet2DModel (null class id = num_classes)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**unet_config(num_classes, preset, **overrides))


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS)


def feature_width(model) -> int:
    """Channels of the activation after the final norm and SiLU (`conv_act`): the measured
    feature is its per-channel spatial mean and std, twice this."""
    return int(model.conv_norm_out.num_channels)
