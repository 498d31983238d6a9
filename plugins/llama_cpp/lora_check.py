"""Checks that a GGUF LoRA adapter fits a GGUF base before llama.cpp is given either.

llama.cpp refuses most bad adapters with an error, but some it does not survive: a metadata
value of the wrong type trips an assertion, and a LoRA pair whose shapes do not chain breaks a
matrix product when the graph is built. `check_lora` reads both headers with the bounded
`scan_gguf` (no llama.cpp, no torch, no `gguf` package, no tensor data) and applies the same rules
as llama.cpp's adapter loader plus the ones it leaves to later:

- the file is a GGUF LoRA adapter (`general.type` "adapter", `adapter.type` "lora") with an f32
  `adapter.lora.alpha` if any, and every tensor is half of a `<base>.lora_a` / `.lora_b` pair;
- it is for the base's architecture, every base tensor it names exists, and each pair fits:
  lora_a ne = [in, r], lora_b ne = [r, out] against the base's [in, out] (for `token_embd`,
  looked up by row: lora_a ne = [r, vocab], lora_b ne = [r, embd]).

A damaged file is an `InvalidModelFile` (from `scan_gguf` or here); an adapter that does not fit
the base is an `AdapterMismatch`. Messages name files by base name only.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lampstand.plugins.errors import InvalidModelFile, InvalidRequest

from .gguf_check import GgufArray, GgufHeader, TensorInfo, scan_gguf

__all__ = ["BASE_SHA256_KEY", "AdapterMismatch", "LoraInfo", "check_lora"]

BASE_SHA256_KEY = "lampstand.base.sha256"  # hex sha256 of the base the adapter was exported for
ALPHA_KEY = "adapter.lora.alpha"
INVOCATION_TOKENS_KEY = "adapter.alora.invocation_tokens"
SUFFIXES = (".lora_a", ".lora_b")
IGNORED_SUFFIX = "_norm.weight"  # llama.cpp skips norm vectors some converters add
EMBEDDING_TENSOR = "token_embd.weight"
OUTPUT_TENSOR = "output.weight"
# the types llama.cpp's LoRA converter writes, all of which its matmul and row lookup take
LORA_TYPES = frozenset({"F32", "F16", "BF16", "Q8_0"})
GGUF_F32, GGUF_U32 = 6, 4  # GGUF metadata value types
MAX_ADAPTER_HEADER_BYTES = 64 * 1024 * 1024  # adapters carry no vocabulary; their headers are small
_PREAMBLE_BYTES = 24  # magic, version, tensor count, metadata count
_FIXED_VALUE_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class AdapterMismatch(InvalidRequest):
    """A LoRA adapter that does not fit the base model it was asked to load onto."""

    code = "adapter_mismatch"


@dataclass(frozen=True)
class LoraInfo:
    """What a checked LoRA adapter says about itself."""

    architecture: str
    alpha: float | None  # None: llama.cpp then scales by the request's scale alone
    rank: int  # the largest rank among its pairs
    tensor_count: int  # lora_a and lora_b tensors, two per adapted base tensor
    base_sha256: str | None


@dataclass(frozen=True)
class _Pair:
    base_name: str
    a: TensorInfo
    b: TensorInfo


def check_lora(lora: Path, base: Path) -> LoraInfo:
    """Refuse `lora` unless llama.cpp can apply it to `base`; what it says about itself if so."""
    lora, base = Path(lora), Path(base)
    adapter = scan_gguf(lora)
    architecture = _adapter_architecture(lora, adapter)
    alpha = _alpha(lora, adapter)
    pairs = _pairs(lora.name, adapter.tensors)
    model = _base_header(base)
    base_architecture = model.metadata.get("general.architecture")
    if base_architecture != architecture:
        raise AdapterMismatch(
            f"{lora.name} is a LoRA for {architecture!r} models, but {base.name} is a "
            f"{base_architecture!r} model"
        )
    base_tensors = {tensor.name: tensor for tensor in model.tensors}
    for pair in pairs:
        _check_pair(lora.name, base.name, pair, base_tensors)
    sha = adapter.metadata.get(BASE_SHA256_KEY)
    return LoraInfo(
        architecture=architecture,
        alpha=alpha,
        rank=max(pair.b.shape[0] for pair in pairs),  # llama.cpp reads the rank from lora_b
        tensor_count=2 * len(pairs),
        base_sha256=sha if isinstance(sha, str) else None,
    )


def _base_header(base: Path) -> GgufHeader:
    """The base model's GGUF header, scanned once per file version (tens of ms for a big vocabulary)."""
    try:
        info = base.stat()
    except OSError:
        return scan_gguf(base)  # which says what is wrong with it
    return _scan_cached(base.resolve(), info.st_size, info.st_mtime_ns)


@lru_cache(maxsize=8)
def _scan_cached(path: Path, size: int, mtime_ns: int) -> GgufHeader:
    return scan_gguf(path)


# -- the adapter alone ------------------------------------------------------------------------

def _adapter_architecture(path: Path, header: GgufHeader) -> str:
    meta = header.metadata
    general_type = meta.get("general.type")
    if general_type != "adapter":
        what = "a model" if general_type in (None, "model") else f"general.type {general_type!r}"
        raise InvalidModelFile(f"{path.name} is not a LoRA adapter: it is {what}, not an adapter")
    adapter_type = meta.get("adapter.type")
    if adapter_type != "lora":
        raise InvalidModelFile(f"{path.name} is not a LoRA adapter: adapter.type is {adapter_type!r}, not 'lora'")
    architecture = meta.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise InvalidModelFile(f"{path.name} names no general.architecture")
    tokens = meta.get(INVOCATION_TOKENS_KEY)
    if tokens is not None and not (isinstance(tokens, GgufArray) and tokens.item_type == GGUF_U32):
        raise InvalidModelFile(f"{path.name}: {INVOCATION_TOKENS_KEY} is not an array of uint32")
    return architecture


def _alpha(path: Path, header: GgufHeader) -> float | None:
    """adapter.lora.alpha, which llama.cpp reads as an f32 and asserts on any other type."""
    alpha = header.metadata.get(ALPHA_KEY)
    if alpha is None:
        return None
    if _value_types(path, header).get(ALPHA_KEY) != GGUF_F32 or not isinstance(alpha, float):
        raise InvalidModelFile(f"{path.name}: {ALPHA_KEY} must be a float32")
    if not math.isfinite(alpha) or alpha < 0:
        raise InvalidModelFile(f"{path.name}: {ALPHA_KEY} is {alpha}, not a finite non-negative number")
    return alpha


def _value_types(path: Path, header: GgufHeader) -> dict[str, int]:
    """The GGUF value type of each metadata key (the header is already checked by `scan_gguf`)."""
    if header.data_offset > MAX_ADAPTER_HEADER_BYTES:
        raise InvalidModelFile(f"{path.name}: a header of {header.data_offset} bytes is too large for an adapter")
    with path.open("rb") as file:
        data = file.read(header.data_offset)
    types: dict[str, int] = {}
    pos = _PREAMBLE_BYTES
    try:
        for _ in range(len(header.metadata)):
            key, pos = _string_at(data, pos)
            (value_type,) = struct.unpack_from("<I", data, pos)
            types[key] = value_type
            pos = _skip_value(data, pos + 4, value_type)
    except (struct.error, KeyError):  # the file changed since it was scanned
        raise InvalidModelFile(f"{path.name} changed while it was being read") from None
    return types


def _string_at(data: bytes, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", data, pos)
    end = pos + 8 + length
    if end > len(data):
        raise struct.error("string past the end")
    return data[pos + 8 : end].decode("utf-8", errors="replace"), end


def _skip_value(data: bytes, pos: int, value_type: int) -> int:
    if value_type == _STRING:
        return _string_at(data, pos)[1]
    if value_type != _ARRAY:
        return pos + _FIXED_VALUE_BYTES[value_type]
    item_type, count = struct.unpack_from("<IQ", data, pos)
    pos += 12
    if item_type != _STRING:
        return pos + count * _FIXED_VALUE_BYTES[item_type]
    for _ in range(count):
        pos = _string_at(data, pos)[1]
    return pos


def _pairs(file_name: str, tensors: tuple[TensorInfo, ...]) -> list[_Pair]:
    """Every `.lora_a` with its `.lora_b`, by base tensor name."""
    halves: dict[str, dict[str, TensorInfo]] = {}
    for tensor in tensors:
        if tensor.name.endswith(IGNORED_SUFFIX):
            continue
        suffix = next((s for s in SUFFIXES if tensor.name.endswith(s)), None)
        # llama.cpp strips every occurrence of the suffix, so a name with two would pair elsewhere
        if suffix is None or tensor.name.count(".lora_a") + tensor.name.count(".lora_b") != 1:
            raise InvalidModelFile(f"{file_name}: tensor {tensor.name!r} is not a .lora_a or .lora_b tensor")
        if tensor.type_name not in LORA_TYPES:
            raise InvalidModelFile(
                f"{file_name}: tensor {tensor.name!r} is {tensor.type_name}; LoRA tensors must be "
                f"one of {', '.join(sorted(LORA_TYPES))}"
            )
        halves.setdefault(tensor.name[: -len(suffix)], {})[suffix] = tensor
    if not halves:
        raise InvalidModelFile(f"{file_name} holds no LoRA tensors")
    pairs = []
    for name, found in sorted(halves.items()):
        missing = [s for s in SUFFIXES if s not in found]
        if missing:
            raise InvalidModelFile(f"{file_name}: {name}{missing[0]} is missing; LoRA tensors come in pairs")
        pairs.append(_Pair(name, found[".lora_a"], found[".lora_b"]))
    return pairs


# -- the adapter against the base -------------------------------------------------------------

def _check_pair(lora_name: str, base_name: str, pair: _Pair, base_tensors: dict[str, TensorInfo]) -> None:
    target = base_tensors.get(pair.base_name)
    if target is None:
        raise AdapterMismatch(
            f"{lora_name} adapts tensor {pair.base_name!r}, which {base_name} does not have "
            "(an adapter for another model?)"
        )
    w, a, b = _ne(target), _ne(pair.a), _ne(pair.b)
    if pair.base_name == EMBEDDING_TENSOR:
        if OUTPUT_TENSOR not in base_tensors:
            raise AdapterMismatch(
                f"{lora_name} adapts the token embedding, which {base_name} ties to its output "
                "projection; llama.cpp cannot apply that adapter to this model"
            )
        # rows of lora_a are looked up by token: a = [r, vocab], b = [r, embd], w = [embd, vocab]
        fits = a[1] == w[1] and b[1] == w[0] and a[0] == b[0] and w[2:] == a[2:] == b[2:] == (1, 1)
    else:
        # a = [in, r], b = [r, out], w = [in, out]; expert tensors add a shared third dimension
        fits = a[0] == w[0] and b[1] == w[1] and a[1] == b[0] and w[2:] == a[2:] == b[2:] and w[3] == 1
    if not fits:
        raise AdapterMismatch(
            f"{lora_name}: the LoRA pair for {pair.base_name!r} (lora_a {list(pair.a.shape)}, lora_b "
            f"{list(pair.b.shape)}) does not fit its shape {list(target.shape)} in {base_name}"
        )


def _ne(tensor: TensorInfo) -> tuple[int, int, int, int]:
    """A tensor's ggml shape with its unused dimensions as 1, as ggml counts them."""
    shape = tensor.shape + (1,) * (4 - len(tensor.shape))
    return shape[0], shape[1], shape[2], shape[3]
