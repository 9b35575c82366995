"""JSON-lines transport: a private protocol stream, a locked writer and a command parser.

mflux, tqdm and C extensions print to stdout. The worker therefore keeps a private duplicate of
the original stdout for protocol messages and points fd 1 and ``sys.stdout`` at stderr before
anything else is imported, so nothing but protocol lines ever reaches the server.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

COMMANDS = ("load", "unload", "run", "cancel", "previews", "stats", "shutdown")


class ProtocolError(Exception):
    """A command line the worker cannot act on; answered with code ``protocol``."""

    def __init__(self, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


class StreamClosed(Exception):
    """The server closed its end of the protocol stream."""


@dataclass(frozen=True)
class Command:
    """One parsed server command: its id, its name and the whole JSON object."""

    id: str
    cmd: str
    body: dict[str, Any]


class ProtocolWriter:
    """Writes one JSON object per line; safe to call from the run thread and the main thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            try:
                _write_all(self._fd, data)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise StreamClosed("the server closed the protocol stream") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def claim_protocol_stream() -> ProtocolWriter:
    """Keep the real stdout for the protocol and send every other stdout write to stderr.

    Must run before mflux (or anything that may print) is imported.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.set_inheritable(protocol_fd, False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return ProtocolWriter(protocol_fd)


def read_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Yield raw lines from the server until EOF; blank lines are skipped."""
    for raw in stream:
        if raw.strip():
            yield raw


def parse_command(raw: bytes) -> Command:
    """Decode one line into a Command, or raise ProtocolError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"line is not UTF-8: {exc}") from exc
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"line is not valid JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"expected a JSON object, got {type(body).__name__}")
    command_id = body.get("id")
    if not isinstance(command_id, str) or not command_id:
        raise ProtocolError("command needs a non-empty string 'id'")
    cmd = body.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError("command needs a string 'cmd'", command_id)
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown cmd {cmd!r}; expected one of {', '.join(COMMANDS)}", command_id)
    return Command(id=command_id, cmd=cmd, body=body)


def error_message(command_id: str | None, code: str, message: str) -> dict[str, Any]:
    """The ``error`` reply shared by every command."""
    return {"id": command_id, "type": "error", "code": code, "message": message}
