"""Hugging Face downloads for ``kiapi activate``, reported as JSON lines on stdout.

``python -m kiapi_worker.hub plan --repo R [--repo R2 ...] [--revision REV] [--gated R ...]``
    Before any byte is downloaded: can each repo be read with the user's token, which commit is it,
    which files does it hold and which of them are already in the cache. One ``plan`` or ``issue``
    event per repo, then ``end``. Without ``--revision`` each repo is planned at the revision the
    engine loads: the commit mflux pins for it (``engine_api.PINNED_REVISIONS``), else ``main``.

``python -m kiapi_worker.hub download --repo R --revision main --commit C``
    Downloads commit C into the standard Hugging Face cache with ``hf_hub_download`` (one call per
    file, so every file gets its own progress), lets ``snapshot_download`` do the cache's own
    bookkeeping, verifies every file with ``verify_repo_checksums`` and only then points
    ``refs/<revision>`` at C. Events: ``start``, ``progress``, ``file``, ``verify``, then ``done``,
    ``error`` or ``canceled``. Exit codes: 0 done, 1 error, 2 usage, 130 canceled (SIGINT/SIGTERM).

Everything Hub-related is huggingface_hub's own behaviour: ``HF_ENDPOINT``, ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_TOKEN`` and the token file ``hf auth login`` writes. It is imported inside
the functions, so the worker package stays importable with the standard library alone.

Resuming: files already in the cache are never fetched again, so an interrupted activation continues
where it stopped at file granularity. Within a run huggingface_hub resumes a dropped connection with
a ``Range`` request. (Since huggingface_hub 1.18 a partial file is private to the process that wrote
it and deleted when that process fails, so a file cut by Ctrl-C starts over on the next run.)
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiapi_worker.engine_api import PINNED_REVISIONS
from kiapi_worker.protocol import claim_protocol_stream

Emit = Callable[[dict[str, Any]], None]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELED = 130

# Files a gated repo shows to everyone; probing one of them would not test access.
_PUBLIC_IN_GATED = {"README.md", ".gitattributes"}
# A partial file named by huggingface_hub >= 1.18 (`<etag>.<8 hex>.incomplete`): never resumed.
_PRIVATE_PARTIAL = re.compile(r"^[0-9a-f]+\.[0-9a-f]{8}\.incomplete$")
# Older than this, such a partial file belongs to no running download.
_STALE_PARTIAL_S = 600.0
# After a cancel, threads get this long to notice it before the process exits without them.
_CANCEL_GRACE_S = 2.0


class DownloadCanceled(Exception):
    """Raised from a progress callback inside huggingface_hub, so the file in flight stops at once."""


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str | None
    blob_id: str | None

    @property
    def blob(self) -> str | None:
        """The cache's blob name: the LFS sha256, else the git blob id (the file's ETag on the Hub)."""
        return self.sha256 or self.blob_id

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "blob_id": self.blob_id}


def repo_folder(cache_dir: str, repo: str) -> Path:
    """The cache folder of a model repo (huggingface_hub's documented layout)."""
    return Path(cache_dir) / ("models--" + repo.replace("/", "--"))


def files_of(info: Any) -> list[RepoFile]:
    """The files of a ``model_info(files_metadata=True)`` answer."""
    files = []
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        files.append(
            RepoFile(
                path=sibling.rfilename,
                size=int(sibling.size or (lfs.size if lfs is not None else 0) or 0),
                sha256=getattr(lfs, "sha256", None) if lfs is not None else None,
                blob_id=getattr(sibling, "blob_id", None),
            )
        )
    return files


def is_cached(cache_dir: str, repo: str, file: RepoFile) -> bool:
    if not file.blob:
        return False
    blob = repo_folder(cache_dir, repo) / "blobs" / file.blob
    try:
        return blob.stat().st_size == file.size
    except OSError:
        return False


def classify(exc: BaseException, has_token: bool) -> tuple[str, str]:
    """(reason, message) for an exception from huggingface_hub; reasons are what the CLI explains."""
    from huggingface_hub import errors

    # huggingface_hub messages open with "404 Client Error." and say what failed on the next line.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first_line = " ".join(lines[:2]) or type(exc).__name__
    if isinstance(exc, DownloadCanceled):
        return "canceled", "canceled"
    if isinstance(exc, errors.GatedRepoError):
        return ("access_denied" if has_token else "not_authenticated"), first_line
    if isinstance(exc, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)):
        return "not_found", first_line
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return "offline", first_line
    if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return "not_authenticated", first_line
        if status == 403:
            return "access_denied", first_line
        return "error", f"HTTP {status}: {first_line}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk_full", str(exc)
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return "unreachable", f"{type(exc).__name__}: {first_line}"
    except ImportError:  # pragma: no cover - huggingface_hub 1.x depends on httpx
        pass
    if isinstance(exc, errors.LocalEntryNotFoundError):
        return "unreachable", first_line
    return "error", f"{type(exc).__name__}: {first_line}"


def _token() -> str | None:
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # e.g. a failed OIDC exchange: treat as "no usable token"
        return None


def _probe_file(files: list[RepoFile]) -> RepoFile | None:
    candidates = [f for f in files if f.path not in _PUBLIC_IN_GATED] or files
    return min(candidates, key=lambda f: f.size) if candidates else None


def engine_revision(repo: str) -> str:
    """The revision the engine loads ``repo`` from: mflux's pinned commit, else ``main``."""
    return PINNED_REVISIONS.get(repo, "main")


def plan(repos: list[str], revision: str | None, gated: set[str], emit: Emit) -> int:
    """Access, commit and file list of each repo at ``revision`` (None: the engine's revision of
    each, see ``engine_revision``); nothing is downloaded."""
    from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url

    api = HfApi()
    token = _token()
    cache_dir = constants.HF_HUB_CACHE
    asked = revision
    for repo in repos:
        revision = asked or engine_revision(repo)
        try:
            info = api.model_info(repo, revision=revision, files_metadata=True)
            files = files_of(info)
            is_gated = bool(getattr(info, "gated", False)) or repo in gated
            if is_gated:
                if token is None:
                    emit(
                        _issue(
                            repo, "not_authenticated", "the repo is gated and no Hugging Face token was found"
                        )
                    )
                    continue
                probe = _probe_file(files)
                if probe is not None:
                    # The listing is public for gated repos; only a file tells whether access was granted.
                    get_hf_file_metadata(hf_hub_url(repo, probe.path, revision=info.sha), token=token)
        except Exception as exc:
            reason, message = classify(exc, token is not None)
            emit(_issue(repo, reason, message))
            continue
        emit(
            {
                "event": "plan",
                "repo": repo,
                "revision": revision,
                "commit": info.sha,
                "gated": is_gated,
                "cache_dir": cache_dir,
                "files": [{**f.to_json(), "cached": is_cached(cache_dir, repo, f)} for f in files],
            }
        )
    emit({"event": "end", "has_token": token is not None})
    return EXIT_OK


def _issue(repo: str, reason: str, message: str) -> dict[str, Any]:
    return {"event": "issue", "repo": repo, "reason": reason, "message": message}


class ProgressBoard:
    """Bytes done per file and in total, emitted at most every ``interval`` seconds per file."""

    def __init__(
        self,
        emit: Emit,
        total: int,
        cached: int,
        interval: float = 0.25,
        canceled: threading.Event | None = None,
    ) -> None:
        self._emit = emit
        self._total = total
        self._cached = cached
        self._interval = interval
        self._lock = threading.Lock()
        self._done: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self.canceled = canceled or threading.Event()

    def set(self, file: str, done: int, file_total: int | None, force: bool = False) -> None:
        with self._lock:
            self._done[file] = max(0, done)
            now = time.monotonic()
            finished = file_total is not None and done >= file_total
            if not force and not finished and now - self._last.get(file, 0.0) < self._interval:
                return
            self._last[file] = now
            total_done = self._cached + sum(self._done.values())
        self._emit(
            {
                "event": "progress",
                "file": file,
                "file_bytes": max(0, done),
                "file_total": file_total,
                "bytes": total_done,
                "total": self._total,
            }
        )

    def progress_class(self, file: str) -> type:
        """A tqdm stand-in bound to one file, for ``hf_hub_download(tqdm_class=...)``."""
        return type("FileProgress", (FileProgress,), {"board": self, "file": file})


class FileProgress:
    """Duck-typed tqdm: huggingface_hub creates it per file (``cls(**kwargs)``) and calls ``update``.

    ``update`` is also where a cancel takes effect: raising here unwinds huggingface_hub's download
    loop, which deletes its partial file on the way out.
    """

    board: ProgressBoard
    file: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.total = kwargs.get("total")
        self.n = int(kwargs.get("initial") or 0)
        self.disable = False
        self.board.set(self.file, self.n, self.total, force=True)

    def update(self, n: float | None = 1) -> None:
        if self.board.canceled.is_set():
            raise DownloadCanceled()
        self.n += int(n or 0)
        self.board.set(self.file, self.n, self.total)

    def update_transfer(self, n: float | None = 1) -> None:
        # Xet reports network bytes here and bytes written through update(); only the latter count.
        if self.board.canceled.is_set():
            raise DownloadCanceled()

    def reset(self, total: int | None = None) -> None:
        self.n = 0
        if total is not None:
            self.total = total

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    set_transfer_postfix_str = set_postfix_str
    set_description = set_postfix_str
    refresh = set_postfix_str

    def close(self) -> None:
        pass

    def __enter__(self) -> FileProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def remove_stale_partials(folder: Path, now: float | None = None) -> int:
    """Delete partial files no download will ever resume (left by a killed process); returns the count."""
    blobs = folder / "blobs"
    if not blobs.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for entry in blobs.iterdir():
        try:
            if _PRIVATE_PARTIAL.match(entry.name) and now - entry.stat().st_mtime > _STALE_PARTIAL_S:
                entry.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def remove_partials(folder: Path, blobs: Iterable[str]) -> int:
    """Delete this process's partial files of unfinished blobs; returns the count.

    huggingface_hub holds a lock per blob while it writes ``<blob>.<8 hex>.incomplete``, so no other
    process writes these at the same time. ``<blob>.incomplete`` (older versions resume it) stays.
    """
    removed = 0
    for blob in blobs:
        for entry in (folder / "blobs").glob(f"{blob}.*.incomplete"):
            if _PRIVATE_PARTIAL.match(entry.name):
                entry.unlink(missing_ok=True)
                removed += 1
    return removed


def remove_damaged(snapshot: Path, paths: Iterable[str]) -> None:
    """Drop a file that failed verification (its pointer and its blob), so the next run fetches it again."""
    for rel in paths:
        pointer = snapshot / rel
        try:
            blob = pointer.resolve(strict=True)
        except OSError:
            blob = None
        pointer.unlink(missing_ok=True)
        if blob is not None and blob != pointer:
            blob.unlink(missing_ok=True)


def write_ref(folder: Path, revision: str, commit: str) -> None:
    if revision == commit:
        return
    ref = folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + f".{os.getpid()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)


def download(
    repo: str,
    revision: str,
    commit: str,
    max_workers: int,
    emit: Emit,
    canceled: threading.Event | None = None,
) -> int:
    """Download, verify and record one snapshot; ``canceled`` is set by a signal handler (see ``main``)."""
    from huggingface_hub import HfApi, __version__, constants, hf_hub_download, snapshot_download

    api = HfApi()
    has_token = _token() is not None
    cache_dir = constants.HF_HUB_CACHE
    folder = repo_folder(cache_dir, repo)
    remove_stale_partials(folder)
    try:
        files = files_of(api.model_info(repo, revision=commit, files_metadata=True))
    except Exception as exc:
        return _fail(emit, *classify(exc, has_token))

    cached = {f.path for f in files if is_cached(cache_dir, repo, f)}
    total = sum(f.size for f in files)
    cached_bytes = sum(f.size for f in files if f.path in cached)
    board = ProgressBoard(emit, total, cached_bytes, canceled=canceled)
    emit(
        {
            "event": "start",
            "repo": repo,
            "commit": commit,
            "files": len(files),
            "total": total,
            "cached": cached_bytes,
        }
    )

    def fetch(file: RepoFile) -> None:
        # A cached blob still needs its pointer in this snapshot (it may come from another revision).
        progress = None if file.path in cached else board.progress_class(file.path)
        hf_hub_download(repo, file.path, revision=commit, tqdm_class=progress)

    finished: set[str] = set()

    def on_done(file: RepoFile) -> None:
        finished.add(file.path)
        _file_done(emit, file, file.path in cached)

    error = _run_all(files, fetch, board, max_workers, on_done)
    if error is not None:
        # Threads still in a network read are abandoned at exit and cannot clean up after themselves.
        remove_partials(folder, [f.blob for f in files if f.path not in finished and f.blob])
    if isinstance(error, DownloadCanceled):
        emit({"event": "canceled"})
        return EXIT_CANCELED
    if error is not None:
        return _fail(emit, *classify(error, has_token))

    try:
        # The official pass over the complete snapshot: it finds every file cached and writes the
        # cache's own bookkeeping (the tree listing that offline loads use to check completeness).
        snapshot = Path(snapshot_download(repo, revision=commit, max_workers=max_workers))
        emit({"event": "verify", "files": len(files), "bytes": total})
        result = api.verify_repo_checksums(repo, revision=commit)
    except Exception as exc:
        return _fail(emit, *classify(exc, has_token))
    if result.mismatches or result.missing_paths:
        bad = [m["path"] for m in result.mismatches]
        remove_damaged(snapshot, bad)
        details = [
            f"{m['path']} ({m['algorithm']} expected {m['expected'][:12]}…, got {m['actual'][:12]}…)"
            for m in result.mismatches
        ] + [f"{p} (missing)" for p in result.missing_paths]
        return _fail(emit, "checksum", "files do not match the Hub's checksums: " + "; ".join(details))
    # Only a verified snapshot gets the branch name: tools that go by refs/main never see a bad one.
    write_ref(folder, revision, commit)

    emit(
        {
            "event": "done",
            "repo": repo,
            "revision": revision,
            "commit": commit,
            "snapshot": str(snapshot),
            "cache_dir": cache_dir,
            "files": [{"path": f.path, "size": f.size, "blob": f.blob} for f in files],
            "bytes": total,
            "huggingface_hub": __version__,
        }
    )
    return EXIT_OK


def _run_all(
    files: list[RepoFile],
    fetch: Callable[[RepoFile], None],
    board: ProgressBoard,
    max_workers: int,
    on_done: Callable[[RepoFile], None],
) -> BaseException | None:
    """Fetch every file on a thread pool; the first failure (or a cancel) stops the rest."""
    pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="kiapi-hub")
    pending: dict[Future[None], RepoFile] = {pool.submit(fetch, f): f for f in files}
    error: BaseException | None = None
    deadline: float | None = None
    while pending:
        done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        for future in done:
            file = pending.pop(future)
            if future.cancelled():
                continue
            exc = future.exception()
            if exc is None:
                on_done(file)
            elif error is None and not isinstance(exc, DownloadCanceled):
                error = exc
                board.canceled.set()
        if board.canceled.is_set() and deadline is None:
            pool.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + _CANCEL_GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            break  # a thread stuck in a network read; the process exits without it
    pool.shutdown(wait=False)
    if error is None and board.canceled.is_set():
        return DownloadCanceled()
    return error


def _file_done(emit: Emit, file: RepoFile, cached: bool) -> None:
    emit({"event": "file", "file": file.path, "size": file.size, "cached": cached})


def _fail(emit: Emit, reason: str, message: str) -> int:
    emit({"event": "error", "reason": reason, "message": message})
    return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kiapi_worker.hub")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="check access and list files; downloads nothing")
    p.add_argument("--repo", action="append", required=True)
    p.add_argument("--revision", default=None, help="default: the revision the engine loads")
    p.add_argument("--gated", action="append", default=[], help="repos known to be gated")
    d = sub.add_parser("download", help="download one snapshot into the cache and verify it")
    d.add_argument("--repo", required=True)
    d.add_argument("--revision", default="main")
    d.add_argument("--commit", required=True)
    d.add_argument("--max-workers", type=int, default=8)
    return parser


def main(argv: list[str] | None = None) -> int:
    writer = claim_protocol_stream()  # stdout carries events only
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        import huggingface_hub  # noqa: F401
    except ImportError as exc:
        writer.send({"event": "error", "reason": "no_hub", "message": f"{exc} — run kiapi activate"})
        return EXIT_ERROR
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    if args.command == "plan":
        return plan(args.repo, args.revision, set(args.gated), writer.send)
    canceled = threading.Event()
    signal.signal(signal.SIGINT, lambda _signum, _frame: canceled.set())
    signal.signal(signal.SIGTERM, lambda _signum, _frame: canceled.set())
    code = download(args.repo, args.revision, args.commit, args.max_workers, writer.send, canceled)
    if code != EXIT_OK:
        # Leave without joining download threads that may still sit in a network read.
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
