"""``python -m kiapi_worker.probe``: is this Python a working engine? One JSON line on stdout.

It imports mflux exactly as the worker does at start-up (``engine.import_engine``), so "ready" here
means the worker would start. ``kiapi status`` and ``kiapi activate`` run it.
"""

from __future__ import annotations

import importlib.metadata
import platform

from kiapi_worker import __version__
from kiapi_worker.protocol import claim_protocol_stream


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe() -> dict[str, object]:
    from kiapi_worker.engine import EngineUnavailable, import_engine

    report: dict[str, object] = {
        "python": platform.python_version(),
        "worker": __version__,
        # The distribution pip installed into this environment (None when run from a checkout only).
        "worker_installed": _installed("kiapi-worker"),
        "huggingface_hub": _installed("huggingface_hub") or _installed("huggingface-hub"),
    }
    try:
        engine = import_engine()
    except EngineUnavailable as exc:
        return {**report, "ok": False, "reason": str(exc)}
    return {**report, **engine.versions, "ok": True}


def main() -> int:
    writer = claim_protocol_stream()  # mflux may print at import; keep stdout for the report
    writer.send(probe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
