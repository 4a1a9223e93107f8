"""The diffusion kind: pairs of class-conditional diffusion UNets on dataset or task splits
of CIFAR-10 (docs/protocol.md section 6.4; the study's `train_diffusion_unet/`). Training:
repr_sim.kinds.diffusion.train; measurement: repr_sim.kinds.diffusion.measure; sampling
(`reprsim sample` on a diffusion checkpoint): repr_sim.kinds.diffusion.sample."""

from ... import results
from ..base import Kind, Output

# The study's recipe (docs/protocol.md section 6.4); an experiment lists what differs.
DEFAULTS = {
    "dataset": "cifar10",
    "resolution": 32,
    "split": "dataset",
    "mode": "constrained",
    "arch": "unet",
    "unet": {"preset": "cifar32"},  # repr_sim.models.unet presets, plus any overrides
    "fracs": [0.0, 0.25, 0.5, 0.75, 1.0],
    "seeds": [0, 1, 2, 3],
    "recipe": {
        "steps": 30000,  # optimiser steps per model
        "batch_size": 1280,
        "lr": 5e-4,  # at batch lr_batch; the run uses lr * batch_size / lr_batch
        "lr_batch": 1280,
        "warmup_steps": 10000,
        "schedule_factor": 1.1,  # the cosine runs over 1.1 x steps, so lr never reaches 0
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "label_dropout": 0.1,  # labels replaced by the null id (classifier-free guidance)
        "flip": 0.5,  # horizontal flip, the study's only augmentation
        "ema_decay": 0.999,
        "amp": True,  # fp16 autocast + grad scaler, on CUDA only
        "checkpoint_every": 300,  # steps between resumable training states
        "log_every": 300,
        "keep_raw": False,  # also save the raw (non-EMA) weights as raw.pth
        "threads": 0,  # CPU threads for torch (0: torch's default)
    },
    "features": {
        "timestep": -1,  # -1: one seeded random timestep per image; else this fixed one
        "timesteps": 1,  # draws per image, their features averaged
        "seed": 0,  # seeds the timesteps and the noise
        "blocks": False,  # also save every block's pooled output (layer-wise calibration)
    },
    "sampling": {"steps": 50, "guidance": 3.0, "eta": 0.0},
}

KIND = Kind(
    name="diffusion",
    description="class-conditional diffusion UNet pairs on dataset or task splits of images",
    defaults=DEFAULTS,
    outputs=(Output(results.DIFFUSION_SIM_CSV, "_platonic"),
             Output(results.DIFFUSION_LOSS_CSV, "_platonic_loss")),
    data="bash train_diffusion_unet/run_write_ffcv_data.sh [--tiny]  (FFCV betons)",
    default_probe_size=None,  # the study's: the whole test set
    preload=("torch", "diffusers", "repr_sim.models.unet", "repr_sim.kinds.diffusion.train",
             "repr_sim.measure", "repr_sim.kinds.diffusion.measure"),
)
