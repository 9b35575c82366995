"""Contract test: everything the adapter passes to or relies on in mflux exists in the pinned release.

The sdist of ``kiapi_worker.pins.MFLUX_REQUIREMENT`` is downloaded from PyPI once (cached under
``${KIAPI_TEST_CACHE:-<repo>/.cache}/mflux-sdist``) and read with ``ast``; mflux is never imported
or installed. Without network access these tests fail rather than skip.
"""

from __future__ import annotations

import ast
import inspect

import pytest

from kiapi_worker.backend import ProgressHook
from kiapi_worker.engine_api import (
    ALLOWED_SCHEDULERS,
    CALL_SHAPES,
    CALLBACKS_ATTRIBUTE,
    CAPTION_WARNING_CLASS,
    CAPTION_WARNING_MODULE,
    EXCEPTIONS_MODULE,
    IN_LOOP_KEYWORDS,
    IN_LOOP_METHOD,
    MODEL_CONFIG_CLASS,
    MODEL_CONFIG_MODULE,
    PINNED_REVISIONS,
    PREVIEW_PATHS,
    PREVIEW_UNPACK_KEYWORDS,
    PREVIEW_UNPACK_METHOD,
    REGISTER_METHOD,
    REVISIONS_ATTRIBUTE,
    REVISIONS_CLASS,
    REVISIONS_MODULE,
    STOP_EXCEPTION,
    STOP_EXCEPTION_BASES,
    UNPINNED_REPOS,
    VAE_ATTRIBUTE,
    VAE_DECODE_CLASS,
    VAE_DECODE_KEYWORDS,
    VAE_DECODE_METHOD,
    VAE_DECODE_MODULE,
    ModelShape,
)
from kiapi_worker.pins import ENGINE_REQUIRES_PYTHON, MFLUX_VERSION
from mflux_source import MfluxSource, decorator_names, method, parameters

SHAPES = list(CALL_SHAPES.values())
SHAPE_IDS = [shape.operation for shape in SHAPES]

# Files the compatibility notes (docs/compatibility.md §10) names; if the release moved one, this says which.
REFERENCE_FILES = (
    "mflux/models/qwen/variants/txt2img/qwen_image.py",
    "mflux/models/qwen/variants/edit/qwen_image_edit.py",
    "mflux/models/ideogram4/__init__.py",
    "mflux/models/common/config/__init__.py",
    "mflux/models/common/config/model_config.py",
    "mflux/models/common/config/config.py",
    "mflux/utils/exceptions.py",
    "mflux/utils/generated_image.py",
    "mflux/callbacks/callback_registry.py",
    "mflux/callbacks/generation_context.py",
    "mflux/models/ideogram4/model/ideogram4_text_encoder/caption.py",
    "mflux/models/common/schedulers/__init__.py",
)


def _calls(node: ast.AST) -> list[ast.Call]:
    return [child for child in ast.walk(node) if isinstance(child, ast.Call)]


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def test_sdist_is_the_pinned_release(mflux_source: MfluxSource) -> None:
    assert mflux_source.pkg_info is not None, "sdist has no PKG-INFO"
    assert f"\nVersion: {MFLUX_VERSION}\n" in mflux_source.pkg_info


def test_requires_python_is_the_engine_pin(mflux_source: MfluxSource) -> None:
    """kiapi activate picks the venv's Python by pins.ENGINE_REQUIRES_PYTHON."""
    assert mflux_source.pkg_info is not None
    assert f"\nRequires-Python: {ENGINE_REQUIRES_PYTHON}\n" in mflux_source.pkg_info


def _pinned_revisions(mflux_source: MfluxSource) -> dict[str, str]:
    _, cls = mflux_source.find_class(REVISIONS_MODULE, REVISIONS_CLASS)
    for node in cls.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == REVISIONS_ATTRIBUTE and node.value is not None:
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return value
    raise AssertionError(f"{REVISIONS_CLASS} has no {REVISIONS_ATTRIBUTE} table in mflux {MFLUX_VERSION}")


def test_pinned_revisions_are_the_ones_mflux_loads(mflux_source: MfluxSource) -> None:
    """kiapi activate downloads, and readiness asks for, the commit mflux loads offline."""
    pinned = _pinned_revisions(mflux_source)
    assert {repo: pinned.get(repo) for repo in PINNED_REVISIONS} == PINNED_REVISIONS
    assert PINNED_REVISIONS["Qwen/Qwen-Image-Edit-2509"] == "d3968ef930e841f4c73640fb8afa3b306a78167e"
    assert PINNED_REVISIONS["ideogram-ai/ideogram-4-fp8"] == "ee79a7237b519f1402ceacf952f30c8a31ec5073"
    for repo in UNPINNED_REPOS:
        assert repo not in pinned, f"mflux {MFLUX_VERSION} now pins {repo}: add it to PINNED_REVISIONS"


def test_model_resolution_uses_the_pins(mflux_source: MfluxSource) -> None:
    """Loading a repo id looks its commit up in the table (so the table is what decides)."""
    users = [
        path
        for path, text in mflux_source.files.items()
        if path.startswith("mflux/models/common/") and f"{REVISIONS_CLASS}.get(" in text
    ]
    assert users, f"nothing in mflux/models/common calls {REVISIONS_CLASS}.get any more"


@pytest.mark.parametrize("path", REFERENCE_FILES)
def test_sdist_has_the_reference_layout(mflux_source: MfluxSource, path: str) -> None:
    assert path in mflux_source.files, f"{path} (named by the reference spec) is not in mflux {MFLUX_VERSION}"


def test_version_comes_from_distribution_metadata(mflux_source: MfluxSource) -> None:
    """mflux defines no __version__, which is why the worker asks importlib.metadata."""
    tree = mflux_source.tree("mflux/__init__.py")
    names = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "__version__" not in names


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_constructor_accepts_every_keyword_we_pass(mflux_source: MfluxSource, shape: ModelShape) -> None:
    _, cls = mflux_source.find_class(shape.module, shape.class_name)
    _assert_call_fits(parameters(method(cls, "__init__")), shape.init_keywords, f"{shape.class_name}()")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_generate_image_accepts_every_keyword_we_pass(mflux_source: MfluxSource, shape: ModelShape) -> None:
    _, cls = mflux_source.find_class(shape.module, shape.class_name)
    signature = parameters(method(cls, "generate_image"))
    _assert_call_fits(signature, shape.generate_keywords, f"{shape.class_name}.generate_image()")


def _assert_call_fits(signature: list, keywords: tuple[str, ...], what: str) -> None:
    accepted = {p.name for p in signature if p.kind in ("positional", "keyword_only")}
    missing = [keyword for keyword in keywords if keyword not in accepted]
    assert not missing, f"{what} in mflux {MFLUX_VERSION} has no parameter(s) {missing}"
    required = [p.name for p in signature if p.default is None and p.kind in ("positional", "keyword_only")]
    unpassed = [name for name in required if name not in keywords]
    assert not unpassed, f"{what} requires {unpassed}, which the adapter does not pass"


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_constructor_default_config_is_the_factory_we_use(
    mflux_source: MfluxSource, shape: ModelShape
) -> None:
    _, cls = mflux_source.find_class(shape.module, shape.class_name)
    defaults = {p.name: p.default for p in parameters(method(cls, "__init__"))}
    assert defaults.get("model_config") == f"{MODEL_CONFIG_CLASS}.{shape.config_factory}()"


@pytest.mark.parametrize("factory", sorted({shape.config_factory for shape in SHAPES}))
def test_model_config_has_cached_static_factory(mflux_source: MfluxSource, factory: str) -> None:
    _, cls = mflux_source.find_class(MODEL_CONFIG_MODULE, MODEL_CONFIG_CLASS)
    function = method(cls, factory)
    assert "staticmethod" in decorator_names(function)
    assert parameters(function) == [], f"ModelConfig.{factory} takes arguments"


def test_stop_exception_exists_with_its_bases(mflux_source: MfluxSource) -> None:
    tree = mflux_source.tree(mflux_source.module_path(EXCEPTIONS_MODULE))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert STOP_EXCEPTION in classes, f"{EXCEPTIONS_MODULE} has no {STOP_EXCEPTION}"
    chain, name = [], STOP_EXCEPTION
    while name in classes and classes[name].bases:
        name = ast.unparse(classes[name].bases[0])
        chain.append(name)
    assert tuple(chain[: len(STOP_EXCEPTION_BASES)]) == STOP_EXCEPTION_BASES


def test_callback_registry_routes_in_loop_callbacks(mflux_source: MfluxSource) -> None:
    _, registry = mflux_source.find_class("mflux.callbacks.callback_registry", "CallbackRegistry")
    register = method(registry, REGISTER_METHOD)
    assert [p.name for p in parameters(register)] == ["callback"]
    checked = {
        node.value
        for node in ast.walk(register)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert IN_LOOP_METHOD in checked, f"register() no longer looks for {IN_LOOP_METHOD}"


def test_generation_context_calls_in_loop_with_our_keywords(mflux_source: MfluxSource) -> None:
    _, context = mflux_source.find_class("mflux.callbacks.generation_context", "GenerationContext")
    calls = [call for call in _calls(method(context, "in_loop")) if _called_name(call) == IN_LOOP_METHOD]
    assert calls, f"GenerationContext.in_loop does not call {IN_LOOP_METHOD}"
    for call in calls:
        assert not call.args, f"{IN_LOOP_METHOD} is now called with positional arguments"
        assert tuple(keyword.arg for keyword in call.keywords if keyword.arg) == IN_LOOP_KEYWORDS
        if any(keyword.arg is None for keyword in call.keywords):
            # mflux 0.24 adds `denoised` (**extra) only for callbacks that declare it; ours does not.
            constants = {
                node.value
                for node in ast.walk(context)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
            }
            assert "denoised" in constants, "call_in_loop gets new **keywords that are not opt-in"
            assert "denoised" not in inspect.signature(ProgressHook.call_in_loop).parameters


def test_progress_hook_accepts_what_mflux_passes() -> None:
    accepted = list(inspect.signature(ProgressHook.call_in_loop).parameters)[1:]
    assert tuple(accepted) == IN_LOOP_KEYWORDS


def test_in_loop_protocol_matches(mflux_source: MfluxSource) -> None:
    _, protocol = mflux_source.find_class("mflux.callbacks.callback", "InLoopCallback")
    assert tuple(p.name for p in parameters(method(protocol, IN_LOOP_METHOD))) == IN_LOOP_KEYWORDS


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_denoising_loop_fires_in_loop_and_lets_callback_errors_through(
    mflux_source: MfluxSource, shape: ModelShape
) -> None:
    """The cancel point: an exception raised by our callback must leave generate_image unchanged."""
    _, cls = mflux_source.find_class(shape.module, shape.class_name)
    generate = method(cls, "generate_image")
    starts = [
        c for c in _calls(generate) if _called_name(c) == "start" and CALLBACKS_ATTRIBUTE in ast.unparse(c)
    ]
    assert starts, f"{shape.class_name}.generate_image no longer starts self.{CALLBACKS_ATTRIBUTE}"
    loops = [node for node in ast.walk(generate) if isinstance(node, ast.For)]
    in_loop_tries = [
        node
        for loop in loops
        for node in ast.walk(loop)
        if isinstance(node, ast.Try)
        and any(_called_name(c) == "in_loop" for s in node.body for c in _calls(s))
    ]
    assert in_loop_tries, f"{shape.class_name}.generate_image does not call ctx.in_loop inside its loop"
    for node in in_loop_tries:
        caught = [ast.unparse(handler.type) if handler.type else "<bare>" for handler in node.handlers]
        assert caught == ["KeyboardInterrupt"], f"the step loop now catches {caught}"


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_models_get_a_callback_registry(mflux_source: MfluxSource, shape: ModelShape) -> None:
    path, cls = mflux_source.find_class(shape.module, shape.class_name)
    init = method(cls, "__init__")
    initializers = {
        call.func.value.id
        for call in _calls(init)
        if isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)
    }
    imported = {
        (alias.asname or alias.name): node.module
        for node in mflux_source.tree(path).body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    sources = [
        mflux_source.tree(mflux_source.module_path(imported[name]))
        for name in initializers
        if name in imported
    ]
    assigned = [
        node
        for tree in sources
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == CALLBACKS_ATTRIBUTE for t in node.targets)
        and isinstance(node.value, ast.Call)
        and _called_name(node.value) == "CallbackRegistry"
    ]
    assert assigned, f"{shape.class_name}'s initializer no longer sets model.{CALLBACKS_ATTRIBUTE}"


def test_caption_warning_is_a_user_warning(mflux_source: MfluxSource) -> None:
    """The worker reports caption problems by catching UserWarnings during generate_image."""
    tree = mflux_source.tree(mflux_source.module_path(CAPTION_WARNING_MODULE))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert CAPTION_WARNING_CLASS in classes
    assert [ast.unparse(base) for base in classes[CAPTION_WARNING_CLASS].bases] == ["UserWarning"]


def test_allowed_schedulers_are_registered(mflux_source: MfluxSource) -> None:
    tree = mflux_source.tree("mflux/models/common/schedulers/__init__.py")
    registry = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "SCHEDULER_REGISTRY" for t in node.targets)
    )
    assert isinstance(registry, ast.Dict)
    names = {key.value for key in registry.keys if isinstance(key, ast.Constant)}
    assert set(ALLOWED_SCHEDULERS) <= names


def test_generated_image_exposes_image(mflux_source: MfluxSource) -> None:
    _, cls = mflux_source.find_class("mflux.utils.generated_image", "GeneratedImage")
    assigned = {
        target.attr
        for node in ast.walk(method(cls, "__init__"))
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
    }
    assert "image" in assigned


@pytest.mark.parametrize("operation", list(PREVIEW_PATHS))
def test_preview_fit_uses_the_pipelines_own_decode_path(mflux_source: MfluxSource, operation: str) -> None:
    """Previews are fitted by unpacking and decoding as the pipeline does after its last step."""
    path = PREVIEW_PATHS[operation]
    _, creator = mflux_source.find_class(path.unpack_module, path.unpack_class)
    unpack = method(creator, PREVIEW_UNPACK_METHOD)
    assert "staticmethod" in decorator_names(unpack)
    _assert_call_fits(
        parameters(unpack), PREVIEW_UNPACK_KEYWORDS, f"{path.unpack_class}.{PREVIEW_UNPACK_METHOD}()"
    )
    shape = CALL_SHAPES[operation]
    _, model = mflux_source.find_class(shape.module, shape.class_name)
    annotated = {
        node.target.id
        for node in model.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert VAE_ATTRIBUTE in annotated, f"{shape.class_name} no longer declares .{VAE_ATTRIBUTE}"
    called = {ast.unparse(call.func) for call in _calls(model)}
    for name in (f"{path.unpack_class}.{PREVIEW_UNPACK_METHOD}", f"{VAE_DECODE_CLASS}.{VAE_DECODE_METHOD}"):
        assert name in called, f"{shape.class_name} no longer decodes its latents with {name}"


def test_vae_decode_accepts_the_preview_fits_keywords(mflux_source: MfluxSource) -> None:
    _, util = mflux_source.find_class(VAE_DECODE_MODULE, VAE_DECODE_CLASS)
    decode = method(util, VAE_DECODE_METHOD)
    assert "staticmethod" in decorator_names(decode)
    _assert_call_fits(parameters(decode), VAE_DECODE_KEYWORDS, f"{VAE_DECODE_CLASS}.{VAE_DECODE_METHOD}()")
