"""The study's convolutional VAE on 1x28x28 images (docs/protocol.md section 2).

Encoder: conv 1->64 and 64->128 (kernel 4, stride 2, padding 1: 28 -> 14 -> 7), ReLU after
each, flattened (128 * 7 * 7) into two linear heads, the 20-d mean and log-variance of the
posterior. Decoder, mirrored: linear 20 -> 128 * 7 * 7, ReLU, transposed convs 128->64
(ReLU) and 64->1 (7 -> 14 -> 28) with a sigmoid output, so a reconstruction is a pixel
probability in [0, 1].

Loss (`vae_loss`): binary cross-entropy summed over pixels and over the batch, plus beta
times the analytic KL divergence of N(mu, sigma^2) from N(0, I), summed the same way; the
study uses beta = 1.

The representation that measurement scores is the latent mean (`features`), the input
the model would encode deterministically; it is what `encode` returns first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SIDE = 28  # input side (pixels)
HIDDEN = (64, 128)  # encoder channels
LATENT = 20


class ConvVAE(nn.Module):
    def __init__(self, latent_dim: int = LATENT, channels: int = 1):
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        c1, c2 = HIDDEN
        self.latent_dim, self.channels = latent_dim, channels
        self.flat = c2 * (SIDE // 4) ** 2
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, c1, kernel_size=4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.fc_mu = nn.Linear(self.flat, latent_dim)
        self.fc_logvar = nn.Linear(self.flat, latent_dim)
        self.fc_decode = nn.Linear(latent_dim, self.flat)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, kernel_size=4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c1, channels, kernel_size=4, stride=2, padding=1), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance), each [B, latent_dim], of images x [B, C, 28, 28] in [0, 1]."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.channels, SIDE, SIDE):
            raise ValueError(f"expected images [B, {self.channels}, {SIDE}, {SIDE}], "
                             f"got {tuple(x.shape)}")
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc_decode(z)).view(-1, HIDDEN[1], SIDE // 4, SIDE // 4)
        return self.decoder(h)

    def forward(self, x: torch.Tensor):
        """(reconstruction, mean, log-variance); z is sampled with torch's global RNG."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The latent mean [B, latent_dim] (float32), without gradients."""
        with torch.no_grad():
            return self.encode(x)[0].float()


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0) -> torch.Tensor:
    """Summed pixel BCE + beta * KL(N(mu, exp(logvar)) || N(0, I)), summed over the batch."""
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + beta * kl


def build_for_registry(num_classes: int, *, latent_dim: int = LATENT, channels: int = 1) -> ConvVAE:
    """repr_sim.models.build("vae", n): a VAE has no classifier, so `num_classes` is unused."""
    del num_classes
    return ConvVAE(latent_dim=latent_dim, channels=channels)
