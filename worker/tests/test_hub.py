"""hub.py's events, error mapping and cache handling, against a stand-in ``huggingface_hub`` module.

The real library against a fake Hub endpoint is covered by the TypeScript activation tests; here
each branch is driven directly: progress per file and in total, cancel from a progress callback,
gated preflight, checksum failures removing the damaged file, stale partial files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest

from fake_wheels import build_fake_wheels
from kiapi_worker import hub
from kiapi_worker.engine_api import PINNED_REVISIONS


class FakeResponse:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def _errors_module() -> types.ModuleType:
    errors = types.ModuleType("huggingface_hub.errors")

    class HfHubHTTPError(OSError):
        def __init__(self, message: str, status: int = 500) -> None:
            super().__init__(message)
            self.response = FakeResponse(status)

    class RepositoryNotFoundError(HfHubHTTPError):
        pass

    class GatedRepoError(RepositoryNotFoundError):
        pass

    class RevisionNotFoundError(HfHubHTTPError):
        pass

    class OfflineModeIsEnabled(ConnectionError):
        pass

    class LocalEntryNotFoundError(FileNotFoundError):
        pass

    for cls in (
        HfHubHTTPError,
        RepositoryNotFoundError,
        GatedRepoError,
        RevisionNotFoundError,
        OfflineModeIsEnabled,
        LocalEntryNotFoundError,
    ):
        setattr(errors, cls.__name__, cls)
    return errors


def _sibling(path: str, size: int, sha256: str | None, blob_id: str) -> Any:
    lfs = types.SimpleNamespace(size=size, sha256=sha256) if sha256 else None
    return types.SimpleNamespace(rfilename=path, size=size, blob_id=blob_id, lfs=lfs)


FILES = [
    _sibling("model_index.json", 10, None, "a" * 40),
    _sibling("transformer/weights.safetensors", 1000, "b" * 64, "c" * 40),
]


class FakeHub:
    """Records calls and plays the parts of huggingface_hub that hub.py uses."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.token: str | None = None
        self.gated = False
        self.probe_error: Exception | None = None
        self.info_error: Exception | None = None
        self.mismatches: list[dict[str, str]] = []
        self.downloaded: list[str] = []
        self.chunk = 250
        self.before_chunk: Any = None
        self.errors = _errors_module()
        self.info_revisions: list[tuple[str, str]] = []

    def module(self) -> types.ModuleType:
        fake = self
        mod = types.ModuleType("huggingface_hub")
        mod.__version__ = "1.99.0"
        mod.errors = self.errors
        mod.constants = types.SimpleNamespace(HF_HUB_CACHE=str(self.cache))
        mod.utils = types.SimpleNamespace(disable_progress_bars=lambda: None)

        class HfApi:
            def model_info(self, repo: str, revision: str, files_metadata: bool) -> Any:
                assert files_metadata
                fake.info_revisions.append((repo, revision))
                if fake.info_error:
                    raise fake.info_error
                sha = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else "d" * 40
                return types.SimpleNamespace(sha=sha, siblings=FILES, gated="manual" if fake.gated else False)

            def verify_repo_checksums(self, repo: str, revision: str) -> Any:
                return types.SimpleNamespace(mismatches=fake.mismatches, missing_paths=[])

        def hf_hub_download(repo: str, filename: str, revision: str, tqdm_class: Any = None) -> str:
            size = next(f.size for f in FILES if f.rfilename == filename)
            pointer = hub.repo_folder(str(fake.cache), repo) / "snapshots" / revision / filename
            pointer.parent.mkdir(parents=True, exist_ok=True)
            if tqdm_class is not None:
                fake.downloaded.append(filename)
                bar = tqdm_class(total=size, initial=0, desc=filename, unit="B")
                for _ in range(0, size, fake.chunk):
                    if fake.before_chunk:
                        fake.before_chunk(filename)
                    bar.update(min(fake.chunk, size))
            pointer.write_bytes(b"x" * size)
            return str(pointer)

        def snapshot_download(repo: str, revision: str, max_workers: int) -> str:
            return str(hub.repo_folder(str(fake.cache), repo) / "snapshots" / revision)

        def get_hf_file_metadata(url: str, token: str | None) -> None:
            if fake.probe_error:
                raise fake.probe_error

        mod.HfApi = HfApi
        mod.hf_hub_download = hf_hub_download
        mod.snapshot_download = snapshot_download
        mod.get_hf_file_metadata = get_hf_file_metadata
        mod.hf_hub_url = lambda repo, path, revision: f"https://hub/{repo}/resolve/{revision}/{path}"
        mod.get_token = lambda: fake.token
        return mod


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake.module())
    monkeypatch.setitem(sys.modules, "huggingface_hub.errors", fake.errors)
    return fake


def _events() -> tuple[list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    return events, events.append


def test_plan_asks_for_the_revision_the_engine_loads(fake: FakeHub) -> None:
    """A repo mflux pins is planned (and so downloaded) at the pinned commit; others at main."""
    edit = "Qwen/Qwen-Image-Edit-2509"
    events, emit = _events()
    assert hub.plan([edit, "Qwen/Qwen-Image", "org/repo"], None, set(), emit) == 0
    assert fake.info_revisions == [
        (edit, PINNED_REVISIONS[edit]),
        ("Qwen/Qwen-Image", "main"),
        ("org/repo", "main"),
    ]
    plans = [e for e in events if e["event"] == "plan"]
    pinned = PINNED_REVISIONS[edit]
    assert (plans[0]["revision"], plans[0]["commit"]) == (pinned, pinned)
    fake.info_revisions.clear()
    hub.plan([edit], "main", set(), _events()[1])  # an explicit revision wins
    assert fake.info_revisions == [(edit, "main")]


def test_plan_lists_files_and_marks_cached_blobs(fake: FakeHub) -> None:
    blobs = hub.repo_folder(str(fake.cache), "org/repo") / "blobs"
    blobs.mkdir(parents=True)
    (blobs / ("b" * 64)).write_bytes(b"x" * 1000)  # the LFS file, complete
    (blobs / ("a" * 40)).write_bytes(b"x" * 3)  # a truncated blob does not count
    events, emit = _events()
    assert hub.plan(["org/repo"], "main", set(), emit) == 0
    plan, end = events
    assert plan["event"] == "plan"
    assert plan["commit"] == "d" * 40
    assert [(f["path"], f["size"], f["cached"]) for f in plan["files"]] == [
        ("model_index.json", 10, False),
        ("transformer/weights.safetensors", 1000, True),
    ]
    assert end == {"event": "end", "has_token": False}


def test_plan_gated_without_token_is_not_authenticated(fake: FakeHub) -> None:
    fake.gated = True
    events, emit = _events()
    hub.plan(["org/gated"], "main", set(), emit)
    assert events[0]["event"] == "issue"
    assert events[0]["reason"] == "not_authenticated"


def test_plan_gated_with_token_probes_a_file(fake: FakeHub) -> None:
    fake.token = "hf_x"
    fake.probe_error = fake.errors.GatedRepoError("403 Client Error.\n\nCannot access gated repo", 403)
    events, emit = _events()
    # Gated because the CLI says so, even if the listing does not.
    hub.plan(["org/gated"], "main", {"org/gated"}, emit)
    assert (events[0]["event"], events[0]["reason"]) == ("issue", "access_denied")
    assert "Cannot access gated repo" in events[0]["message"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda e: e.RepositoryNotFoundError("404 Client Error.\n\nRepository Not Found", 404), "not_found"),
        (lambda e: e.RevisionNotFoundError("404", 404), "not_found"),
        (lambda e: e.HfHubHTTPError("401 Client Error.", 401), "not_authenticated"),
        (lambda e: e.HfHubHTTPError("403 Client Error.", 403), "access_denied"),
        (lambda e: e.HfHubHTTPError("502 Bad Gateway", 502), "error"),
        (lambda e: e.OfflineModeIsEnabled("offline"), "offline"),
        (lambda e: e.LocalEntryNotFoundError("cannot reach"), "unreachable"),
        (lambda e: OSError(28, "No space left on device"), "disk_full"),
        (lambda e: RuntimeError("boom"), "error"),
    ],
)
def test_errors_map_to_reasons(fake: FakeHub, make: Any, reason: str) -> None:
    fake.info_error = make(fake.errors)
    events, emit = _events()
    hub.plan(["org/repo"], "main", set(), emit)
    assert events[0]["reason"] == reason


def test_download_reports_progress_per_file_and_in_total(fake: FakeHub) -> None:
    events, emit = _events()
    assert hub.download("org/repo", "main", "d" * 40, 1, emit) == 0
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start"
    assert events[0]["total"] == 1010
    assert kinds[-2:] == ["verify", "done"]
    progress = [e for e in events if e["event"] == "progress"]
    weights = [e for e in progress if e["file"] == "transformer/weights.safetensors"]
    # Started (forced) and finished (forced) at least; the total counts every file's bytes.
    assert weights[0]["file_bytes"] == 0
    assert weights[-1]["file_bytes"] == weights[-1]["file_total"] == 1000
    assert max(e["bytes"] for e in progress) == 1010
    assert all(e["total"] == 1010 for e in progress)
    done = events[-1]
    assert done["files"][1] == {"path": "transformer/weights.safetensors", "size": 1000, "blob": "b" * 64}
    ref = hub.repo_folder(str(fake.cache), "org/repo") / "refs" / "main"
    assert ref.read_text() == "d" * 40


def test_download_skips_cached_files(fake: FakeHub) -> None:
    blobs = hub.repo_folder(str(fake.cache), "org/repo") / "blobs"
    blobs.mkdir(parents=True)
    (blobs / ("b" * 64)).write_bytes(b"x" * 1000)
    events, emit = _events()
    hub.download("org/repo", "main", "d" * 40, 2, emit)
    assert fake.downloaded == ["model_index.json"]
    assert events[0]["cached"] == 1000
    files = {e["file"]: e["cached"] for e in events if e["event"] == "file"}
    assert files == {"model_index.json": False, "transformer/weights.safetensors": True}


def test_progress_is_throttled_per_file() -> None:
    events, emit = _events()
    board = hub.ProgressBoard(emit, total=100, cached=0, interval=60)
    bar = board.progress_class("f")(total=100)
    for _ in range(9):
        bar.update(10)
    bar.update(10)  # the last update completes the file and is always reported
    assert [e["file_bytes"] for e in events] == [0, 100]


def test_cancel_stops_the_file_in_flight(fake: FakeHub) -> None:
    canceled = threading.Event()
    fake.chunk = 100

    def cancel_midway(filename: str) -> None:
        if filename.endswith(".safetensors"):
            canceled.set()

    fake.before_chunk = cancel_midway
    events, emit = _events()
    code = hub.download("org/repo", "main", "d" * 40, 1, emit, canceled)
    assert code == hub.EXIT_CANCELED
    assert events[-1] == {"event": "canceled"}
    assert not any(e["event"] == "done" for e in events)


def test_checksum_mismatch_fails_and_removes_the_damaged_file(fake: FakeHub) -> None:
    fake.mismatches = [
        {
            "path": "transformer/weights.safetensors",
            "expected": "b" * 64,
            "actual": "e" * 64,
            "algorithm": "sha256",
        }
    ]
    folder = hub.repo_folder(str(fake.cache), "org/repo")
    blob = folder / "blobs" / ("b" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"y" * 1000)
    pointer = folder / "snapshots" / ("d" * 40) / "transformer" / "weights.safetensors"
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(blob)

    events, emit = _events()
    assert hub.download("org/repo", "main", "d" * 40, 1, emit) == hub.EXIT_ERROR
    assert events[-1]["event"] == "error"
    assert events[-1]["reason"] == "checksum"
    assert "transformer/weights.safetensors" in events[-1]["message"]
    assert not blob.exists()
    assert not pointer.exists()


def test_stale_private_partials_are_removed(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    old = blobs / ("a" * 64 + ".1234abcd.incomplete")
    fresh = blobs / ("b" * 64 + ".5678abcd.incomplete")
    resumable = blobs / ("c" * 64 + ".incomplete")  # older huggingface_hub resumes these: kept
    for path in (old, fresh, resumable):
        path.write_bytes(b"x")
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(resumable, (past, past))
    assert hub.remove_stale_partials(tmp_path) == 1
    assert not old.exists()
    assert fresh.exists()
    assert resumable.exists()


def test_partials_of_unfinished_blobs_are_removed(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    ours = blobs / ("a" * 64 + ".1234abcd.incomplete")
    other_blob = blobs / ("b" * 64 + ".5678abcd.incomplete")
    resumable = blobs / ("a" * 64 + ".incomplete")
    for path in (ours, other_blob, resumable):
        path.write_bytes(b"x")
    assert hub.remove_partials(tmp_path, ["a" * 64]) == 1
    assert not ours.exists()
    assert other_blob.exists()
    assert resumable.exists()


def test_cancel_removes_the_partial_file_of_the_file_in_flight(fake: FakeHub) -> None:
    canceled = threading.Event()
    folder = hub.repo_folder(str(fake.cache), "org/repo")

    def cancel_midway(filename: str) -> None:
        if filename.endswith(".safetensors"):
            # What huggingface_hub leaves while a thread sits in a read when the process gives up.
            (folder / "blobs").mkdir(parents=True, exist_ok=True)
            (folder / "blobs" / ("b" * 64 + ".0badf00d.incomplete")).write_bytes(b"partial")
            canceled.set()

    fake.before_chunk = cancel_midway
    _, emit = _events()
    assert hub.download("org/repo", "main", "d" * 40, 1, emit, canceled) == hub.EXIT_CANCELED
    assert list((folder / "blobs").glob("*.incomplete")) == []


def test_main_without_huggingface_hub_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(hub.__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "kiapi_worker.hub", "plan", "--repo", "org/repo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        assert done.returncode == hub.EXIT_ERROR
        assert '"reason":"no_hub"' in done.stdout
        assert "kiapi activate" in done.stdout
    else:  # pragma: no cover - the tools venv has no huggingface_hub
        pytest.skip("huggingface_hub is installed here")


def test_fake_wheels_install_with_pip(tmp_path: Path) -> None:
    wheels = build_fake_wheels(tmp_path / "wheels")
    assert sorted(w.name for w in wheels) == ["mflux-0.24.0-py3-none-any.whl", "mlx-0.31.2-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as archive:
        names = archive.namelist()
        assert "mflux/__init__.py" in names
        assert not any("__pycache__" in n for n in names)
        assert (
            "Requires-Dist: huggingface_hub>=1.1.6,<2.0"
            in archive.read("mflux-0.24.0.dist-info/METADATA").decode()
        )
    target = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
        ]
        + [str(w) for w in wheels],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.metadata as m, mlx.core; print(m.version('mflux'), mlx.core.__version__)",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        timeout=60,
        check=False,
    )
    assert check.stdout.split() == ["0.24.0", "0.31.2"], check.stderr
