"""Importing mflux once, at start-up, so a broken install is an ``init-failed`` and not a failed job."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import platform
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from kiapi_worker import memory
from kiapi_worker.engine_api import (
    CALL_SHAPES,
    EXCEPTIONS_MODULE,
    MFLUX_DISTRIBUTION,
    MODEL_CONFIG_CLASS,
    MODEL_CONFIG_MODULE,
    STOP_EXCEPTION,
)
from kiapi_worker.pins import MFLUX_VERSION

log = logging.getLogger("kiapi_worker.engine")


@dataclass(frozen=True)
class Engine:
    """The mflux pieces the adapter uses, resolved from the names in ``engine_api``."""

    model_classes: dict[str, type]
    model_config: Any
    stop_exception: type[BaseException]
    versions: dict[str, str]


class EngineUnavailable(Exception):
    """mflux or mlx cannot be imported; the text becomes the ``init-failed`` reason."""


def _version(distribution: str, module: ModuleType | None) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def import_engine() -> Engine:
    """Import mflux, mlx and every model class the worker may load, or raise EngineUnavailable."""
    try:
        mflux = importlib.import_module("mflux")
        mx = importlib.import_module("mlx.core")
        model_config = getattr(importlib.import_module(MODEL_CONFIG_MODULE), MODEL_CONFIG_CLASS)
        stop_exception = getattr(importlib.import_module(EXCEPTIONS_MODULE), STOP_EXCEPTION)
        classes = {
            operation: getattr(importlib.import_module(shape.module), shape.class_name)
            for operation, shape in CALL_SHAPES.items()
        }
    except ImportError as exc:
        raise EngineUnavailable(f"{exc} — run kiapi activate") from exc
    except AttributeError as exc:
        raise EngineUnavailable(f"installed mflux does not match the adapter: {exc}") from exc
    except Exception as exc:
        raise EngineUnavailable(f"importing mflux failed: {type(exc).__name__}: {exc}") from exc
    mlx_version = getattr(mx, "__version__", None) or _version("mlx", None)
    found = _version(MFLUX_DISTRIBUTION, mflux)
    if found != MFLUX_VERSION:
        # Another mflux still runs (every name the adapter uses was just imported), but kiapi is
        # tested against MFLUX_VERSION only, and another release may load other weight revisions.
        log.warning(
            "mflux %s is installed; kiapi supports %s (untested combination: the worker runs anyway)",
            found,
            MFLUX_VERSION,
        )
    return Engine(
        model_classes=classes,
        model_config=model_config,
        stop_exception=stop_exception,
        versions={
            "python": platform.python_version(),
            "mflux": found,
            # The release the adapter is written and tested against (pins.MFLUX_VERSION); the
            # server and kiapi status report a difference.
            "mflux_supported": MFLUX_VERSION,
            "mlx": str(mlx_version),
            "device": memory.device_name(),
        },
    )
