"""Fake Ideogram4: caption handling, dimension and preset checks, per-step callbacks."""

from __future__ import annotations

from typing import Any

from mflux import _fake
from mflux.models.common.config import Config, ModelConfig
from mflux.models.ideogram4.model.ideogram4_text_encoder.caption import resolve_prompt
from mflux.utils.exceptions import StopImageGenerationException
from mflux.utils.generated_image import GeneratedImage

# preset -> number of steps; the guidance schedule ends on 7.0 for all of them.
PRESETS = {"V4_QUALITY_48": 48, "V4_DEFAULT_20": 20, "V4_TURBO_12": 12}
MIN_DIMENSION, MAX_DIMENSION, DIMENSION_STEP = 256, 2048, 16


def _validate_dimensions(width: int, height: int) -> None:
    for label, value in (("width", width), ("height", height)):
        if value < MIN_DIMENSION or value > MAX_DIMENSION:
            raise ValueError(f"{label} must be in [{MIN_DIMENSION}, {MAX_DIMENSION}], got {value}")
        if value % DIMENSION_STEP:
            raise ValueError(f"{label} must be a multiple of {DIMENSION_STEP}, got {value}")


def _preset_steps(name: str | None) -> int:
    key = (name or "V4_DEFAULT_20").strip().upper()
    if key not in PRESETS:
        raise ValueError(f"Unknown Ideogram 4 preset {name!r}. Supported: {', '.join(sorted(PRESETS))}")
    return PRESETS[key]


class Ideogram4:
    @_fake.logged("init")
    def __init__(
        self,
        quantize: int | None = None,
        model_path: str | None = None,
        model_config: ModelConfig = ModelConfig.ideogram4_fp8(),
        lora_paths: list[str] | None = None,
        lora_scales: list[float] | None = None,
        bake_lora: bool = True,
    ):
        _fake.initialize(
            self,
            quantize=quantize,
            model_path=model_path,
            lora_paths=lora_paths,
            lora_scales=lora_scales,
            model_config=model_config,
        )
        self.vae = _fake.flux2_vae()

    @_fake.logged("generate_image")
    def generate_image(
        self,
        seed: int,
        prompt: str | dict[str, Any],
        num_inference_steps: int | None = None,
        height: int = 1024,
        width: int = 1024,
        guidance: float | None = None,
        preset: str | None = None,
        strict_caption_validation: bool = False,
        warn_on_caption_issues: bool = True,
        cfg_end: float | None = None,
        pid_decode: bool = False,
        pid_degrade_sigma: float = 0.0,
    ) -> GeneratedImage:
        prompt = resolve_prompt(
            prompt,
            strict_caption_validation=strict_caption_validation,
            warn_on_caption_issues=warn_on_caption_issues,
        )
        _validate_dimensions(width=width, height=height)
        preset_steps = _preset_steps(preset)
        if num_inference_steps is None:
            num_steps = preset_steps
        else:
            if num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
            num_steps = num_inference_steps
        _fake.raise_if_requested()
        config = Config(
            width=width,
            height=height,
            guidance=guidance if guidance is not None else 7.0,
            scheduler="linear",
            model_config=self.model_config,
            num_inference_steps=num_steps,
        )
        denoiser = _fake.FakeDenoiser(seed, config.width, config.height, 128, num_steps)
        latents = denoiser.initial

        ctx = self.callbacks.start(seed=seed, prompt=prompt, config=config)
        ctx.before_loop(latents)
        time_steps = config.time_steps
        with _fake.Activations():
            for position, step_index in enumerate(time_steps, start=1):
                try:
                    _fake.before_step(position)
                    latents = denoiser.after(position)
                    ctx.in_loop(step_index, latents, time_steps=time_steps)
                except KeyboardInterrupt:
                    ctx.interruption(step_index, latents, time_steps=time_steps)
                    raise StopImageGenerationException(
                        f"Stopping image generation at step {step_index + 1}/{config.num_inference_steps}"
                    ) from None
        ctx.after_loop(latents)

        return GeneratedImage(
            image=_fake.FakeImage(config.width, config.height, seed),
            model_config=self.model_config,
            seed=seed,
            prompt=prompt,
            steps=num_steps,
            guidance=config.guidance,
            quantization=self.bits,
            generation_time=time_steps.format_dict["elapsed"],
            lora_paths=self.lora_paths,
            lora_scales=self.lora_scales,
            height=config.height,
            width=config.width,
        )
