"""Fake Ideogram4LatentCreator: ``unpack_latents`` de-normalises and lays out tokens as mflux does.

mflux scales and shifts each of a token's 128 values by its own constant; the fake's constants
depend on the channel only (the same for the four patch positions), so a linear map per latent
pixel fits the fake exactly (mflux's differ between positions by well under 1%).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_CHANNELS = 32


class Ideogram4LatentCreator:
    @staticmethod
    def unpack_latents(latents: Any, height: int, width: int) -> Any:
        latents = np.asarray(latents, dtype=np.float32)
        channels = np.arange(_CHANNELS)
        scale = np.tile(1.6 + 0.1 * np.sin(channels), 4).astype(np.float32)
        shift = np.tile(0.2 * np.cos(channels), 4).astype(np.float32)
        latents = latents * scale[None, None, :] + shift[None, None, :]
        # A token holds a 2x2 patch of 32 channels, patch position first.
        latents = latents.reshape(1, height // 16, width // 16, 2, 2, _CHANNELS)
        latents = latents.transpose(0, 5, 1, 3, 2, 4)
        return latents.reshape(1, _CHANNELS, height // 16 * 2, width // 16 * 2)
