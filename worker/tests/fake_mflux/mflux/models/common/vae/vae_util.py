"""Fake VAEUtil: ``decode`` calls the VAE and drops a single-frame axis, as mflux's does."""

from __future__ import annotations

from typing import Any


class VAEUtil:
    @staticmethod
    def decode(vae: Any, latent: Any, tiling_config: Any = None) -> Any:
        decoded = vae.decode(latent)
        if decoded.ndim == 5 and decoded.shape[2] == 1:
            decoded = decoded[:, :, 0, :, :]
        return decoded
