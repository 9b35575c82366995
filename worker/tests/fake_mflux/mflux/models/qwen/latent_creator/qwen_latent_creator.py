"""Fake QwenLatentCreator: ``unpack_latents`` lays packed tokens out as mflux does (numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np


class QwenLatentCreator:
    @staticmethod
    def unpack_latents(latents: Any, height: int, width: int) -> Any:
        # A token holds 16 channels x a 2x2 patch, channel first.
        latents = np.asarray(latents, dtype=np.float32)
        latents = latents.reshape(1, height // 16, width // 16, 16, 2, 2)
        latents = latents.transpose(0, 3, 1, 4, 2, 5)
        return latents.reshape(1, 16, height // 16 * 2, width // 16 * 2)
