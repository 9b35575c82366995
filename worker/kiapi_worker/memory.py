"""MLX memory figures and release, tolerant of mlx being absent (the figures are then 0 / None).

Figures are GiB (1024**3), the unit the server's budget uses. Newer mlx exposes the functions on
``mlx.core``; older releases only on ``mlx.core.metal``, so both are tried.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from types import ModuleType
from typing import Any

GIB = 1024**3


def _mlx_core() -> ModuleType | None:
    try:
        import mlx.core as mx
    except ImportError:
        return None
    return mx


def _function(name: str) -> Callable[..., Any] | None:
    mx = _mlx_core()
    if mx is None:
        return None
    for owner in (mx, getattr(mx, "metal", None)):
        function = getattr(owner, name, None) if owner is not None else None
        if callable(function):
            return function
    return None


def _bytes(name: str) -> int | None:
    function = _function(name)
    if function is None:
        return None
    try:
        return int(function())
    except Exception:
        return None


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / GIB, 3)


def active_bytes() -> int:
    """Memory held by live MLX arrays (model weights, activations), in bytes; 0 without mlx."""
    return _bytes("get_active_memory") or 0


def active_gb() -> float:
    """Memory held by live MLX arrays (model weights, activations)."""
    return _gib(_bytes("get_active_memory")) or 0.0


def peak_gb() -> float:
    """Highest active memory since start or the last ``reset_peak``."""
    return _gib(_bytes("get_peak_memory")) or 0.0


def cache_gb() -> float | None:
    """Freed buffers MLX keeps for reuse; None when this mlx cannot say."""
    return _gib(_bytes("get_cache_memory"))


def reset_peak() -> None:
    function = _function("reset_peak_memory")
    if function is not None:
        function()


def release_cached() -> None:
    """Collect dropped objects, then return MLX's buffer cache to the system.

    Callers must drop every reference to the model first: a buffer still referenced is neither
    collected nor cached, so clearing the cache before that would free nothing (docs/compatibility.md §11.19).
    """
    gc.collect()
    function = _function("clear_cache")
    if function is not None:
        function()


def evaluate(tree: Any) -> None:
    """Compute every array in ``tree`` (nested dicts, lists and tuples, as ``parameters()`` gives).

    MLX is lazy: weights loaded from disk, quantized or merged with a LoRA are only a graph until
    something evaluates them, and only then do they occupy memory. Without mlx this does nothing.
    """
    mx = _mlx_core()
    function = getattr(mx, "eval", None) if mx is not None else None
    if callable(function):
        function(tree)


def synchronize() -> None:
    """Wait for the work queued on the current thread's MLX stream (no-op when unavailable)."""
    function = _function("synchronize")
    if function is not None:
        function()


def device_name() -> str:
    """``gpu`` or ``cpu`` from mlx's default device; ``unknown`` when it cannot be told."""
    mx = _mlx_core()
    default_device = getattr(mx, "default_device", None)
    if default_device is None:
        return "unknown"
    try:
        device = default_device()
    except Exception:
        return "unknown"
    kind = getattr(device, "type", None)
    for text in (getattr(kind, "name", None), str(kind) if kind is not None else None, str(device)):
        if not text:
            continue
        lowered = text.lower()
        if "gpu" in lowered:
            return "gpu"
        if "cpu" in lowered:
            return "cpu"
    return "unknown"
