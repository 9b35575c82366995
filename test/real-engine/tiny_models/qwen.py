"""Tiny random Qwen-Image and Qwen-Image-Edit-2509 checkpoints in the real Hugging Face layout.

Each repo is written the way it is published: ``model_index.json``, ``scheduler/``, ``tokenizer/``,
``text_encoder/`` (Qwen2.5-VL, 4 shards + ``model.safetensors.index.json``, language model *and*
vision tower), ``transformer/`` (diffusers ``QwenImageTransformer2DModel``, sharded
``diffusion_pytorch_model-*`` + index), ``vae/`` (one ``diffusion_pytorch_model.safetensors``) and,
for the edit model, ``processor/``. Tensor names and layouts are the diffusers / transformers ones,
so mflux's real weight mapping, loaders and completeness checks run unchanged; only the sizes are
tiny (``TINY``), and the values are random from a fixed seed (same seed, same bytes).

mflux hard-codes the full-size dimensions in its module constructors and reads none of the
``config.json`` files, so the same ``TINY`` numbers are applied to mflux by ``patches.py``; the
config files written here state them too, as the real ones do for the real sizes.

This module needs only numpy and the standard library (it must not import mflux: ``patches.py``
imports ``TINY`` from here at interpreter start).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiny_models.checkpoint_io import Tensor, TensorFactory, write_json, write_safetensors, write_sharded
from tiny_models.checkpoint_io import write_text as _write_text
from tiny_models.hf_cache import GITATTRIBUTES, place_in_cache


@dataclass(frozen=True)
class QwenTinyDims:
    """The tiny sizes. Constraints that shaped them:

    - mflux quantizes every Linear of the transformer with group size 64, so each Linear's input
      width (``inner_dim``, ``text_hidden_size`` which feeds ``txt_in``, ``4 * inner_dim``) must be
      a multiple of 64 for ``quantize`` 4 and 8 to work.
    - rotary sections must cover half a head: ``sum(axes_dims_rope) == attention_head_dim`` and
      ``2 * sum(text_mrope_section) == text_hidden_size // text_num_heads``.
    - the text embedding keeps the real vocabulary size: the tokenizer maps Qwen's special tokens
      (``<|im_start|>`` 151644, ``<|image_pad|>`` 151655, ...) to their real ids.
    - two of everything where mflux loops (blocks, layers, vision blocks with one windowed and one
      full-attention block, GQA with 2 query heads per key head), one is enough elsewhere.
    """

    # transformer (diffusers QwenImageTransformer2DModel)
    num_layers: int = 2
    num_attention_heads: int = 2
    attention_head_dim: int = 32
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)
    # text encoder (Qwen2.5-VL language model)
    text_hidden_size: int = 64
    text_intermediate_size: int = 128
    text_num_layers: int = 2
    text_num_heads: int = 2
    text_num_kv_heads: int = 1
    text_mrope_section: tuple[int, int, int] = (4, 6, 6)
    vocab_size: int = 152064
    # vision tower (Qwen2.5-VL visual)
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_num_heads: int = 2
    vision_intermediate_size: int = 64
    vision_fullatt_block_indexes: tuple[int, ...] = (1,)
    # VAE (diffusers AutoencoderKLQwenImage): channels are base_dim * dim_mult
    vae_base_dim: int = 8

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def text_head_dim(self) -> int:
        return self.text_hidden_size // self.text_num_heads


TINY = QwenTinyDims()

# Fixed by the architecture (the real values; mflux and the checkpoints agree on them).
IN_CHANNELS = 64  # 16 latent channels x 2x2 patch
OUT_CHANNELS = 16
PATCH_SIZE = 2
TIMESTEP_PROJ_DIM = 256
Z_DIM = 16
VAE_DIM_MULT = (1, 2, 4, 4)
VAE_NUM_RES_BLOCKS = 2
VAE_TEMPORAL_DOWNSAMPLE = (False, True, True)
VISION_PATCH_SIZE = 14
VISION_TEMPORAL_PATCH_SIZE = 2
VISION_SPATIAL_MERGE_SIZE = 2
VISION_WINDOW_SIZE = 112
# The real VAE config's latent statistics (mflux hard-codes the same numbers in QwenVAE).
LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]  # fmt: skip
LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916]  # fmt: skip


@dataclass(frozen=True)
class QwenRepo:
    repo_id: str
    revision: str
    edit: bool
    transformer_shards: int  # as many as the real repo has, so the file names match
    text_encoder_shards: int = 4


def _fake_revision(repo_id: str) -> str:
    # Stable and obviously not a real commit of the repo: the sha1 of a label.
    return hashlib.sha1(f"kiapi tiny checkpoint {repo_id}".encode()).hexdigest()


QWEN_IMAGE = QwenRepo("Qwen/Qwen-Image", _fake_revision("Qwen/Qwen-Image"), edit=False, transformer_shards=9)
# mflux 0.24 loads this repo only at its pinned commit (ModelRevisions.PINNED), so the tiny one is
# cached under that commit id.
QWEN_IMAGE_EDIT_2509 = QwenRepo(
    "Qwen/Qwen-Image-Edit-2509", "d3968ef930e841f4c73640fb8afa3b306a78167e", edit=True, transformer_shards=5
)
REPOS = (QWEN_IMAGE, QWEN_IMAGE_EDIT_2509)

# ---------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------

# Qwen2.5's added tokens and their real ids (the base BPE vocabulary has ids 0..151642).
FIRST_ADDED_ID = 151643
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
# Text the toy BPE merges are learned from: words that prompts and mflux's templates use, so they
# tokenize into a realistic handful of tokens instead of one token per byte.
MERGE_CORPUS = """
Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships
of the objects and background. Describe the key features of the input image, then explain how the
user's text instruction should alter or modify the image. Generate a new image that meets the user's
requirements while maintaining consistency with the original input where appropriate. Picture 1:
Picture 2: Picture 3: system user assistant a cat a dog a red apple on a table, a photo of a house,
a painting of the sea at sunset with mountains in the background, make the sky blue, add a hat.
"""
MERGE_COUNT = 400
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_symbols() -> dict[int, str]:
    """GPT-2 byte-level BPE's printable stand-in for each byte value, in vocabulary order.

    Printable bytes stand for themselves; the others (controls, space, ...) get chr(256 + n).
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    symbols = {b: chr(b) for b in printable}
    symbols.update({b: chr(256 + i) for i, b in enumerate(others)})
    return symbols


def _learn_merges(corpus: str, count: int) -> list[tuple[str, str]]:
    """A small deterministic BPE training run (most frequent pair first, ties by the pair itself)."""
    symbol = _byte_symbols()
    words: Counter[tuple[str, ...]] = Counter()
    for piece in re.findall(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", corpus):
        words[tuple(symbol[b] for b in piece.encode("utf-8"))] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best, seen = max(pairs.items(), key=lambda item: (item[1], item[0]))
        if seen < 2:
            break
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, n in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


@functools.cache
def tokenizer_files() -> dict[str, Any]:
    """vocab.json, merges.txt and the config files of a Qwen2 tokenizer with the real special ids.

    The vocabulary is the 256 byte symbols, the learned merges, then unused filler entries up to
    id 151642, so the added tokens get ids 151643.. exactly as in Qwen's tokenizer. Cached (it is
    written three times per build); callers must not modify the result.
    """
    merges = _learn_merges(MERGE_CORPUS, MERGE_COUNT)
    vocab: dict[str, int] = {}
    for byte_symbol in _byte_symbols().values():
        vocab[byte_symbol] = len(vocab)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    filler = 0
    while len(vocab) < FIRST_ADDED_ID:
        vocab[f"<unused_{filler}>"] = len(vocab)
        filler += 1
    added = {token: FIRST_ADDED_ID + i for i, (token, _) in enumerate(ADDED_TOKENS)}
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(FIRST_ADDED_ID + i): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for i, (token, special) in enumerate(ADDED_TOKENS)
        },
        "additional_special_tokens": [token for token, special in ADDED_TOKENS[1:14] if special],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    special_map = {
        "additional_special_tokens": config["additional_special_tokens"],
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    }
    return {
        "vocab.json": vocab,
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": config,
        "special_tokens_map.json": special_map,
        "added_tokens.json": added,
    }


def _write_tokenizer(directory: Path, extra_config: dict[str, Any] | None = None) -> None:
    for name, content in tokenizer_files().items():
        if name == "tokenizer_config.json":
            write_json(directory / name, {**content, **(extra_config or {})})
        elif name == "vocab.json":
            # One line like the real file: 151k entries stay ~3 MB.
            _write_text(directory / name, json.dumps(content, ensure_ascii=False, separators=(",", ":")))
        elif isinstance(content, str):
            _write_text(directory / name, content)
        else:
            write_json(directory / name, content)


# ---------------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------------


def transformer_tensors(factory: TensorFactory, dims: QwenTinyDims = TINY) -> dict[str, Tensor]:
    """diffusers ``QwenImageTransformer2DModel`` state dict names and shapes."""
    d = dims.inner_dim
    t: dict[str, Tensor] = {}

    def linear(name: str, out_f: int, in_f: int, gain: float = 1.0) -> None:
        t[f"{name}.weight"] = factory.linear(f"{name}.weight", out_f, in_f, gain)
        t[f"{name}.bias"] = factory.bias(f"{name}.bias", out_f)

    linear("img_in", d, IN_CHANNELS)
    t["txt_norm.weight"] = factory.norm("txt_norm.weight", (dims.text_hidden_size,))
    linear("txt_in", d, dims.text_hidden_size)
    linear("time_text_embed.timestep_embedder.linear_1", d, TIMESTEP_PROJ_DIM)
    linear("time_text_embed.timestep_embedder.linear_2", d, d)
    for i in range(dims.num_layers):
        block = f"transformer_blocks.{i}"
        # Modulation kept small: shift/scale/gate near zero like a trained model's, so the
        # residual stream neither vanishes nor explodes over the blocks.
        linear(f"{block}.img_mod.1", 6 * d, d, gain=0.3)
        linear(f"{block}.txt_mod.1", 6 * d, d, gain=0.3)
        for name in (
            "to_q",
            "to_k",
            "to_v",
            "add_q_proj",
            "add_k_proj",
            "add_v_proj",
            "to_out.0",
            "to_add_out",
        ):
            linear(f"{block}.attn.{name}", d, d)
        for name in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            t[f"{block}.attn.{name}.weight"] = factory.norm(
                f"{block}.attn.{name}.weight", (dims.attention_head_dim,)
            )
        for stream in ("img_mlp", "txt_mlp"):
            linear(f"{block}.{stream}.net.0.proj", 4 * d, d)
            linear(f"{block}.{stream}.net.2", d, 4 * d)
    linear("norm_out.linear", 2 * d, d, gain=0.3)
    linear("proj_out", PATCH_SIZE * PATCH_SIZE * OUT_CHANNELS, d)
    return t


def vae_tensors(factory: TensorFactory, dims: QwenTinyDims = TINY) -> dict[str, Tensor]:
    """diffusers ``AutoencoderKLQwenImage`` state dict names and shapes (Wan 2.1 layout)."""
    t: dict[str, Tensor] = {}

    def causal_conv(name: str, out_c: int, in_c: int, kernel: tuple[int, int, int]) -> None:
        t[f"{name}.weight"] = factory.conv(f"{name}.weight", (out_c, in_c, *kernel))
        t[f"{name}.bias"] = factory.bias(f"{name}.bias", out_c)

    def conv2d(name: str, out_c: int, in_c: int, k: int) -> None:
        t[f"{name}.weight"] = factory.conv(f"{name}.weight", (out_c, in_c, k, k))
        t[f"{name}.bias"] = factory.bias(f"{name}.bias", out_c)

    def gamma(name: str, channels: int, images: bool = False) -> None:
        t[f"{name}.gamma"] = factory.norm(
            f"{name}.gamma", (channels, 1, 1) if images else (channels, 1, 1, 1)
        )

    def resnet(name: str, in_c: int, out_c: int) -> None:
        gamma(f"{name}.norm1", in_c)
        causal_conv(f"{name}.conv1", out_c, in_c, (3, 3, 3))
        gamma(f"{name}.norm2", out_c)
        causal_conv(f"{name}.conv2", out_c, out_c, (3, 3, 3))
        if in_c != out_c:
            causal_conv(f"{name}.conv_shortcut", out_c, in_c, (1, 1, 1))

    def mid_block(name: str, c: int) -> None:
        resnet(f"{name}.resnets.0", c, c)
        gamma(f"{name}.attentions.0.norm", c, images=True)
        conv2d(f"{name}.attentions.0.to_qkv", 3 * c, c, 1)
        conv2d(f"{name}.attentions.0.proj", c, c, 1)
        resnet(f"{name}.resnets.1", c, c)

    base = dims.vae_base_dim
    # Encoder: a flat list of res blocks and resamplers (down_blocks.0..10 for 4 stages).
    enc_dims = [base * m for m in (1, *VAE_DIM_MULT)]
    causal_conv("encoder.conv_in", enc_dims[0], 3, (3, 3, 3))
    index = 0
    for stage, (in_c, out_c) in enumerate(itertools.pairwise(enc_dims)):
        for _ in range(VAE_NUM_RES_BLOCKS):
            resnet(f"encoder.down_blocks.{index}", in_c, out_c)
            in_c = out_c
            index += 1
        if stage < len(VAE_DIM_MULT) - 1:
            conv2d(f"encoder.down_blocks.{index}.resample.1", out_c, out_c, 3)
            if VAE_TEMPORAL_DOWNSAMPLE[stage]:
                causal_conv(f"encoder.down_blocks.{index}.time_conv", out_c, out_c, (3, 1, 1))
            index += 1
    mid_block("encoder.mid_block", enc_dims[-1])
    gamma("encoder.norm_out", enc_dims[-1])
    causal_conv("encoder.conv_out", 2 * Z_DIM, enc_dims[-1], (3, 3, 3))
    causal_conv("quant_conv", 2 * Z_DIM, 2 * Z_DIM, (1, 1, 1))
    causal_conv("post_quant_conv", Z_DIM, Z_DIM, (1, 1, 1))
    # Decoder: up_blocks.i with num_res_blocks + 1 res blocks and an upsampler but the last.
    dec_dims = [base * m for m in (VAE_DIM_MULT[-1], *reversed(VAE_DIM_MULT))]
    causal_conv("decoder.conv_in", dec_dims[0], Z_DIM, (3, 3, 3))
    mid_block("decoder.mid_block", dec_dims[0])
    temporal_upsample = tuple(reversed(VAE_TEMPORAL_DOWNSAMPLE))
    for i, (in_c, out_c) in enumerate(itertools.pairwise(dec_dims)):
        if i > 0:
            in_c //= 2  # the previous upsampler halves the channels
        for j in range(VAE_NUM_RES_BLOCKS + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", in_c, out_c)
            in_c = out_c
        if i < len(VAE_DIM_MULT) - 1:
            conv2d(f"decoder.up_blocks.{i}.upsamplers.0.resample.1", out_c // 2, out_c, 3)
            if temporal_upsample[i]:
                causal_conv(f"decoder.up_blocks.{i}.upsamplers.0.time_conv", 2 * out_c, out_c, (3, 1, 1))
    gamma("decoder.norm_out", dec_dims[-1])
    causal_conv("decoder.conv_out", 3, dec_dims[-1], (3, 3, 3))
    return t


def text_encoder_tensors(factory: TensorFactory, dims: QwenTinyDims = TINY) -> dict[str, Tensor]:
    """transformers ``Qwen2_5_VLForConditionalGeneration`` names (the layout the Qwen repos ship:
    ``model.*`` language model, ``visual.*`` vision tower, ``lm_head``)."""
    t: dict[str, Tensor] = {}
    h, hd = dims.text_hidden_size, dims.text_head_dim

    def linear(name: str, out_f: int, in_f: int, bias: bool) -> None:
        t[f"{name}.weight"] = factory.linear(f"{name}.weight", out_f, in_f)
        if bias:
            t[f"{name}.bias"] = factory.bias(f"{name}.bias", out_f)

    t["model.embed_tokens.weight"] = factory.normal("model.embed_tokens.weight", (dims.vocab_size, h), 1.0)
    for i in range(dims.text_num_layers):
        layer = f"model.layers.{i}"
        t[f"{layer}.input_layernorm.weight"] = factory.norm(f"{layer}.input_layernorm.weight", (h,))
        t[f"{layer}.post_attention_layernorm.weight"] = factory.norm(
            f"{layer}.post_attention_layernorm.weight", (h,)
        )
        linear(f"{layer}.self_attn.q_proj", dims.text_num_heads * hd, h, bias=True)
        linear(f"{layer}.self_attn.k_proj", dims.text_num_kv_heads * hd, h, bias=True)
        linear(f"{layer}.self_attn.v_proj", dims.text_num_kv_heads * hd, h, bias=True)
        linear(f"{layer}.self_attn.o_proj", h, dims.text_num_heads * hd, bias=False)
        linear(f"{layer}.mlp.gate_proj", dims.text_intermediate_size, h, bias=False)
        linear(f"{layer}.mlp.up_proj", dims.text_intermediate_size, h, bias=False)
        linear(f"{layer}.mlp.down_proj", h, dims.text_intermediate_size, bias=False)
    t["model.norm.weight"] = factory.norm("model.norm.weight", (h,))
    t["lm_head.weight"] = factory.linear("lm_head.weight", dims.vocab_size, h)

    v = dims.vision_hidden_size
    t["visual.patch_embed.proj.weight"] = factory.conv(
        "visual.patch_embed.proj.weight",
        (v, 3, VISION_TEMPORAL_PATCH_SIZE, VISION_PATCH_SIZE, VISION_PATCH_SIZE),
    )
    for i in range(dims.vision_depth):
        block = f"visual.blocks.{i}"
        t[f"{block}.norm1.weight"] = factory.norm(f"{block}.norm1.weight", (v,))
        t[f"{block}.norm2.weight"] = factory.norm(f"{block}.norm2.weight", (v,))
        linear(f"{block}.attn.qkv", 3 * v, v, bias=True)
        linear(f"{block}.attn.proj", v, v, bias=True)
        linear(f"{block}.mlp.gate_proj", dims.vision_intermediate_size, v, bias=True)
        linear(f"{block}.mlp.up_proj", dims.vision_intermediate_size, v, bias=True)
        linear(f"{block}.mlp.down_proj", v, dims.vision_intermediate_size, bias=True)
    merged = v * VISION_SPATIAL_MERGE_SIZE**2
    t["visual.merger.ln_q.weight"] = factory.norm("visual.merger.ln_q.weight", (v,))
    linear("visual.merger.mlp.0", merged, merged, bias=True)
    linear("visual.merger.mlp.2", h, merged, bias=True)
    return t


# ---------------------------------------------------------------------------------------------
# config files
# ---------------------------------------------------------------------------------------------


def transformer_config(dims: QwenTinyDims = TINY) -> dict[str, Any]:
    return {
        "_class_name": "QwenImageTransformer2DModel",
        "_diffusers_version": "0.36.0.dev0",
        "attention_head_dim": dims.attention_head_dim,
        "axes_dims_rope": list(dims.axes_dims_rope),
        "guidance_embeds": False,
        "in_channels": IN_CHANNELS,
        "joint_attention_dim": dims.text_hidden_size,
        "num_attention_heads": dims.num_attention_heads,
        "num_layers": dims.num_layers,
        "out_channels": OUT_CHANNELS,
        "patch_size": PATCH_SIZE,
        "pooled_projection_dim": 768,
    }


def vae_config(dims: QwenTinyDims = TINY) -> dict[str, Any]:
    return {
        "_class_name": "AutoencoderKLQwenImage",
        "_diffusers_version": "0.36.0.dev0",
        "attn_scales": [],
        "base_dim": dims.vae_base_dim,
        "dim_mult": list(VAE_DIM_MULT),
        "dropout": 0.0,
        "latents_mean": LATENTS_MEAN,
        "latents_std": LATENTS_STD,
        "num_res_blocks": VAE_NUM_RES_BLOCKS,
        "temperal_downsample": list(VAE_TEMPORAL_DOWNSAMPLE),
        "z_dim": Z_DIM,
    }


def text_encoder_config(dims: QwenTinyDims = TINY) -> dict[str, Any]:
    ids = {token: FIRST_ADDED_ID + i for i, (token, _) in enumerate(ADDED_TOKENS)}
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "hidden_act": "silu",
        "hidden_size": dims.text_hidden_size,
        "image_token_id": ids["<|image_pad|>"],
        "initializer_range": 0.02,
        "intermediate_size": dims.text_intermediate_size,
        "max_position_embeddings": 128000,
        "max_window_layers": dims.text_num_layers,
        "model_type": "qwen2_5_vl",
        "num_attention_heads": dims.text_num_heads,
        "num_hidden_layers": dims.text_num_layers,
        "num_key_value_heads": dims.text_num_kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "mrope_section": list(dims.text_mrope_section),
            "rope_type": "default",
            "type": "default",
        },
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.53.1",
        "use_cache": True,
        "use_sliding_window": False,
        "video_token_id": ids["<|video_pad|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "vision_config": {
            "depth": dims.vision_depth,
            "fullatt_block_indexes": list(dims.vision_fullatt_block_indexes),
            "hidden_act": "silu",
            "hidden_size": dims.vision_hidden_size,
            "in_channels": 3,
            "in_chans": 3,
            "intermediate_size": dims.vision_intermediate_size,
            "model_type": "qwen2_5_vl",
            "num_heads": dims.vision_num_heads,
            "out_hidden_size": dims.text_hidden_size,
            "patch_size": VISION_PATCH_SIZE,
            "spatial_merge_size": VISION_SPATIAL_MERGE_SIZE,
            "spatial_patch_size": VISION_PATCH_SIZE,
            "temporal_patch_size": VISION_TEMPORAL_PATCH_SIZE,
            "tokens_per_second": 2,
            "window_size": VISION_WINDOW_SIZE,
            "torch_dtype": "bfloat16",
        },
        "vocab_size": dims.vocab_size,
    }


SCHEDULER_CONFIG = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.36.0.dev0",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

PREPROCESSOR_CONFIG = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "Qwen2VLImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_pixels": 12845056,
    "merge_size": VISION_SPATIAL_MERGE_SIZE,
    "min_pixels": 3136,
    "patch_size": VISION_PATCH_SIZE,
    "processor_class": "Qwen2_5_VLProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "temporal_patch_size": VISION_TEMPORAL_PATCH_SIZE,
}


def model_index(repo: QwenRepo) -> dict[str, Any]:
    index: dict[str, Any] = {
        "_class_name": "QwenImageEditPlusPipeline" if repo.edit else "QwenImagePipeline",
        "_diffusers_version": "0.36.0.dev0",
    }
    if repo.edit:
        index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index.update(
        {
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
            "tokenizer": ["transformers", "Qwen2Tokenizer"],
            "transformer": ["diffusers", "QwenImageTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKLQwenImage"],
        }
    )
    return index


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _shared_tensors(seed: int, dims: QwenTinyDims) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """VAE and text encoder tensors. Both repos use the same VAE and Qwen2.5-VL upstream, so they share
    values here too (made once per build; the transformer is per repo)."""
    shared = TensorFactory(seed, "qwen-image")
    return vae_tensors(shared, dims), text_encoder_tensors(shared, dims)


def write_checkpoint(repo: QwenRepo, destination: Path, seed: int, dims: QwenTinyDims = TINY) -> Path:
    """Write the whole repo tree of ``repo`` into ``destination`` (a plain directory)."""
    destination = Path(destination)
    own = TensorFactory(seed, repo.repo_id)
    vae, text_encoder = _shared_tensors(seed, dims)

    _write_text(destination / ".gitattributes", GITATTRIBUTES)
    _write_text(
        destination / "README.md",
        f"# {repo.repo_id} (tiny, random)\n\nRandom weights in the layout of {repo.repo_id}, written by "
        f"kiapi's test/real-engine/tiny_models with seed {seed}. Not a usable model.\n",
    )
    write_json(destination / "model_index.json", model_index(repo))
    write_json(destination / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    _write_tokenizer(destination / "tokenizer")
    if repo.edit:
        _write_tokenizer(destination / "processor", {"processor_class": "Qwen2_5_VLProcessor"})
        write_json(destination / "processor" / "preprocessor_config.json", PREPROCESSOR_CONFIG)

    write_json(destination / "transformer" / "config.json", transformer_config(dims))
    write_sharded(
        destination / "transformer",
        "diffusion_pytorch_model",
        transformer_tensors(own, dims),
        repo.transformer_shards,
    )

    write_json(destination / "vae" / "config.json", vae_config(dims))
    write_safetensors(destination / "vae" / "diffusion_pytorch_model.safetensors", vae)

    write_json(destination / "text_encoder" / "config.json", text_encoder_config(dims))
    write_json(
        destination / "text_encoder" / "generation_config.json",
        {
            "bos_token_id": FIRST_ADDED_ID,
            "eos_token_id": [FIRST_ADDED_ID + 2, FIRST_ADDED_ID],
            "pad_token_id": FIRST_ADDED_ID,
            "transformers_version": "4.53.1",
        },
    )
    write_sharded(destination / "text_encoder", "model", text_encoder, repo.text_encoder_shards)
    return destination


def build_repo(repo: QwenRepo, hub_cache: Path, seed: int) -> dict[str, str]:
    """Write ``repo`` into ``hub_cache`` at its revision; returns {"repo", "revision", "snapshot"}."""
    hub_cache = Path(hub_cache)
    hub_cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-qwen-", dir=hub_cache))
    try:
        write_checkpoint(repo, staging, seed)
        snapshot = place_in_cache(staging, hub_cache, repo.repo_id, repo.revision)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"repo": repo.repo_id, "revision": repo.revision, "snapshot": str(snapshot)}


def build(hub_cache: Path, seed: int) -> list[dict[str, str]]:
    """Both tiny Qwen repos (the package-wide ``build(hub_cache, seed)`` convention)."""
    try:
        return [build_repo(repo, hub_cache, seed) for repo in REPOS]
    finally:
        _shared_tensors.cache_clear()  # ~90 MB of float32 values
