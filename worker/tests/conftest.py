from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mflux_source import MfluxSource, load_mflux_source
from worker_client import WorkerProcess


@pytest.fixture
def spawn() -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers for a test; every one is killed and reaped when the test ends."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str] | None = None, with_fake: bool = True, **options: Any) -> WorkerProcess:
        process = WorkerProcess(env, with_fake=with_fake, **options)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


@pytest.fixture
def fake_log(tmp_path: Path) -> Path:
    return tmp_path / "fake-mflux.jsonl"


@pytest.fixture(scope="session")
def mflux_source() -> MfluxSource:
    """The pinned mflux sdist, downloaded once (cached across runs); fails, never skips, offline."""
    return load_mflux_source()
