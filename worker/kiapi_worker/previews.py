"""Step previews: a small JPEG of the image as it stands after a denoising step, with no VAE decode.

The latents the in-loop callback receives are projected to RGB by one linear map per latent
pixel (``rgb = latent @ W + b``), the fast "latent to RGB" preview. W and b are not taken from a
table: they are fitted for each loaded build from that build's own VAE, the first time anyone asks
for a preview of a job on it (a job nobody watches never pays), and kept for the build's lifetime:

1. a few small random latents are drawn in the space the denoiser works in (packed, normalised,
   roughly N(0, 1)), so the map applies to exactly what the callback receives;
2. each is decoded by the pipeline's own path (mflux's unpack, then ``VAEUtil.decode`` on the
   model's VAE) and turned into colours as mflux turns its output into an image (``x / 2 + 0.5``);
3. every decoded image is average-pooled to latent resolution (8 px per latent pixel), and least
   squares over all latent pixels gives W (C x 3) and b (3).

The random latents are spatially smooth fields with some white noise on top: what a denoised
image's latents look like locally (neighbours alike) is what the map must get right, and a pooled
pixel of a VAE decode also depends on its neighbours, which white noise alone would make look like
noise to the fit. Pixels on the border of each sample are left out of the fit: the decoder pads
there.

numpy and Pillow come with mflux; they are imported on first use, so a worker without them (the
fake mflux on a bare Python) still runs jobs and only reports that it cannot make previews.
"""

from __future__ import annotations

import base64
import importlib
import io
import logging
import time
from dataclasses import dataclass
from typing import Any

from kiapi_worker.engine_api import (
    PREVIEW_UNPACK_METHOD,
    VAE_ATTRIBUTE,
    VAE_DECODE_CLASS,
    VAE_DECODE_METHOD,
    VAE_DECODE_MODULE,
    PreviewPath,
)

log = logging.getLogger("kiapi_worker")

JPEG_QUALITY = 70
# Pixels per latent pixel along each side, for every family served (the VAEs' spatial scale).
VAE_SCALE = 8
# Each packed token holds a 2x2 patch of latent pixels (16x16 image pixels).
PATCH = 2
TOKEN_PIXELS = VAE_SCALE * PATCH
FIT_SAMPLES = 3
# Latent pixels per side of each fit sample (a 128x128 decode): enough rows for 33 unknowns per
# colour after the border is dropped, and cheap to decode (see BENCHMARKS.md for the cost).
FIT_GRID = 16
FIT_SEED = 20240917
# The white-noise share of each fit sample's variance (the rest is a smooth field).
FIT_WHITE = 0.35


class PreviewUnavailable(Exception):
    """This build cannot make previews (no numpy/Pillow, or its decode path could not be fitted)."""


@dataclass(frozen=True)
class PreviewDemand:
    """What the server wants of a run's previews: one every ``every`` steps, long side <= ``max_size``."""

    every: int
    max_size: int


@dataclass(frozen=True)
class Projection:
    """The fitted map: ``weights`` (C x 3) and ``bias`` (3), colours in [0, 1]."""

    weights: Any
    bias: Any
    r2: float
    fit_ms: float


@dataclass(frozen=True)
class Preview:
    jpeg: bytes
    width: int
    height: int
    cost_ms: float
    # The one-off fit this preview paid for (0 for every preview after the first of a build).
    fit_ms: float


def _numpy() -> Any:
    try:
        return importlib.import_module("numpy")
    except ImportError as exc:
        raise PreviewUnavailable(f"previews need numpy (it comes with mflux): {exc}") from exc


def _pil_image() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as exc:
        raise PreviewUnavailable(f"previews need Pillow (it comes with mflux): {exc}") from exc


# --- pure helpers (numpy arrays in, numpy arrays out) ------------------------------------------


def unpack_tokens(tokens: Any, grid_h: int, grid_w: int, path: PreviewPath) -> Any:
    """Packed tokens (N, 4C) -> latent pixels (2 grid_h, 2 grid_w, C), as mflux unpacks them.

    Qwen orders a token's values channel first (index ``c*4 + dy*2 + dx``); Ideogram 4 patch
    position first (``(dy*2 + dx)*C + c``). Only the order is done here: a family whose unpack
    also rescales (Ideogram 4) has that affine step folded into the fitted map.
    """
    c = path.channels
    if path.channel_major:
        grid = tokens.reshape(grid_h, grid_w, c, PATCH, PATCH).transpose(0, 3, 1, 4, 2)
    else:
        grid = tokens.reshape(grid_h, grid_w, PATCH, PATCH, c).transpose(0, 2, 1, 3, 4)
    return grid.reshape(grid_h * PATCH, grid_w * PATCH, c)


def pack_pixels(grid: Any, path: PreviewPath) -> Any:
    """The inverse of ``unpack_tokens``: latent pixels (2h, 2w, C) -> packed tokens (h*w, 4C)."""
    height, width, c = grid.shape
    grid_h, grid_w = height // PATCH, width // PATCH
    blocks = grid.reshape(grid_h, PATCH, grid_w, PATCH, c)
    order = (0, 2, 4, 1, 3) if path.channel_major else (0, 2, 1, 3, 4)
    tokens = blocks.transpose(*order)
    return tokens.reshape(grid_h * grid_w, PATCH * PATCH * c)


def average_pool(image: Any, factor: int) -> Any:
    """(H, W, K) -> (H/factor, W/factor, K): the mean of each factor x factor block."""
    np = _numpy()
    height, width, k = image.shape
    blocks = image[: height - height % factor, : width - width % factor].reshape(
        height // factor, factor, width // factor, factor, k
    )
    return np.asarray(blocks.mean(axis=(1, 3)))


def fit_linear(latents: Any, colours: Any) -> tuple[Any, Any, float]:
    """Least squares ``colours ~ latents @ W + b``; returns (W, b, R^2 over all three colours)."""
    np = _numpy()
    x = np.asarray(latents, dtype=np.float64)
    y = np.asarray(colours, dtype=np.float64)
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ solution
    spread = float(((y - y.mean(axis=0)) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / spread if spread > 0 else 0.0
    return solution[:-1].astype(np.float32), solution[-1].astype(np.float32), r2


def project(grid: Any, weights: Any, bias: Any) -> Any:
    """Latent pixels (h, w, C) -> 8-bit RGB (h, w, 3)."""
    np = _numpy()
    rgb = grid.astype(np.float32, copy=False) @ weights + bias
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def preview_size(image_width: int, image_height: int, max_size: int) -> tuple[int, int]:
    """The JPEG's size: the image's aspect, long side ``max_size`` but never above the image's own."""
    long_side = max(image_width, image_height)
    scale = min(1.0, max_size / long_side)
    return max(1, round(image_width * scale)), max(1, round(image_height * scale))


def encode_jpeg(rgb: Any, size: tuple[int, int]) -> bytes:
    """8-bit RGB (h, w, 3) resized to ``size`` (bilinear, which also averages when shrinking)."""
    image_module = _pil_image()
    image = image_module.fromarray(rgb)
    if image.size != size:
        image = image.resize(size, image_module.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def fit_fields(rng: Any, count: int, size: int, channels: int) -> Any:
    """``count`` random latents (size, size, C), each channel of unit variance: smooth + white."""
    np = _numpy()
    coarse = max(2, size // 4)
    smooth = rng.standard_normal((count, coarse, coarse, channels))
    # Bilinear upsampling of the coarse field (separable: rows, then columns).
    positions = np.linspace(0, coarse - 1, size)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, coarse - 1)
    frac = (positions - low)[None, :, None, None]
    smooth = smooth[:, low] * (1 - frac) + smooth[:, high] * frac
    frac = frac.reshape(1, 1, size, 1)
    smooth = smooth[:, :, low] * (1 - frac) + smooth[:, :, high] * frac
    smooth -= smooth.mean(axis=(1, 2), keepdims=True)
    smooth /= smooth.std(axis=(1, 2), keepdims=True) + 1e-6
    white = rng.standard_normal((count, size, size, channels))
    fields = np.sqrt(1 - FIT_WHITE) * smooth + np.sqrt(FIT_WHITE) * white
    return fields.astype(np.float32)


# --- the engine side -----------------------------------------------------------------------------


def to_numpy(array: Any) -> Any:
    """An engine array (or a numpy one) as float32 numpy; bfloat16 has no numpy dtype, so MLX
    arrays are cast by MLX first."""
    np = _numpy()
    if isinstance(array, np.ndarray):
        return array.astype(np.float32, copy=False)
    mx = importlib.import_module("mlx.core")
    return np.asarray(array.astype(mx.float32))


def _static(module: str, owner: str, name: str) -> Any:
    return getattr(getattr(importlib.import_module(module), owner), name)


def _engine_array(values: Any) -> Any:
    mx = importlib.import_module("mlx.core")
    return mx.array(values)


class Previewer:
    """Makes the previews of one loaded build; fits its projection on first use."""

    def __init__(self, key: str, model: Any, path: PreviewPath) -> None:
        self._key = key
        self._model = model
        self._path = path
        self._projection: Projection | None = None
        self._unavailable: str | None = None

    @property
    def projection(self) -> Projection | None:
        return self._projection

    def make(self, latents: Any, image_width: int, image_height: int, max_size: int) -> Preview:
        """A preview of ``latents`` (packed, as the in-loop callback gets them); raises
        PreviewUnavailable when this build cannot make one (said once per build in the log)."""
        started = time.perf_counter()
        fitted_now = self._projection is None
        projection = self._fitted()
        np = _numpy()
        grid_h, grid_w = image_height // TOKEN_PIXELS, image_width // TOKEN_PIXELS
        tokens = to_numpy(latents)
        tokens = tokens.reshape(-1, tokens.shape[-1])
        expected = (grid_h * grid_w, PATCH * PATCH * self._path.channels)
        if tokens.shape != expected:
            size = f"{image_width}x{image_height}"
            raise ValueError(f"latents of shape {tokens.shape}, expected {expected} for {size}")
        rgb = project(unpack_tokens(tokens, grid_h, grid_w, self._path), projection.weights, projection.bias)
        size = preview_size(grid_w * TOKEN_PIXELS, grid_h * TOKEN_PIXELS, max_size)
        jpeg = encode_jpeg(np.ascontiguousarray(rgb), size)
        cost_ms = (time.perf_counter() - started) * 1000.0
        fit_ms = projection.fit_ms if fitted_now else 0.0
        return Preview(jpeg=jpeg, width=size[0], height=size[1], cost_ms=cost_ms, fit_ms=fit_ms)

    def _fitted(self) -> Projection:
        if self._projection is not None:
            return self._projection
        if self._unavailable is not None:
            raise PreviewUnavailable(self._unavailable)
        try:
            self._projection = self._fit()
        except Exception as exc:
            reason = str(exc) if isinstance(exc, PreviewUnavailable) else f"{type(exc).__name__}: {exc}"
            self._unavailable = f"no previews for {self._key}: {reason}"
            log.warning("%s", self._unavailable, exc_info=not isinstance(exc, PreviewUnavailable))
            raise PreviewUnavailable(self._unavailable) from exc
        projection = self._projection
        log.info(
            "preview projection for %s fitted in %.0f ms (%d decodes of %dx%d px, R^2 %.3f)",
            self._key,
            projection.fit_ms,
            FIT_SAMPLES,
            FIT_GRID * VAE_SCALE,
            FIT_GRID * VAE_SCALE,
            projection.r2,
        )
        return projection

    def _fit(self) -> Projection:
        np = _numpy()
        _pil_image()  # fail before the decodes when the encoder is missing
        started = time.perf_counter()
        path = self._path
        unpack = _static(path.unpack_module, path.unpack_class, PREVIEW_UNPACK_METHOD)
        decode = _static(VAE_DECODE_MODULE, VAE_DECODE_CLASS, VAE_DECODE_METHOD)
        vae = getattr(self._model, VAE_ATTRIBUTE)
        pixels = FIT_GRID * VAE_SCALE
        fields = fit_fields(np.random.default_rng(FIT_SEED), FIT_SAMPLES, FIT_GRID, path.channels)
        rows: list[Any] = []
        targets: list[Any] = []
        for field in fields:
            tokens = pack_pixels(field, path)[None]
            latent = unpack(latents=_engine_array(tokens), height=pixels, width=pixels)
            decoded = to_numpy(decode(vae=vae, latent=latent, tiling_config=None))
            # (1, 3, H, W) in [-1, 1] -> colours as mflux makes its image (x / 2 + 0.5), not clipped:
            # clipping would bend the linear relation the fit looks for.
            colours = average_pool(decoded.reshape(3, pixels, pixels).transpose(1, 2, 0) / 2 + 0.5, VAE_SCALE)
            rows.append(field[1:-1, 1:-1].reshape(-1, path.channels))
            targets.append(colours[1:-1, 1:-1].reshape(-1, 3))
        weights, bias, r2 = fit_linear(np.concatenate(rows), np.concatenate(targets))
        return Projection(weights=weights, bias=bias, r2=r2, fit_ms=(time.perf_counter() - started) * 1000.0)


def jpeg_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
