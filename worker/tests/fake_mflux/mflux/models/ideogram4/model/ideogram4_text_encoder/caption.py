"""Caption preparation with a small subset of mflux's verifier.

Same warning category, message prefix and strict-mode ValueError as mflux; the verifier only
checks the root keys (unknown keys, missing ``compositional_deconstruction``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ROOT_KEYS = ("high_level_description", "style_description", "compositional_deconstruction")


class Ideogram4CaptionWarning(UserWarning):
    pass


@dataclass(frozen=True)
class Ideogram4PreparedPrompt:
    prompt: str
    warnings: tuple[str, ...]
    is_json_caption: bool


def _verify(caption: dict[str, Any]) -> tuple[str, ...]:
    messages = []
    unknown = [key for key in caption if key not in ROOT_KEYS]
    if unknown:
        messages.append(f"root: unknown keys {unknown}")
    if "compositional_deconstruction" not in caption:
        messages.append("root: 'compositional_deconstruction' should exist")
    return tuple(messages)


class Ideogram4Caption:
    PLAIN_PROMPT_WARNING = (
        "plain prompt: Ideogram 4 was trained on structured JSON captions; plain text may reduce quality "
        "and increase safety-filter false positives"
    )

    @staticmethod
    def prepare(prompt: str | dict[str, Any]) -> Ideogram4PreparedPrompt:
        if isinstance(prompt, dict):
            compact = json.dumps(prompt, ensure_ascii=False, separators=(",", ":"))
            return Ideogram4PreparedPrompt(compact, _verify(prompt), True)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string or JSON-caption dict, got {type(prompt).__name__}")
        stripped = prompt.strip()
        if not stripped.startswith("{"):
            return Ideogram4PreparedPrompt(prompt, (Ideogram4Caption.PLAIN_PROMPT_WARNING,), False)
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError as exc:
            return Ideogram4PreparedPrompt(
                prompt, (f"invalid JSON caption: {exc}; prompt will be used verbatim",), False
            )
        if not isinstance(parsed, dict):
            kind = type(parsed).__name__
            message = f"JSON caption should be an object, got {kind}; prompt will be used verbatim"
            return Ideogram4PreparedPrompt(prompt, (message,), False)
        compact = json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))
        return Ideogram4PreparedPrompt(compact, _verify(parsed), True)

    @staticmethod
    def raise_for_warnings(messages: Sequence[str]) -> None:
        if messages:
            formatted = "\n".join(f"- {message}" for message in messages)
            raise ValueError(f"Ideogram 4 caption validation failed:\n{formatted}")

    @staticmethod
    def emit_warnings(messages: Sequence[str], stacklevel: int = 2) -> None:
        for message in messages:
            warnings.warn(f"Ideogram 4 caption: {message}", Ideogram4CaptionWarning, stacklevel=stacklevel)


def resolve_prompt(
    prompt: str | dict[str, Any], *, strict_caption_validation: bool, warn_on_caption_issues: bool
) -> str:
    prepared = Ideogram4Caption.prepare(prompt)
    if strict_caption_validation:
        Ideogram4Caption.raise_for_warnings(prepared.warnings)
    elif warn_on_caption_issues:
        Ideogram4Caption.emit_warnings(prepared.warnings, stacklevel=3)
    if not prepared.prompt:
        raise ValueError("prompt must not be empty")
    return prepared.prompt
