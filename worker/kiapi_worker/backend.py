"""The mflux adapter: builds models and calls from ``CALL_SHAPES``, reports steps, cancels, frees.

All methods except ``loaded_keys`` must run on the single engine thread (MLX work stays on one
thread); ``loaded_keys`` is also read by the main thread for ``stats``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
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
    REGISTER_METHOD,
    ModelShape,
)
from kiapi_worker.errors import BAD_REQUEST, NOT_LOADED, PROTOCOL, WorkerError

__all__ = ["CALL_SHAPES", "MfluxBackend", "ProgressHook", "RunControl", "generate_kwargs", "init_kwargs"]

log = logging.getLogger("kiapi_worker")

PROGRESS_LABEL = "denoising"
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


@dataclass
class RunControl:
    """What the progress hook needs from the run in flight: its cancel flag and progress sink."""

    cancel: threading.Event
    on_progress: Callable[[int, int], None]
    steps_seen: int = 0


class ProgressHook:
    """mflux in-loop callback, registered once per model instance and bound to one run at a time.

    The step is counted here rather than read from ``time_steps.n``: tqdm only refreshes ``n``
    when at least ``mininterval`` (0.1 s) has passed, so it lags when steps are fast.
    """

    def __init__(self, stop_exception: type[BaseException]) -> None:
        self._stop_exception = stop_exception
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


def init_kwargs(request: LoadRequest, model_config: Any) -> dict[str, Any]:
    """Constructor keywords; empty LoRA lists become None as mflux's defaults are."""
    values = {
        "quantize": request.quantize,
        "model_path": request.repo,
        "lora_paths": [lora.path for lora in request.loras] or None,
        "lora_scales": [lora.scale for lora in request.loras] or None,
        "model_config": model_config,
    }
    return _shaped(values, request.shape.init_keywords)


def generate_kwargs(task: Task) -> dict[str, Any]:
    """``generate_image`` keywords for the task's operation (reference §8.7 and §9.4)."""
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
    """Refuse a LoRA that mflux would print a message about, skip, and then succeed without.

    A safetensors file starts with an 8-byte little-endian length and that many bytes of JSON.
    """
    if not os.path.isfile(path):
        raise WorkerError(BAD_REQUEST, f"LoRA file not found: {path}")
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
            BAD_REQUEST, f"LoRA file is not a readable safetensors file: {path} ({exc})"
        ) from exc


class MfluxBackend:
    """Resident mflux models by key, and the load / run / unload operations on them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def loaded_keys(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def load(self, request: LoadRequest) -> float:
        """Construct the model for ``request.key``; return seconds taken (0 if already loaded)."""
        with self._lock:
            if request.key in self._models:
                return 0.0
        for lora in request.loras:
            _check_lora_file(lora.path)
        shape = request.shape
        model_config = getattr(self._engine.model_config, shape.config_factory)()
        kwargs = init_kwargs(request, model_config)
        model_class = self._engine.model_classes[shape.operation]
        started = time.perf_counter()
        try:
            model = model_class(**kwargs)
        except BaseException:
            memory.release_cached()  # whatever a half-built model allocated
            raise
        load_s = time.perf_counter() - started
        hook = ProgressHook(self._engine.stop_exception)
        getattr(getattr(model, CALLBACKS_ATTRIBUTE), REGISTER_METHOD)(hook)
        with self._lock:
            self._models[request.key] = LoadedModel(shape=shape, model=model, hook=hook)
        log.info("loaded %s (%s) in %.2f s", request.key, shape.class_name, load_s)
        return load_s

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

    mflux caches encoded prompts on resident models and never evicts them (reference §11.20), so a
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
        total_s = round(time.perf_counter() - started, 2)
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
