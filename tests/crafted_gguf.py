"""Small GGUF files for tests: one valid file written by `gguf.GGUFWriter`, hostile variants,
and LoRA adapter files holding given tensors.

Each hostile variant is the valid file's bytes with one field patched or the file cut short, so
it is a few kilobytes and fails for exactly one reason. Field positions come from
`gguf.GGUFReader` reading the valid file, not from offsets written by hand.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

__all__ = ["HOSTILE_VARIANTS", "write_crafted_ggufs", "write_valid_gguf", "write_lora"]

N_VOCAB = 100  # over the 64 items a scanner keeps, so the token list is skipped, not stored
N_EMBD = 8
U64_MAX = 2**64 - 1


def write_valid_gguf(path: Path) -> Path:
    """Write a tiny but complete llama-architecture GGUF v3 file to `path`."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_context_length(256)
    writer.add_embedding_length(N_EMBD)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_array("general.languages", ["en"])
    writer.add_token_list([f"tok{i}" for i in range(N_VOCAB)])
    writer.add_token_types([1] * N_VOCAB)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.add_tensor("token_embd.weight", np.ones((N_VOCAB, N_EMBD), dtype=np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(16, dtype=np.float16))
    # two rows of one Q8_0 block each: 34 bytes a row, so the scanner's block table is exercised
    writer.add_tensor("output.weight", np.zeros((2, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


class _Layout:
    """Where the fields of the valid file lie, as `GGUFReader` finds them."""

    def __init__(self, path: Path) -> None:
        reader = gguf.GGUFReader(path)
        self.fields = reader.fields
        self.tensors = reader.tensors

    def field_part(self, key: str, part: int) -> int:
        """Byte offset of part `part` of metadata field `key` (0 key length, 1 key, 2 type, 3...)."""
        field = self.fields[key]
        return field.offset + sum(int(p.nbytes) for p in field.parts[:part])

    def tensor_part(self, index: int, part: int) -> int:
        """Byte offset of part `part` of tensor info `index` (0 name length, ..., 4 type, 5 offset)."""
        field = self.tensors[index].field
        return field.offset + sum(int(p.nbytes) for p in field.parts[:part])

    def tensor_data(self, index: int) -> tuple[int, int]:
        """Where tensor `index`'s data starts, relative to the data section, and its size."""
        tensor = self.tensors[index]
        return int(tensor.data_offset - self.tensors[0].data_offset), int(tensor.n_bytes)


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """`data` with the little-endian `fmt` field at `offset` set to `value`."""
    field = struct.pack("<" + fmt, value)
    return data[:offset] + field + data[offset + len(field) :]


# name -> how to derive the hostile bytes from the valid file's bytes and layout
HOSTILE_VARIANTS: dict[str, Callable[[bytes, _Layout], bytes]] = {
    "zero_bytes": lambda data, at: b"",
    "magic_only": lambda data, at: b"GGUF",
    "bad_magic": lambda data, at: b"GGML" + data[4:],
    "bad_version": lambda data, at: _patch(data, 4, "I", 4),
    "huge_tensor_count": lambda data, at: _patch(data, 8, "Q", U64_MAX),
    "huge_kv_count": lambda data, at: _patch(data, 16, "Q", U64_MAX),
    "truncated_header": lambda data, at: data[: at.field_part("tokenizer.ggml.tokens", 5) + 3],
    "huge_string_length": lambda data, at: _patch(data, at.field_part("general.architecture", 3), "Q", U64_MAX),
    "huge_array_length": lambda data, at: _patch(data, at.field_part("tokenizer.ggml.tokens", 4), "Q", 2**62),
    "unknown_value_type": lambda data, at: _patch(data, at.field_part("general.architecture", 2), "I", 0xDEAD),
    "too_many_dims": lambda data, at: _patch(data, at.tensor_part(0, 2), "I", 5),
    "unknown_tensor_type": lambda data, at: _patch(data, at.tensor_part(0, 4), "I", 0xDEAD),
    "misaligned_tensor_offset": lambda data, at: _patch(data, at.tensor_part(1, 5), "Q", at.tensor_data(1)[0] + 4),
    "overlapping_tensors": lambda data, at: _patch(data, at.tensor_part(1, 5), "Q", 0),
    "offset_past_eof": lambda data, at: _patch(data, at.tensor_part(3, 5), "Q", 1 << 40),
    "truncated_tensor_data": lambda data, at: data[: int(at.tensors[3].data_offset) + at.tensor_data(3)[1] // 2],
}


def write_crafted_ggufs(directory: Path) -> dict[str, Path]:
    """Write `valid.gguf` and one `<variant>.gguf` per hostile variant; returns name -> path."""
    valid = write_valid_gguf(directory / "valid.gguf")
    data, layout = valid.read_bytes(), _Layout(valid)
    paths = {"valid": valid}
    for name, derive in HOSTILE_VARIANTS.items():
        paths[name] = directory / f"{name}.gguf"
        paths[name].write_bytes(derive(data, layout))
    return paths


def write_lora(target: Path, tensors: dict[str, np.ndarray], *, architecture: str = "llama",
               alpha: float | Callable[[gguf.GGUFWriter], None] = 16.0) -> Path:
    """A GGUF LoRA file holding `tensors`, with the metadata llama.cpp's adapter loader reads.

    `alpha` is written as float32, or by the given call (to write it with another type).
    """
    writer = gguf.GGUFWriter(target, architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    if callable(alpha):
        alpha(writer)
    else:
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
