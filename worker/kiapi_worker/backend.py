"""The mflux adapter: builds models and calls from ``CALL_SHAPES``, reports steps, cancels, frees.

All methods except ``loaded_keys`` must run on the single engine thread (MLX work stays on one
thread); ``loaded_keys`` is also read by the main thread for ``stats``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kiapi_worker import memory
from kiapi_worker.commands import LoadRequest, RunRequest, Task
from kiapi_worker.engine import Engine
from kiapi_worker.engine_api import (
    ALLOWED_SCHEDULERS,
    CALL_SHAPES,
    CALLBACKS_ATTRIBUTE,
    OMIT_WHEN_NULL,
    PREVIEW_PATHS,
    REGISTER_METHOD,
    ModelShape,
)
from kiapi_worker.errors import BAD_REQUEST, NOT_LOADED, PROTOCOL, WorkerError
from kiapi_worker.previews import Preview, PreviewDemand, Previewer, PreviewUnavailable

__all__ = [
    "CALL_SHAPES",
    "LoadOutcome",
    "LoraStaging",
    "MfluxBackend",
    "ProgressHook",
    "RunControl",
    "generate_kwargs",
    "init_kwargs",
]

log = logging.getLogger("kiapi_worker")

PROGRESS_LABEL = "denoising"
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


@dataclass
class RunControl:
    """What the progress hook needs from the run in flight: its cancel flag, progress sink and
    preview demand.

    ``previews`` is replaced whole by the main thread (the ``previews`` command) and read once per
    step by the engine thread: a single attribute, so no lock is needed and a run nobody watches
    pays one attribute read per step.
    """

    cancel: threading.Event
    on_progress: Callable[[int, int], None]
    previews: PreviewDemand | None = None
    on_preview: Callable[[int, int, Preview], None] | None = None
    steps_seen: int = 0
    # Set once a preview of this run failed, so the log says it once rather than at every step.
    preview_failed: bool = False


class ProgressHook:
    """mflux in-loop callback, registered once per model instance and bound to one run at a time.

    The step is counted here rather than read from ``time_steps.n``: tqdm only refreshes ``n``
    when at least ``mininterval`` (0.1 s) has passed, so it lags when steps are fast.
    """

    def __init__(self, stop_exception: type[BaseException], previewer: Previewer | None = None) -> None:
        self._stop_exception = stop_exception
        self._previewer = previewer
        self._run: RunControl | None = None

    def bind(self, run: RunControl | None) -> None:
        self._run = run

    def call_in_loop(
        self,
        t: int,
        seed: int,
        prompt: Any,
        latents: Any,
        config: Any,
        time_steps: Any,
    ) -> None:
        run = self._run
        if run is None:
            return
        run.steps_seen += 1
        total = _total_steps(time_steps, config)
        if run.cancel.is_set():
            # mflux lets a callback's exception leave generate_image unchanged: the cancel point.
            raise self._stop_exception(f"canceled at step {run.steps_seen}/{total}")
        run.on_progress(run.steps_seen, total)
        demand = run.previews
        if demand is not None and run.steps_seen % demand.every == 0:
            self._preview(run, demand, latents, config, total)

    def _preview(self, run: RunControl, demand: PreviewDemand, latents: Any, config: Any, total: int) -> None:
        """Make and send one preview; a failure is logged (once per run) and never stops the run."""
        previewer = self._previewer
        if previewer is None or run.on_preview is None or run.cancel.is_set():
            return
        try:
            # The step's own work is still a lazy graph here (mflux evaluates it after the
            # callbacks): evaluate it before the clock starts, so cost_ms is the preview's alone.
            memory.evaluate(latents)
            preview = previewer.make(latents, int(config.width), int(config.height), demand.max_size)
        except PreviewUnavailable as exc:
            if not run.preview_failed:
                run.preview_failed = True
                log.info("step previews skipped: %s", exc)
            return
        except Exception:
            if not run.preview_failed:
                run.preview_failed = True
                log.warning("step preview failed at step %d (the run goes on)", run.steps_seen, exc_info=True)
            return
        if run.cancel.is_set():
            return
        run.on_preview(run.steps_seen, total, preview)


def _total_steps(time_steps: Any, config: Any) -> int:
    total = getattr(time_steps, "total", None)
    if isinstance(total, int) and total > 0:
        return total
    return int(getattr(config, "num_inference_steps", 0) or 0)


@dataclass
class LoadedModel:
    shape: ModelShape
    model: Any
    hook: ProgressHook
    weight_gb: float = 0.0


@dataclass(frozen=True)
class LoadOutcome:
    """``load_s``: construction and materialisation (0 for a key already loaded); ``weight_gb``: the
    growth of MLX active memory the build caused, measured around it (gc before and after)."""

    load_s: float
    weight_gb: float


@dataclass(frozen=True)
class RunOutcome:
    width: int
    height: int
    seed: int
    total_s: float
    warnings: list[str] = field(default_factory=list)


def _shaped(values: dict[str, Any], keywords: Iterable[str]) -> dict[str, Any]:
    """Pick exactly the shape's keywords from ``values``, in the shape's order."""
    return {
        keyword: values[keyword]
        for keyword in keywords
        if not (keyword in OMIT_WHEN_NULL and values[keyword] is None)
    }


def init_kwargs(
    request: LoadRequest, model_config: Any, lora_paths: list[str] | None = None
) -> dict[str, Any]:
    """Constructor keywords; empty LoRA lists become None as mflux's defaults are.

    ``lora_paths`` replaces the request's paths (the loadable names ``LoraStaging`` gives them).
    """
    paths = list(lora_paths) if lora_paths is not None else [lora.path for lora in request.loras]
    values = {
        "quantize": request.quantize,
        "model_path": request.repo,
        "lora_paths": paths or None,
        "lora_scales": [lora.scale for lora in request.loras] or None,
        "model_config": model_config,
    }
    return _shaped(values, request.shape.init_keywords)


def generate_kwargs(task: Task) -> dict[str, Any]:
    """``generate_image`` keywords for the task's operation (docs/compatibility.md §8.7 and §9.4)."""
    first_image = task.image_paths[0] if task.image_paths else None
    values = {
        "seed": task.seed,
        "prompt": task.prompt,
        "negative_prompt": task.negative_prompt,
        # Edit: image_path only feeds mflux's metadata; the images themselves go in image_paths.
        "image_path": first_image if task.operation == "qwen.edit" else task.init_image_path,
        "image_paths": list(task.image_paths),
        "image_strength": task.image_strength,
        "num_inference_steps": task.steps,
        "width": task.width,
        "height": task.height,
        "guidance": task.guidance,
        "scheduler": task.scheduler,
        "preset": task.preset,
        "strict_caption_validation": task.strict_caption_validation,
        "warn_on_caption_issues": task.warn_on_caption_issues,
    }
    return _shaped(values, CALL_SHAPES[task.operation].generate_keywords)


def _check_task(task: Task) -> list[str]:
    """Reject what mflux would mishandle; return warnings for what it silently ignores."""
    notes: list[str] = []
    scheduler = task.scheduler
    if task.operation.startswith("qwen.") and scheduler is not None and scheduler not in ALLOWED_SCHEDULERS:
        expected = ", ".join(ALLOWED_SCHEDULERS)
        raise WorkerError(BAD_REQUEST, f"unknown scheduler {scheduler!r}; expected one of {expected}")
    if task.operation == "qwen.edit" and not task.image_paths:
        raise WorkerError(BAD_REQUEST, "qwen.edit needs at least one image in image_paths")
    for path in (task.init_image_path, *task.image_paths):
        if path is not None and not os.path.isfile(path):
            raise WorkerError(BAD_REQUEST, f"input image not found: {path}")
    if task.operation == "qwen.generate" and task.init_image_path and not task.image_strength:
        notes.append("init image ignored: image_strength is null or 0, so generation starts from pure noise")
    return notes


def _check_lora_file(path: str) -> None:
    """Refuse a LoRA file that is missing or is not safetensors before mflux is asked to load it.

    A safetensors file starts with an 8-byte little-endian length and that many bytes of JSON.
    Messages name the file by its base name (a Files API id), never by the server's directories.
    """
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise WorkerError(BAD_REQUEST, f"LoRA file not found: {name}")
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 2 <= size <= min(os.path.getsize(path) - 8, _MAX_SAFETENSORS_HEADER):
                raise ValueError("bad header length")
            header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (OSError, ValueError) as exc:
        raise WorkerError(
            BAD_REQUEST,
            f"LoRA file is not a readable safetensors file: {name} ({exc}); pass a LoRA adapter in "
            ".safetensors format",
        ) from exc


SAFETENSORS_SUFFIX = ".safetensors"


class LoraStaging:
    """Gives mflux a path it can load for each LoRA, for the duration of one load.

    ``mx.load`` picks the format from the text after the last '.' of the whole path, so a Files
    API blob (``<data>/files/file_abc123``, no extension) fails to load: mflux 0.18 printed a
    message, skipped the LoRA and generated without it; mflux 0.24 raises. A path that does not end
    in ``.safetensors`` is therefore handed over as a ``.safetensors``-named symlink to the blob (a
    hard link, or a copy, where symlinks are refused) in a private temporary directory (mode 0700)
    made for that load. mflux reads LoRA files only while it builds the model, so ``release``
    removes the directory when the load ends; ``close`` (shutdown, and interpreter exit as a
    fallback) removes any still there, so only a worker killed mid-load leaves one behind.
    """

    def __init__(self) -> None:
        self._live: set[str] = set()
        self._lock = threading.Lock()
        atexit.register(self.close)

    def stage(self, paths: Iterable[str]) -> tuple[list[str], dict[str, str]]:
        """``(paths for mflux, {path for mflux: display name})``; call ``release`` with the first."""
        staged: list[str] = []
        names: dict[str, str] = {}
        load_dir: str | None = None
        try:
            for index, path in enumerate(paths, start=1):
                name = os.path.basename(path)
                if path.endswith(SAFETENSORS_SUFFIX):
                    loadable = path
                else:
                    if load_dir is None:
                        load_dir = tempfile.mkdtemp(prefix=f"kiapi-worker-{os.getpid()}-lora-")
                        with self._lock:
                            self._live.add(load_dir)
                    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "lora"
                    loadable = os.path.join(load_dir, f"{index}-{safe}{SAFETENSORS_SUFFIX}")
                    _link(os.path.abspath(path), loadable)
                staged.append(loadable)
                names[loadable] = name
        except BaseException:
            if load_dir is not None:
                self._remove(load_dir)
            raise
        return staged, names

    def release(self, staged: Iterable[str]) -> None:
        """Remove the links ``stage`` made (never the caller's own files)."""
        for directory in {os.path.dirname(path) for path in staged}:
            self._remove(directory)

    def close(self) -> None:
        with self._lock:
            directories = list(self._live)
        for directory in directories:
            self._remove(directory)

    def _remove(self, directory: str) -> None:
        with self._lock:
            if directory not in self._live:
                return
            self._live.discard(directory)
        shutil.rmtree(directory, ignore_errors=True)


def _link(target: str, link: str) -> None:
    try:
        os.symlink(target, link)
        return
    except OSError:
        pass
    try:
        os.link(target, link)
    except OSError:
        shutil.copyfile(target, link)


# mflux 0.24's LoRA loader (mflux/models/common/lora) raises instead of skipping; its messages.
_LORA_PACKAGE = os.sep + os.path.join("lora", "")
_NO_LAYER = "No LoRA layers were applied"
_UNREADABLE = "Failed to load LoRA file"
_PARTIAL = "could not be applied"


def _lora_in_traceback(exc: BaseException, names: dict[str, str]) -> str | None:
    """The LoRA mflux was applying when ``exc`` was raised, from the loader's own frame."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if _LORA_PACKAGE in frame.f_code.co_filename:
            lora_file = frame.f_locals.get("lora_file")
            if isinstance(lora_file, str) and lora_file in names:
                return lora_file
    return None


def lora_load_error(exc: BaseException, names: dict[str, str], model: str) -> WorkerError | None:
    """A ``bad_request`` naming the LoRA for an exception mflux raised while applying one, else None.

    ``names`` maps each path given to mflux to the name to show; ``model`` names the model. Paths
    in mflux's text are replaced by those names, so no server directory reaches the client.
    """
    if not names or not isinstance(exc, (ValueError, NotImplementedError, OSError)):
        return None
    text = str(exc)
    culprit = _lora_in_traceback(exc, names)
    if culprit is None:
        culprit = next((path for path in names if path in text or os.path.basename(path) in text), None)
    if culprit is None:
        return None
    for path, name in names.items():
        text = text.replace(path, name).replace(os.path.basename(path), name)
    name = names[culprit]
    if _NO_LAYER in text:
        hint = text[text.find("Key endings seen") :].split(". ", 1)[0] if "Key endings seen" in text else ""
        message = (
            f"LoRA {name} matches no layer of {model}: it was made for another model or names its "
            f"layers in a way mflux does not read; pass a LoRA trained for {model}"
        )
        return WorkerError(BAD_REQUEST, f"{message} ({hint})" if hint else message)
    if _UNREADABLE in text or isinstance(exc, OSError):
        reason = text.split(": ", 1)[1] if _UNREADABLE in text and ": " in text else text
        return WorkerError(
            BAD_REQUEST,
            f"LoRA {name} could not be loaded ({reason}); pass a LoRA adapter in .safetensors format",
        )
    if _PARTIAL in text:
        return WorkerError(BAD_REQUEST, f"LoRA {name} does not fit {model}: {text}")
    return WorkerError(BAD_REQUEST, f"LoRA {name} cannot be applied to {model}: {text}")


def materialise(model: Any) -> None:
    """Evaluate every parameter of a freshly built model, so the load, not the first run, pays.

    mflux models are ``mlx.nn.Module``s whose vae, transformer(s) and text encoder are attributes
    (module children), so ``parameters()`` is the whole weight tree; the initializers leave most
    of it lazy (only a baked LoRA evaluates the transformer).
    """
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        memory.evaluate(parameters())


class MfluxBackend:
    """Resident mflux models by key, and the load / run / unload operations on them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._loras = LoraStaging()

    def loaded_keys(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def builds(self) -> list[dict[str, Any]]:
        """``[{"key", "weight_gb"}]`` of every resident model, in load order (read by ``stats``)."""
        with self._lock:
            return [{"key": key, "weight_gb": entry.weight_gb} for key, entry in self._models.items()]

    def load(self, request: LoadRequest) -> LoadOutcome:
        """Build the model for ``request.key`` and evaluate its weights; a loaded key is a no-op."""
        with self._lock:
            existing = self._models.get(request.key)
        if existing is not None:
            return LoadOutcome(load_s=0.0, weight_gb=existing.weight_gb)
        for lora in request.loras:
            _check_lora_file(lora.path)
        shape = request.shape
        model_config = getattr(self._engine.model_config, shape.config_factory)()
        memory.release_cached()  # settle what earlier work left, so the delta below is this build's
        before = memory.active_bytes()
        started = time.perf_counter()
        lora_paths, lora_names = self._loras.stage(lora.path for lora in request.loras)
        failure: BaseException | None = None
        model: Any = None
        try:
            model = self._engine.model_classes[shape.operation](
                **init_kwargs(request, model_config, lora_paths)
            )
            materialise(model)
        except BaseException as exc:
            failure = lora_load_error(exc, lora_names, f"{shape.family}/{shape.name}") or exc
            if failure is exc:
                log.warning("load of %s failed", request.key, exc_info=exc)
            # Drop the traceback: its frames hold the half-built model, which must be freed now.
            failure.__traceback__ = failure.__context__ = failure.__cause__ = None
        finally:
            self._loras.release(lora_paths)
        if failure is not None:
            model = None  # a model built but not evaluated goes too
            memory.release_cached()
            raise failure
        load_s = time.perf_counter() - started
        memory.release_cached()  # loading temporaries (conversion, quantization, LoRA bake)
        weight_gb = round(max(0, memory.active_bytes() - before) / memory.GIB, 3)
        hook = ProgressHook(
            self._engine.stop_exception, Previewer(request.key, model, PREVIEW_PATHS[shape.operation])
        )
        getattr(getattr(model, CALLBACKS_ATTRIBUTE), REGISTER_METHOD)(hook)
        with self._lock:
            self._models[request.key] = LoadedModel(shape=shape, model=model, hook=hook, weight_gb=weight_gb)
        log.info("loaded %s (%s) in %.2f s, %.3f GiB", request.key, shape.class_name, load_s, weight_gb)
        return LoadOutcome(load_s=load_s, weight_gb=weight_gb)

    def unload(self, key: str) -> float:
        """Drop the model and free its buffers; return the GiB of active memory released."""
        with self._lock:
            entry = self._models.pop(key, None)
        if entry is None:
            return 0.0
        before = memory.active_gb()
        # The table held the only reference; drop ours before collecting, then clear the cache.
        del entry
        memory.release_cached()
        freed = max(0.0, round(before - memory.active_gb(), 3))
        log.info("unloaded %s, freed %.3f GiB", key, freed)
        return freed

    def close(self) -> None:
        """Drop every model and wait for MLX's queued work; for the engine thread at shutdown."""
        with self._lock:
            self._models.clear()
        memory.release_cached()
        memory.synchronize()

    def remove_staged_files(self) -> None:
        """Remove the private LoRA link directory (any thread; at exit)."""
        self._loras.close()

    def run(self, request: RunRequest, control: RunControl) -> RunOutcome:
        """Generate one image into ``request.output_path`` (PNG)."""
        with self._lock:
            entry = self._models.get(request.key)
        if entry is None:
            raise WorkerError(NOT_LOADED, f"model {request.key!r} is not loaded")
        task = request.task
        if entry.shape.operation != task.operation:
            raise WorkerError(
                PROTOCOL,
                f"{task.operation} cannot run on {request.key!r}, which holds a {entry.shape.class_name}",
            )
        notes = _check_task(task)
        kwargs = generate_kwargs(task)
        self._stop_if_canceled(control, "before the first step")
        entry.hook.bind(control)
        try:
            generated, total_s, caught = _generate(entry.model, kwargs)
        finally:
            entry.hook.bind(None)
            trim_prompt_cache(entry.model)
        # A cancel that came after the last step still wins: the server already gave up on it.
        self._stop_if_canceled(control, "after the last step")
        image = generated.image
        _save_png(image, request.output_path)
        width, height = getattr(image, "size", (task.width, task.height))
        return RunOutcome(
            width=int(width), height=int(height), seed=task.seed, total_s=total_s, warnings=notes + caught
        )

    def _stop_if_canceled(self, control: RunControl, when: str) -> None:
        if control.cancel.is_set():
            raise self._engine.stop_exception(f"canceled {when}")


PROMPT_CACHE_LIMIT = 16


def trim_prompt_cache(model: Any, limit: int = PROMPT_CACHE_LIMIT) -> int:
    """Keep mflux's per-model prompt cache bounded; return how many entries were dropped.

    mflux caches encoded prompts on resident models and never evicts them (docs/compatibility.md §11.20), so a
    long-lived server would grow without bound. Dicts keep insertion order: the oldest go first.
    """
    cache = getattr(model, "prompt_cache", None)
    if not isinstance(cache, dict) or len(cache) <= limit:
        return 0
    excess = len(cache) - limit
    for key in list(cache)[:excess]:
        del cache[key]
    return excess


def _generate(model: Any, kwargs: dict[str, Any]) -> tuple[Any, float, list[str]]:
    """Call ``generate_image`` and collect UserWarnings (Ideogram caption warnings) it emits."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        started = time.perf_counter()
        generated = model.generate_image(**kwargs)
        total_s = round(time.perf_counter() - started, 4)
    caught: list[str] = []
    for record in records:
        if issubclass(record.category, UserWarning):
            caught.append(str(record.message))
        else:
            log.warning("%s: %s", record.category.__name__, record.message)
    return generated, total_s, caught


def _save_png(image: Any, output_path: str) -> None:
    """Write losslessly via a temporary name so a crash never leaves a truncated file behind."""
    partial = f"{output_path}.part"
    try:
        image.save(partial, format="PNG")
        os.replace(partial, output_path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
