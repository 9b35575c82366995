"""Every name the adapter relies on in mflux's API, kept as data.

The adapter builds its constructor and ``generate_image`` calls from these tables, and
``tests/test_mflux_contract.py`` checks each name against the pinned mflux release's source.
A rename upstream therefore fails a test instead of a user's job. This module imports nothing
from mflux so the contract test can read it without the engine installed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """How one kiapi model maps onto one mflux class, and which keywords we pass to it."""

    family: str
    name: str
    operation: str
    module: str
    class_name: str
    config_factory: str
    init_keywords: tuple[str, ...]
    generate_keywords: tuple[str, ...]


_QWEN_INIT = ("quantize", "model_path", "lora_paths", "lora_scales", "model_config")

CALL_SHAPES: dict[str, ModelShape] = {
    "qwen.generate": ModelShape(
        family="qwen",
        name="image",
        operation="qwen.generate",
        module="mflux.models.qwen.variants.txt2img.qwen_image",
        class_name="QwenImage",
        config_factory="qwen_image",
        init_keywords=_QWEN_INIT,
        generate_keywords=(
            "seed",
            "prompt",
            "negative_prompt",
            "image_path",
            "image_strength",
            "num_inference_steps",
            "width",
            "height",
            "guidance",
            "scheduler",
        ),
    ),
    "qwen.edit": ModelShape(
        family="qwen",
        name="edit-2509",
        operation="qwen.edit",
        module="mflux.models.qwen.variants.edit.qwen_image_edit",
        class_name="QwenImageEdit",
        config_factory="qwen_image_edit",
        init_keywords=_QWEN_INIT,
        generate_keywords=(
            "seed",
            "prompt",
            "negative_prompt",
            "image_paths",
            "image_path",
            "num_inference_steps",
            "width",
            "height",
            "guidance",
            "scheduler",
        ),
    ),
    "ideogram4.generate": ModelShape(
        family="ideogram4",
        name="fp8",
        operation="ideogram4.generate",
        module="mflux.models.ideogram4",
        class_name="Ideogram4",
        config_factory="ideogram4_fp8",
        # Ideogram4 takes model_config before the LoRA arguments (unlike Qwen).
        init_keywords=("quantize", "model_path", "model_config", "lora_paths", "lora_scales"),
        # No steps and no guidance: the preset drives both.
        generate_keywords=(
            "seed",
            "prompt",
            "width",
            "height",
            "preset",
            "strict_caption_validation",
            "warn_on_caption_issues",
        ),
    ),
}


@dataclass(frozen=True)
class PreviewPath:
    """How one pipeline's in-loop latents become its image, for fitting step previews.

    The callback gets packed tokens (1, (H/16)*(W/16), 4C): each holds a 2x2 patch of latent pixels
    with C channels. ``channel_major``: a token's values run channel first (``c*4 + dy*2 + dx``,
    Qwen's ``unpack_latents``) rather than patch position first (``(dy*2 + dx)*C + c``, Ideogram 4's).
    The pipeline unpacks with ``<unpack_module>.<unpack_class>.unpack_latents(latents=, height=,
    width=)`` and decodes with ``VAEUtil.decode(vae=model.vae, latent=, tiling_config=)``.
    """

    channels: int
    channel_major: bool
    unpack_module: str
    unpack_class: str


_QWEN_PREVIEW = PreviewPath(
    channels=16,
    channel_major=True,
    unpack_module="mflux.models.qwen.latent_creator.qwen_latent_creator",
    unpack_class="QwenLatentCreator",
)

PREVIEW_PATHS: dict[str, PreviewPath] = {
    "qwen.generate": _QWEN_PREVIEW,
    "qwen.edit": _QWEN_PREVIEW,
    # Ideogram 4's unpack also de-normalises (a per-value scale and shift) before the Flux2 VAE.
    "ideogram4.generate": PreviewPath(
        channels=32,
        channel_major=False,
        unpack_module="mflux.models.ideogram4.latent_creator",
        unpack_class="Ideogram4LatentCreator",
    ),
}
PREVIEW_UNPACK_METHOD = "unpack_latents"
PREVIEW_UNPACK_KEYWORDS = ("latents", "height", "width")
VAE_ATTRIBUTE = "vae"
VAE_DECODE_MODULE = "mflux.models.common.vae.vae_util"
VAE_DECODE_CLASS = "VAEUtil"
VAE_DECODE_METHOD = "decode"
VAE_DECODE_KEYWORDS = ("vae", "latent", "tiling_config")

# Keywords left out of a call when the task has null for them, so mflux's own default applies
# (passing guidance=None to Qwen would mean guidance 0.0, not the default 4.0).
OMIT_WHEN_NULL: frozenset[str] = frozenset({"guidance", "scheduler"})

MODEL_CONFIG_MODULE = "mflux.models.common.config"
MODEL_CONFIG_CLASS = "ModelConfig"

EXCEPTIONS_MODULE = "mflux.utils.exceptions"
STOP_EXCEPTION = "StopImageGenerationException"
STOP_EXCEPTION_BASES = ("MFluxUserException", "MFluxException")

CALLBACKS_ATTRIBUTE = "callbacks"
REGISTER_METHOD = "register"
IN_LOOP_METHOD = "call_in_loop"
IN_LOOP_KEYWORDS = ("t", "seed", "prompt", "latents", "config", "time_steps")

CAPTION_WARNING_MODULE = "mflux.models.ideogram4.model.ideogram4_text_encoder.caption"
CAPTION_WARNING_CLASS = "Ideogram4CaptionWarning"

# Scheduler names passed through to Qwen. mflux imports any dotted name as module.Class, so
# only registry names for the flow-matching samplers are accepted (seedvr2_euler is for SeedVR2).
ALLOWED_SCHEDULERS = (
    "linear",
    "LinearScheduler",
    "flow_match_euler_discrete",
    "FlowMatchEulerDiscreteScheduler",
)

# The distribution name whose metadata carries mflux's version (mflux has no __version__).
MFLUX_DISTRIBUTION = "mflux"

# The Hugging Face commit mflux loads each of our default repos from: mflux pins built-in repos by
# repo id (``ModelRevisions.PINNED``) and, offline, needs exactly that snapshot in the cache. A repo
# that is not listed (Qwen/Qwen-Image, or any repo a model setting names) loads ``main``.
# ``kiapi activate`` downloads these revisions and the server's readiness check asks for them; the
# contract test compares this table with the pinned release's source.
REVISIONS_MODULE = "mflux.models.common.resolution.model_revisions"
REVISIONS_CLASS = "ModelRevisions"
REVISIONS_ATTRIBUTE = "PINNED"
PINNED_REVISIONS: dict[str, str] = {
    "Qwen/Qwen-Image-Edit-2509": "d3968ef930e841f4c73640fb8afa3b306a78167e",
    "ideogram-ai/ideogram-4-fp8": "ee79a7237b519f1402ceacf952f30c8a31ec5073",
}
# Default repos of ours that mflux deliberately does not pin (checked too, so a new pin is noticed).
UNPINNED_REPOS: tuple[str, ...] = ("Qwen/Qwen-Image",)


def shape_for_model(family: str, name: str) -> ModelShape | None:
    """The shape serving a (family, name) pair, or None for a model the worker does not know."""
    for shape in CALL_SHAPES.values():
        if shape.family == family and shape.name == name:
            return shape
    return None
