"""Machinery shared by the fake mflux classes; not part of mflux's API.

Every knob is an environment variable read when it is used (see ``README.md`` beside ``mflux/``).
"""

from __future__ import annotations

import functools
import json
import os
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mlx.core as mx

GIB = 1024**3
F = TypeVar("F", bound=Callable[..., Any])

_EXCEPTIONS: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "NotImplementedError": NotImplementedError,
    "RuntimeError": RuntimeError,
    "MemoryError": MemoryError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "FileNotFoundError": FileNotFoundError,
}
_log_lock = threading.Lock()


def env_float(name: str, default: float = 0.0) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def say(message: str) -> None:
    """Print to stdout, as mflux does for its progress and loading messages."""
    print(f"fake mflux: {message}", flush=True)


def emit_garbage(where: str) -> None:
    """With FAKE_MFLUX_GARBAGE set, write non-JSON bytes to stdout by every route a library might."""
    if os.environ.get("FAKE_MFLUX_GARBAGE", "") in ("", "0"):
        return
    print(f"GARBAGE from print() in {where} {{not json", flush=True)
    if sys.__stdout__ is not None:
        sys.__stdout__.write(f"GARBAGE from sys.__stdout__ in {where}\n")
        sys.__stdout__.flush()
    os.write(1, f"GARBAGE from fd 1 in {where} \xff\x00\n".encode("latin-1"))


# ---------------------------------------------------------------------------------------------
# Call log


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    model_name = getattr(value, "model_name", None)
    if isinstance(model_name, str):  # a ModelConfig
        return model_name
    return repr(value)


def log_call(event: str, class_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_MFLUX_LOG")
    if not path:
        return
    record = {"event": event, "class": class_name, "pid": os.getpid(), "args": list(args), "kwargs": kwargs}
    line = json.dumps(record, default=_jsonable, ensure_ascii=False) + "\n"
    with _log_lock, open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def logged(event: str) -> Callable[[F], F]:
    """Log the call exactly as made (positional and keyword), then run the real-signature body."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            log_call(event, type(self).__name__, args, kwargs)
            return method(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


# ---------------------------------------------------------------------------------------------
# Behaviour knobs


def raise_if_requested() -> None:
    """FAKE_MFLUX_RAISE="text" raises ValueError(text); "RuntimeError: text" picks the type."""
    spec = os.environ.get("FAKE_MFLUX_RAISE")
    if not spec:
        return
    name, sep, rest = spec.partition(":")
    if sep and name.strip() in _EXCEPTIONS:
        raise _EXCEPTIONS[name.strip()](rest.strip())
    raise ValueError(spec)


def before_step(position: int) -> None:
    """Crash, hang or spend time at the 1-based ``position`` of the denoising loop."""
    emit_garbage(f"step {position}")
    if env_int("FAKE_MFLUX_CRASH_AT_STEP") == position:
        sys.stderr.write(f"fake mflux: simulated crash at step {position} (os._exit(9))\n")
        sys.stderr.flush()
        os._exit(9)
    if env_int("FAKE_MFLUX_HANG_AT_STEP") == position:
        sys.stderr.write(f"fake mflux: simulated hang at step {position}\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)
    time.sleep(env_float("FAKE_MFLUX_STEP_S"))


def weight_bytes() -> int:
    return int(env_float("FAKE_MFLUX_WEIGHT_GB", 1.0) * GIB)


def real_mlx() -> bool:
    """True when the real MLX is imported (tests that put only ``mflux/`` on the path)."""
    return not hasattr(mx, "FakeArray")


def lazy_weights(nbytes: int) -> Any:
    """Weights as mflux's initializers leave them: an unevaluated array, no memory held yet.

    With the real MLX the array is random, as ``mlx.nn`` layers initialise theirs (that also gives
    the building thread MLX's per-thread random state, as building a real model does).
    """
    if real_mlx():
        return mx.random.uniform(shape=(max(nbytes // 4, 1),))
    return mx.FakeArray(nbytes)


def allocate(nbytes: int) -> Any:
    """Memory held at once (a generation's activations)."""
    if real_mlx():
        buffer = mx.zeros((max(nbytes // 4, 1),))
        mx.eval(buffer)
        return buffer
    return mx.FakeBuffer(nbytes)


def initialize(
    model: Any,
    *,
    quantize: int | None,
    model_path: str | None,
    lora_paths: list[str] | None,
    lora_scales: list[float] | None,
    model_config: Any,
) -> None:
    """What mflux's initializers leave on a model, minus the weights."""
    from mflux.callbacks.callback_registry import CallbackRegistry

    emit_garbage(f"{type(model).__name__}.__init__")
    time.sleep(env_float("FAKE_MFLUX_LOAD_S"))
    model.model_config = model_config
    model.model_path = model_path or model_config.model_name
    model.bits = quantize
    model.callbacks = CallbackRegistry()
    model.prompt_cache = {}
    model.tiling_config = None
    model.tokenizers = {}
    model.lora_paths, model.lora_scales = _resolve_loras(lora_paths, lora_scales)
    # mflux models are mlx.nn.Modules whose weights stay lazy after construction;
    # parameters() is the tree that mx.eval materialises.
    weights = lazy_weights(weight_bytes())
    model._weights = weights
    model.parameters = lambda: {"transformer": {"weight": weights}}
    # Real module graphs can hold reference cycles; this one makes gc.collect() necessary.
    model._self_reference = model
    say(f"loaded {type(model).__name__} from {model.model_path} (quantize={quantize})")


# Tensor names mflux 0.24's LoRA mappings read (lora_A/lora_B, lora_up/lora_down, lora.up, LoKr).
_ADAPTER_MARKERS = ("lora", "lokr")


def _resolve_loras(
    paths: list[str] | None, scales: list[float] | None
) -> tuple[list[str] | None, list[float] | None]:
    """Like mflux 0.24's LoRALoader: a LoRA that is missing, that ``mx.load`` cannot read, or that
    applies to no layer raises (0.18 printed and skipped); scales are padded with 1.0 or cut."""
    if not paths:
        return [], []
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(
                f"LoRA file not found: '{path}'. File does not exist and is not in the LoRA library."
            )
        say(f"Applying LoRA: {Path(path).name}")
        try:
            weights = dict(mx.load(path, return_metadata=True)[0].items())
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            raise ValueError(f"Failed to load LoRA file {path}: {e}") from e
        if not any(marker in key.lower() for key in weights for marker in _ADAPTER_MARKERS):
            seen_endings = sorted({".".join(k.split(".")[-2:]) for k in weights})[:8]
            raise ValueError(
                f"No LoRA layers were applied from {Path(path).name}. "
                f"Key endings seen in the file: {seen_endings}. This model's mapping expects "
                f"endings like lora_A/lora_B, lora_up/lora_down or lora.up/lora.down (with or "
                f"without a trailing .weight) under its module paths."
            )
    kept = list(paths)
    scales = list(scales or [])
    scales = (scales + [1.0] * len(kept))[: len(kept)]
    return kept, scales


class Activations:
    """Memory a generation holds while it runs (so peak > active after it ends)."""

    def __enter__(self) -> Activations:
        self._buffer: Any = allocate(max(weight_bytes() // 10, 1 << 20))
        return self

    def __exit__(self, *exc: object) -> None:
        self._buffer = None


# ---------------------------------------------------------------------------------------------
# tqdm stand-in


class FakeTqdm:
    """Iterates like tqdm, including its lag: ``n`` is refreshed only every ``mininterval`` s."""

    mininterval = 0.1

    def __init__(self, iterable: Iterable[int]) -> None:
        self.iterable = list(iterable)
        self.total = len(self.iterable)
        self.n = 0
        self._start = time.monotonic()
        self._last_refresh = self._start

    def __iter__(self) -> Iterator[int]:
        n = self.n
        try:
            for item in self.iterable:
                yield item
                n += 1
                now = time.monotonic()
                if now - self._last_refresh >= self.mininterval:
                    self.n = n
                    self._last_refresh = now
        finally:
            self.n = n

    def __len__(self) -> int:
        return self.total

    @property
    def format_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "elapsed": time.monotonic() - self._start}


class FakeLatents:
    """What the loops pass as latents where numpy is missing: a shape, no values."""

    def __init__(self, seed: int, width: int, height: int, values_per_token: int = 64) -> None:
        self.seed = seed
        self.shape = (1, (height // 16) * (width // 16), values_per_token)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


class FakeDenoiser:
    """The latents of a fake denoising loop, shaped as mflux's packed latents.

    With numpy: float32 arrays of mflux's shape (1, (H/16)*(W/16), values_per_token) going in a
    straight line from seeded noise (before the first step) to a seeded smooth target (after the
    last), so a step preview changes from step to step and ends on the target. Without numpy:
    ``FakeLatents`` throughout.
    """

    def __init__(self, seed: int, width: int, height: int, values_per_token: int, steps: int) -> None:
        self.steps = max(steps, 1)
        np = _numpy()
        if np is None:
            self._noise: Any = FakeLatents(seed, width, height, values_per_token)
            self._target: Any = None
            return
        rng = np.random.default_rng(seed)
        tokens = (height // 16) * (width // 16)
        self._noise = rng.standard_normal((1, tokens, values_per_token)).astype(np.float32)
        # A smooth target: one random value per token column and row, added up.
        rows = rng.standard_normal((height // 16, 1, values_per_token))
        columns = rng.standard_normal((1, width // 16, values_per_token))
        self._target = ((rows + columns) / 2).reshape(1, tokens, values_per_token).astype(np.float32)

    @property
    def initial(self) -> Any:
        return self._noise

    def after(self, step: int) -> Any:
        """The latents after ``step`` (1-based position in a loop of ``steps``)."""
        if self._target is None:
            return self._noise
        progress = min(step, self.steps) / self.steps
        return (1 - progress) * self._noise + progress * self._target


# ---------------------------------------------------------------------------------------------
# Images


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """A valid 8-bit RGB PNG: a gradient whose colours depend on the seed."""
    red = bytes(((x * 255) // max(width - 1, 1) + seed) & 0xFF for x in range(width))
    blue = bytes([(seed * 31) & 0xFF]) * width
    raw = bytearray()
    row = bytearray(3 * width)
    row[0::3] = red
    row[2::3] = blue
    for y in range(height):
        row[1::3] = bytes([((y * 255) // max(height - 1, 1) + seed * 7) & 0xFF]) * width
        raw.append(0)  # filter type: none
        raw += row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a PNG; other formats count as 1024x1024. Missing file: FileNotFoundError."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    return 1024, 1024


class FakeImage:
    """Enough of PIL.Image for the worker: ``size``, ``width``, ``height`` and ``save``."""

    mode = "RGB"

    def __init__(self, width: int, height: int, seed: int) -> None:
        self.width = width
        self.height = height
        self.seed = seed

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def save(self, fp: Any, format: str | None = None, **params: Any) -> None:
        name = str(fp) if isinstance(fp, (str, Path)) else ""
        if (format or "").upper() != "PNG" and not name.lower().endswith(".png"):
            raise ValueError(f"unknown file extension: {Path(name).suffix}")
        data = png_bytes(self.width, self.height, self.seed)
        if name:
            Path(name).write_bytes(data)
        else:
            fp.write(data)


# ---------------------------------------------------------------------------------------------
# VAE


class FakeVAE:
    """A VAE whose decode is linear: colour = latent pixel @ map + bias, each latent pixel
    becoming an 8x8 block. A linear map fitted to it (as the worker's previews do) is exact, so a
    test can check the fit end to end. ``denormalise``: decode undoes a per-channel normalisation
    first (Qwen's VAE does; Ideogram 4's unpack does it instead). Needs numpy (only previews call it).
    """

    spatial_scale = 8

    def __init__(self, latent_channels: int, seed: int, denormalise: bool, five_d: bool) -> None:
        np = _numpy()
        self.latent_channels = latent_channels
        self._five_d = five_d
        rng = np.random.default_rng(seed)
        self.colour_map = (rng.standard_normal((latent_channels, 3)) / np.sqrt(latent_channels)).astype(
            np.float32
        )
        self.colour_bias = (rng.standard_normal(3) * 0.2).astype(np.float32)
        channels = np.arange(latent_channels)
        self.latents_mean = (0.3 * np.sin(channels)).astype(np.float32) if denormalise else None
        self.latents_std = (1.5 + 0.5 * np.cos(channels)).astype(np.float32) if denormalise else None

    def decode(self, latents: Any) -> Any:
        np = _numpy()
        x = np.asarray(latents, dtype=np.float32)
        if x.ndim == 5:
            x = x[:, :, 0]
        if self.latents_mean is not None:
            x = x * self.latents_std[None, :, None, None] + self.latents_mean[None, :, None, None]
        rgb = np.einsum("bchw,ck->bkhw", x, self.colour_map) + self.colour_bias[None, :, None, None]
        rgb = rgb.repeat(self.spatial_scale, axis=2).repeat(self.spatial_scale, axis=3)
        # Qwen's VAE is 3-D and returns (B, 3, 1, H, W); VAEUtil.decode drops the frame axis.
        return rgb[:, :, None] if self._five_d else rgb


def qwen_vae() -> FakeVAE | None:
    return FakeVAE(16, seed=16, denormalise=True, five_d=True) if _numpy() is not None else None


def flux2_vae() -> FakeVAE | None:
    return FakeVAE(32, seed=32, denormalise=False, five_d=False) if _numpy() is not None else None
