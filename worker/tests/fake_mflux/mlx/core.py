"""Fake ``mlx.core``: an allocator that counts bytes like MLX's, without any arrays.

Memory held by a fake buffer moves from "active" to "cache" only when the buffer object is
garbage-collected, and leaves the cache only on ``clear_cache()``. That is how a test can tell
whether the worker really dropped every reference to a model before clearing the cache.

Arrays are lazy as in MLX: a ``FakeArray`` holds no memory until ``eval`` reaches it (directly or
inside nested dicts, lists and tuples, as ``Module.parameters()`` returns them). ``load`` picks
the format from the text after the last '.' of the whole path, as MLX's does.
"""

from __future__ import annotations

import enum
import json
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


class FakeArray:
    """A lazy array of ``nbytes``: its memory is allocated when ``eval`` computes it."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._buffer: FakeBuffer | None = None

    @property
    def evaluated(self) -> bool:
        return self._buffer is not None

    def _compute(self) -> None:
        if self._buffer is None:
            self._buffer = FakeBuffer(self.nbytes)


def eval(*trees: Any) -> None:
    """Compute every FakeArray in the arguments (nested dicts, lists and tuples)."""
    pending = list(trees)
    while pending:
        item = pending.pop()
        if isinstance(item, FakeArray):
            item._compute()
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


def array(values: Any) -> Any:
    """Like ``mx.array``: here a numpy array (numpy is needed only where arrays are made)."""
    import numpy

    return numpy.asarray(values)


def synchronize(stream: Any = None) -> None:
    """Nothing runs asynchronously here."""


_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def load(file: str, format: str | None = None, return_metadata: bool = False) -> Any:
    """Like ``mlx.core.load`` for safetensors: lazy arrays by name (and the ``__metadata__``)."""
    path = str(file)
    if format is None:
        if "." not in path:
            raise ValueError("[load] Could not infer file format from extension")
        format = path[path.rfind(".") + 1 :]
    if format != "safetensors":
        raise ValueError(f"[load] Unknown file format {format}")
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"[load_safetensors] Invalid json header in {path}: {exc}") from exc
    if not isinstance(header, dict):
        raise RuntimeError(f"[load_safetensors] Invalid json header in {path}")
    metadata = header.pop("__metadata__", None) or {}
    arrays = {}
    for name, entry in header.items():
        count = 1
        for dim in entry.get("shape", []):
            count *= int(dim)
        arrays[name] = FakeArray(count * _DTYPE_BYTES.get(entry.get("dtype", "F32"), 4))
    return (arrays, metadata) if return_metadata else arrays
