"""The VAE kind: pairs of convolutional VAEs on dataset or task splits of grey 28x28
CIFAR-10 (docs/protocol.md sections 1-3); test loss instead of accuracy."""

from ..base import VAE_OUTPUTS, Kind

DEFAULTS = {
    "resolution": 28,
    "split": "dataset",
    "mode": "constrained",
    "arch": "vae",
    "latent_dim": 20,
    "fracs": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "seeds": list(range(10)),
    "recipe": {"epochs": 30, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-5, "beta": 1.0},
    "probes": {"ood": ["mnist_28", "svhn_28"]},
}

KIND = Kind(
    name="vae",
    description="convolutional VAE pairs on grey 28x28 images",
    defaults=DEFAULTS,
    outputs=VAE_OUTPUTS,
    data="bash train_vae/run_write_ffcv_data.sh  (28x28 betons)",
    default_probe_size=None,
    preload=("torch", "repr_sim.kinds.vae.train", "repr_sim.measure",
             "repr_sim.kinds.vae.measure"),
)
