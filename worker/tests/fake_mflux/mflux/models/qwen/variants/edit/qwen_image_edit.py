"""Fake QwenImageEdit: several input images, output size from the last one when not given."""

from __future__ import annotations

import math
from pathlib import Path

from mflux import _fake
from mflux.models.common.config.config import Config
from mflux.models.common.config.model_config import ModelConfig
from mflux.utils.exceptions import StopImageGenerationException
from mflux.utils.generated_image import GeneratedImage


class QwenImageEdit:
    @_fake.logged("init")
    def __init__(
        self,
        quantize: int | None = None,
        model_path: str | None = None,
        lora_paths: list[str] | None = None,
        lora_scales: list[float] | None = None,
        bake_lora: bool = True,
        model_config: ModelConfig = ModelConfig.qwen_image_edit(),
    ):
        _fake.initialize(
            self,
            quantize=quantize,
            model_path=model_path,
            lora_paths=lora_paths,
            lora_scales=lora_scales,
            model_config=model_config,
        )
        self.vae = _fake.qwen_vae()

    @_fake.logged("generate_image")
    def generate_image(
        self,
        seed: int,
        prompt: str,
        image_paths: list[str],
        num_inference_steps: int = 4,
        height: int | None = None,
        width: int | None = None,
        guidance: float = 4.0,
        image_path: Path | str | None = None,
        scheduler: str = "linear",
        negative_prompt: str | None = None,
    ) -> GeneratedImage:
        _fake.raise_if_requested()
        config = self._compute_dimensions(
            width=width,
            height=height,
            guidance=guidance,
            scheduler=scheduler,
            image_path=image_path,
            image_paths=image_paths,
            num_inference_steps=num_inference_steps,
        )
        _ = config.scheduler
        for path in image_paths:
            _fake.image_size(path)  # every image is loaded for the conditioning latents
        time_steps = _fake.FakeTqdm(range(config.num_inference_steps))
        denoiser = _fake.FakeDenoiser(seed, config.width, config.height, 64, time_steps.total)
        latents = denoiser.initial

        ctx = self.callbacks.start(seed=seed, prompt=prompt, config=config)
        ctx.before_loop(latents)
        with _fake.Activations():
            for position, t in enumerate(time_steps, start=1):
                try:
                    _fake.before_step(position)
                    latents = denoiser.after(position)
                    ctx.in_loop(t, latents, time_steps=time_steps)
                except KeyboardInterrupt:
                    ctx.interruption(t, latents, time_steps=time_steps)
                    raise StopImageGenerationException(
                        f"Stopping image generation at step {t + 1}/{time_steps.total}"
                    ) from None
        ctx.after_loop(latents)

        return GeneratedImage(
            image=_fake.FakeImage(config.width, config.height, seed),
            model_config=self.model_config,
            seed=seed,
            prompt=prompt,
            steps=config.num_inference_steps,
            guidance=config.guidance,
            quantization=self.bits,
            generation_time=time_steps.format_dict["elapsed"],
            lora_paths=self.lora_paths,
            lora_scales=self.lora_scales,
            height=config.height,
            width=config.width,
            image_path=config.image_path,
            image_paths=image_paths,
            negative_prompt=negative_prompt,
        )

    def _compute_dimensions(
        self,
        image_paths: list[str],
        num_inference_steps: int,
        height: int | None,
        width: int | None,
        guidance: float,
        image_path: Path | str | None,
        scheduler: str,
    ) -> Config:
        """Missing width/height follow the last image's aspect at ~1024² area (then floored to 16)."""
        last_width, last_height = _fake.image_size(image_paths[-1])
        ratio = last_width / last_height
        calculated_width = math.sqrt(1024 * 1024 * ratio)
        calculated_height = calculated_width / ratio
        use_width = width or int(round(calculated_width / 32) * 32)
        use_height = height or int(round(calculated_height / 32) * 32)
        return Config(
            width=use_width // 16 * 16,
            height=use_height // 16 * 16,
            guidance=guidance,
            scheduler=scheduler,
            image_path=image_path,
            model_config=self.model_config,
            num_inference_steps=num_inference_steps,
        )
