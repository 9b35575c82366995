"""The worker against the real MLX (with the fake mflux on top): clean exit, lazy weights, LoRA files.

These need an interpreter where ``import mlx.core`` works: ``KIAPI_TEST_MLX_PYTHON`` names one
(e.g. the engine's venv), else the interpreter running the tests is tried. Where MLX is missing
(the tools venv of run-checks.sh) they are skipped. Only ``mflux/`` of the fake is put on the
path, so its models build real, lazy MLX arrays on the worker's engine thread.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from worker_client import FAKE_DIR, WorkerProcess, load_command, run_command, write_safetensors

Spawn = Callable[..., WorkerProcess]


@functools.cache
def _mlx_python() -> str | None:
    python = os.environ.get("KIAPI_TEST_MLX_PYTHON") or sys.executable
    probe = subprocess.run(
        [python, "-c", "import mlx.core as mx; mx.eval(mx.ones(1))"],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        check=False,
        timeout=120,
    )
    return python if probe.returncode == 0 else None


@pytest.fixture
def real(spawn: Spawn, tmp_path_factory: pytest.TempPathFactory) -> Spawn:
    python = _mlx_python()
    if python is None:
        pytest.skip("needs the real MLX (set KIAPI_TEST_MLX_PYTHON to a Python with mlx installed)")
    only_mflux = tmp_path_factory.mktemp("fake-mflux-only")
    for entry in FAKE_DIR.iterdir():
        if entry.name.startswith("mflux"):
            (only_mflux / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())

    def start(env: dict[str, str] | None = None) -> WorkerProcess:
        full_env = {"FAKE_MFLUX_WEIGHT_GB": "0.01", **(env or {})}
        return spawn(full_env, with_fake=False, python=python, path_entries=[str(only_mflux)])

    return start


def _assert_clean_exit(worker: WorkerProcess) -> None:
    code = worker.wait(30)
    assert "terminate called" not in worker.stderr
    assert code == 0, f"exit {code}; stderr:\n{worker.stderr}"


@pytest.mark.parametrize("how", ["shutdown", "eof"])
def test_exit_is_clean_after_mlx_work_on_the_engine_thread(real: Spawn, tmp_path: Path, how: str) -> None:
    """Old worker: SIGABRT ("terminate called without an active exception") every time.

    The engine thread used mx.random (as building mlx.nn layers does); when it ended while the
    interpreter was finalising, the C++ destructor of MLX's per-thread random state took the GIL
    and was killed by pthread_exit in a noexcept frame.
    """
    worker = real()
    assert worker.ready()["device"] in ("cpu", "gpu")
    [loaded] = worker.exchange(load_command("1", "k"), timeout=60)
    assert loaded["type"] == "loaded", loaded
    replies = worker.exchange(run_command("2", "k", tmp_path / "o.png", steps=2), timeout=60)
    assert replies[-1]["type"] == "result", replies[-1]
    if how == "shutdown":
        assert worker.exchange({"id": "3", "cmd": "shutdown"}) == [{"id": "3", "type": "ack"}]
    else:
        assert worker.proc.stdin is not None
        worker.proc.stdin.close()
    _assert_clean_exit(worker)


def test_weights_are_evaluated_at_load(real: Spawn) -> None:
    """The fake's weights are a lazy mx.random array of 0.05 GiB, as mflux leaves its own."""
    worker = real({"FAKE_MFLUX_WEIGHT_GB": "0.05"})
    worker.ready()
    [loaded] = worker.exchange(load_command("1", "k"), timeout=60)
    assert loaded["weight_gb"] == pytest.approx(0.05, abs=0.002)
    assert loaded["active_gb"] >= 0.049
    [unloaded] = worker.exchange({"id": "2", "cmd": "unload", "key": "k"})
    assert unloaded["freed_gb"] == pytest.approx(0.05, abs=0.002)
    worker.exchange({"id": "3", "cmd": "shutdown"})
    _assert_clean_exit(worker)


def test_extensionless_lora_blob_loads_with_mlx_load(real: Spawn, tmp_path: Path) -> None:
    """The fake hands each LoRA path to the real ``mx.load``, which cannot read ``file_abc123``."""
    blob = tmp_path / "data.v1" / "files" / "file_abc123"
    blob.parent.mkdir(parents=True)
    write_safetensors(blob)
    worker = real()
    worker.ready()
    [loaded] = worker.exchange(load_command("1", "k", loras=[{"path": str(blob), "scale": 1.0}]), timeout=60)
    assert loaded["type"] == "loaded", loaded
    not_lora = tmp_path / "files" / "file_checkpoint"
    not_lora.parent.mkdir()
    write_safetensors(not_lora, keys=["model.diffusion_model.out.weight"])
    [error] = worker.exchange(
        load_command("2", "k2", loras=[{"path": str(not_lora), "scale": 1.0}]), timeout=60
    )
    assert error["code"] == "bad_request"
    assert error["message"].startswith("LoRA file_checkpoint matches no layer of qwen/image")
    worker.exchange({"id": "3", "cmd": "shutdown"})
    _assert_clean_exit(worker)


MATERIALISE_SCRIPT = """
import json
import mlx.core as mx
import mlx.nn as nn
from kiapi_worker.backend import materialise

class Model(nn.Module):  # set up the way mflux's initializers set up QwenImage
    def __init__(self):
        super().__init__()
        self.prompt_cache = {}
        self.tokenizers = {"qwen": object()}
        self.callbacks = object()
        self.vae = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256))
        self.transformer = nn.Linear(512, 512)
        self.text_encoder = nn.Embedding(1024, 128)

model = Model()
before = mx.get_active_memory()
materialise(model)
print(json.dumps({"grown": mx.get_active_memory() - before}))
"""


def test_materialise_covers_every_submodule_of_an_mlx_module(real: Spawn) -> None:
    python = _mlx_python()
    assert python is not None
    worker_dir = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [python, "-c", MATERIALISE_SCRIPT],
        env={**os.environ, "PYTHONPATH": str(worker_dir)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    floats = 2 * (256 * 256 + 256) + 512 * 512 + 512 + 1024 * 128
    grown = json.loads(done.stdout.splitlines()[-1])["grown"]
    assert grown == pytest.approx(4 * floats, abs=1024)  # (less the random keys MLX frees on the way)


LORA_LOADER_SCRIPT = """
import json, os, sys
import mlx.core as mx
import mlx.nn as nn
from mflux.models.common.lora.mapping.lora_loader import LoRALoader
from mflux.models.qwen.weights.qwen_lora_mapping import QwenLoRAMapping
from kiapi_worker.backend import LoraStaging, lora_load_error

blob, stranger = sys.argv[1], sys.argv[2]
for path, prefix in ((blob, "transformer_blocks.0.attn.to_q"), (stranger, "model.blocks.0.proj")):
    arrays = {f"{prefix}.lora_down.weight": mx.ones((1, 4)), f"{prefix}.lora_up.weight": mx.ones((4, 1))}
    mx.save_safetensors(path + ".safetensors", arrays)
    os.rename(path + ".safetensors", path)

class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_q = nn.Linear(4, 4)

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()

class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer_blocks = [Block()]

def apply(paths):
    LoRALoader.load_and_apply_lora(QwenLoRAMapping.get_mapping(), Transformer(), paths, [1.0])

out = {}
try:
    apply([blob])
    out["raw"] = "applied"
except ValueError as exc:
    out["raw"] = str(exc)
staging = LoraStaging()
staged, names = staging.stage([blob])
apply(staged)
out["staged"] = "applied"
staged, names = staging.stage([stranger])
try:
    apply(staged)
except ValueError as exc:
    out["stranger"] = lora_load_error(exc, names, "qwen/image").message
staging.close()
print(json.dumps(out))
"""


def test_real_lora_loader_reads_a_staged_blob(real: Spawn, tmp_path: Path) -> None:
    """mflux's own LoRALoader (when this MLX Python has mflux): the bare blob fails, the staged
    link applies, and a LoRA for other layers is answered "matches no layer"."""
    python = _mlx_python()
    assert python is not None
    worker_dir = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(worker_dir)}
    if subprocess.run([python, "-c", "import mflux"], env=env, capture_output=True, check=False).returncode:
        pytest.skip("needs mflux next to the real MLX")
    (tmp_path / "files").mkdir()
    blob, stranger = tmp_path / "files" / "file_abc123", tmp_path / "files" / "file_other"
    done = subprocess.run(
        [python, "-c", LORA_LOADER_SCRIPT, str(blob), str(stranger)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["raw"] == f"Failed to load LoRA file {blob}: [load] Could not infer file format from extension"
    assert out["staged"] == "applied"
    assert out["stranger"].startswith("LoRA file_other matches no layer of qwen/image")
    assert str(tmp_path) not in out["stranger"]
