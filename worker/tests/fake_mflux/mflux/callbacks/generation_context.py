"""Calls the registered callbacks with the keyword arguments mflux uses."""

from __future__ import annotations

import inspect
from typing import Any


class GenerationContext:
    _OPT_IN_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

    def __init__(self, registry: Any, seed: int, prompt: Any, config: Any) -> None:
        self._registry = registry
        self._seed = seed
        self._prompt = prompt
        self._config = config

    def before_loop(
        self,
        latents: Any,
        *,
        canny_image: Any = None,
        depth_image: Any = None,
        control_images: Any = None,
    ) -> None:
        for subscriber in self._registry.before_loop_callbacks():
            subscriber.call_before_loop(
                seed=self._seed,
                prompt=self._prompt,
                latents=latents,
                config=self._config,
                canny_image=canny_image,
                depth_image=depth_image,
                control_images=control_images,
            )

    def in_loop(self, t: int, latents: Any, time_steps: Any = None, denoised: Any = None) -> None:
        # Qwen txt2img passes no time_steps: the config's own iterator is used then.
        time_steps = time_steps or self._config.time_steps
        for subscriber in self._registry.in_loop_callbacks():
            # mflux 0.24: `denoised` only for a callback that declares it.
            extra = {"denoised": denoised} if GenerationContext._accepts_denoised(subscriber) else {}
            subscriber.call_in_loop(
                t=t,
                seed=self._seed,
                prompt=self._prompt,
                latents=latents,
                config=self._config,
                time_steps=time_steps,
                **extra,
            )

    def after_loop(self, latents: Any) -> None:
        for subscriber in self._registry.after_loop_callbacks():
            subscriber.call_after_loop(
                seed=self._seed, prompt=self._prompt, latents=latents, config=self._config
            )

    def interruption(self, t: int, latents: Any, time_steps: Any = None) -> None:
        time_steps = time_steps or self._config.time_steps
        for subscriber in self._registry.interrupt_callbacks():
            subscriber.call_interrupt(
                t=t,
                seed=self._seed,
                prompt=self._prompt,
                latents=latents,
                config=self._config,
                time_steps=time_steps,
            )

    @staticmethod
    def _accepts_denoised(subscriber: Any) -> bool:
        try:
            parameters = inspect.signature(subscriber.call_in_loop).parameters.values()
        except (TypeError, ValueError):
            return False
        return any(p.name == "denoised" and p.kind in GenerationContext._OPT_IN_KINDS for p in parameters)
