"""Installable wheels of the fake ``mflux`` and ``mlx`` (``tests/fake_mflux``), written with zipfile alone.

``kiapi activate`` installs a lock (``pip install --no-deps -r <lock>``, then the worker); the TypeScript
tests point it at a local wheel directory (``KIAPI_PIP_ARGS='--no-index --find-links DIR'``) and a
lock of that directory (``KIAPI_ENGINE_LOCK``). A wheel is a zip holding
the package and a ``<name>-<version>.dist-info`` with METADATA, WHEEL and RECORD, so no build backend
and no network are needed to make one.

Usage: ``python worker/tests/fake_wheels.py OUT_DIR`` (prints the wheel paths).
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAKE_DIR = HERE / "fake_mflux"
sys.path.insert(0, str(HERE.parent))

from kiapi_worker.pins import HUGGINGFACE_HUB_REQUIREMENT, MFLUX_VERSION  # noqa: E402

MLX_VERSION = "0.31.2"


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_wheel(
    out_dir: Path,
    name: str,
    version: str,
    package: Path,
    requires: list[str],
    extras: list[str],
) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` holding ``package`` (without caches)."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: Test fake of {name} for kiapi (not the real package).",
        *(f"Provides-Extra: {extra}" for extra in extras),
        *(f"Requires-Dist: {req}" for req in requires),
    ]
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[path.relative_to(package.parent).as_posix()] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: kiapi-fake-wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def build_fake_wheels(out_dir: Path) -> list[Path]:
    """The fake mflux (needing huggingface_hub like the real one) and the fake mlx (with a cuda13 extra)."""
    return [
        build_wheel(out_dir, "mflux", MFLUX_VERSION, FAKE_DIR / "mflux", [HUGGINGFACE_HUB_REQUIREMENT], []),
        build_wheel(out_dir, "mlx", MLX_VERSION, FAKE_DIR / "mlx", [], ["cuda13"]),
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: fake_wheels.py OUT_DIR", file=sys.stderr)
        return 2
    for wheel in build_fake_wheels(Path(argv[0])):
        print(wheel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
