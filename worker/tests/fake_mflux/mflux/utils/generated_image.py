"""What ``generate_image`` returns; kiapi only reads ``.image``."""

from __future__ import annotations

from typing import Any


class GeneratedImage:
    def __init__(
        self,
        image: Any,
        model_config: Any,
        seed: int,
        prompt: Any,
        steps: int,
        guidance: float | None,
        quantization: int | None,
        generation_time: float,
        lora_paths: list[str] | None = None,
        lora_scales: list[float] | None = None,
        height: int | None = None,
        width: int | None = None,
        image_path: Any = None,
        image_paths: list[Any] | None = None,
        image_strength: float | None = None,
        negative_prompt: str | None = None,
    ) -> None:
        self.image = image
        self.model_config = model_config
        self.seed = seed
        self.prompt = prompt
        self.steps = steps
        self.guidance = guidance
        self.quantization = quantization
        self.generation_time = generation_time
        self.lora_paths = lora_paths
        self.lora_scales = lora_scales
        self.height = height
        self.width = width
        self.image_path = image_path
        self.image_paths = image_paths
        self.image_strength = image_strength
        self.negative_prompt = negative_prompt
