"""The engine locks (``worker/locks/*.txt``) install on their target machines and are complete.

Each lock is installed in a pip dry run for its target platform and Python (3.11, and 3.13 where
it matters), the way ``kiapi activate`` installs it (``--no-deps -r``), and every dependency of
every locked package must be locked at a version it accepts (``lockgen.check``). This needs PyPI
(metadata only, nothing is downloaded in full); the dry runs go in parallel, 20-40 s in all. Without
network access these tests fail rather than skip, like the contract test.

``KIAPI_LOCK_TEST_PYTHONS`` (default ``3.11``; e.g. ``3.11 3.13``) says which Pythons to check;
worker/locks/update.sh checks each new lock itself.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

import lockgen
from kiapi_worker import pins

# Each dry run takes ~20 s (pip fetches ~110 index pages and metadata files one after the other),
# so CI checks Python 3.11 for every flavour by default.
PYTHONS = os.environ.get("KIAPI_LOCK_TEST_PYTHONS", "3.11").split()
TARGETS = [(flavour, python) for python in PYTHONS for flavour in pins.FLAVOURS]


@pytest.fixture(scope="module")
def checked() -> dict[tuple[str, str], list[str] | Exception]:
    def run(target: tuple[str, str]) -> list[str] | Exception:
        try:
            return lockgen.check(*target)
        except Exception as exc:  # reported by the test of that target
            return exc

    with ThreadPoolExecutor(max_workers=len(TARGETS)) as pool:
        return dict(zip(TARGETS, pool.map(run, TARGETS), strict=True))


@pytest.mark.parametrize(("flavour", "python"), TARGETS, ids=[f"{f}-py{p}" for f, p in TARGETS])
def test_lock_installs_and_is_complete(checked: dict, flavour: str, python: str) -> None:
    result = checked[(flavour, python)]
    if isinstance(result, Exception):
        pytest.fail(str(result))
    assert result == [], "\n".join(result)


@pytest.mark.parametrize("flavour", list(pins.FLAVOURS))
def test_lock_matches_the_pins(flavour: str) -> None:
    """Offline: a changed pin without a rerun of worker/locks/update.sh fails here."""
    path = pins.LOCK_DIR / pins.FLAVOURS[flavour]["lock"]
    text = path.read_text(encoding="utf-8")
    for python in pins.LOCK_PYTHONS:
        locked = lockgen.read_lock(path, python)
        assert locked["mflux"] == pins.MFLUX_VERSION
        assert "huggingface-hub" in locked
        assert not set(pins.UNLOCKED_DEPENDENCIES) & set(locked), "torch must stay out of the lock"
        backend = {"metal": "mlx-metal", "cuda13": "mlx-cuda-13", "cpu": "mlx-cpu"}[flavour]
        assert locked[backend] == locked["mlx"]
        assert not {"mlx-metal", "mlx-cuda-13", "mlx-cpu"} - {backend} & set(locked)
    assert f"Python {', '.join(pins.LOCK_PYTHONS)}" in text
    assert "--no-deps" in text


def test_marker_environment_is_the_target() -> None:
    env = lockgen.marker_environment("metal", "3.12")
    assert (env["sys_platform"], env["platform_machine"], env["python_version"]) == (
        "darwin",
        "arm64",
        "3.12",
    )
    assert lockgen.marker_environment("cpu", "3.13")["platform_system"] == "Linux"


def test_read_lock_follows_python_markers(tmp_path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text(
        '# header\nnumpy==1.0 ; python_version == "3.11"\nnumpy==2.0 ; python_version == "3.12" or '
        'python_version == "3.13"\nPillow==13.0.0\n'
    )
    assert lockgen.read_lock(lock, "3.11") == {"numpy": "1.0", "pillow": "13.0.0"}
    assert lockgen.read_lock(lock, "3.13") == {"numpy": "2.0", "pillow": "13.0.0"}
