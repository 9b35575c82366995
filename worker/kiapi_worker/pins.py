"""The one place that names what the engine's venv must hold.

The contract test downloads exactly the mflux sdist named here and checks the adapter's calls against
its source. ``kiapi activate`` asks this module for the pip requirements (``python -m
kiapi_worker.pins`` prints them as JSON), so the TypeScript side never repeats a version.
"""

from __future__ import annotations

import json

MFLUX_VERSION = "0.18.0"
MFLUX_REQUIREMENT = f"mflux=={MFLUX_VERSION}"

# hub.py calls huggingface_hub directly (model_info with file metadata, hf_hub_download with a
# tqdm_class, verify_repo_checksums), all present from 1.1.6 on; mflux 0.18.0 asks for the same range.
HUGGINGFACE_HUB_REQUIREMENT = "huggingface_hub>=1.1.6,<2.0"

# The MLX build per platform kind (see src/core/setup/platform.ts). mflux already depends on mlx
# with these markers; naming it keeps the CUDA extra explicit on Linux.
PLATFORM_REQUIREMENTS: dict[str, list[str]] = {
    "darwin-arm64": ["mlx"],
    "linux-cuda": ["mlx[cuda13]"],
}


def requirements() -> dict[str, object]:
    return {
        "mflux": MFLUX_REQUIREMENT,
        "mflux_version": MFLUX_VERSION,
        "huggingface_hub": HUGGINGFACE_HUB_REQUIREMENT,
        "platform": PLATFORM_REQUIREMENTS,
    }


def main() -> int:
    print(json.dumps(requirements()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
