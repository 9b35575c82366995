"""``python -m kiapi_worker.probe``: the report ``kiapi status`` and ``kiapi activate`` read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kiapi_worker.pins import MFLUX_VERSION

WORKER_DIR = Path(__file__).resolve().parents[1]
FAKE_DIR = Path(__file__).resolve().parent / "fake_mflux"


def _probe(pythonpath: list[Path]) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath), "FAKE_MFLUX_GARBAGE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "kiapi_worker.probe"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",  # the fake's garbage on stderr is not valid UTF-8 on purpose
        env=env,
        timeout=60,
        check=True,
    )
    # Only the report reaches stdout, even when mflux prints at import.
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def test_probe_reports_versions_when_mflux_imports() -> None:
    report = _probe([WORKER_DIR, FAKE_DIR])
    assert report["ok"] is True
    assert (report["mflux"], report["mlx"], report["device"]) == ("0.24.0", "0.31.2", "gpu")
    assert report["worker"] == "0.1.0"


def test_probe_says_what_is_missing() -> None:
    report = _probe([WORKER_DIR])
    assert report["ok"] is False
    assert "mflux" in str(report["reason"])
    assert "kiapi activate" in str(report["reason"])


def _other_mflux_version(tmp_path: Path, version: str) -> Path:
    """A directory whose dist-info makes ``importlib.metadata`` report another mflux version when
    it comes before the fake on the path (the fake's modules are still the ones imported)."""
    dist_info = tmp_path / f"mflux-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mflux\nVersion: {version}\n")
    return tmp_path


def test_probe_reports_another_mflux_version_and_the_supported_one(tmp_path: Path) -> None:
    report = _probe([WORKER_DIR, _other_mflux_version(tmp_path, "0.18.0"), FAKE_DIR])
    assert report["ok"] is True, "another mflux still starts (untested combination)"
    assert (report["mflux"], report["mflux_supported"]) == ("0.18.0", MFLUX_VERSION)


def test_ready_carries_the_found_and_the_supported_mflux(tmp_path: Path) -> None:
    path = [WORKER_DIR, _other_mflux_version(tmp_path, "0.18.0"), FAKE_DIR]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    done = subprocess.run(
        [sys.executable, "-m", "kiapi_worker"],
        input="",  # EOF right after the handshake: the worker exits 0
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ready = json.loads(done.stdout.splitlines()[0])
    assert ready["type"] == "ready"
    assert (ready["mflux"], ready["mflux_supported"]) == ("0.18.0", MFLUX_VERSION)
    assert f"mflux 0.18.0 is installed; kiapi supports {MFLUX_VERSION}" in done.stderr
