"""Calls the registered callbacks with the keyword arguments mflux uses."""

from __future__ import annotations

from typing import Any


class GenerationContext:
    def __init__(self, registry: Any, seed: int, prompt: Any, config: Any) -> None:
        self._registry = registry
        self._seed = seed
        self._prompt = prompt
        self._config = config

    def before_loop(self, latents: Any, *, canny_image: Any = None, depth_image: Any = None) -> None:
        for subscriber in self._registry.before_loop_callbacks():
            subscriber.call_before_loop(
                seed=self._seed,
                prompt=self._prompt,
                latents=latents,
                config=self._config,
                canny_image=canny_image,
                depth_image=depth_image,
            )

    def in_loop(self, t: int, latents: Any, time_steps: Any = None) -> None:
        # Qwen txt2img passes no time_steps: the config's own iterator is used then.
        time_steps = time_steps or self._config.time_steps
        for subscriber in self._registry.in_loop_callbacks():
            subscriber.call_in_loop(
                t=t,
                seed=self._seed,
                prompt=self._prompt,
                latents=latents,
                config=self._config,
                time_steps=time_steps,
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
