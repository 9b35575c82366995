"""Fake ``mlx.core``: an allocator that counts bytes like MLX's, without any arrays.

Memory held by a fake buffer moves from "active" to "cache" only when the buffer object is
garbage-collected, and leaves the cache only on ``clear_cache()``. That is how a test can tell
whether the worker really dropped every reference to a model before clearing the cache.
"""

from __future__ import annotations

import enum
import os
import threading
import weakref
from typing import Any

__version__ = "0.31.2"

bfloat16 = "bfloat16"
float16 = "float16"
float32 = "float32"

_lock = threading.Lock()
_active = 0
_peak = 0
_cache = 0
_cache_limit = 1 << 62


class DeviceType(enum.Enum):
    cpu = 0
    gpu = 1


class Device:
    def __init__(self, type: DeviceType, index: int = 0) -> None:
        self.type = type
        self.index = index

    def __repr__(self) -> str:
        return f"Device({self.type.name}, {self.index})"


def default_device() -> Device:
    return Device(DeviceType[os.environ.get("FAKE_MLX_DEVICE", "gpu")])


class FakeBuffer:
    """Stands in for the arrays of a model or of one generation; frees itself when collected."""

    def __init__(self, nbytes: int) -> None:
        global _active, _peak
        self.nbytes = nbytes
        with _lock:
            _active += nbytes
            _peak = max(_peak, _active)
        weakref.finalize(self, _to_cache, nbytes)


def _to_cache(nbytes: int) -> None:
    global _active, _cache
    with _lock:
        _active -= nbytes
        _cache = min(_cache + nbytes, _cache_limit)


def get_active_memory() -> int:
    return _active


def get_peak_memory() -> int:
    return _peak


def reset_peak_memory() -> None:
    global _peak
    with _lock:
        _peak = _active


def get_cache_memory() -> int:
    return _cache


def clear_cache() -> None:
    global _cache
    with _lock:
        _cache = 0


def set_cache_limit(limit: int) -> int:
    global _cache_limit
    with _lock:
        previous, _cache_limit = _cache_limit, limit
    return previous


def eval(*arrays: Any) -> None:
    """Nothing is lazy here."""
