"""ModelConfig with the cached static factories the worker uses (same names as mflux)."""

from __future__ import annotations

from functools import lru_cache


class ModelConfig:
    def __init__(
        self,
        priority: int,
        aliases: list[str],
        model_name: str,
        max_sequence_length: int | None = None,
        supports_guidance: bool | None = None,
        requires_sigma_shift: bool | None = None,
    ) -> None:
        self.priority = priority
        self.aliases = aliases
        self.model_name = model_name
        self.max_sequence_length = max_sequence_length
        self.supports_guidance = supports_guidance
        self.requires_sigma_shift = requires_sigma_shift

    def __repr__(self) -> str:
        return f"ModelConfig({self.model_name!r})"

    @staticmethod
    @lru_cache
    def qwen_image() -> ModelConfig:
        return AVAILABLE_MODELS["qwen-image"]

    @staticmethod
    @lru_cache
    def qwen_image_edit() -> ModelConfig:
        return AVAILABLE_MODELS["qwen-image-edit"]

    @staticmethod
    @lru_cache
    def ideogram4_fp8() -> ModelConfig:
        return AVAILABLE_MODELS["ideogram-4-fp8"]


AVAILABLE_MODELS = {
    "qwen-image": ModelConfig(
        priority=15, aliases=["qwen-image", "qwen"], model_name="Qwen/Qwen-Image", requires_sigma_shift=True
    ),
    "qwen-image-edit": ModelConfig(
        priority=16,
        aliases=["qwen-image-edit", "qwen-edit", "qwen-edit-plus", "qwen-edit-2509"],
        model_name="Qwen/Qwen-Image-Edit-2509",
        requires_sigma_shift=True,
    ),
    "ideogram-4-fp8": ModelConfig(
        priority=25,
        aliases=["ideogram-4-fp8", "ideogram4-fp8", "ideogram4", "ideogram-4", "ideogram"],
        model_name="ideogram-ai/ideogram-4-fp8",
        max_sequence_length=2048,
        supports_guidance=True,
        requires_sigma_shift=False,
    ),
}
