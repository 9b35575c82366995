"""The only place mflux is patched for the tiny checkpoints; call ``apply()`` before loading a model.

mflux builds its Qwen modules at full size from numbers written in its constructors, and reads none
of the checkpoints' ``config.json`` files for them. A tiny checkpoint therefore needs those
constructor numbers changed, and nothing else: loading (path resolution, the Hugging Face cache,
shards, indexes), weight mapping, tokenizers, quantization, LoRA and generation all stay mflux's own
code. Every number comes from ``tiny_models.qwen.TINY``, which also wrote the checkpoints.

Patches (mflux 0.24.0, all under ``mflux.models.qwen.model``):

1. ``qwen_transformer.qwen_transformer.QwenTransformer.__init__``: defaults ``num_layers=60``,
   ``attention_head_dim=128``, ``num_attention_heads=24``, ``joint_attention_dim=3584`` become the
   tiny ones; then ``pos_embed`` is rebuilt with the tiny ``axes_dims_rope``, because the constructor
   hard-codes ``axes_dim=[16, 56, 56]`` (sized for 128-wide heads). Explicit arguments
   (``zero_cond_t`` from ``transformer_overrides``) still win.
2. ``qwen_text_encoder.qwen_encoder.QwenEncoder.__init__``: defaults ``hidden_size=3584``,
   ``num_hidden_layers=28`` become tiny (``vocab_size`` stays the real 152064); then ``rotary_emb``
   is rebuilt for the tiny head width, because the constructor hard-codes ``dim=hidden_size // 28``
   (28 = the real head count).
3. ``qwen_text_encoder.qwen_encoder_layer.QwenEncoderLayer.__init__``: defaults ``hidden_size``,
   ``num_attention_heads=28``, ``num_key_value_heads=4``, ``intermediate_size=18944`` become tiny;
   then ``self_attn.rope_scaling`` gets the tiny ``mrope_section``, because the constructor
   hard-codes ``[16, 24, 24]`` (half of a 128-wide head).
4. ``qwen_text_encoder.qwen_vision_transformer.VisionTransformer.__init__``: defaults
   ``embed_dim=1280``, ``depth=32``, ``num_heads=16``, ``mlp_ratio=2.671875``, ``hidden_size=3584``,
   ``fullatt_block_indexes=[7, 15, 23, 31]`` become tiny (patch size, temporal patch, merge size and
   window stay the real ones, so the image processor's grid is the real one).
5. ``qwen_vae.qwen_image_encoder_3d.QwenImageEncoder3D.__init__``: replaced, because its base width
   (``self.dim = 96``) is an assignment in the body, not a parameter. The replacement builds the same
   modules in the same order with ``TINY.vae_base_dim``.
6. ``qwen_vae.qwen_image_decoder_3d.QwenImageDecoder3D.__init__``: replaced for the same reason
   (widths 384/192/96 written out); same modules with ``4x/2x/1x TINY.vae_base_dim``.

Kept real on purpose (the tiny checkpoints use the real values): 16 latent channels, the 2x2 patch,
the 256-wide timestep projection, the feed-forward ratio 4, the VAE's block structure and latent
statistics, the vocabulary size and the special token ids, the vision patch/merge/window sizes.

``apply()`` is idempotent and imports mflux (about 1.5 s), so it can run from a ``.pth`` file at
interpreter start (``import tiny_models.patches; tiny_models.patches.apply()`` when
``KIAPI_TINY_MODELS=1``); model classes built afterwards are tiny, and nothing else changes.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
from collections.abc import Callable
from typing import Any

from tiny_models.qwen import TINY, VAE_DIM_MULT, VAE_NUM_RES_BLOCKS

__all__ = ["apply", "apply_qwen_patches", "patched"]

_MARK = "_kiapi_tiny_original"


def patched() -> list[str]:
    """The ``module.Class`` names whose constructors are currently patched (for tests and logs)."""
    names = []
    for module_name, class_name in _TARGETS:
        cls = getattr(importlib.import_module(module_name), class_name)
        if hasattr(cls.__init__, _MARK):
            names.append(f"{module_name}.{class_name}")
    return names


def _wrap_init(cls: type, defaults: dict[str, Any], after: Callable[..., None] | None = None) -> None:
    """Give ``cls.__init__`` new defaults (explicit arguments win), then run ``after(self, args)``."""
    if hasattr(cls.__init__, _MARK):
        return
    original = cls.__init__
    signature = inspect.signature(original)
    unknown = set(defaults) - set(signature.parameters)
    if unknown:
        # mflux renamed a parameter: fail loudly instead of silently building a full-size model.
        raise RuntimeError(f"{cls.__qualname__}.__init__ has no parameters {sorted(unknown)}")

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        for name, value in defaults.items():
            bound.arguments.setdefault(name, value)
        bound.apply_defaults()  # so `after` sees every argument the constructor used
        original(*bound.args, **bound.kwargs)
        if after is not None:
            after(self, bound.arguments)

    setattr(__init__, _MARK, original)
    cls.__init__ = __init__


def _replace_init(cls: type, replacement: Callable[..., None]) -> None:
    if hasattr(cls.__init__, _MARK):
        return
    original = cls.__init__
    functools.update_wrapper(replacement, original)
    setattr(replacement, _MARK, original)
    cls.__init__ = replacement


_QWEN = "mflux.models.qwen.model"
_TARGETS = [
    (f"{_QWEN}.qwen_transformer.qwen_transformer", "QwenTransformer"),
    (f"{_QWEN}.qwen_text_encoder.qwen_encoder", "QwenEncoder"),
    (f"{_QWEN}.qwen_text_encoder.qwen_encoder_layer", "QwenEncoderLayer"),
    (f"{_QWEN}.qwen_text_encoder.qwen_vision_transformer", "VisionTransformer"),
    (f"{_QWEN}.qwen_vae.qwen_image_encoder_3d", "QwenImageEncoder3D"),
    (f"{_QWEN}.qwen_vae.qwen_image_decoder_3d", "QwenImageDecoder3D"),
]


def apply_qwen_patches() -> None:
    """Make mflux's Qwen-Image / Qwen-Image-Edit modules the size of the tiny checkpoints."""
    from mflux.models.qwen.model.qwen_text_encoder.qwen_encoder import QwenEncoder
    from mflux.models.qwen.model.qwen_text_encoder.qwen_encoder_layer import QwenEncoderLayer
    from mflux.models.qwen.model.qwen_text_encoder.qwen_rope import QwenRotaryEmbedding
    from mflux.models.qwen.model.qwen_text_encoder.qwen_vision_transformer import VisionTransformer
    from mflux.models.qwen.model.qwen_transformer.qwen_rope import QwenEmbedRopeMLX
    from mflux.models.qwen.model.qwen_transformer.qwen_transformer import QwenTransformer
    from mflux.models.qwen.model.qwen_vae.qwen_image_decoder_3d import QwenImageDecoder3D
    from mflux.models.qwen.model.qwen_vae.qwen_image_encoder_3d import QwenImageEncoder3D

    def transformer_rope(self: Any, arguments: dict[str, Any]) -> None:
        # Same theta and scale_rope as the constructor; only the per-axis split follows the head.
        self.pos_embed = QwenEmbedRopeMLX(theta=10000, axes_dim=list(TINY.axes_dims_rope), scale_rope=True)

    _wrap_init(
        QwenTransformer,
        {
            "num_layers": TINY.num_layers,
            "attention_head_dim": TINY.attention_head_dim,
            "num_attention_heads": TINY.num_attention_heads,
            "joint_attention_dim": TINY.text_hidden_size,
        },
        after=transformer_rope,
    )

    def encoder_rope(self: Any, arguments: dict[str, Any]) -> None:
        self.rotary_emb = QwenRotaryEmbedding(
            dim=arguments["hidden_size"] // TINY.text_num_heads,
            max_position_embeddings=arguments["max_position_embeddings"],
            base=arguments["rope_theta"],
            rope_type="default",
        )

    _wrap_init(
        QwenEncoder,
        {"hidden_size": TINY.text_hidden_size, "num_hidden_layers": TINY.text_num_layers},
        after=encoder_rope,
    )

    def layer_mrope(self: Any, arguments: dict[str, Any]) -> None:
        self.self_attn.rope_scaling = {"mrope_section": list(TINY.text_mrope_section)}

    _wrap_init(
        QwenEncoderLayer,
        {
            "hidden_size": TINY.text_hidden_size,
            "num_attention_heads": TINY.text_num_heads,
            "num_key_value_heads": TINY.text_num_kv_heads,
            "intermediate_size": TINY.text_intermediate_size,
        },
        after=layer_mrope,
    )

    _wrap_init(
        VisionTransformer,
        {
            "embed_dim": TINY.vision_hidden_size,
            "depth": TINY.vision_depth,
            "num_heads": TINY.vision_num_heads,
            "mlp_ratio": TINY.vision_intermediate_size / TINY.vision_hidden_size,
            "hidden_size": TINY.text_hidden_size,
            "fullatt_block_indexes": list(TINY.vision_fullatt_block_indexes),
        },
    )

    _replace_init(QwenImageEncoder3D, _tiny_vae_encoder_init)
    _replace_init(QwenImageDecoder3D, _tiny_vae_decoder_init)


def _tiny_vae_encoder_init(self: Any) -> None:
    """``QwenImageEncoder3D.__init__`` of mflux 0.24.0 with ``dim`` from TINY (same modules, same order)."""
    from mflux.models.qwen.model.qwen_vae.qwen_image_causal_conv_3d import QwenImageCausalConv3D
    from mflux.models.qwen.model.qwen_vae.qwen_image_down_block_3d import QwenImageDownBlock3D
    from mflux.models.qwen.model.qwen_vae.qwen_image_mid_block_3d import QwenImageMidBlock3D
    from mflux.models.qwen.model.qwen_vae.qwen_image_rms_norm import QwenImageRMSNorm
    from mlx import nn

    nn.Module.__init__(self)
    self.dim = TINY.vae_base_dim
    self.z_dim = 32
    self.dim_mult = list(VAE_DIM_MULT)
    self.num_res_blocks = [VAE_NUM_RES_BLOCKS] * len(VAE_DIM_MULT)
    self.attn_scales = []
    # mflux's own (single-frame) schedule, not the checkpoint's temperal_downsample: keep it as is.
    self.temporal_downsample = [False, False, True, True]
    self.dropout = 0.0
    dims = [self.dim * m for m in [1, *self.dim_mult]]
    self.conv_in = QwenImageCausalConv3D(3, dims[0], 3, 1, 1)
    blocks = []
    for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
        mode = "downsample3d" if self.temporal_downsample[i] else "downsample2d"
        if i == len(dims) - 2:
            mode = None
        blocks.append(
            QwenImageDownBlock3D(in_dim, out_dim, num_res_blocks=self.num_res_blocks[i], downsample_mode=mode)
        )
    self.down_blocks = blocks
    self.mid_block = QwenImageMidBlock3D(dims[-1], num_layers=1)
    self.norm_out = QwenImageRMSNorm(dims[-1], images=False)
    self.conv_out = QwenImageCausalConv3D(dims[-1], 32, 3, 1, 1)


def _tiny_vae_decoder_init(self: Any) -> None:
    """``QwenImageDecoder3D.__init__`` of mflux 0.24.0 with widths 4b/2b/b for b = TINY.vae_base_dim."""
    from mflux.models.qwen.model.qwen_vae.qwen_image_causal_conv_3d import QwenImageCausalConv3D
    from mflux.models.qwen.model.qwen_vae.qwen_image_mid_block_3d import QwenImageMidBlock3D
    from mflux.models.qwen.model.qwen_vae.qwen_image_rms_norm import QwenImageRMSNorm
    from mflux.models.qwen.model.qwen_vae.qwen_image_up_block_3d import QwenImageUpBlock3D
    from mlx import nn

    nn.Module.__init__(self)
    b = TINY.vae_base_dim
    self.conv_in = QwenImageCausalConv3D(16, 4 * b, 3, 1, 1)
    self.mid_block = QwenImageMidBlock3D(4 * b, num_layers=1)
    self.up_block0 = QwenImageUpBlock3D(4 * b, 4 * b, num_res_blocks=2, upsample_mode="upsample3d")
    self.up_block1 = QwenImageUpBlock3D(2 * b, 4 * b, num_res_blocks=2, upsample_mode="upsample3d")
    self.up_block2 = QwenImageUpBlock3D(2 * b, 2 * b, num_res_blocks=2, upsample_mode="upsample2d")
    self.up_block3 = QwenImageUpBlock3D(b, b, num_res_blocks=2, upsample_mode=None)
    self.norm_out = QwenImageRMSNorm(b, images=False)
    self.conv_out = QwenImageCausalConv3D(b, 3, 3, 1, 1)


def apply() -> list[str]:
    """Every tiny-model patch: Qwen's, and Ideogram 4's when ``tiny_models.ideogram4`` provides them."""
    apply_qwen_patches()
    try:
        ideogram4 = importlib.import_module("tiny_models.ideogram4")
    except ModuleNotFoundError as exc:
        if exc.name != "tiny_models.ideogram4":
            raise
    else:
        apply_ideogram4 = getattr(ideogram4, "apply_ideogram4_patches", None)
        if apply_ideogram4 is not None:
            apply_ideogram4()
    return patched()
