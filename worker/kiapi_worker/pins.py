"""The one place that names what the engine's venv must hold.

The contract test downloads exactly the mflux release named here and checks the adapter's calls
against its source. ``kiapi activate`` asks this module what to install (``python -m
kiapi_worker.pins`` prints it as JSON), so the TypeScript side never repeats a version. What pip
installs is the lock of the machine's flavour (``worker/locks/<lock>``, made by
``worker/locks/update.sh`` from the data here): every package at an exact version.

This module is standard library only and keeps to Python 3.8 syntax, so any ``python3`` can print
it (``kiapi activate`` runs it before it knows which Python it will use).
"""

from __future__ import annotations

import json
from pathlib import Path

MFLUX_VERSION = "0.24.0"
MFLUX_REQUIREMENT = f"mflux=={MFLUX_VERSION}"

# mflux's own Requires-Python (checked against the release's metadata by the contract test). The
# engine's venv needs it; the worker package alone still runs on 3.10 (its tests use the fake).
# src/core/setup/python.ts reads these two lines (before any Python is known), keep them literal.
ENGINE_REQUIRES_PYTHON = ">=3.11"
# The Python versions the locks are resolved for (python_version markers); kiapi activate builds the
# venv only from one of these, since an unlocked version may lack wheels for the locked set.
LOCK_PYTHONS = ("3.11", "3.12", "3.13")

# hub.py calls huggingface_hub directly (model_info with file metadata, hf_hub_download with a
# tqdm_class and a revision, verify_repo_checksums), all present from 1.1.6 on; mflux 0.24.0 asks for
# the same range. The lock holds the exact version.
HUGGINGFACE_HUB_REQUIREMENT = "huggingface_hub>=1.1.6,<2.0"

# What mflux needs at run time but does not declare, so a venv built from mflux's own requirements
# lacks it: Ideogram 4 builds its prompt with transformers' `apply_chat_template`, which imports
# jinja2 (torch brings it in; the locks leave torch out). Found by the real-engine test lane.
UNDECLARED_RUNTIME_REQUIREMENTS = ("jinja2>=3.1,<4",)

# mflux's dependencies that the engine never imports and the locks leave out, so mflux itself is
# installed with --no-deps (torch: multi-GB on Linux, only used by mflux's conversion tools).
UNLOCKED_DEPENDENCIES = ("torch",)

# The MLX build per flavour. The version comes from mflux's own requirement on mlx; the extra picks
# the backend (mlx-metal comes with mlx on macOS by its own marker).
FLAVOURS: dict[str, dict[str, str]] = {
    "metal": {"platform": "darwin-arm64", "lock": "darwin-arm64.txt", "mlx": "mlx"},
    "cuda13": {"platform": "linux-cuda", "lock": "linux-cuda13.txt", "mlx": "mlx[cuda13]"},
    "cpu": {"platform": "linux-cpu", "lock": "linux-cpu.txt", "mlx": "mlx[cpu]"},
}

LOCK_DIR = Path(__file__).resolve().parents[1] / "locks"


def flavour_for_platform(platform: str) -> str | None:
    """The flavour kiapi installs on a platform kind of src/core/setup/platform.ts (None: none)."""
    for name, flavour in FLAVOURS.items():
        if flavour["platform"] == platform:
            return name
    return None


def python_minimum() -> tuple[int, int]:
    """``>=3.11`` as ``(3, 11)``."""
    text = ENGINE_REQUIRES_PYTHON.strip()
    if not text.startswith(">="):
        raise ValueError(f"ENGINE_REQUIRES_PYTHON must be '>=X.Y', not {text!r}")
    major, minor = text[2:].split(".")[:2]
    return int(major), int(minor)


def requirements() -> dict[str, object]:
    from kiapi_worker.engine_api import PINNED_REVISIONS

    return {
        "mflux": MFLUX_REQUIREMENT,
        "mflux_version": MFLUX_VERSION,
        "requires_python": ENGINE_REQUIRES_PYTHON,
        "lock_pythons": list(LOCK_PYTHONS),
        "huggingface_hub": HUGGINGFACE_HUB_REQUIREMENT,
        "unlocked": list(UNLOCKED_DEPENDENCIES),
        # platform kind -> flavour, its lock file (absolute) and its MLX requirement
        "platform": {
            flavour["platform"]: {
                "flavour": name,
                "lock": str(LOCK_DIR / flavour["lock"]),
                "mlx": flavour["mlx"],
            }
            for name, flavour in FLAVOURS.items()
        },
        # repo -> the Hugging Face commit mflux loads it from (repos not listed load main)
        "pinned_revisions": dict(PINNED_REVISIONS),
    }


def main() -> int:
    print(json.dumps(requirements()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
