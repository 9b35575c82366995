"""The worker's main loop: handshake, command dispatch and the single engine thread.

The main thread only reads stdin and answers quick commands (cancel, previews, stats, shutdown),
so a cancel or a new preview demand reaches a run in flight. ``load``, ``unload`` and ``run``
execute one at a time on one engine thread: MLX work then never crosses threads, and a second
engine command while one is in flight is answered ``busy`` rather than queued.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from kiapi_worker import memory
from kiapi_worker.backend import PROGRESS_LABEL, MfluxBackend, RunControl
from kiapi_worker.commands import parse_load, parse_previews, parse_run
from kiapi_worker.engine import EngineUnavailable, import_engine
from kiapi_worker.errors import BUSY, ENGINE_ERROR, PROTOCOL, classify
from kiapi_worker.previews import Preview, PreviewDemand, jpeg_b64
from kiapi_worker.protocol import (
    Command,
    ProtocolError,
    ProtocolWriter,
    StreamClosed,
    claim_protocol_stream,
    error_message,
    parse_command,
    read_lines,
)

log = logging.getLogger("kiapi_worker")

EXIT_OK = 0
EXIT_INIT_FAILED = 3
# How long shutdown waits for a canceled run to reach its next step before exiting anyway.
DEFAULT_SHUTDOWN_GRACE_S = 2.0

Reply = dict[str, Any]


@dataclass
class _Job:
    command_id: str
    work: Callable[[], Reply]
    control: RunControl | None
    answer: bool = True


class EngineThread:
    """Executes engine commands one at a time on a dedicated daemon thread."""

    def __init__(self, writer: ProtocolWriter, stop_exception: type[BaseException] | None) -> None:
        self._writer = writer
        self._stop_exception = stop_exception
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._current: _Job | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name="kiapi-engine", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> bool:
        """Start ``job`` unless another engine command is in flight."""
        with self._lock:
            if self._current is not None:
                return False
            self._current = job
            self._idle.clear()
        self._jobs.put(job)
        return True

    def cancel(self, target: str | None = None) -> None:
        """Set the cancel flag of the run ``target`` (any run when None); unknown ids are ignored."""
        with self._lock:
            job = self._current
        if job is not None and job.control is not None and target in (None, job.command_id):
            job.control.cancel.set()

    def set_previews(self, target: str, demand: PreviewDemand | None) -> None:
        """Replace the preview demand of the run ``target``; unknown ids are ignored."""
        with self._lock:
            job = self._current
        if job is not None and job.control is not None and job.command_id == target:
            job.control.previews = demand

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)

    def finish(self, teardown: Callable[[], None], timeout: float) -> bool:
        """Run ``teardown`` as the last job, unanswered; False if it did not end within ``timeout``.

        The thread itself is kept (see ``_stop``): it waits for jobs that never come.
        """
        done = threading.Event()

        def work() -> Reply:
            try:
                teardown()
            finally:
                done.set()
            return {}

        return self.submit(_Job("", work, None, answer=False)) and done.wait(timeout)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            reply = self._execute(job)
            # Free the slot before answering: the server may send its next command at once.
            with self._lock:
                self._current = None
            try:
                if job.answer:
                    self._writer.send(reply)
            except StreamClosed:
                log.warning("server went away before reply to %s", job.command_id)
            finally:
                self._idle.set()

    def _execute(self, job: _Job) -> Reply:
        try:
            return job.work()
        except StreamClosed:
            return error_message(job.command_id, ENGINE_ERROR, "protocol stream closed")
        except BaseException as exc:  # the engine thread must survive whatever the engine raises
            code, message = classify(exc, self._stop_exception)
            if code == ENGINE_ERROR:
                log.exception("command %s failed", job.command_id)
            else:
                log.info("command %s: %s: %s", job.command_id, code, message)
            return error_message(job.command_id, code, message)


class Worker:
    """Dispatches parsed commands; one instance per process."""

    def __init__(self, writer: ProtocolWriter, backend: MfluxBackend, engine: EngineThread) -> None:
        self._writer = writer
        self._backend = backend
        self._engine = engine

    def handle(self, raw: bytes) -> bool:
        """Answer one line; False means the server asked us to shut down."""
        try:
            command = parse_command(raw)
        except ProtocolError as exc:
            self._writer.send(error_message(exc.command_id, PROTOCOL, str(exc)))
            return True
        try:
            return getattr(self, f"_on_{command.cmd}")(command)
        except ProtocolError as exc:
            self._writer.send(error_message(command.id, PROTOCOL, str(exc)))
            return True

    def _submit(self, command: Command, work: Callable[[], Reply], control: RunControl | None = None) -> bool:
        if not self._engine.submit(_Job(command.id, work, control)):
            self._writer.send(error_message(command.id, BUSY, "another load, unload or run is in progress"))
        return True

    def _on_load(self, command: Command) -> bool:
        request = parse_load(command.body, command.id)

        def work() -> Reply:
            outcome = self._backend.load(request)
            return {
                "id": command.id,
                "type": "loaded",
                "key": request.key,
                "load_s": round(outcome.load_s, 2),
                "weight_gb": outcome.weight_gb,
                "active_gb": memory.active_gb(),
            }

        return self._submit(command, work)

    def _on_unload(self, command: Command) -> bool:
        key = _key(command)

        def work() -> Reply:
            freed = self._backend.unload(key)
            return {"id": command.id, "type": "unloaded", "key": key, "freed_gb": freed}

        return self._submit(command, work)

    def _on_run(self, command: Command) -> bool:
        request = parse_run(command.body, command.id)

        def progress(step: int, total: int) -> None:
            self._writer.send(
                {"id": command.id, "type": "progress", "step": step, "total": total, "label": PROGRESS_LABEL}
            )

        def preview(step: int, total: int, made: Preview) -> None:
            self._writer.send(
                {
                    "id": command.id,
                    "type": "preview",
                    "step": step,
                    "total": total,
                    "width": made.width,
                    "height": made.height,
                    "jpeg_b64": jpeg_b64(made.jpeg),
                    "cost_ms": round(made.cost_ms, 3),
                }
            )

        control = RunControl(
            cancel=threading.Event(), on_progress=progress, previews=request.previews, on_preview=preview
        )

        def work() -> Reply:
            outcome = self._backend.run(request, control)
            return {
                "id": command.id,
                "type": "result",
                "path": request.output_path,
                "width": outcome.width,
                "height": outcome.height,
                "seed": outcome.seed,
                "timings": {"total_s": outcome.total_s},
                "warnings": outcome.warnings,
            }

        return self._submit(command, work, control)

    def _on_cancel(self, command: Command) -> bool:
        target = command.body.get("target")
        if not isinstance(target, str):
            raise ProtocolError("'cancel.target' must be a string", command.id)
        self._engine.cancel(target)
        self._writer.send({"id": command.id, "type": "ack"})
        return True

    def _on_previews(self, command: Command) -> bool:
        request = parse_previews(command.body, command.id)
        self._engine.set_previews(request.target, request.demand)
        self._writer.send({"id": command.id, "type": "ack"})
        return True

    def _on_stats(self, command: Command) -> bool:
        self._writer.send(
            {
                "id": command.id,
                "type": "stats",
                "active_gb": memory.active_gb(),
                "peak_gb": memory.peak_gb(),
                "cache_gb": memory.cache_gb(),
                "loaded": self._backend.loaded_keys(),
                "builds": self._backend.builds(),
            }
        )
        return True

    def _on_shutdown(self, command: Command) -> bool:
        self._writer.send({"id": command.id, "type": "ack"})
        return False


def _key(command: Command) -> str:
    key = command.body.get("key")
    if not isinstance(key, str) or not key:
        raise ProtocolError(f"'{command.cmd}.key' must be a non-empty string", command.id)
    return key


def _configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("KIAPI_WORKER_LOG_LEVEL", "INFO").upper(),
        format="kiapi_worker %(levelname)s %(message)s",
    )


def _shutdown_grace_s() -> float:
    try:
        return float(os.environ.get("KIAPI_WORKER_SHUTDOWN_GRACE_S", DEFAULT_SHUTDOWN_GRACE_S))
    except ValueError:
        return DEFAULT_SHUTDOWN_GRACE_S


def _stop(engine: EngineThread, backend: MfluxBackend) -> NoReturn:
    """Cancel what is running, let the engine thread tear down, then end the process with 0.

    Never returns. The process ends with ``os._exit``, not by returning through the interpreter's
    finalisation: MLX's Python binding keeps per-thread state (the thread's random key, made by
    any ``mx.random`` call such as the initialisation of ``mlx.nn`` layers) in a C++ thread_local
    whose destructor takes the GIL when the thread ends. A thread's C++ destructors run after its
    Python part has ended, so they can meet the main thread finalising the interpreter; Python
    then calls ``pthread_exit`` inside ``PyGILState_Ensure``, the unwind reaches that noexcept
    destructor, and libstdc++ aborts ("terminate called without an active exception", SIGABRT),
    after the ack was sent. The engine thread (a daemon) is therefore never let to end: it drops
    every model and synchronizes MLX as its last job, and ``os._exit`` then skips finalisation and
    C++ static destructors altogether; protocol replies are unbuffered ``os.write``s, and the log
    streams are flushed first.
    """
    engine.cancel()
    grace = _shutdown_grace_s()
    if engine.wait_idle(grace):
        if not engine.finish(backend.close, grace):
            log.warning("engine teardown still running after %.1f s; exiting without waiting", grace)
    else:
        log.warning("engine still busy after %.1f s; exiting without waiting", grace)
    backend.remove_staged_files()  # os._exit skips atexit
    _exit_process(EXIT_OK)


def _exit_process(code: int) -> NoReturn:
    """Flush the log streams and end the process now (no finalisation, no atexit, see ``_stop``)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(code)


def main() -> int:
    writer = claim_protocol_stream()  # before anything that may print is imported
    _configure_logging()
    try:
        engine = import_engine()
    except EngineUnavailable as exc:
        log.error("init failed: %s", exc)
        writer.send({"type": "init-failed", "reason": str(exc)})
        return EXIT_INIT_FAILED
    writer.send({"type": "ready", **engine.versions})
    engine_thread = EngineThread(writer, engine.stop_exception)
    backend = MfluxBackend(engine)
    worker = Worker(writer, backend, engine_thread)
    try:
        for raw in read_lines(sys.stdin.buffer):
            if not worker.handle(raw):
                break
    except StreamClosed:
        log.warning("server closed the protocol stream")
    except KeyboardInterrupt:
        log.warning("interrupted")
    _stop(engine_thread, backend)
