"""The worker as a real process, driven over JSON lines against the fake mflux."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

import pytest

from worker_client import (
    WorkerProcess,
    load_command,
    read_log,
    read_png,
    run_command,
    write_png,
    write_safetensors,
)

Spawn = Callable[..., WorkerProcess]

IDEOGRAM = {"family": "ideogram4", "name": "fp8", "repo": "ideogram-ai/ideogram-4-fp8", "quantize": None}
EDIT = {"family": "qwen", "name": "edit-2509", "repo": "Qwen/Qwen-Image-Edit-2509", "quantize": 8}


def _loaded(worker: WorkerProcess, key: str = "qwen:Qwen/Qwen-Image", **model: object) -> None:
    [reply] = worker.exchange(load_command("load-1", key, **model))  # type: ignore[arg-type]
    assert reply["type"] == "loaded", reply


def _split(replies: list[dict]) -> tuple[list[dict], dict]:
    *progress, final = replies
    assert all(message["type"] == "progress" for message in progress), progress
    return progress, final


def _calls(log: Path, event: str) -> list[dict]:
    return [record for record in read_log(log) if record["event"] == event]


# --- handshake ------------------------------------------------------------------------------


def test_ready_reports_versions_and_device(spawn: Spawn) -> None:
    worker = spawn()
    ready = worker.ready()
    assert ready == {
        "type": "ready",
        "python": platform.python_version(),
        "mflux": "0.24.0",
        "mflux_supported": "0.24.0",
        "mlx": "0.31.2",
        "device": "gpu",
    }


def test_device_follows_mlx_default_device(spawn: Spawn) -> None:
    assert spawn({"FAKE_MLX_DEVICE": "cpu"}).ready()["device"] == "cpu"


def test_init_failed_without_mflux_exits_3(spawn: Spawn) -> None:
    worker = spawn(with_fake=False)
    message = worker.recv()
    assert message["type"] == "init-failed"
    assert "No module named 'mflux'" in message["reason"]
    assert "kiapi activate" in message["reason"]
    assert worker.wait() == 3


# --- the three operations -------------------------------------------------------------------


def test_qwen_generate_passes_exact_kwargs_and_writes_png(
    spawn: Spawn, tmp_path: Path, fake_log: Path
) -> None:
    lora_a = write_safetensors(tmp_path / "a.safetensors")
    lora_b = write_safetensors(tmp_path / "b.safetensors")
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    loras = [{"path": str(lora_a), "scale": 0.5}, {"path": str(lora_b), "scale": 1.25}]
    [loaded] = worker.exchange(load_command("1", "transient-1", quantize=4, loras=loras))
    assert loaded["type"] == "loaded"
    assert loaded["key"] == "transient-1"
    assert loaded["active_gb"] == pytest.approx(1.0, abs=0.01)

    out = tmp_path / "out.png"
    replies = worker.exchange(
        run_command("2", "transient-1", out, negative_prompt="blurry", scheduler="linear", seed=7, steps=4)
    )
    progress, result = _split(replies)
    assert [(p["step"], p["total"], p["label"]) for p in progress] == [
        (k, 4, "denoising") for k in range(1, 5)
    ]
    assert result["type"] == "result"
    assert result["path"] == str(out)
    assert (result["width"], result["height"], result["seed"]) == (64, 64, 7)
    assert result["timings"]["total_s"] >= 0
    assert result["warnings"] == []
    assert read_png(out)[:2] == (64, 64)
    assert not Path(f"{out}.part").exists()

    [init] = _calls(fake_log, "init")
    assert init["class"] == "QwenImage"
    assert init["args"] == []
    assert init["kwargs"] == {
        "quantize": 4,
        "model_path": "Qwen/Qwen-Image",
        "lora_paths": [str(lora_a), str(lora_b)],
        "lora_scales": [0.5, 1.25],
        "model_config": "Qwen/Qwen-Image",
    }
    assert list(init["kwargs"]) == ["quantize", "model_path", "lora_paths", "lora_scales", "model_config"]
    [generate] = _calls(fake_log, "generate_image")
    assert generate["args"] == []
    assert generate["kwargs"] == {
        "seed": 7,
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "image_path": None,
        "image_strength": None,
        "num_inference_steps": 4,
        "width": 64,
        "height": 64,
        "guidance": 4.0,
        "scheduler": "linear",
    }


def test_resident_load_passes_none_for_empty_loras(spawn: Spawn, fake_log: Path) -> None:
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    _loaded(worker)
    [init] = _calls(fake_log, "init")
    assert init["kwargs"]["lora_paths"] is None
    assert init["kwargs"]["lora_scales"] is None
    assert init["kwargs"]["quantize"] == 8


def test_null_guidance_and_scheduler_are_left_to_mflux(spawn: Spawn, tmp_path: Path, fake_log: Path) -> None:
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    _loaded(worker)
    _, result = _split(
        worker.exchange(
            run_command("2", "qwen:Qwen/Qwen-Image", tmp_path / "o.png", guidance=None, scheduler=None)
        )
    )
    assert result["type"] == "result"
    [generate] = _calls(fake_log, "generate_image")
    assert "guidance" not in generate["kwargs"]
    assert "scheduler" not in generate["kwargs"]


def test_img2img_progress_counts_only_the_remaining_steps(
    spawn: Spawn, tmp_path: Path, fake_log: Path
) -> None:
    init_image = write_png(tmp_path / "init.png", 32, 32)
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    _loaded(worker)
    replies = worker.exchange(
        run_command(
            "2",
            "qwen:Qwen/Qwen-Image",
            tmp_path / "o.png",
            steps=5,
            init_image_path=str(init_image),
            image_strength=0.4,
        )
    )
    progress, result = _split(replies)
    # init_time_step = max(1, int(5 * 0.4)) = 2, so 3 of the 5 steps run.
    assert [(p["step"], p["total"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    assert result["type"] == "result"
    [generate] = _calls(fake_log, "generate_image")
    assert generate["kwargs"]["image_path"] == str(init_image)
    assert generate["kwargs"]["image_strength"] == 0.4


def test_init_image_without_strength_is_reported(spawn: Spawn, tmp_path: Path) -> None:
    init_image = write_png(tmp_path / "init.png", 16, 16)
    worker = spawn()
    worker.ready()
    _loaded(worker)
    replies = worker.exchange(
        run_command("2", "qwen:Qwen/Qwen-Image", tmp_path / "o.png", init_image_path=str(init_image))
    )
    progress, result = _split(replies)
    assert len(progress) == 4
    assert any("init image ignored" in warning for warning in result["warnings"])


def test_qwen_edit_passes_images_in_order(spawn: Spawn, tmp_path: Path, fake_log: Path) -> None:
    images = [str(write_png(tmp_path / f"in{i}.png", 16 * (i + 1), 16)) for i in range(3)]
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    _loaded(worker, "qwen:Qwen/Qwen-Image-Edit-2509", **EDIT)
    out = tmp_path / "edit.png"
    replies = worker.exchange(
        run_command(
            "2",
            "qwen:Qwen/Qwen-Image-Edit-2509",
            out,
            operation="qwen.edit",
            image_paths=images,
            steps=3,
            width=96,
            height=64,
        )
    )
    progress, result = _split(replies)
    assert [(p["step"], p["total"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    assert (result["width"], result["height"]) == (96, 64)
    assert read_png(out)[:2] == (96, 64)
    [init] = _calls(fake_log, "init")
    assert init["class"] == "QwenImageEdit"
    assert init["kwargs"]["model_config"] == "Qwen/Qwen-Image-Edit-2509"
    [generate] = _calls(fake_log, "generate_image")
    assert generate["kwargs"] == {
        "seed": 42,
        "prompt": "a red fox",
        "negative_prompt": None,
        "image_paths": images,
        "image_path": images[0],
        "num_inference_steps": 3,
        "width": 96,
        "height": 64,
        "guidance": 4.0,
    }


def test_ideogram_uses_preset_and_returns_caption_warnings(
    spawn: Spawn, tmp_path: Path, fake_log: Path
) -> None:
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    _loaded(worker, "ideogram4:ideogram-ai/ideogram-4-fp8", **IDEOGRAM)
    out = tmp_path / "ideo.png"
    replies = worker.exchange(
        run_command(
            "2",
            "ideogram4:ideogram-ai/ideogram-4-fp8",
            out,
            operation="ideogram4.generate",
            prompt="a poster",
            width=256,
            height=320,
            preset="V4_TURBO_12",
            steps=99,
            guidance=3.0,
        )
    )
    progress, result = _split(replies)
    assert [p["step"] for p in progress] == list(range(1, 13))
    assert {p["total"] for p in progress} == {12}
    assert result["type"] == "result"
    assert read_png(out)[:2] == (256, 320)
    assert len(result["warnings"]) == 1
    assert result["warnings"][0].startswith("Ideogram 4 caption: plain prompt")
    [init] = _calls(fake_log, "init")
    assert init["class"] == "Ideogram4"
    assert list(init["kwargs"]) == ["quantize", "model_path", "model_config", "lora_paths", "lora_scales"]
    assert init["kwargs"]["model_config"] == "ideogram-ai/ideogram-4-fp8"
    [generate] = _calls(fake_log, "generate_image")
    assert generate["kwargs"] == {
        "seed": 42,
        "prompt": "a poster",
        "width": 256,
        "height": 320,
        "preset": "V4_TURBO_12",
        "strict_caption_validation": False,
        "warn_on_caption_issues": True,
    }


def test_ideogram_object_prompt_and_strict_failure(spawn: Spawn, tmp_path: Path, fake_log: Path) -> None:
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    _loaded(worker, "ideo", **IDEOGRAM)
    caption = {
        "high_level_description": "a cat",
        "compositional_deconstruction": {"background": "x", "elements": []},
    }
    common = {"operation": "ideogram4.generate", "width": 256, "height": 256, "preset": "V4_TURBO_12"}
    _, result = _split(
        worker.exchange(run_command("2", "ideo", tmp_path / "a.png", prompt=caption, **common))
    )
    assert result["type"] == "result"
    assert result["warnings"] == []
    assert _calls(fake_log, "generate_image")[0]["kwargs"]["prompt"] == caption

    [error] = worker.exchange(
        run_command("3", "ideo", tmp_path / "b.png", prompt="plain", strict_caption_validation=True, **common)
    )
    assert error["code"] == "bad_request"
    assert error["message"].startswith("Ideogram 4 caption validation failed:")


# --- cancel, busy, failures -----------------------------------------------------------------


def test_cancel_stops_at_the_next_step(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn({"FAKE_MFLUX_STEP_S": "0.2"})
    worker.ready()
    _loaded(worker)
    out = tmp_path / "o.png"
    worker.send(run_command("run-1", "qwen:Qwen/Qwen-Image", out, steps=20))
    first = worker.recv()
    assert (first["id"], first["type"], first["step"]) == ("run-1", "progress", 1)
    worker.send({"id": "c-1", "cmd": "cancel", "target": "run-1"})
    replies = []
    while not replies or replies[-1].get("type") not in ("result", "error"):
        replies.append(worker.recv())
    assert {"id": "c-1", "type": "ack"} in replies
    final = replies[-1]
    assert (final["id"], final["type"], final["code"]) == ("run-1", "error", "canceled")
    steps = [m["step"] for m in replies if m.get("type") == "progress"]
    assert len(steps) < 10, "the run went on long after the cancel"
    assert not out.exists()

    # The worker is free again and the model still works.
    _, result = _split(worker.exchange(run_command("run-2", "qwen:Qwen/Qwen-Image", out, steps=1)))
    assert result["type"] == "result"


def test_cancel_of_unknown_run_is_acked(spawn: Spawn) -> None:
    worker = spawn()
    worker.ready()
    assert worker.exchange({"id": "9", "cmd": "cancel", "target": "nope"}) == [{"id": "9", "type": "ack"}]


def test_second_run_while_running_is_busy(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn({"FAKE_MFLUX_STEP_S": "0.2"})
    worker.ready()
    _loaded(worker)
    worker.send(run_command("a", "qwen:Qwen/Qwen-Image", tmp_path / "a.png", steps=3))
    worker.send(run_command("b", "qwen:Qwen/Qwen-Image", tmp_path / "b.png", steps=3))
    messages = []
    while not any(m.get("id") == "a" and m["type"] == "result" for m in messages):
        messages.append(worker.recv())
    busy = [m for m in messages if m.get("id") == "b"]
    assert [(m["type"], m["code"]) for m in busy] == [("error", "busy")]


def test_crash_exits_non_zero_with_reason_on_stderr(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn({"FAKE_MFLUX_CRASH_AT_STEP": "2"})
    worker.ready()
    _loaded(worker)
    worker.send(run_command("2", "qwen:Qwen/Qwen-Image", tmp_path / "o.png"))
    assert worker.recv()["step"] == 1
    assert worker.wait() == 9
    assert "simulated crash at step 2" in worker.stderr


def test_hung_engine_still_answers_and_shuts_down(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn({"FAKE_MFLUX_HANG_AT_STEP": "1", "KIAPI_WORKER_SHUTDOWN_GRACE_S": "0.2"})
    worker.ready()
    _loaded(worker)
    worker.send(run_command("2", "qwen:Qwen/Qwen-Image", tmp_path / "o.png"))
    [stats] = worker.exchange({"id": "3", "cmd": "stats"})
    assert stats["type"] == "stats"
    assert worker.exchange({"id": "4", "cmd": "shutdown"}) == [{"id": "4", "type": "ack"}]
    assert worker.wait(timeout=10) == 0


def test_engine_garbage_never_reaches_the_protocol(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn({"FAKE_MFLUX_GARBAGE": "1"})
    worker.ready()
    _loaded(worker)
    _, result = _split(worker.exchange(run_command("2", "qwen:Qwen/Qwen-Image", tmp_path / "o.png")))
    assert result["type"] == "result"
    assert worker.exchange({"id": "3", "cmd": "shutdown"})[0]["type"] == "ack"
    assert worker.wait() == 0
    assert worker.bad_lines == []
    for route in ("print()", "sys.__stdout__", "fd 1"):
        assert f"GARBAGE from {route} in import mflux" in worker.stderr
        assert f"GARBAGE from {route} in step 1" in worker.stderr


@pytest.mark.parametrize(
    ("raise_spec", "code", "text"),
    [
        ("width must be a multiple of 16", "bad_request", "width must be a multiple of 16"),
        ("NotImplementedError: no such scheduler", "bad_request", "no such scheduler"),
        ("RuntimeError: kernel exploded", "engine_error", "RuntimeError: kernel exploded"),
        ("KeyError: missing weight", "engine_error", "KeyError"),
        ("MemoryError: cannot allocate", "out_of_memory", "cannot allocate"),
        ("RuntimeError: [metal::malloc] Attempting to allocate 9 GB", "out_of_memory", "metal::malloc"),
    ],
)
def test_engine_exceptions_map_to_codes(
    spawn: Spawn, tmp_path: Path, raise_spec: str, code: str, text: str
) -> None:
    worker = spawn({"FAKE_MFLUX_RAISE": raise_spec})
    worker.ready()
    _loaded(worker)
    [error] = worker.exchange(run_command("2", "qwen:Qwen/Qwen-Image", tmp_path / "o.png"))
    assert (error["type"], error["code"]) == ("error", code)
    assert text in error["message"]


def test_unknown_scheduler_is_refused_before_mflux(spawn: Spawn, tmp_path: Path, fake_log: Path) -> None:
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    _loaded(worker)
    for index, scheduler in enumerate(("os.system", "karras")):
        [error] = worker.exchange(
            run_command(str(index), "qwen:Qwen/Qwen-Image", tmp_path / "o.png", scheduler=scheduler)
        )
        assert error["code"] == "bad_request"
        assert "unknown scheduler" in error["message"]
    assert _calls(fake_log, "generate_image") == []


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "LoRA file not found"), (b"not a safetensors file", "not a readable safetensors file")],
)
def test_unusable_lora_file_fails_the_load(
    spawn: Spawn, tmp_path: Path, fake_log: Path, content: bytes | None, message: str
) -> None:
    """Refused before mflux is asked; the message names the file, not the server's directories."""
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    lora = tmp_path / "lora.safetensors"
    if content is not None:
        lora.write_bytes(content)
    [error] = worker.exchange(load_command("1", "t", loras=[{"path": str(lora), "scale": 1.0}]))
    assert error["code"] == "bad_request"
    assert message in error["message"]
    assert "lora.safetensors" in error["message"]
    assert str(tmp_path) not in error["message"]
    assert _calls(fake_log, "init") == []


@pytest.mark.parametrize("directory", ["files", "data.v2/files"])
def test_extensionless_lora_blob_is_loaded(
    spawn: Spawn, tmp_path: Path, fake_log: Path, directory: str
) -> None:
    """A Files API blob has no extension; MLX's loader infers the format from the whole path's last
    '.', so mflux 0.24 fails on the blob itself (0.18 skipped it and generated without it)."""
    blob = tmp_path / directory / "file_abc123"
    blob.parent.mkdir(parents=True)
    write_safetensors(blob)
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log)})
    worker.ready()
    [loaded] = worker.exchange(load_command("1", "k", loras=[{"path": str(blob), "scale": 0.5}]))
    assert loaded["type"] == "loaded", loaded
    [init] = _calls(fake_log, "init")
    [given] = init["kwargs"]["lora_paths"]
    assert given.endswith("file_abc123.safetensors")
    assert init["kwargs"]["lora_scales"] == [0.5]
    assert not Path(given).parent.exists(), "the link and its directory go once the model is built"
    assert blob.exists()


def test_lora_matching_no_layer_is_refused(spawn: Spawn, tmp_path: Path) -> None:
    """mflux 0.24 raises when a LoRA applies to no layer; the answer names the file and the model."""
    blob = tmp_path / "files" / "file_nolayer"
    blob.parent.mkdir()
    write_safetensors(blob, keys=["model.diffusion_model.input_blocks.0.weight"])
    worker = spawn({"FAKE_MFLUX_WEIGHT_GB": "1"})
    worker.ready()
    [error] = worker.exchange(load_command("1", "k", loras=[{"path": str(blob), "scale": 1.0}]))
    assert error["code"] == "bad_request"
    assert error["message"].startswith("LoRA file_nolayer matches no layer of qwen/image")
    assert "Key endings seen in the file" in error["message"]
    assert str(tmp_path) not in error["message"]
    assert ".safetensors" not in error["message"], "the staged link's name stays private"
    [stats] = worker.exchange({"id": "s", "cmd": "stats"})
    assert stats["loaded"] == []
    assert stats["builds"] == []


def test_run_on_unloaded_key_is_not_loaded(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn()
    worker.ready()
    [error] = worker.exchange(run_command("1", "nothing", tmp_path / "o.png"))
    assert error["code"] == "not_loaded"


def test_operation_must_match_the_loaded_model(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn()
    worker.ready()
    _loaded(worker)
    [error] = worker.exchange(
        run_command(
            "1",
            "qwen:Qwen/Qwen-Image",
            tmp_path / "o.png",
            operation="qwen.edit",
            image_paths=[str(tmp_path / "x.png")],
        )
    )
    assert error["code"] == "protocol"


# --- residency and memory -------------------------------------------------------------------


def test_loading_a_loaded_key_constructs_once(spawn: Spawn, fake_log: Path) -> None:
    worker = spawn({"FAKE_MFLUX_LOG": str(fake_log), "FAKE_MFLUX_LOAD_S": "0.05"})
    worker.ready()
    _loaded(worker)
    [again] = worker.exchange(load_command("2", "qwen:Qwen/Qwen-Image"))
    assert again["type"] == "loaded"
    assert again["load_s"] == 0
    assert len(_calls(fake_log, "init")) == 1


def test_load_materialises_weights_and_reports_their_size(spawn: Spawn) -> None:
    """mflux leaves weights lazy; the worker evaluates them at load and measures the growth."""
    worker = spawn({"FAKE_MFLUX_WEIGHT_GB": "1.5", "FAKE_MFLUX_LOAD_S": "0.05"})
    worker.ready()
    [loaded] = worker.exchange(load_command("1", "a"))
    assert loaded["weight_gb"] == pytest.approx(1.5, abs=0.001)
    assert loaded["active_gb"] == pytest.approx(1.5, abs=0.001)
    assert loaded["load_s"] >= 0.05
    [loaded] = worker.exchange(load_command("2", "b", **IDEOGRAM))
    assert loaded["weight_gb"] == pytest.approx(1.5, abs=0.001)
    assert loaded["active_gb"] == pytest.approx(3.0, abs=0.001)
    [again] = worker.exchange(load_command("3", "a"))
    assert (again["load_s"], again["weight_gb"]) == (0, pytest.approx(1.5, abs=0.001))
    [stats] = worker.exchange({"id": "s", "cmd": "stats"})
    assert stats["builds"] == [
        {"key": "a", "weight_gb": pytest.approx(1.5, abs=0.001)},
        {"key": "b", "weight_gb": pytest.approx(1.5, abs=0.001)},
    ]


def test_unload_frees_memory_and_stats_report_it(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn({"FAKE_MFLUX_WEIGHT_GB": "2"})
    worker.ready()
    _loaded(worker, "a")
    _loaded(worker, "b", **IDEOGRAM)
    _split(worker.exchange(run_command("r", "a", tmp_path / "o.png", steps=1)))
    [stats] = worker.exchange({"id": "s1", "cmd": "stats"})
    assert stats["active_gb"] == pytest.approx(4.0, abs=0.01)
    assert stats["peak_gb"] == pytest.approx(4.2, abs=0.01)  # + the run's activations
    assert stats["loaded"] == ["a", "b"]

    [unloaded] = worker.exchange({"id": "u", "cmd": "unload", "key": "a"})
    assert unloaded == {"id": "u", "type": "unloaded", "key": "a", "freed_gb": pytest.approx(2.0, abs=0.01)}
    [stats] = worker.exchange({"id": "s2", "cmd": "stats"})
    assert stats["active_gb"] == pytest.approx(2.0, abs=0.01)
    assert stats["cache_gb"] == 0.0  # freed buffers were returned, not left in MLX's cache
    assert stats["loaded"] == ["b"]

    [unknown] = worker.exchange({"id": "u2", "cmd": "unload", "key": "a"})
    assert unknown == {"id": "u2", "type": "unloaded", "key": "a", "freed_gb": 0.0}


# --- protocol hygiene -----------------------------------------------------------------------


def test_bad_lines_get_protocol_errors_and_the_worker_goes_on(spawn: Spawn) -> None:
    worker = spawn()
    worker.ready()
    worker.send_raw(b"this is not json\n")
    error = worker.recv()
    assert (error["id"], error["type"], error["code"]) == (None, "error", "protocol")
    assert "not valid JSON" in error["message"]
    for line, expected_id in (
        (b'{"cmd":"stats"}\n', None),
        (b"[1, 2]\n", None),
        (b"\xff\xfe\n", None),
        (b'{"id":"7"}\n', "7"),
        (b'{"id":"8","cmd":"fly"}\n', "8"),
        (b'{"id":"9","cmd":"load","key":"k","model":{"family":"qwen","name":"turbo","repo":"r"}}\n', "9"),
        (b'{"id":"10","cmd":"run","key":"k","output_path":"relative.png","task":{}}\n', "10"),
    ):
        worker.send_raw(line)
        error = worker.recv()
        assert (error["id"], error["type"], error["code"]) == (expected_id, "error", "protocol"), line
    [stats] = worker.exchange({"id": "11", "cmd": "stats"})
    assert stats["type"] == "stats"


def test_shutdown_acks_and_exits_zero(spawn: Spawn) -> None:
    worker = spawn()
    worker.ready()
    assert worker.exchange({"id": "1", "cmd": "shutdown"}) == [{"id": "1", "type": "ack"}]
    assert worker.wait() == 0


def test_shutdown_with_models_loaded_exits_zero(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn()
    worker.ready()
    _loaded(worker, "a")
    _split(worker.exchange(run_command("r", "a", tmp_path / "o.png", steps=1)))
    assert worker.exchange({"id": "1", "cmd": "shutdown"}) == [{"id": "1", "type": "ack"}]
    assert worker.wait() == 0


def test_eof_exits_zero(spawn: Spawn) -> None:
    worker = spawn()
    worker.ready()
    assert worker.proc.stdin is not None
    worker.proc.stdin.close()
    assert worker.wait() == 0
