"""Deterministic random tensors and the file formats of a Hugging Face checkpoint.

The safetensors writer is our own (a few lines of the documented format) rather than the
``safetensors`` package: numpy has no bfloat16, and writing the bytes ourselves keeps every file
byte-identical for the same seed (sorted header, fixed metadata, no alignment surprises).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# What the real files carry in their safetensors header (torch's save_file writes it).
PT_METADATA = {"format": "pt"}


@dataclass(frozen=True)
class Tensor:
    """A tensor to write: float32 values and the dtype they are stored in."""

    values: np.ndarray
    dtype: str = "BF16"

    @property
    def nbytes(self) -> int:
        return int(self.values.size) * _ITEM_SIZE[self.dtype]


_ITEM_SIZE = {"BF16": 2, "F16": 2, "F32": 4}


class TensorFactory:
    """Random tensors whose values depend only on (seed, namespace, tensor name).

    Each tensor gets its own generator seeded from a hash of its name, so adding or removing one
    tensor never shifts the values of the others, and the order tensors are made in is irrelevant.
    """

    def __init__(self, seed: int, namespace: str) -> None:
        self.seed = seed
        self.namespace = namespace

    def _rng(self, name: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}\0{self.namespace}\0{name}".encode()).digest()
        return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))

    def normal(self, name: str, shape: Iterable[int], std: float, mean: float = 0.0) -> Tensor:
        shape = tuple(int(s) for s in shape)
        values = self._rng(name).standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)
        return Tensor(values)

    def linear(self, name: str, out_features: int, in_features: int, gain: float = 1.0) -> Tensor:
        """A weight scaled by 1/sqrt(fan_in), so activations keep their size through random layers."""
        return self.normal(name, (out_features, in_features), gain / np.sqrt(in_features))

    def conv(self, name: str, shape: Iterable[int], gain: float = 1.0) -> Tensor:
        """A conv weight (out, in, *kernel) scaled by 1/sqrt(in * kernel volume)."""
        shape = tuple(shape)
        return self.normal(name, shape, gain / np.sqrt(float(np.prod(shape[1:]))))

    def bias(self, name: str, size: int) -> Tensor:
        return self.normal(name, (size,), 0.02)

    def norm(self, name: str, shape: Iterable[int]) -> Tensor:
        """A norm scale near one (not exactly one, so a missed load shows up as a different image)."""
        return self.normal(name, shape, 0.05, mean=1.0)


def to_bytes(tensor: Tensor) -> bytes:
    values = np.ascontiguousarray(tensor.values, dtype=np.float32)
    if tensor.dtype == "F32":
        return values.astype("<f4").tobytes()
    if tensor.dtype == "F16":
        return values.astype("<f2").tobytes()
    # bfloat16 is the top half of a float32; round to nearest even like torch's conversion. In place
    # on a uint32 copy: the values are finite and small, so adding 0x8000 cannot overflow.
    bits = values.view(np.uint32).copy()
    bits += np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    bits >>= np.uint32(16)
    return bits.astype("<u2").tobytes()


def write_safetensors(
    path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = PT_METADATA
) -> int:
    """Write one safetensors file (names sorted, data packed in that order); return the data size."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offset = 0
    chunks = []
    for name in sorted(tensors):
        data = to_bytes(tensors[name])
        header[name] = {
            "dtype": tensors[name].dtype,
            "shape": list(tensors[name].values.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # The format pads the header with spaces to a multiple of 8 so the data is aligned.
    encoded += b" " * (-len(encoded) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for chunk in chunks:
            handle.write(chunk)
    return offset


def write_sharded(directory: Path, stem: str, tensors: Mapping[str, Tensor], shards: int) -> list[str]:
    """Write ``<stem>-0000i-of-0000n.safetensors`` plus ``<stem>.safetensors.index.json``.

    Like transformers' and diffusers' ``save_pretrained``: tensors in name order, a new shard when
    the current one reaches its share of the total size, and an index mapping every name to its file.
    """
    names = sorted(tensors)
    if not 1 <= shards <= len(names):
        raise ValueError(f"cannot split {len(names)} tensors into {shards} shards")
    groups: list[list[str]] = [[]]
    size = 0
    total = sum(tensors[name].nbytes for name in names)
    left = total  # bytes not yet in a closed shard
    for position, name in enumerate(names):
        open_after = shards - len(groups)  # shards still to start after the current one
        # Exactly `shards` files, like the real repo: close the current shard when it holds its
        # share of what is left, or when the remaining tensors are just enough for the rest.
        share = left / (open_after + 1)
        if (
            groups[-1]
            and open_after
            and (size + tensors[name].nbytes > share or len(names) - position <= open_after)
        ):
            groups.append([])
            left -= size
            size = 0
        groups[-1].append(name)
        size += tensors[name].nbytes
    count = len(groups)
    files = []
    weight_map = {}
    for number, group in enumerate(groups, start=1):
        file_name = f"{stem}-{number:05d}-of-{count:05d}.safetensors"
        write_safetensors(directory / file_name, {name: tensors[name] for name in group})
        files.append(file_name)
        weight_map.update(dict.fromkeys(group, file_name))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_json(directory / f"{stem}.safetensors.index.json", index)
    return files


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
