"""Typed views of the ``load`` and ``run`` command bodies, checked before the engine sees them.

A malformed body is the server's bug, so it is answered with code ``protocol`` and a message that
names the offending field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kiapi_worker.engine_api import CALL_SHAPES, ModelShape, shape_for_model
from kiapi_worker.previews import PreviewDemand
from kiapi_worker.protocol import ProtocolError

# The smallest preview long side the worker makes (the server asks for more in practice).
MIN_PREVIEW_SIZE = 16


@dataclass(frozen=True)
class Lora:
    path: str
    scale: float


@dataclass(frozen=True)
class LoadRequest:
    key: str
    shape: ModelShape
    repo: str
    quantize: int | None
    loras: tuple[Lora, ...]


@dataclass(frozen=True)
class Task:
    operation: str
    prompt: str | dict[str, Any]
    negative_prompt: str | None
    width: int
    height: int
    seed: int
    steps: int
    guidance: float | None
    scheduler: str | None
    preset: str | None
    strict_caption_validation: bool
    warn_on_caption_issues: bool
    init_image_path: str | None
    image_strength: float | None
    image_paths: tuple[str, ...]


@dataclass(frozen=True)
class RunRequest:
    key: str
    output_path: str
    task: Task
    previews: PreviewDemand | None = None


@dataclass(frozen=True)
class PreviewsRequest:
    """The ``previews`` command: a new demand for the run ``target`` (None: stop)."""

    target: str
    demand: PreviewDemand | None


class _Fields:
    """Reads typed fields from one JSON object and names the object in every complaint."""

    def __init__(self, body: Any, where: str, command_id: str) -> None:
        if not isinstance(body, dict):
            raise ProtocolError(f"'{where}' must be an object", command_id)
        self._body = body
        self._where = where
        self._id = command_id

    def _fail(self, name: str, expected: str) -> ProtocolError:
        return ProtocolError(f"'{self._where}.{name}' must be {expected}", self._id)

    def text(self, name: str, *, optional: bool = False) -> str | None:
        value = self._body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self._fail(name, "a non-empty string" + (" or null" if optional else ""))
        return value

    def any_text(self, name: str) -> str | None:
        """A string that may be empty, or null."""
        value = self._body.get(name)
        if value is not None and not isinstance(value, str):
            raise self._fail(name, "a string or null")
        return value

    def integer(self, name: str, *, optional: bool = False) -> int | None:
        value = self._body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(name, "an integer" + (" or null" if optional else ""))
        return value

    def number(self, name: str, *, optional: bool = False) -> float | None:
        value = self._body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self._fail(name, "a number" + (" or null" if optional else ""))
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self._body.get(name, default)
        if not isinstance(value, bool):
            raise self._fail(name, "a boolean")
        return value

    def text_list(self, name: str) -> tuple[str, ...]:
        value = self._body.get(name) or []
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self._fail(name, "a list of non-empty strings")
        return tuple(value)

    def raw(self, name: str) -> Any:
        return self._body.get(name)


def _absolute(path: str, what: str, command_id: str) -> str:
    if not os.path.isabs(path):
        raise ProtocolError(f"{what} must be an absolute path, got {path!r}", command_id)
    return path


def parse_load(body: dict[str, Any], command_id: str) -> LoadRequest:
    fields = _Fields(body, "load", command_id)
    model = _Fields(body.get("model"), "model", command_id)
    family = model.text("family") or ""
    name = model.text("name") or ""
    shape = shape_for_model(family, name)
    if shape is None:
        known = ", ".join(f"{s.family}/{s.name}" for s in CALL_SHAPES.values())
        raise ProtocolError(f"unknown model {family}/{name}; this worker serves {known}", command_id)
    loras = []
    raw_loras = fields.raw("loras") or []
    if not isinstance(raw_loras, list):
        raise ProtocolError("'load.loras' must be a list", command_id)
    for index, raw in enumerate(raw_loras):
        lora = _Fields(raw, f"loras[{index}]", command_id)
        path = _absolute(lora.text("path") or "", f"loras[{index}].path", command_id)
        scale = lora.number("scale", optional=True)
        loras.append(Lora(path=path, scale=1.0 if scale is None else scale))
    return LoadRequest(
        key=fields.text("key") or "",
        shape=shape,
        repo=model.text("repo") or "",
        quantize=model.integer("quantize", optional=True),
        loras=tuple(loras),
    )


def parse_task(raw: Any, command_id: str) -> Task:
    fields = _Fields(raw, "task", command_id)
    operation = fields.text("operation")
    if operation not in CALL_SHAPES:
        raise ProtocolError(
            f"unknown operation {operation!r}; expected one of {', '.join(CALL_SHAPES)}", command_id
        )
    prompt = fields.raw("prompt")
    if not isinstance(prompt, (str, dict)):
        raise ProtocolError("'task.prompt' must be a string or an object", command_id)
    if isinstance(prompt, dict) and operation != "ideogram4.generate":
        raise ProtocolError(f"'task.prompt' must be a string for {operation}", command_id)
    init_image_path = fields.text("init_image_path", optional=True)
    image_paths = fields.text_list("image_paths")
    for path in (init_image_path, *image_paths):
        if path is not None:
            _absolute(path, "input image paths", command_id)
    return Task(
        operation=operation or "",
        prompt=prompt,
        negative_prompt=fields.any_text("negative_prompt"),
        width=fields.integer("width") or 0,
        height=fields.integer("height") or 0,
        seed=fields.integer("seed") or 0,
        steps=fields.integer("steps") or 0,
        guidance=fields.number("guidance", optional=True),
        scheduler=fields.text("scheduler", optional=True),
        preset=fields.text("preset", optional=True),
        strict_caption_validation=fields.flag("strict_caption_validation", False),
        warn_on_caption_issues=fields.flag("warn_on_caption_issues", True),
        init_image_path=init_image_path,
        image_strength=fields.number("image_strength", optional=True),
        image_paths=image_paths,
    )


def _demand(fields: _Fields, every: int | None) -> PreviewDemand | None:
    """``max_size`` is required even when ``every`` is null (stop), as the protocol spells it."""
    max_size = fields.integer("max_size") or 0
    if max_size < MIN_PREVIEW_SIZE:
        raise fields._fail("max_size", f"an integer >= {MIN_PREVIEW_SIZE}")
    if every is None:
        return None
    if every < 1:
        raise fields._fail("every", "an integer >= 1 or null")
    return PreviewDemand(every=every, max_size=max_size)


def parse_run(body: dict[str, Any], command_id: str) -> RunRequest:
    fields = _Fields(body, "run", command_id)
    output_path = _absolute(fields.text("output_path") or "", "output_path", command_id)
    raw_previews = fields.raw("previews")
    previews = None
    if raw_previews is not None:
        preview_fields = _Fields(raw_previews, "run.previews", command_id)
        previews = _demand(preview_fields, preview_fields.integer("every"))
    return RunRequest(
        key=fields.text("key") or "",
        output_path=output_path,
        task=parse_task(body.get("task"), command_id),
        previews=previews,
    )


def parse_previews(body: dict[str, Any], command_id: str) -> PreviewsRequest:
    fields = _Fields(body, "previews", command_id)
    target = fields.text("target") or ""
    return PreviewsRequest(target=target, demand=_demand(fields, fields.integer("every", optional=True)))
