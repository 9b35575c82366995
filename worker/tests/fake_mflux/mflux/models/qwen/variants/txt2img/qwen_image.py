"""Fake QwenImage: real constructor and generate_image signatures, a loop that fires callbacks."""

from __future__ import annotations

from pathlib import Path

from mflux import _fake
from mflux.models.common.config import ModelConfig
from mflux.models.common.config.config import Config
from mflux.utils.exceptions import StopImageGenerationException
from mflux.utils.generated_image import GeneratedImage


class QwenImage:
    @_fake.logged("init")
    def __init__(
        self,
        quantize: int | None = None,
        model_path: str | None = None,
        lora_paths: list[str] | None = None,
        lora_scales: list[float] | None = None,
        bake_lora: bool = True,
        model_config: ModelConfig = ModelConfig.qwen_image(),
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
        num_inference_steps: int = 4,
        height: int = 1024,
        width: int = 1024,
        guidance: float = 4.0,
        image_path: Path | str | None = None,
        image_strength: float | None = None,
        scheduler: str = "linear",
        negative_prompt: str | None = None,
        pid_decode: bool = False,
        pid_degrade_sigma: float = 0.0,
    ) -> GeneratedImage:
        _fake.raise_if_requested()
        config = Config(
            width=width,
            height=height,
            guidance=guidance,
            scheduler=scheduler,
            image_path=image_path,
            image_strength=image_strength,
            model_config=self.model_config,
            num_inference_steps=num_inference_steps,
        )
        _ = config.scheduler  # resolved while creating the latents in mflux
        if config.init_time_step > 0 and config.image_path is not None:
            _fake.image_size(config.image_path)  # mflux loads the init image here
        denoiser = _fake.FakeDenoiser(seed, config.width, config.height, 64, len(config.time_steps))
        latents = denoiser.initial
        # mflux caches encoded prompts under this key and never evicts them (docs/compatibility.md §10.11).
        self.prompt_cache.setdefault(f"{prompt}|NEG|{negative_prompt}", object())

        ctx = self.callbacks.start(seed=seed, prompt=prompt, config=config)
        ctx.before_loop(latents)
        with _fake.Activations():
            for position, t in enumerate(config.time_steps, start=1):
                try:
                    _fake.before_step(position)
                    latents = denoiser.after(position)
                    ctx.in_loop(t, latents)
                except KeyboardInterrupt:
                    ctx.interruption(t, latents)
                    raise StopImageGenerationException(
                        f"Stopping image generation at step {t + 1}/{config.num_inference_steps}"
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
            generation_time=config.time_steps.format_dict["elapsed"],
            lora_paths=self.lora_paths,
            lora_scales=self.lora_scales,
            height=config.height,
            width=config.width,
            image_path=config.image_path,
            image_strength=config.image_strength,
            negative_prompt=negative_prompt,
        )
