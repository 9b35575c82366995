"""A tiny, random Ideogram 4 FP8 checkpoint for the real-engine test lane.

`build(hub_cache, seed)` writes a checkpoint laid out like the Hugging Face repo
`ideogram-ai/ideogram-4-fp8` at the commit mflux 0.24 pins (`ModelRevisions.PINNED`), and places
it in a Hugging Face hub cache, so `Ideogram4(model_path="ideogram-ai/ideogram-4-fp8")` resolves
and loads it offline exactly as it would the real download:

    model_index.json                                        Ideogram4Pipeline
    scheduler/scheduler_config.json
    transformer/config.json                                 diffusers Ideogram4Transformer2DModel
    transformer/diffusion_pytorch_model.safetensors         FP8 (see below)
    transformer/diffusion_pytorch_model.safetensors.index.json
    unconditional_transformer/...                           same files, other random weights
    text_encoder/config.json                                Qwen3VLConfig + "ideogram_fp8_weight_only": true
    text_encoder/model.safetensors                          language_model.* only, FP8 linears
    tokenizer/tokenizer.json, tokenizer_config.json, chat_template.jinja
    vae/config.json, vae/diffusion_pytorch_model.safetensors   diffusers AutoencoderKLFlux2, BF16

FP8 layout (what mflux's `Fp8Linear` and `SafetensorsReader` read; the official checkpoint stores
every transformer and text-encoder linear this way, 669 tensors per transformer at full size):

    <linear>.weight        F8_E4M3  (out, in)   raw e4m3fn bytes; mflux reads them as uint8 and
                                                dequantizes with mx.from_fp8
    <linear>.weight_scale  F32      (out,)      per-row scale: weight = from_fp8(codes) * scale[:, None]
    <linear>.bias          BF16     (out,)      only where the layer has one
    norms, embeddings      BF16

The codes are drawn directly as e4m3fn bit patterns (sign, exponent, mantissa) from a seeded numpy
generator and each row's scale is set so the dequantized row has the wanted RMS; no float-to-fp8
conversion is needed and the bytes depend on the seed only.

Dimensions come from config.json wherever mflux reads them (transformer and text encoder). The
text encoder keeps the real 36 layers because mflux taps hidden states 0, 3, ..., 35 by a
hard-coded argument default; each layer is 64 wide, so they are cheap. The latent width stays
128 (= 32 VAE channels x 2 x 2) because mflux's latent normalisation constants have 128 entries.
Every width that mflux can quantize is a multiple of 64, MLX's quantization group size, so
`quantize=4` and `quantize=8` work too.

The tokenizer is a byte-level BPE in Qwen's format (same pre-tokenizer split, ByteLevel decoding,
Qwen special tokens, a chat template in chat_template.jinja) with merges learned from a small
built-in corpus, so a JSON caption costs a few characters per token. mflux renders the template
with transformers' apply_chat_template, which needs jinja2 (a torch dependency, so an environment
without torch must install it).

The VAE cannot be shrunk through a file: mflux builds `Flux2VAE()` with constructor defaults. That
is what `apply_ideogram4_patches()` changes; it must run before the model is constructed.

Patches (`apply_ideogram4_patches`), each a constructor default and nothing else:

1. `mflux.models.flux2.model.flux2_vae.vae.Flux2VAE.__init__`, default `decoder_block_out_channels`
   (128, 256, 512, 512) -> `VAE_BLOCK_OUT_CHANNELS`. Why: `Ideogram4Initializer._init_models`
   calls `Flux2VAE()` without arguments and reads no VAE config, so the decoder width can only
   come from this default. Four blocks are kept: three upsamplings turn the H/8 latent into H pixels.
2. `mflux.models.flux2.model.flux2_vae.encoder.encoder.Flux2Encoder.__init__`, default
   `block_out_channels` (128, 256, 512, 512) -> `VAE_BLOCK_OUT_CHANNELS`. Why: `Flux2VAE.__init__`
   calls `Flux2Encoder()` without arguments. Ideogram never encodes, but mflux loads the encoder
   weights of the checkpoint into it, so its shapes must match the file.
3. `Flux2Encoder.__init__`, default `norm_num_groups` 32 -> `VAE_NORM_GROUPS`, and
4. `mflux.models.flux2.model.flux2_vae.decoder.decoder.Flux2Decoder.__init__`, default
   `norm_num_groups` 32 -> `VAE_NORM_GROUPS`. Why: the narrow blocks have fewer channels than 32
   GroupNorm groups; both classes hand this default down to every resnet, attention and output
   norm, and nothing passes it explicitly.

All are process-wide: any Flux2 VAE built afterwards in the same process is tiny too.

Minimum image size: mflux (and kiapi) refuse widths/heights under 256
(`Ideogram4LatentCreator.MIN_DIMENSION`, a class constant, not a constructor default), so the
smallest image is 256x256; it is not patched here.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np

from tiny_models import hf_cache

REPO = "ideogram-ai/ideogram-4-fp8"
# The one snapshot mflux 0.24 loads for this repo (mflux ModelRevisions.PINNED).
REVISION = "ee79a7237b519f1402ceacf952f30c8a31ec5073"

# Transformer (transformer/config.json, read by Ideogram4Initializer._transformer_config).
# 2 heads x 32 = 64 wide; the mrope sections index into head_dim / 2 = 16 rotary frequencies.
TRANSFORMER_CONFIG = {
    "num_attention_heads": 2,
    "attention_head_dim": 32,
    "num_layers": 1,
    "intermediate_size": 64,
    "adaln_dim": 64,
    "in_channels": 128,
    "rope_theta": 5_000_000,
    "mrope_section": [6, 5, 5],
    "norm_eps": 1e-5,
}

# Text encoder (text_encoder/config.json "text_config", read by _text_encoder_kwargs).
TEXT_HIDDEN = 64
TEXT_LAYERS = 36  # mflux taps layers (0, 3, ..., 35) by default: fewer layers fail with KeyError.
TEXT_HEADS = 2
TEXT_KV_HEADS = 1
TEXT_HEAD_DIM = 32
TEXT_INTERMEDIATE = 64
TEXT_TAPPED = 13  # len((0, 3, ..., 35)): the transformer's llm features are 13 layers side by side.

# The VAE: four blocks like the real one (three 2x upsamplings), narrow where the resolution is
# high because convolutions dominate the run time on the CPU. The deepest 64 channels hold the
# mid-block attention, whose linears mflux quantizes in groups of 64. GroupNorm needs channels
# divisible by its group count, hence 4 groups instead of 32.
VAE_BLOCK_OUT_CHANNELS = (4, 8, 8, 64)
VAE_NORM_GROUPS = 4
VAE_LATENT_CHANNELS = 32
VAE_LAYERS_PER_BLOCK = 2

# Byte-level BPE tokenizer: the 256 byte symbols, merges learned from _BPE_CORPUS, then Qwen's
# special tokens; the embedding is padded to a multiple of 64 rows like the real vocabulary
# (151936 = 64 x 2374).
BPE_MERGES = 600  # at most: learning stops early when no pair is left to merge
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# What the merges are learned from: the caption schema and words captions use, so a caption costs
# a few characters per token as with the real vocabulary instead of one token per byte (sequence
# length is what the tiny model's run time grows with).
_BPE_CORPUS = (
    '{"high_level_description":"","style_description":{"aesthetics":"","lighting":"","photo":"",'
    '"medium":"","color_palette":["#FFFFFF","#000000"]},"compositional_deconstruction":'
    '{"background":"","elements":[{"type":"obj","bbox":[100,200,300,400],"desc":""},'
    '{"type":"text","bbox":[500,600,700,800],"text":"","desc":"","color_palette":["#1A1A1A"]}]}}'
) * 4 + (
    " a an the of with on in at to and for from by is are over under above below behind near its"
    " clean white black red green blue yellow orange purple pink brown gray grey gold silver warm cold"
    " soft bright dark light lighting daylight window studio photo photograph photography product"
    " minimal modern vintage flat centered center left right top bottom corner background foreground"
    " poster sign logo title word words letters uppercase lowercase bold serif sans font text label"
    " notebook book cover desk table wooden paper wall street city sky cloud tree flower mountain sea"
    " person woman man child cat dog bird car house shadow depth field lens shallow sharp focus"
    " illustration painting drawing render digital style simple detailed closed open lying small large"
    " A The An In On With user assistant"
) * 2
VOCAB_SIZE = 64 * -(-(256 + BPE_MERGES + len(SPECIAL_TOKENS)) // 64)

# The Qwen2/Qwen3 pre-tokenizer split pattern (contractions, letters, single digits, punctuation
# runs, newlines, spaces), so tokenization of a caption behaves like the real tokenizer's.
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The same split for the merge learning, in the standard library's re (no \p{..}): letters are
# [^\W\d_], and "_" counts as punctuation as it does for \p{L}/\p{N}.
_PY_SPLIT = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d| ?(?:[^\s\w]|_)+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# A Qwen-style chat template reduced to what mflux's Ideogram4Tokenizer sends: one user message
# whose content is a list of text parts, plus the generation prompt.
_CHAT_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor -%}\n"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}\n"
)

_README = (
    "# ideogram-4-fp8 (tiny random stand-in)\n\n"
    "Random weights in the layout of ideogram-ai/ideogram-4-fp8, written by kiapi's"
    " test/real-engine/tiny_models/ideogram4.py for tests. Not a model: it draws noise.\n"
)

_FP8 = "F8_E4M3"
_BF16 = "BF16"
_F32 = "F32"
_I64 = "I64"


def build(hub_cache: Path, seed: int) -> dict:
    """Write the tiny checkpoint into `hub_cache` at the pinned revision; return where it is."""
    with tempfile.TemporaryDirectory(prefix="tiny-ideogram4-") as tmp:
        for relative, data in checkpoint_files(seed).items():
            path = Path(tmp, relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        snapshot = hf_cache.place_in_cache(Path(tmp), Path(hub_cache), REPO, REVISION)
    return {"repo": REPO, "revision": REVISION, "snapshot": str(snapshot)}


def checkpoint_files(seed: int) -> dict[str, bytes]:
    """Every file of the checkpoint, by path in the repo; the same seed gives the same bytes."""
    transformer_config = _transformer_config()
    files: dict[str, bytes] = {
        ".gitattributes": hf_cache.GITATTRIBUTES.encode(),
        "README.md": _README.encode(),
        "model_index.json": _json(_model_index()),
        "scheduler/scheduler_config.json": _json(_scheduler_config()),
        "text_encoder/config.json": _json(_text_encoder_config()),
        "text_encoder/model.safetensors": _safetensors(_text_encoder_tensors(_rng(seed, 3))),
        "tokenizer/tokenizer.json": _json(_tokenizer_json(), sort_keys=False),
        "tokenizer/tokenizer_config.json": _json(_tokenizer_config()),
        "tokenizer/chat_template.jinja": _CHAT_TEMPLATE.encode(),
        "vae/config.json": _json(_vae_config()),
        "vae/diffusion_pytorch_model.safetensors": _safetensors(_vae_tensors(_rng(seed, 4))),
    }
    # The conditional and the unconditional transformer are two different networks in the real
    # model (asymmetric CFG), so they get different weights here too.
    for stream, folder in ((1, "transformer"), (2, "unconditional_transformer")):
        tensors = _transformer_tensors(_rng(seed, stream))
        name = "diffusion_pytorch_model.safetensors"
        data = _safetensors(tensors)
        files[f"{folder}/config.json"] = _json(transformer_config)
        files[f"{folder}/{name}"] = data
        files[f"{folder}/{name}.index.json"] = _json(_single_file_index(tensors, name))
    return dict(sorted(files.items()))


# --------------------------------------------------------------------------------------------------
# configs


def _transformer_config() -> dict:
    width = TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"]
    # Quantization (mflux's group size 64) needs every linear's input width to be a multiple of 64.
    assert width % 64 == 0
    assert TRANSFORMER_CONFIG["adaln_dim"] % 64 == 0
    return {
        "_class_name": "Ideogram4Transformer2DModel",
        "_diffusers_version": "0.38.0.dev0",
        **TRANSFORMER_CONFIG,
        "llm_features_dim": TEXT_HIDDEN * TEXT_TAPPED,
    }


def _model_index() -> dict:
    return {
        "_class_name": "Ideogram4Pipeline",
        "_diffusers_version": "0.38.0.dev0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3VLModel"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "Ideogram4Transformer2DModel"],
        "unconditional_transformer": ["diffusers", "Ideogram4Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    }


def _scheduler_config() -> dict:
    # mflux ignores this file (the preset decides the schedule); it is here because the repo has it.
    return {
        "_class_name": "FlowMatchEulerDiscreteScheduler",
        "_diffusers_version": "0.38.0.dev0",
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
    }


def _text_encoder_config() -> dict:
    special = _special_token_ids()
    return {
        "architectures": ["Qwen3VLModel"],
        "model_type": "qwen3_vl",
        # The marker mflux's validate_fp8_checkpoint (and the official loader) require.
        "ideogram_fp8_weight_only": True,
        "dtype": "bfloat16",
        "tie_word_embeddings": False,
        "image_token_id": special["<|image_pad|>"],
        "video_token_id": special["<|video_pad|>"],
        "vision_start_token_id": special["<|vision_start|>"],
        "vision_end_token_id": special["<|vision_end|>"],
        "text_config": {
            "model_type": "qwen3_vl_text",
            "vocab_size": VOCAB_SIZE,
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": TEXT_INTERMEDIATE,
            "num_hidden_layers": TEXT_LAYERS,
            "num_attention_heads": TEXT_HEADS,
            "num_key_value_heads": TEXT_KV_HEADS,
            "head_dim": TEXT_HEAD_DIM,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000,
                "mrope_section": [6, 5, 5],
                "mrope_interleaved": True,
            },
            "bos_token_id": special["<|endoftext|>"],
            "eos_token_id": special["<|im_end|>"],
            "dtype": "bfloat16",
        },
        # The official text encoder is language-only; the vision tower is configured, never stored.
        "vision_config": {
            "model_type": "qwen3_vl",
            "depth": 1,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": TEXT_HIDDEN,
            "deepstack_visual_indexes": [],
        },
    }


def _vae_config() -> dict:
    blocks = len(VAE_BLOCK_OUT_CHANNELS)
    return {
        "_class_name": "AutoencoderKLFlux2",
        "_diffusers_version": "0.38.0.dev0",
        "act_fn": "silu",
        "batch_norm_eps": 1e-4,
        "batch_norm_momentum": 0.1,
        "block_out_channels": list(VAE_BLOCK_OUT_CHANNELS),
        "down_block_types": ["DownEncoderBlock2D"] * blocks,
        "force_upcast": True,
        "in_channels": 3,
        "latent_channels": VAE_LATENT_CHANNELS,
        "layers_per_block": VAE_LAYERS_PER_BLOCK,
        "mid_block_add_attention": True,
        "norm_num_groups": VAE_NORM_GROUPS,
        "out_channels": 3,
        "patch_size": [2, 2],
        "sample_size": 1024,
        "up_block_types": ["UpDecoderBlock2D"] * blocks,
        "use_post_quant_conv": True,
        "use_quant_conv": True,
    }


def _single_file_index(tensors: dict, file_name: str) -> dict:
    # The pinned revision keeps an index beside the one transformer file; every key maps to it.
    total = sum(len(data) for _, _, data in tensors.values())
    return {"metadata": {"total_size": total}, "weight_map": dict.fromkeys(sorted(tensors), file_name)}


# --------------------------------------------------------------------------------------------------
# tokenizer


def _special_token_ids() -> dict[str, int]:
    first = 256 + len(_bpe_merges())
    return {token: first + i for i, token in enumerate(SPECIAL_TOKENS)}


@functools.cache
def _bpe_merges() -> list[tuple[str, str]]:
    """Learn BPE_MERGES merges from _BPE_CORPUS: most frequent adjacent pair first, ties by text.

    Plain byte-pair encoding over the byte-level symbols of each pre-token; deterministic, so the
    tokenizer files depend on nothing but this module.
    """
    table = _byte_symbols()
    words: dict[tuple[str, ...], int] = {}
    for piece in _PY_SPLIT.findall(_BPE_CORPUS):
        word = tuple(table[b] for b in piece.encode())
        words[word] = words.get(word, 0) + 1
    merges: list[tuple[str, str]] = []
    while len(merges) < BPE_MERGES:
        pairs: dict[tuple[str, str], int] = {}
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] = pairs.get(pair, 0) + count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        joined = best[0] + best[1]
        merged: dict[tuple[str, ...], int] = {}
        for word, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return merges


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's table), in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    )
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def _tokenizer_json() -> dict:
    merges = _bpe_merges()
    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    special = _special_token_ids()
    added = [
        {
            "id": special[token],
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token in SPECIAL_TOKENS
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": _QWEN_SPLIT}, "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[left, right] for left, right in merges],
        },
    }


def _tokenizer_config() -> dict:
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(token_id): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for token, token_id in _special_token_ids().items()
        },
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 262144,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# --------------------------------------------------------------------------------------------------
# tensors: name -> (safetensors dtype, shape, raw little-endian bytes)


def _rng(seed: int, stream: int) -> np.random.Generator:
    # One independent stream per file, so adding tensors to one file leaves the others unchanged.
    return np.random.Generator(np.random.PCG64([seed, stream]))


def _bf16(values: np.ndarray) -> bytes:
    """float32 -> bfloat16 bytes, rounding to nearest even (what torch's .to(bfloat16) does)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()


def _fp8_values(codes: np.ndarray) -> np.ndarray:
    """The float value of e4m3fn codes (finite ones: exponent 15 with mantissa 7 is NaN)."""
    exponent = ((codes >> 3) & 0xF).astype(np.int32)
    mantissa = (codes & 0x7).astype(np.float64)
    magnitude = np.where(
        exponent == 0, mantissa / 8.0 * 2.0**-6, (1.0 + mantissa / 8.0) * np.exp2(exponent - 7.0)
    )
    return np.where(codes & 0x80, -magnitude, magnitude)


def _fp8_linear(
    tensors: dict,
    rng: np.random.Generator,
    name: str,
    out_dim: int,
    in_dim: int,
    bias: bool,
    gain: float = 1.0,
) -> None:
    # Codes with exponent fields 4..8 (|x| in [0.125, 3.75]) never hit NaN or subnormals; the
    # per-row scale then gives each dequantized row an RMS of gain / sqrt(in_dim).
    sign = rng.integers(0, 2, size=(out_dim, in_dim), dtype=np.uint8) << 7
    exponent = rng.integers(4, 9, size=(out_dim, in_dim), dtype=np.uint8) << 3
    mantissa = rng.integers(0, 8, size=(out_dim, in_dim), dtype=np.uint8)
    codes = sign | exponent | mantissa
    rms = np.sqrt(np.mean(_fp8_values(codes) ** 2, axis=1))
    scale = (gain / np.sqrt(in_dim) / rms).astype(np.float32)
    tensors[f"{name}.weight"] = (_FP8, (out_dim, in_dim), codes.tobytes())
    tensors[f"{name}.weight_scale"] = (_F32, (out_dim,), scale.astype("<f4").tobytes())
    if bias:
        tensors[f"{name}.bias"] = _bf16_tensor(rng.normal(0.0, 0.02, size=(out_dim,)))


def _bf16_tensor(values: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    return (_BF16, tuple(values.shape), _bf16(values))


def _norm(rng: np.random.Generator, dim: int) -> tuple[str, tuple[int, ...], bytes]:
    # Trained norm weights sit near 1; a little noise keeps them from being a trivial constant.
    return _bf16_tensor(1.0 + rng.normal(0.0, 0.02, size=(dim,)))


def _transformer_tensors(rng: np.random.Generator) -> dict:
    c = TRANSFORMER_CONFIG
    width = c["num_attention_heads"] * c["attention_head_dim"]
    head_dim = c["attention_head_dim"]
    adaln = c["adaln_dim"]
    ffn = c["intermediate_size"]
    llm = TEXT_HIDDEN * TEXT_TAPPED
    t: dict = {}
    _fp8_linear(t, rng, "input_proj", width, c["in_channels"], bias=True)
    t["llm_cond_norm.weight"] = _norm(rng, llm)
    _fp8_linear(t, rng, "llm_cond_proj", width, llm, bias=True)
    _fp8_linear(t, rng, "t_embedding.mlp_in", width, width, bias=True)
    _fp8_linear(t, rng, "t_embedding.mlp_out", width, width, bias=True)
    _fp8_linear(t, rng, "adaln_proj", adaln, width, bias=True)
    t["embed_image_indicator.weight"] = _bf16_tensor(rng.normal(0.0, 0.02, size=(2, width)))
    for i in range(c["num_layers"]):
        p = f"layers.{i}"
        # Small modulation and gates keep the random network's output tame over 48 steps.
        _fp8_linear(t, rng, f"{p}.adaln_modulation", 4 * width, adaln, bias=True, gain=0.1)
        _fp8_linear(t, rng, f"{p}.attention.qkv", 3 * width, width, bias=False)
        _fp8_linear(t, rng, f"{p}.attention.o", width, width, bias=False)
        t[f"{p}.attention.norm_q.weight"] = _norm(rng, head_dim)
        t[f"{p}.attention.norm_k.weight"] = _norm(rng, head_dim)
        _fp8_linear(t, rng, f"{p}.feed_forward.w1", ffn, width, bias=False)
        _fp8_linear(t, rng, f"{p}.feed_forward.w2", width, ffn, bias=False)
        _fp8_linear(t, rng, f"{p}.feed_forward.w3", ffn, width, bias=False)
        for norm in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
            t[f"{p}.{norm}.weight"] = _norm(rng, width)
    _fp8_linear(t, rng, "final_layer.adaln_modulation", width, adaln, bias=True, gain=0.1)
    _fp8_linear(t, rng, "final_layer.linear", c["in_channels"], width, bias=True, gain=0.1)
    return t


def _text_encoder_tensors(rng: np.random.Generator) -> dict:
    t: dict = {}
    t["language_model.embed_tokens.weight"] = _bf16_tensor(
        rng.normal(0.0, 1.0, size=(VOCAB_SIZE, TEXT_HIDDEN))
    )
    q_width = TEXT_HEADS * TEXT_HEAD_DIM
    kv_width = TEXT_KV_HEADS * TEXT_HEAD_DIM
    for i in range(TEXT_LAYERS):
        p = f"language_model.layers.{i}"
        t[f"{p}.input_layernorm.weight"] = _norm(rng, TEXT_HIDDEN)
        _fp8_linear(t, rng, f"{p}.self_attn.q_proj", q_width, TEXT_HIDDEN, bias=False)
        _fp8_linear(t, rng, f"{p}.self_attn.k_proj", kv_width, TEXT_HIDDEN, bias=False)
        _fp8_linear(t, rng, f"{p}.self_attn.v_proj", kv_width, TEXT_HIDDEN, bias=False)
        _fp8_linear(t, rng, f"{p}.self_attn.o_proj", TEXT_HIDDEN, q_width, bias=False, gain=0.5)
        t[f"{p}.self_attn.q_norm.weight"] = _norm(rng, TEXT_HEAD_DIM)
        t[f"{p}.self_attn.k_norm.weight"] = _norm(rng, TEXT_HEAD_DIM)
        t[f"{p}.post_attention_layernorm.weight"] = _norm(rng, TEXT_HIDDEN)
        _fp8_linear(t, rng, f"{p}.mlp.gate_proj", TEXT_INTERMEDIATE, TEXT_HIDDEN, bias=False)
        _fp8_linear(t, rng, f"{p}.mlp.up_proj", TEXT_INTERMEDIATE, TEXT_HIDDEN, bias=False)
        _fp8_linear(t, rng, f"{p}.mlp.down_proj", TEXT_HIDDEN, TEXT_INTERMEDIATE, bias=False, gain=0.5)
    t["language_model.norm.weight"] = _norm(rng, TEXT_HIDDEN)
    return t


def _conv(t: dict, rng: np.random.Generator, name: str, out_ch: int, in_ch: int, kernel: int) -> None:
    # PyTorch layout (out, in, kh, kw); mflux transposes it for MLX when it loads the VAE.
    fan_in = in_ch * kernel * kernel
    t[f"{name}.weight"] = _bf16_tensor(
        rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=(out_ch, in_ch, kernel, kernel))
    )
    t[f"{name}.bias"] = _bf16_tensor(rng.normal(0.0, 0.02, size=(out_ch,)))


def _group_norm(t: dict, rng: np.random.Generator, name: str, channels: int) -> None:
    t[f"{name}.weight"] = _norm(rng, channels)
    t[f"{name}.bias"] = _bf16_tensor(rng.normal(0.0, 0.02, size=(channels,)))


def _resnet(t: dict, rng: np.random.Generator, name: str, in_ch: int, out_ch: int) -> None:
    _group_norm(t, rng, f"{name}.norm1", in_ch)
    _conv(t, rng, f"{name}.conv1", out_ch, in_ch, 3)
    _group_norm(t, rng, f"{name}.norm2", out_ch)
    _conv(t, rng, f"{name}.conv2", out_ch, out_ch, 3)
    if in_ch != out_ch:
        _conv(t, rng, f"{name}.conv_shortcut", out_ch, in_ch, 1)


def _mid_block(t: dict, rng: np.random.Generator, name: str, channels: int) -> None:
    _resnet(t, rng, f"{name}.resnets.0", channels, channels)
    _group_norm(t, rng, f"{name}.attentions.0.group_norm", channels)
    for proj in ("to_q", "to_k", "to_v", "to_out.0"):
        a = f"{name}.attentions.0.{proj}"
        t[f"{a}.weight"] = _bf16_tensor(rng.normal(0.0, 1.0 / np.sqrt(channels), size=(channels, channels)))
        t[f"{a}.bias"] = _bf16_tensor(rng.normal(0.0, 0.02, size=(channels,)))
    _resnet(t, rng, f"{name}.resnets.1", channels, channels)


def _vae_tensors(rng: np.random.Generator) -> dict:
    """diffusers AutoencoderKLFlux2 state dict names, at VAE_BLOCK_OUT_CHANNELS."""
    channels = VAE_BLOCK_OUT_CHANNELS
    latent = VAE_LATENT_CHANNELS
    t: dict = {}
    _conv(t, rng, "encoder.conv_in", channels[0], 3, 3)
    for b, out_ch in enumerate(channels):
        in_ch = channels[b - 1] if b > 0 else channels[0]
        for r in range(VAE_LAYERS_PER_BLOCK):
            _resnet(t, rng, f"encoder.down_blocks.{b}.resnets.{r}", in_ch if r == 0 else out_ch, out_ch)
        if b < len(channels) - 1:
            _conv(t, rng, f"encoder.down_blocks.{b}.downsamplers.0.conv", out_ch, out_ch, 3)
    _mid_block(t, rng, "encoder.mid_block", channels[-1])
    _group_norm(t, rng, "encoder.conv_norm_out", channels[-1])
    _conv(t, rng, "encoder.conv_out", 2 * latent, channels[-1], 3)
    _conv(t, rng, "quant_conv", 2 * latent, 2 * latent, 1)
    _conv(t, rng, "post_quant_conv", latent, latent, 1)
    _conv(t, rng, "decoder.conv_in", channels[-1], latent, 3)
    _mid_block(t, rng, "decoder.mid_block", channels[-1])
    reversed_channels = list(reversed(channels))
    for b, out_ch in enumerate(reversed_channels):
        in_ch = reversed_channels[b - 1] if b > 0 else out_ch
        for r in range(VAE_LAYERS_PER_BLOCK + 1):
            _resnet(t, rng, f"decoder.up_blocks.{b}.resnets.{r}", in_ch if r == 0 else out_ch, out_ch)
        if b < len(reversed_channels) - 1:
            _conv(t, rng, f"decoder.up_blocks.{b}.upsamplers.0.conv", out_ch, out_ch, 3)
    _group_norm(t, rng, "decoder.conv_norm_out", channels[0])
    _conv(t, rng, "decoder.conv_out", 3, channels[0], 3)
    # BatchNorm2d(affine=False) statistics over the 2x2-patchified latent, as torch saves them.
    patched = 4 * latent
    t["bn.running_mean"] = _bf16_tensor(rng.normal(0.0, 0.1, size=(patched,)))
    t["bn.running_var"] = _bf16_tensor(1.0 + rng.uniform(0.0, 0.5, size=(patched,)))
    t["bn.num_batches_tracked"] = (_I64, (), struct.pack("<q", 0))
    return t


# --------------------------------------------------------------------------------------------------
# files


def _json(value: dict, sort_keys: bool = True) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n").encode()


def _safetensors(tensors: dict) -> bytes:
    """A safetensors file: u64 header length, JSON header (padded to 8 bytes), tensor data."""
    header: dict = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)


def _write_atomic(path: Path, data: bytes) -> None:
    # Another process may read the cache while we write it: never leave a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------------
# engine patches


def apply_ideogram4_patches() -> None:
    """Shrink the constructor defaults mflux hard-codes for Ideogram 4 (see the module docstring).

    Idempotent; imports mflux, so call it where mflux is installed, before building the model.
    """
    from mflux.models.flux2.model.flux2_vae.decoder.decoder import Flux2Decoder
    from mflux.models.flux2.model.flux2_vae.encoder.encoder import Flux2Encoder
    from mflux.models.flux2.model.flux2_vae.vae import Flux2VAE

    _set_default(Flux2VAE.__init__, "decoder_block_out_channels", VAE_BLOCK_OUT_CHANNELS)
    _set_default(Flux2Encoder.__init__, "block_out_channels", VAE_BLOCK_OUT_CHANNELS)
    _set_default(Flux2Encoder.__init__, "norm_num_groups", VAE_NORM_GROUPS)
    _set_default(Flux2Decoder.__init__, "norm_num_groups", VAE_NORM_GROUPS)


def _set_default(function, parameter: str, value) -> None:
    """Replace one positional-or-keyword parameter's default in `function.__defaults__`."""
    code = function.__code__
    names = code.co_varnames[: code.co_argcount]
    defaults = list(function.__defaults__ or ())
    index = names.index(parameter) - (len(names) - len(defaults))
    if index < 0:
        raise ValueError(f"{function.__qualname__} has no default for {parameter!r}")
    defaults[index] = value
    function.__defaults__ = tuple(defaults)


# --------------------------------------------------------------------------------------------------
# LoRA


def make_ideogram4_lora(path: Path, seed: int, rank: int = 4) -> Path:
    """A random LoRA for the tiny transformer, under names mflux 0.24's Ideogram4LoRAMapping reads.

    Keys are PEFT/diffusers style, `transformer.<module>.lora_A.weight` (rank, in) and
    `.lora_B.weight` (out, rank), plus `transformer.<module>.alpha`, for the attention qkv/o and
    feed-forward w1/w2/w3 of every layer. mflux applies the file to both transformers.
    """
    rng = _rng(seed, 10)
    c = TRANSFORMER_CONFIG
    width = c["num_attention_heads"] * c["attention_head_dim"]
    ffn = c["intermediate_size"]
    shapes = {
        "attention.qkv": (3 * width, width),
        "attention.o": (width, width),
        "feed_forward.w1": (ffn, width),
        "feed_forward.w2": (width, ffn),
        "feed_forward.w3": (ffn, width),
    }
    t: dict = {}
    for i in range(c["num_layers"]):
        for module, (out_dim, in_dim) in shapes.items():
            p = f"transformer.layers.{i}.{module}"
            t[f"{p}.lora_A.weight"] = _bf16_tensor(
                rng.normal(0.0, 1.0 / np.sqrt(in_dim), size=(rank, in_dim))
            )
            t[f"{p}.lora_B.weight"] = _bf16_tensor(rng.normal(0.0, 0.02, size=(out_dim, rank)))
            t[f"{p}.alpha"] = (_F32, (), struct.pack("<f", float(rank)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, _safetensors(t))
    return path
