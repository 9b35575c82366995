"""Drives ``python -m kiapi_worker`` as a real subprocess, the way the TypeScript server does."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

WORKER_DIR = Path(__file__).resolve().parents[1]
FAKE_DIR = WORKER_DIR / "tests" / "fake_mflux"
TERMINAL_TYPES = {"loaded", "unloaded", "result", "error", "stats", "ack"}


class WorkerProcess:
    """One worker process; every stdout line must be JSON or the test fails."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        with_fake: bool = True,
        python: str | None = None,
        path_entries: Iterable[str] = (),
    ) -> None:
        """``python``: the interpreter (default: this one); ``path_entries`` follow the worker's
        directory (and the fake's, with ``with_fake``) on PYTHONPATH."""
        path = [str(WORKER_DIR)] + ([str(FAKE_DIR)] if with_fake else []) + list(path_entries)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_MFLUX_")}
        full_env.update({"PYTHONPATH": os.pathsep.join(path), "PYTHONDONTWRITEBYTECODE": "1"})
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "kiapi_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=tempfile.gettempdir(),  # only PYTHONPATH may find the package, as in production
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.bad_lines: list[bytes] = []
        self._stderr: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self.bad_lines.append(line)
                continue
            self.messages.put(message)
        self.messages.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message).encode("utf-8") + b"\n")

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s; stderr:\n{self.stderr}") from None
        if message is None:
            self.messages.put(None)  # keep reporting EOF
            raise AssertionError(f"worker closed stdout (exit {self.proc.poll()}); stderr:\n{self.stderr}")
        assert not self.bad_lines, f"non-JSON on the protocol stream: {self.bad_lines!r}"
        return message

    def ready(self) -> dict[str, Any]:
        message = self.recv()
        assert message["type"] == "ready", message
        return message

    def exchange(self, message: dict[str, Any], timeout: float = 10.0) -> list[dict[str, Any]]:
        """Send one command; return every message for its id up to and including the final one."""
        self.send(message)
        return self.collect(message["id"], timeout)

    def collect(self, command_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        replies = []
        deadline = time.monotonic() + timeout
        while True:
            reply = self.recv(max(deadline - time.monotonic(), 0.01))
            assert reply.get("id") == command_id, f"unexpected message {reply} while waiting for {command_id}"
            replies.append(reply)
            if reply["type"] in TERMINAL_TYPES:
                return replies

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the exit, then for the readers to drain what the process wrote before it."""
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return code

    def close(self) -> None:
        """Kill the process if it is still alive and reap it; never leaves a child behind."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for thread in self._threads:  # EOF reaches the readers once the process is gone
            thread.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):  # unflushed input for an exited process
                    stream.close()


def load_command(
    command_id: str,
    key: str,
    family: str = "qwen",
    name: str = "image",
    repo: str = "Qwen/Qwen-Image",
    quantize: int | None = 8,
    loras: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "id": command_id,
        "cmd": "load",
        "key": key,
        "model": {"family": family, "name": name, "repo": repo, "quantize": quantize},
        "loras": list(loras),
    }


def task(operation: str = "qwen.generate", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "operation": operation,
        "prompt": "a red fox",
        "negative_prompt": None,
        "width": 64,
        "height": 64,
        "seed": 42,
        "steps": 4,
        "guidance": 4.0,
        "scheduler": None,
        "preset": None,
        "strict_caption_validation": False,
        "warn_on_caption_issues": True,
        "init_image_path": None,
        "image_strength": None,
        "image_paths": [],
    }
    base.update(overrides)
    return base


def run_command(command_id: str, key: str, output_path: Path, **task_fields: Any) -> dict[str, Any]:
    return {
        "id": command_id,
        "cmd": "run",
        "key": key,
        "output_path": str(output_path),
        "task": task(**task_fields),
    }


def read_png(path: Path) -> tuple[int, int, bytes]:
    """Check a PNG's signature, chunk CRCs and pixel data size; return (width, height, raw rows)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    offset, chunks = 8, {}
    idat = b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        tag = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == crc, f"bad CRC in {tag!r}"
        chunks[tag] = body
        if tag == b"IDAT":
            idat += body
        offset += 12 + length
    assert b"IEND" in chunks
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2), "expected 8-bit RGB"
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


def write_png(path: Path, width: int, height: int) -> Path:
    """A small valid PNG to use as an input image."""
    rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)
    return path


def write_safetensors(
    path: Path, keys: Iterable[str] = ("transformer_blocks.0.attn.to_q.lora_A.weight",)
) -> Path:
    """A small well-formed safetensors file: one 1x1 float32 tensor (zero) per key.

    The default key is a LoRA matrix, so the fake mflux (like mflux 0.24) applies it; keys without
    ``lora`` in them make a file that matches no layer.
    """
    names = list(keys)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    for index, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [1, 1], "data_offsets": [4 * index, 4 * index + 4]}
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header to a multiple of 8
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4 * len(names)))
    return path


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
