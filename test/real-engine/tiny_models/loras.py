"""Tiny Qwen-Image LoRA files in formats mflux 0.24's ``QwenLoRAMapping`` really recognises.

Styles (key names for block ``i`` and module ``attn.to_q``; every attention projection and both
feed-forwards of every block are adapted):

- ``comfy`` (default): ``diffusion_model.transformer_blocks.{i}.attn.to_q.lora_A.weight`` /
  ``lora_B.weight``, no alpha (the layout of ComfyUI / diffusion-pipe Qwen LoRAs such as the
  Lightning ones).
- ``kohya``: ``lora_unet_transformer_blocks_{i}_attn_to_q.lora_down.weight`` / ``lora_up.weight``
  plus a scalar ``.alpha``.
- ``peft``: ``transformer_blocks.{i}.attn.to_q.lora_A.default.weight`` / ``lora_B.default.weight``.

Not recognised by mflux 0.24 (checked against ``QwenLoRAMapping``): the bare diffusers names
``transformer_blocks.{i}.attn.to_q.lora_A.weight`` and ``transformer.transformer_blocks...lora_A.weight``.

``no_match=True`` writes a valid LoRA whose names belong to another model family (FLUX's
``double_blocks``), so mflux applies nothing and raises "No LoRA layers were applied".

Shapes follow the convention of every format above: ``A`` / ``down`` is ``(rank, in_features)``,
``B`` / ``up`` is ``(out_features, rank)``. The values are random from the seed and, unlike a
freshly initialised LoRA (``B = 0``), large enough that the update is of the order of the tiny
weights themselves, so the image visibly changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tiny_models.checkpoint_io import Tensor, TensorFactory, write_safetensors
from tiny_models.qwen import TINY, QwenTinyDims

STYLES = ("comfy", "kohya", "peft")


def _modules(dims: QwenTinyDims) -> list[tuple[str, int, int]]:
    """(diffusers module name, out_features, in_features) of the adapted layers of one block."""
    d = dims.inner_dim
    attention = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
    modules = [(f"attn.{name}", d, d) for name in attention]
    for stream in ("img_mlp", "txt_mlp"):
        modules += [(f"{stream}.net.0.proj", 4 * d, d), (f"{stream}.net.2", d, 4 * d)]
    return modules


def qwen_lora_tensors(
    seed: int, rank: int = 4, style: str = "comfy", no_match: bool = False, dims: QwenTinyDims = TINY
) -> dict[str, Tensor]:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if rank < 1:
        raise ValueError("rank must be at least 1")
    factory = TensorFactory(seed, f"qwen-lora/{style}")
    tensors: dict[str, Tensor] = {}
    if no_match:
        # FLUX's fused attention names: well-formed LoRA matrices that no Qwen layer answers to.
        for i in range(dims.num_layers):
            for name in (f"double_blocks.{i}.img_attn.qkv", f"double_blocks.{i}.txt_attn.qkv"):
                key = f"diffusion_model.{name}"
                d = dims.inner_dim
                tensors[f"{key}.lora_A.weight"] = factory.linear(f"{key}.A", rank, d)
                tensors[f"{key}.lora_B.weight"] = factory.linear(f"{key}.B", 3 * d, rank)
        return tensors
    for i in range(dims.num_layers):
        for module, out_features, in_features in _modules(dims):
            if style == "comfy":
                base = f"diffusion_model.transformer_blocks.{i}.{module}"
                down, up = f"{base}.lora_A.weight", f"{base}.lora_B.weight"
            elif style == "peft":
                base = f"transformer_blocks.{i}.{module}"
                down, up = f"{base}.lora_A.default.weight", f"{base}.lora_B.default.weight"
            else:
                base = f"lora_unet_transformer_blocks_{i}_{module.replace('.', '_')}"
                down, up = f"{base}.lora_down.weight", f"{base}.lora_up.weight"
                # alpha == rank: the update is applied at the scale the matrices give it.
                tensors[f"{base}.alpha"] = Tensor(np.full((), rank, dtype=np.float32), dtype="F32")
            tensors[down] = factory.linear(down, rank, in_features)
            tensors[up] = factory.linear(up, out_features, rank)
    return tensors


def make_qwen_lora(
    path: Path | str,
    seed: int,
    rank: int = 4,
    *,
    style: str = "comfy",
    no_match: bool = False,
    dims: QwenTinyDims = TINY,
) -> Path:
    """Write a LoRA safetensors file for the tiny Qwen transformer (both Qwen repos share its shape).

    mflux (through MLX) picks the loader from the path's extension, so give the path a
    ``.safetensors`` suffix.
    """
    path = Path(path)
    write_safetensors(path, qwen_lora_tensors(seed, rank, style, no_match, dims))
    return path
