"""Routes callback objects by the methods they have, as mflux's registry does."""

from __future__ import annotations

from typing import Any

from mflux.callbacks.generation_context import GenerationContext


class CallbackRegistry:
    def __init__(self) -> None:
        self.in_loop: list[Any] = []
        self.before_loop: list[Any] = []
        self.interrupt: list[Any] = []
        self.after_loop: list[Any] = []

    def register(self, callback: Any) -> None:
        # One object may land in several lists.
        for method, bucket in (
            ("call_before_loop", self.before_loop),
            ("call_in_loop", self.in_loop),
            ("call_after_loop", self.after_loop),
            ("call_interrupt", self.interrupt),
        ):
            if hasattr(callback, method):
                bucket.append(callback)

    def start(self, seed: int, prompt: Any, config: Any) -> GenerationContext:
        return GenerationContext(self, seed, prompt, config)

    def before_loop_callbacks(self) -> list[Any]:
        return self.before_loop

    def in_loop_callbacks(self) -> list[Any]:
        return self.in_loop

    def after_loop_callbacks(self) -> list[Any]:
        return self.after_loop

    def interrupt_callbacks(self) -> list[Any]:
        return self.interrupt
