"""In-process tests of the adapter's pieces: call building, progress hook, errors, memory, parsing."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from kiapi_worker import memory
from kiapi_worker.backend import (
    LoraStaging,
    ProgressHook,
    RunControl,
    generate_kwargs,
    init_kwargs,
    lora_load_error,
    materialise,
    trim_prompt_cache,
)
from kiapi_worker.commands import parse_load, parse_task
from kiapi_worker.engine_api import CALL_SHAPES, OMIT_WHEN_NULL
from kiapi_worker.errors import classify
from kiapi_worker.protocol import ProtocolError, parse_command
from worker_client import read_png


class Stop(Exception):
    pass


def _task(operation: str, **overrides: object) -> dict:
    body = {
        "operation": operation,
        "prompt": "p",
        "negative_prompt": "n",
        "width": 64,
        "height": 64,
        "seed": 1,
        "steps": 2,
        "guidance": 3.5,
        "scheduler": "linear",
        "preset": "V4_TURBO_12",
        "strict_caption_validation": True,
        "warn_on_caption_issues": False,
        "init_image_path": "/in.png",
        "image_strength": 0.5,
        "image_paths": ["/a.png", "/b.png"],
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize("operation", list(CALL_SHAPES))
def test_generate_kwargs_are_exactly_the_declared_shape(operation: str) -> None:
    kwargs = generate_kwargs(parse_task(_task(operation), "1"))
    assert tuple(kwargs) == CALL_SHAPES[operation].generate_keywords


@pytest.mark.parametrize("operation", list(CALL_SHAPES))
def test_null_optional_keywords_are_left_out(operation: str) -> None:
    kwargs = generate_kwargs(parse_task(_task(operation, guidance=None, scheduler=None), "1"))
    expected = tuple(k for k in CALL_SHAPES[operation].generate_keywords if k not in OMIT_WHEN_NULL)
    assert tuple(kwargs) == expected


def test_edit_passes_first_image_as_image_path() -> None:
    kwargs = generate_kwargs(parse_task(_task("qwen.edit"), "1"))
    assert kwargs["image_paths"] == ["/a.png", "/b.png"]
    assert kwargs["image_path"] == "/a.png"


@pytest.mark.parametrize("shape", list(CALL_SHAPES.values()), ids=list(CALL_SHAPES))
def test_init_kwargs_are_exactly_the_declared_shape(shape) -> None:
    body = {
        "key": "k",
        "model": {"family": shape.family, "name": shape.name, "repo": "org/repo", "quantize": 8},
        "loras": [{"path": "/l.safetensors", "scale": 0.7}],
    }
    kwargs = init_kwargs(parse_load(body, "1"), model_config="CONFIG")
    assert tuple(kwargs) == shape.init_keywords
    assert kwargs["lora_paths"] == ["/l.safetensors"]
    assert kwargs["lora_scales"] == [0.7]
    assert kwargs["model_config"] == "CONFIG"


def test_progress_hook_counts_steps_and_cancels() -> None:
    seen: list[tuple[int, int]] = []
    control = RunControl(cancel=threading.Event(), on_progress=lambda s, t: seen.append((s, t)))
    hook = ProgressHook(Stop)
    hook.call_in_loop(t=0, seed=1, prompt="p", latents=None, config=None, time_steps=SimpleNamespace(total=3))
    hook.bind(control)
    stale = SimpleNamespace(n=0, total=3)  # tqdm's n lags on fast steps
    hook.call_in_loop(t=0, seed=1, prompt="p", latents=None, config=None, time_steps=stale)
    hook.call_in_loop(t=1, seed=1, prompt="p", latents=None, config=None, time_steps=stale)
    control.cancel.set()
    with pytest.raises(Stop, match="step 3/3"):
        hook.call_in_loop(t=2, seed=1, prompt="p", latents=None, config=None, time_steps=stale)
    assert seen == [(1, 3), (2, 3)]


def test_progress_total_falls_back_to_config() -> None:
    seen: list[tuple[int, int]] = []
    hook = ProgressHook(Stop)
    hook.bind(RunControl(cancel=threading.Event(), on_progress=lambda s, t: seen.append((s, t))))
    config = SimpleNamespace(num_inference_steps=7)
    hook.call_in_loop(
        t=0, seed=1, prompt="p", latents=None, config=config, time_steps=SimpleNamespace(total=None)
    )
    assert seen == [(1, 7)]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (Stop("canceled at step 2/4"), "canceled"),
        (ValueError("width must be in [256, 2048], got 64"), "bad_request"),
        (NotImplementedError("The scheduler 'x' is not implemented by mflux."), "bad_request"),
        (MemoryError(), "out_of_memory"),
        (RuntimeError("[METAL] Command buffer execution failed: Insufficient Memory"), "out_of_memory"),
        (RuntimeError("boom"), "engine_error"),
        (OSError("disk full"), "engine_error"),
    ],
)
def test_classify(exc: BaseException, code: str) -> None:
    assert classify(exc, Stop)[0] == code


def test_engine_error_message_names_the_type() -> None:
    assert classify(KeyError("w"), Stop) == ("engine_error", "KeyError: 'w'")


def test_memory_helpers_tolerate_missing_mlx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    assert memory.active_gb() == 0.0
    assert memory.peak_gb() == 0.0
    assert memory.cache_gb() is None
    assert memory.device_name() == "unknown"
    memory.reset_peak()
    memory.release_cached()


def test_memory_helpers_read_mlx() -> None:
    import mlx.core as mx

    buffer = mx.FakeBuffer(memory.GIB // 2)
    assert memory.active_gb() >= 0.5
    del buffer
    assert memory.cache_gb() is not None
    memory.release_cached()
    assert memory.cache_gb() == 0.0
    assert memory.device_name() == "gpu"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"cmd":"stats"}', "non-empty string 'id'"),
        (b'{"id":"1"}', "string 'cmd'"),
        (b'{"id":"1","cmd":"dance"}', "unknown cmd 'dance'"),
    ],
)
def test_parse_command_errors(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_command(line)


def test_parse_load_rejects_unknown_model_and_relative_lora() -> None:
    model = {"family": "qwen", "name": "image", "repo": "r", "quantize": None}
    with pytest.raises(ProtocolError, match="unknown model qwen/turbo"):
        parse_load({"key": "k", "model": {**model, "name": "turbo"}}, "1")
    with pytest.raises(ProtocolError, match="absolute path"):
        parse_load({"key": "k", "model": model, "loras": [{"path": "x.safetensors", "scale": 1}]}, "1")


def test_fake_png_is_valid_and_seeded(tmp_path) -> None:
    from mflux._fake import FakeImage

    first, second = tmp_path / "a.png", tmp_path / "b.png"
    FakeImage(33, 17, seed=1).save(first, format="PNG")
    FakeImage(33, 17, seed=2).save(second, format="PNG")
    width, height, raw = read_png(first)
    assert (width, height) == (33, 17)
    assert raw != read_png(second)[2]


def test_prompt_cache_is_trimmed_oldest_first() -> None:
    model = SimpleNamespace(prompt_cache={f"p{i}|NEG|None": object() for i in range(20)})
    assert trim_prompt_cache(model, limit=16) == 4
    assert next(iter(model.prompt_cache)) == "p4|NEG|None"
    assert len(model.prompt_cache) == 16
    assert trim_prompt_cache(model, limit=16) == 0


def test_prompt_cache_trim_tolerates_models_without_one() -> None:
    assert trim_prompt_cache(SimpleNamespace()) == 0


# --- LoRA files and mflux 0.24's LoRA errors ------------------------------------------------


def test_lora_staging_links_only_paths_mlx_cannot_load(tmp_path) -> None:
    blob = tmp_path / "v1.2" / "file_a b"
    blob.parent.mkdir()
    blob.write_bytes(b"x")
    named = tmp_path / "style.safetensors"
    named.write_bytes(b"y")
    staging = LoraStaging()
    paths, names = staging.stage([str(blob), str(named)])
    assert paths[1] == str(named)
    assert paths[0].endswith("/1-file_a_b.safetensors")
    assert Path(paths[0]).read_bytes() == b"x"
    assert names == {paths[0]: "file_a b", paths[1]: "style.safetensors"}
    directory = Path(paths[0]).parent
    assert directory.stat().st_mode & 0o077 == 0, "private to this process"
    staging.release(paths)
    assert not directory.exists()
    assert named.exists()
    assert blob.exists()
    again, _ = staging.stage([str(blob)])
    assert Path(again[0]).parent != directory
    assert staging.stage([str(named)]) == ([str(named)], {str(named): "style.safetensors"})
    staging.close()
    assert not Path(again[0]).parent.exists()
    staging.close()


def test_lora_staging_falls_back_to_a_copy(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise OSError("not here")

    monkeypatch.setattr(os, "symlink", refuse)
    monkeypatch.setattr(os, "link", refuse)
    blob = tmp_path / "file_c"
    blob.write_bytes(b"z")
    staging = LoraStaging()
    [path], _ = staging.stage([str(blob)])
    assert not Path(path).is_symlink()
    assert Path(path).read_bytes() == b"z"
    staging.close()


STAGED = "/tmp/kiapi-worker-1-loras-x/1/1-file_abc.safetensors"
NAMES = {STAGED: "file_abc", "/data/named.safetensors": "named.safetensors"}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            ValueError(
                f"Failed to load LoRA file {STAGED}: [load] Could not infer file format from extension"
            ),
            "LoRA file_abc could not be loaded ([load] Could not infer file format from extension); "
            "pass a LoRA adapter in .safetensors format",
        ),
        (
            ValueError(
                "No LoRA layers were applied from 1-file_abc.safetensors. Key endings seen in the file: "
                "['out.weight']. This model's mapping expects endings like lora_A/lora_B."
            ),
            "LoRA file_abc matches no layer of qwen/image: it was made for another model or names its "
            "layers in a way mflux does not read; pass a LoRA trained for qwen/image "
            "(Key endings seen in the file: ['out.weight'])",
        ),
        (
            ValueError(
                "2 of the 5 layers named by named.safetensors could not be applied (a, b); each reason "
                "is printed above. The adapter and this model do not match."
            ),
            "LoRA named.safetensors does not fit qwen/image: 2 of the 5 layers named by named.safetensors "
            "could not be applied (a, b); each reason is printed above. The adapter and this model do not "
            "match.",
        ),
        (
            FileNotFoundError(f"LoRA file not found: '{STAGED}'. File does not exist."),
            "LoRA file_abc could not be loaded (LoRA file not found: 'file_abc'. File does not exist.); "
            "pass a LoRA adapter in .safetensors format",
        ),
    ],
)
def test_lora_errors_name_the_lora_not_its_path(exc: BaseException, expected: str) -> None:
    error = lora_load_error(exc, NAMES, "qwen/image")
    assert error is not None
    assert (error.code, error.message) == ("bad_request", expected)
    assert "/tmp/" not in error.message
    assert "/data/" not in error.message


def test_lora_error_found_from_the_loaders_frame() -> None:
    """A message that names no file (e.g. two keys mapping to one slot) is tied to the LoRA that
    mflux's loader (a file under .../lora/) was applying, read from that frame's ``lora_file``."""
    source = (
        "def _apply_single_lora(lora_file):\n    raise ValueError('LoRA keys a and b both map to x.lora_A')\n"
    )
    namespace: dict = {}
    exec(compile(source, "/site-packages/mflux/models/common/lora/mapping/lora_loader.py", "exec"), namespace)
    with pytest.raises(ValueError, match="both map to") as caught:
        namespace["_apply_single_lora"](STAGED)
    error = lora_load_error(caught.value, NAMES, "qwen/image")
    assert error is not None
    assert (
        error.message
        == "LoRA file_abc cannot be applied to qwen/image: LoRA keys a and b both map to x.lora_A"
    )


def test_other_load_errors_are_left_alone() -> None:
    assert lora_load_error(ValueError("bad quantize"), NAMES, "qwen/image") is None
    assert lora_load_error(RuntimeError(f"boom {STAGED}"), NAMES, "qwen/image") is None
    assert lora_load_error(ValueError(f"x {STAGED}"), {}, "qwen/image") is None


def test_materialise_evaluates_the_parameter_tree() -> None:
    import mlx.core as mx

    weights = [mx.FakeArray(1024), mx.FakeArray(2048)]
    model = SimpleNamespace(parameters=lambda: {"vae": {"w": weights[0]}, "transformer": [{"w": weights[1]}]})
    before = mx.get_active_memory()
    materialise(model)
    assert all(weight.evaluated for weight in weights)
    assert mx.get_active_memory() - before == 3072
    materialise(SimpleNamespace())  # a model without parameters() is left as it is
