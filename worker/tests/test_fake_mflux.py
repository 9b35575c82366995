"""The fake mflux must look exactly like the real one where the worker touches it.

Both are read with the same ``ast`` parser, so a drift in names, order or defaults fails here.
"""

from __future__ import annotations

import ast
import copy
import importlib
from types import SimpleNamespace

import pytest

from kiapi_worker.engine_api import (
    CALL_SHAPES,
    PREVIEW_PATHS,
    PREVIEW_UNPACK_METHOD,
    STOP_EXCEPTION,
    VAE_DECODE_CLASS,
    VAE_DECODE_METHOD,
    VAE_DECODE_MODULE,
    ModelShape,
)
from mflux_source import MfluxSource, load_fake_source, method, parameters

SHAPES = list(CALL_SHAPES.values())
SHAPE_IDS = [shape.operation for shape in SHAPES]


@pytest.fixture(scope="module")
def fake_source() -> MfluxSource:
    return load_fake_source()


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("method_name", ["__init__", "generate_image"])
def test_fake_signatures_equal_real(
    mflux_source: MfluxSource, fake_source: MfluxSource, shape: ModelShape, method_name: str
) -> None:
    _, real_class = mflux_source.find_class(shape.module, shape.class_name)
    _, fake_class = fake_source.find_class(shape.module, shape.class_name)
    real = parameters(method(real_class, method_name))
    fake = parameters(method(fake_class, method_name))
    assert fake == real, f"fake {shape.class_name}.{method_name} differs from mflux's"


@pytest.mark.parametrize(
    ("module", "owner", "name"),
    [
        *sorted({(p.unpack_module, p.unpack_class, PREVIEW_UNPACK_METHOD) for p in PREVIEW_PATHS.values()}),
        (VAE_DECODE_MODULE, VAE_DECODE_CLASS, VAE_DECODE_METHOD),
    ],
)
def test_fake_preview_decode_path_equals_real(
    mflux_source: MfluxSource, fake_source: MfluxSource, module: str, owner: str, name: str
) -> None:
    """Names, kinds and defaults (the fake works on numpy arrays, so annotations differ)."""

    def signature(source: MfluxSource) -> list[tuple[str, str, str | None]]:
        _, cls = source.find_class(module, owner)
        return [(p.name, p.kind, p.default) for p in parameters(method(cls, name))]

    assert signature(fake_source) == signature(mflux_source)


def test_fake_in_loop_call_equals_real(mflux_source: MfluxSource, fake_source: MfluxSource) -> None:
    def keywords(source: MfluxSource, name: str) -> list[list[str | None]]:
        _, context = source.find_class("mflux.callbacks.generation_context", "GenerationContext")
        calls = [node for node in ast.walk(method(context, name)) if isinstance(node, ast.Call)]
        return [
            [kw.arg for kw in call.keywords]
            for call in calls
            if ast.unparse(call.func).endswith(".call_" + name)
        ]

    for name in ("before_loop", "in_loop", "after_loop"):
        assert keywords(fake_source, name) == keywords(mflux_source, name)


def test_fake_exceptions_mirror_real(mflux_source: MfluxSource, fake_source: MfluxSource) -> None:
    def bases(source: MfluxSource) -> dict[str, list[str]]:
        tree = source.tree("mflux/utils/exceptions.py")
        return {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}

    real, fake = bases(mflux_source), bases(fake_source)
    for name in (STOP_EXCEPTION, "MFluxUserException", "MFluxException"):
        assert fake[name] == real[name]


def test_fake_init_time_step_matches_real_formula(mflux_source: MfluxSource) -> None:
    """Run mflux's own ``Config.init_time_step`` body (pure arithmetic) against the fake's."""
    _, real_config = mflux_source.find_class("mflux.models.common.config.config", "Config")
    function = copy.deepcopy(method(real_config, "init_time_step"))
    function.decorator_list = []
    namespace: dict[str, object] = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "real_init_time_step", "exec"), namespace)
    real_formula = namespace["init_time_step"]

    from mflux.models.common.config.config import Config

    for steps in (1, 4, 5, 20):
        for strength in (None, -0.5, 0.0, 0.01, 0.25, 0.4, 0.5, 0.99, 1.0, 1.5):
            for image_path in (None, "/in.png"):
                fake = Config(
                    model_config=None,
                    num_inference_steps=steps,
                    image_path=image_path,
                    image_strength=strength,
                )
                state = SimpleNamespace(
                    _image_path=image_path, _image_strength=strength, _num_inference_steps=steps
                )
                assert fake.init_time_step == real_formula(state), (steps, strength, image_path)


def test_fake_model_config_factories_are_cached() -> None:
    from mflux.models.common.config import ModelConfig

    assert ModelConfig.qwen_image() is ModelConfig.qwen_image()
    assert ModelConfig.qwen_image().model_name == "Qwen/Qwen-Image"
    assert ModelConfig.qwen_image_edit().model_name == "Qwen/Qwen-Image-Edit-2509"
    assert ModelConfig.ideogram4_fp8().model_name == "ideogram-ai/ideogram-4-fp8"


def test_fake_classes_import_from_the_real_paths() -> None:
    for shape in SHAPES:
        assert getattr(importlib.import_module(shape.module), shape.class_name).__name__ == shape.class_name


def test_fake_tqdm_lags_like_tqdm() -> None:
    """``n`` is only refreshed every 0.1 s, so fast steps see a stale count (why the hook counts)."""
    from mflux._fake import FakeTqdm

    steps = FakeTqdm(range(5))
    seen = [steps.n for _ in steps]
    assert seen == [0, 0, 0, 0, 0]
    assert steps.n == 5
    assert steps.total == 5
