"""Error codes the worker answers with, and the mapping from engine exceptions to them."""

from __future__ import annotations

CANCELED = "canceled"
NOT_LOADED = "not_loaded"
BAD_REQUEST = "bad_request"
OUT_OF_MEMORY = "out_of_memory"
ENGINE_ERROR = "engine_error"
BUSY = "busy"
PROTOCOL = "protocol"

# Substrings (lower-cased) of allocation failures raised by MLX's Metal and CUDA backends.
_OOM_MARKERS = (
    "out of memory",
    "outofmemory",
    "insufficient memory",
    "[metal::malloc]",
    "maximum allowed buffer size",
    "cudaerrormemoryallocation",
    "failed to allocate",
)


class WorkerError(Exception):
    """An error the worker itself decides on, carrying the code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _OOM_MARKERS)


def classify(exc: BaseException, stop_exception: type[BaseException] | None = None) -> tuple[str, str]:
    """Map an exception raised by mflux (or by the worker) to ``(code, message)``.

    mflux signals bad input (strict caption failure, dimensions, presets, schedulers) with
    ValueError or NotImplementedError, so those are the caller's fault; anything else is the
    engine's and keeps its type name so the server log says what broke.
    """
    if isinstance(exc, WorkerError):
        return exc.code, exc.message
    if stop_exception is not None and isinstance(exc, stop_exception):
        return CANCELED, str(exc) or "canceled"
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (ValueError, NotImplementedError)):
        return BAD_REQUEST, str(exc) or type(exc).__name__
    return ENGINE_ERROR, f"{type(exc).__name__}: {exc}"
