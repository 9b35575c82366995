"""``python -m kiapi_worker.probe``: the report ``kiapi status`` and ``kiapi activate`` read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert (report["mflux"], report["mlx"], report["device"]) == ("0.18.0", "0.31.2", "gpu")
    assert report["worker"] == "0.1.0"


def test_probe_says_what_is_missing() -> None:
    report = _probe([WORKER_DIR])
    assert report["ok"] is False
    assert "mflux" in str(report["reason"])
    assert "kiapi activate" in str(report["reason"])
