"""Step previews: the projection helpers on synthetic data, the fit through the fake mflux's
pipeline, the hook's failure handling, and the protocol (``run.previews``, the ``previews``
command, ``preview`` messages) against a real worker process."""

from __future__ import annotations

import base64
import functools
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kiapi_worker import previews
from kiapi_worker.backend import ProgressHook, RunControl
from kiapi_worker.commands import parse_previews, parse_run
from kiapi_worker.engine_api import PREVIEW_PATHS
from kiapi_worker.protocol import ProtocolError
from worker_client import WORKER_DIR, WorkerProcess, load_command, run_command

Spawn = Callable[..., WorkerProcess]
QWEN = PREVIEW_PATHS["qwen.generate"]
IDEOGRAM = PREVIEW_PATHS["ideogram4.generate"]
PREVIEW_KEYS = {"id", "type", "step", "total", "width", "height", "jpeg_b64", "cost_ms"}


# --- helpers on synthetic data --------------------------------------------------------------


@pytest.mark.parametrize("path", [QWEN, IDEOGRAM], ids=["qwen", "ideogram4"])
def test_pack_and_unpack_are_inverse(path: previews.PreviewPath) -> None:
    tokens = np.random.default_rng(1).standard_normal((3 * 5, 4 * path.channels)).astype(np.float32)
    grid = previews.unpack_tokens(tokens, 3, 5, path)
    assert grid.shape == (6, 10, path.channels)
    np.testing.assert_array_equal(previews.pack_pixels(grid, path), tokens)


def test_unpack_follows_each_familys_token_order() -> None:
    """Qwen: a token's values run channel first; Ideogram 4: patch position first."""
    qwen = np.zeros((1, 64), dtype=np.float32)
    qwen[0, 5 * 4 + 1 * 2 + 0] = 1.0  # channel 5, patch row 1, column 0
    assert np.argwhere(previews.unpack_tokens(qwen, 1, 1, QWEN)).tolist() == [[1, 0, 5]]
    ideogram = np.zeros((1, 128), dtype=np.float32)
    ideogram[0, (0 * 2 + 1) * 32 + 7] = 1.0  # patch row 0, column 1, channel 7
    assert np.argwhere(previews.unpack_tokens(ideogram, 1, 1, IDEOGRAM)).tolist() == [[0, 1, 7]]


def test_fit_recovers_a_known_linear_map() -> None:
    rng = np.random.default_rng(2)
    weights = rng.standard_normal((16, 3)).astype(np.float32)
    bias = np.array([0.5, 0.25, -0.1], dtype=np.float32)
    latents = rng.standard_normal((800, 16)).astype(np.float32)
    colours = latents @ weights + bias + rng.normal(0, 1e-3, (800, 3))
    fitted_w, fitted_b, r2 = previews.fit_linear(latents, colours)
    np.testing.assert_allclose(fitted_w, weights, atol=1e-3)
    np.testing.assert_allclose(fitted_b, bias, atol=1e-3)
    assert r2 > 0.999


def test_fit_of_noise_explains_nothing() -> None:
    rng = np.random.default_rng(3)
    _, _, r2 = previews.fit_linear(rng.standard_normal((500, 16)), rng.standard_normal((500, 3)))
    assert r2 < 0.1


def test_average_pool_takes_the_mean_of_each_block() -> None:
    image = np.arange(4 * 6 * 1, dtype=np.float32).reshape(4, 6, 1)
    pooled = previews.average_pool(image, 2)
    assert pooled.shape == (2, 3, 1)
    assert pooled[0, 0, 0] == np.mean([0, 1, 6, 7])
    assert pooled[1, 2, 0] == np.mean([16, 17, 22, 23])


def test_projection_clips_to_8_bit() -> None:
    grid = np.array([[[1.0, 0.0], [-1.0, 0.0]]], dtype=np.float32)  # 1 x 2 pixels, 2 channels
    weights = np.array([[2.0, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    rgb = previews.project(grid, weights, np.array([0.0, 0.5, 0.25], dtype=np.float32))
    assert rgb.dtype == np.uint8
    assert rgb.tolist() == [[[255, 255, 64], [0, 0, 64]]]


@pytest.mark.parametrize(
    ("image", "max_size", "expected"),
    [
        ((1024, 768), 256, (256, 192)),
        ((768, 1024), 256, (192, 256)),
        ((64, 64), 256, (64, 64)),  # never above the image's own size
        ((1000, 10), 16, (16, 1)),  # at least a pixel
    ],
)
def test_preview_size_keeps_the_aspect(
    image: tuple[int, int], max_size: int, expected: tuple[int, int]
) -> None:
    assert previews.preview_size(*image, max_size) == expected


def test_jpeg_has_the_asked_size() -> None:
    rgb = np.zeros((8, 12, 3), dtype=np.uint8)
    rgb[:, :6] = (200, 30, 30)
    data = previews.encode_jpeg(rgb, (48, 32))
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("JPEG", (48, 32))
    assert image.getpixel((4, 16))[0] > 150  # the red half stays red


def test_fit_fields_have_unit_variance_and_are_smooth() -> None:
    fields = previews.fit_fields(np.random.default_rng(4), 3, 16, 8)
    assert fields.shape == (3, 16, 16, 8)
    assert abs(float(fields.std()) - 1.0) < 0.1
    neighbours = np.corrcoef(fields[:, :, :-1].ravel(), fields[:, :, 1:].ravel())[0, 1]
    assert neighbours > 0.3, "neighbouring latent pixels should be alike, as in an image's latents"


# --- the fit through a pipeline's own decode path (the fake mflux's: its VAE is linear) -----------


def _fake_model(operation: str) -> Any:
    from mflux.models.ideogram4 import Ideogram4
    from mflux.models.qwen.variants.txt2img.qwen_image import QwenImage

    return (Ideogram4 if operation.startswith("ideogram4") else QwenImage)()


@pytest.mark.parametrize("operation", ["qwen.generate", "ideogram4.generate"])
def test_fit_through_the_pipeline_recovers_the_vae_colours(operation: str) -> None:
    from mflux.models.ideogram4.latent_creator import Ideogram4LatentCreator

    model = _fake_model(operation)
    path = PREVIEW_PATHS[operation]
    previewer = previews.Previewer("k", model, path)
    width, height = 64, 48
    tokens = np.random.default_rng(5).standard_normal((1, (width // 16) * (height // 16), 4 * path.channels))
    first = previewer.make(tokens.astype(np.float32), width, height, 256)
    projection = previewer.projection
    assert projection is not None
    assert projection.r2 > 0.999
    assert first.fit_ms > 0

    # What the fake VAE makes of a normalised latent pixel z: colour = (denormalised(z) @ M + b) / 2 + 0.5.
    vae = model.vae
    if operation.startswith("qwen"):
        scale, shift = vae.latents_std, vae.latents_mean
    else:
        packed = Ideogram4LatentCreator.unpack_latents(np.eye(1, 128, dtype=np.float32)[None] * 0, 16, 16)
        shift = packed[0, :, 0, 0]
        ones = Ideogram4LatentCreator.unpack_latents(np.ones((1, 1, 128), dtype=np.float32), 16, 16)
        scale = ones[0, :, 0, 0] - shift
    expected_w = scale[:, None] * vae.colour_map / 2
    expected_b = (shift @ vae.colour_map + vae.colour_bias) / 2 + 0.5
    np.testing.assert_allclose(projection.weights, expected_w, atol=1e-4)
    np.testing.assert_allclose(projection.bias, expected_b, atol=1e-4)

    second = previewer.make(tokens.astype(np.float32), width, height, 256)
    assert second.fit_ms == 0, "the fit is kept for the build"
    assert (second.width, second.height) == (64, 48)
    assert Image.open(io.BytesIO(second.jpeg)).size == (64, 48)


def test_a_build_without_a_decode_path_has_no_previews_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoVae:
        vae = None

    previewer = previews.Previewer("k", NoVae(), QWEN)
    tokens = np.zeros((1, 4, 64), dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="kiapi_worker"):
        for _ in range(3):
            with pytest.raises(previews.PreviewUnavailable, match="no previews for k"):
                previewer.make(tokens, 32, 32, 64)
    assert len([r for r in caplog.records if "no previews for k" in r.getMessage()]) == 1


def test_latents_of_the_wrong_shape_are_refused() -> None:
    previewer = previews.Previewer("k", _fake_model("qwen.generate"), QWEN)
    with pytest.raises(ValueError, match="expected"):
        previewer.make(np.zeros((1, 5, 64), dtype=np.float32), 32, 32, 64)


# --- the in-loop hook -------------------------------------------------------------------------


class _Config:
    width = 32
    height = 32
    num_inference_steps = 4


class _Stop(Exception):
    pass


def _control(demand: previews.PreviewDemand | None, sent: list[tuple[int, int, Any]]) -> RunControl:
    return RunControl(
        cancel=threading.Event(),
        on_progress=lambda step, total: None,
        previews=demand,
        on_preview=lambda step, total, made: sent.append((step, total, made)),
    )


def _steps(hook: ProgressHook, count: int) -> None:
    latents = np.zeros((1, 4, 64), dtype=np.float32)
    for t in range(count):
        hook.call_in_loop(t=t, seed=1, prompt="p", latents=latents, config=_Config(), time_steps=None)


def test_hook_sends_every_nth_step_and_nothing_without_demand() -> None:
    previewer = previews.Previewer("k", _fake_model("qwen.generate"), QWEN)
    hook = ProgressHook(_Stop, previewer)
    sent: list[tuple[int, int, Any]] = []
    hook.bind(_control(previews.PreviewDemand(every=2, max_size=16), sent))
    _steps(hook, 4)
    assert [(step, total) for step, total, _ in sent] == [(2, 4), (4, 4)]
    assert all(made.width == 16 for _, _, made in sent)

    idle: list[tuple[int, int, Any]] = []
    hook.bind(_control(None, idle))
    _steps(hook, 4)
    assert idle == []


def test_a_failing_preview_never_stops_the_run(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def make(self, *args: Any) -> Any:
            raise RuntimeError("projection bug")

    hook = ProgressHook(_Stop, Broken())  # type: ignore[arg-type]
    sent: list[tuple[int, int, Any]] = []
    control = _control(previews.PreviewDemand(every=1, max_size=16), sent)
    hook.bind(control)
    with caplog.at_level(logging.WARNING, logger="kiapi_worker"):
        _steps(hook, 3)
    assert control.steps_seen == 3
    assert sent == []
    assert len([r for r in caplog.records if "step preview failed" in r.getMessage()]) == 1


def test_no_preview_once_canceled() -> None:
    previewer = previews.Previewer("k", _fake_model("qwen.generate"), QWEN)
    hook = ProgressHook(_Stop, previewer)
    sent: list[tuple[int, int, Any]] = []
    control = _control(previews.PreviewDemand(every=1, max_size=16), sent)
    hook.bind(control)
    _steps(hook, 1)
    control.cancel.set()
    with pytest.raises(_Stop):
        _steps(hook, 1)
    assert [step for step, _, _ in sent] == [1]


# --- command parsing ------------------------------------------------------------------------


def _run_body(**extra: Any) -> dict[str, Any]:
    return {**run_command("r", "k", Path("/tmp/o.png")), **extra}


def test_run_previews_are_optional_and_checked() -> None:
    assert parse_run(_run_body(), "r").previews is None
    assert parse_run(_run_body(previews=None), "r").previews is None
    demand = parse_run(_run_body(previews={"every": 3, "max_size": 128}), "r").previews
    assert demand == previews.PreviewDemand(every=3, max_size=128)
    for bad, field in (
        ({"every": 0, "max_size": 128}, "every"),
        ({"every": None, "max_size": 128}, "every"),
        ({"every": 1, "max_size": 8}, "max_size"),
        ({"every": 1}, "max_size"),
        ([1, 2], "run.previews"),
    ):
        with pytest.raises(ProtocolError, match=field):
            parse_run(_run_body(previews=bad), "r")


def test_previews_command_is_checked() -> None:
    stop = parse_previews({"target": "r", "every": None, "max_size": 64}, "c")
    assert (stop.target, stop.demand) == ("r", None)
    change = parse_previews({"target": "r", "every": 2, "max_size": 64}, "c")
    assert change.demand == previews.PreviewDemand(every=2, max_size=64)
    for bad, field in (
        ({"every": 2, "max_size": 64}, "target"),
        ({"target": "r", "every": 2}, "max_size"),
        ({"target": "r", "every": -1, "max_size": 64}, "every"),
        ({"target": "r", "every": "2", "max_size": 64}, "every"),
    ):
        with pytest.raises(ProtocolError, match=field):
            parse_previews(bad, "c")


# --- the protocol, through a worker process ---------------------------------------------------


def _loaded(worker: WorkerProcess) -> None:
    worker.ready()
    [reply] = worker.exchange(load_command("load-1", "k"))
    assert reply["type"] == "loaded", reply


def _stderr_says(worker: WorkerProcess, text: str, timeout: float = 30.0) -> bool:
    """Whether the worker's log shows ``text`` within ``timeout``: stderr is read by another
    thread, so a line written before a reply may still be on its way when the reply is read."""
    deadline = time.monotonic() + timeout
    while text not in worker.stderr:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _until_final(worker: WorkerProcess) -> list[dict[str, Any]]:
    replies: list[dict[str, Any]] = []
    while not replies or replies[-1].get("type") not in ("result", "error"):
        replies.append(worker.recv())
    return replies


def test_run_with_previews_sends_jpeg_messages(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn()
    _loaded(worker)
    command = run_command("run-1", "k", tmp_path / "o.png", steps=4, width=96, height=64)
    command["previews"] = {"every": 2, "max_size": 48}
    replies = worker.exchange(command)
    assert replies[-1]["type"] == "result", replies[-1]
    shown = [m for m in replies if m["type"] == "preview"]
    assert [m["step"] for m in shown] == [2, 4]
    for message in shown:
        assert set(message) == PREVIEW_KEYS
        assert (message["id"], message["total"], message["width"], message["height"]) == ("run-1", 4, 48, 32)
        image = Image.open(io.BytesIO(base64.b64decode(message["jpeg_b64"])))
        assert (image.format, image.size) == ("JPEG", (48, 32))
        assert message["cost_ms"] >= 0
    # Each preview follows its step's progress message.
    order = [(m["type"], m["step"]) for m in replies if m["type"] in ("progress", "preview")]
    assert order.index(("preview", 2)) == order.index(("progress", 2)) + 1
    assert _stderr_says(worker, "preview projection for k fitted in"), worker.stderr


def test_previews_command_changes_the_run_in_flight(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn({"FAKE_MFLUX_STEP_S": "0.1"})
    _loaded(worker)
    worker.send(run_command("run-1", "k", tmp_path / "o.png", steps=30))
    started_after = worker.recv()["step"]
    worker.send({"id": "p-1", "cmd": "previews", "target": "run-1", "every": 1, "max_size": 32})
    replies: list[dict[str, Any]] = []
    while sum(m.get("type") == "preview" for m in replies) < 2:
        replies.append(worker.recv())
    assert {"id": "p-1", "type": "ack"} in replies
    worker.send({"id": "p-2", "cmd": "previews", "target": "run-1", "every": None, "max_size": 32})
    rest = _until_final(worker)
    assert rest[-1]["type"] == "result"
    assert {"id": "p-2", "type": "ack"} in rest
    steps = [m["step"] for m in replies + rest if m.get("type") == "preview"]
    # The demand can reach the step whose progress the test saw, while its callback is still running.
    assert all(step >= started_after for step in steps)
    acked = rest.index({"id": "p-2", "type": "ack"})
    late = [m for m in rest[acked:] if m.get("type") == "preview"]
    # The stop reaches the engine thread at its next step: at most the step in flight follows.
    assert len(late) <= 1, late
    assert len([m for m in rest if m.get("type") == "progress"]) > 5, "the run went on without previews"


def test_previews_for_an_unknown_run_are_acked_and_ignored(spawn: Spawn) -> None:
    worker = spawn()
    worker.ready()
    command = {"id": "9", "cmd": "previews", "target": "nope", "every": 1, "max_size": 64}
    assert worker.exchange(command) == [{"id": "9", "type": "ack"}]


def test_a_malformed_previews_command_is_a_protocol_error(spawn: Spawn) -> None:
    worker = spawn()
    worker.ready()
    [reply] = worker.exchange({"id": "9", "cmd": "previews", "target": "x", "every": 0, "max_size": 64})
    assert (reply["type"], reply["code"]) == ("error", "protocol")
    assert "every" in reply["message"]


def test_without_numpy_the_run_goes_on_without_previews(spawn: Spawn, tmp_path: Path) -> None:
    """A Python without numpy (the fake mflux on a bare interpreter): jobs run, previews are skipped."""
    hidden = tmp_path / "hide"
    (hidden / "numpy").mkdir(parents=True)
    (hidden / "numpy" / "__init__.py").write_text('raise ImportError("numpy is hidden for this test")\n')
    worker = spawn(path_entries=[str(hidden)])
    _loaded(worker)
    command = run_command("run-1", "k", tmp_path / "o.png", steps=3)
    command["previews"] = {"every": 1, "max_size": 64}
    replies = worker.exchange(command)
    assert replies[-1]["type"] == "result", replies[-1]
    assert [m["type"] for m in replies].count("preview") == 0
    assert [m["type"] for m in replies].count("progress") == 3
    assert _stderr_says(worker, "previews need numpy"), worker.stderr


# --- against the real mflux (where it is installed: KIAPI_TEST_MLX_PYTHON, e.g. the engine venv) ---

_REAL_LAYOUT_CHECK = """
import sys
import numpy as np
import mlx.core as mx
from mflux.models.ideogram4.latent_creator import Ideogram4LatentCreator
from mflux.models.qwen.latent_creator.qwen_latent_creator import QwenLatentCreator
from kiapi_worker.engine_api import PREVIEW_PATHS
from kiapi_worker.previews import unpack_tokens

rng = np.random.default_rng(0)
creators = (("qwen.generate", QwenLatentCreator), ("ideogram4.generate", Ideogram4LatentCreator))
for operation, creator in creators:
    path = PREVIEW_PATHS[operation]
    tokens = rng.standard_normal((3 * 5, 4 * path.channels)).astype(np.float32)
    theirs = creator.unpack_latents(latents=mx.array(tokens[None]), height=3 * 16, width=5 * 16)
    theirs = np.array(theirs.astype(mx.float32))[0].transpose(1, 2, 0)
    if operation.startswith("ideogram4"):
        shift, scale = (np.array(a) for a in creator.get_latent_norm())
        tokens = tokens * scale + shift  # the affine step Ideogram 4's unpack adds (folded into the fit)
    error = float(np.abs(unpack_tokens(tokens, 3, 5, path) - theirs).max())
    # Ideogram 4's unpack ends in bfloat16: about 3 significant digits.
    assert error < 0.05, (operation, error)
    print(operation, error)
"""


@functools.cache
def _real_mflux_python() -> str | None:
    python = os.environ.get("KIAPI_TEST_MLX_PYTHON") or sys.executable
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [python, "-c", "import mflux.models.ideogram4.latent_creator, mlx.core"],
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    return python if probe.returncode == 0 else None


def test_unpack_matches_the_real_mflux() -> None:
    python = _real_mflux_python()
    if python is None:
        pytest.skip("needs the real mflux (set KIAPI_TEST_MLX_PYTHON to the engine venv's python)")
    env = {**os.environ, "PYTHONPATH": str(WORKER_DIR)}
    done = subprocess.run(
        [python, "-c", _REAL_LAYOUT_CHECK], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "qwen.generate" in done.stdout
    assert "ideogram4.generate" in done.stdout
