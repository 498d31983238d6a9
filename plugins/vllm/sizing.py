"""What a vLLM model will take, read from its folder's config.json and weight files.

The KV cache is sized here, from the options, and handed to vLLM in bytes
(`kv_cache_memory_bytes`), so the footprint the residency manager admits against the memory
budget is the memory vLLM takes. Engine-free: the server calls this before any load.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lampstand.plugins.errors import ModelUnavailable

from .options import VllmOptions

__all__ = ["ModelShape", "read_shape", "DEFAULT_MAX_MODEL_LEN", "RUNTIME_BYTES", "ACTIVATION_BYTES"]

DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_TOKENS_PER_SEQUENCE = 2048
# torch and vLLM in the worker and its engine process, measured on the CPU build: with 1,536 MiB
# the estimate of the test suite's SmolLM2 folder was 2.34 GB against 2.73 GB measured after load.
RUNTIME_BYTES = 1920 * 1024**2
ACTIVATION_BYTES = 256 * 1024**2  # vLLM's per-step workspace beside the weights and KV
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of config.json that decide memory."""

    layers: int
    kv_heads: int
    head_dim: int
    max_positions: int
    weight_bytes: int  # as stored
    stored_dtype: str | None

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes  # K and V, every layer

    def max_model_len(self, options: VllmOptions) -> int:
        if options.max_model_len is not None:
            return options.max_model_len
        return min(self.max_positions, DEFAULT_MAX_MODEL_LEN) if self.max_positions else DEFAULT_MAX_MODEL_LEN

    def kv_tokens(self, options: VllmOptions) -> int:
        if options.kv_cache_tokens is not None:
            return options.kv_cache_tokens
        return options.max_num_seqs * min(self.max_model_len(options), DEFAULT_TOKENS_PER_SEQUENCE)

    def loaded_weight_bytes(self, dtype: str) -> int:
        stored = DTYPE_BYTES.get(self.stored_dtype or "", 0)
        if dtype in DTYPE_BYTES and stored:
            return self.weight_bytes * DTYPE_BYTES[dtype] // stored
        return self.weight_bytes

    def kv_cache_bytes(self, options: VllmOptions, dtype: str) -> int:
        return self.kv_tokens(options) * self.kv_bytes_per_token(DTYPE_BYTES.get(dtype, 2))


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    inner = config.get("text_config")
    return {**config, **inner} if isinstance(inner, dict) else config


def _safetensors_dtype(folder: Path) -> str | None:
    """The dtype of the first tensor of the first weight file (its JSON header says it)."""
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(size, 16 * 1024**2)))
        for name, entry in header.items():
            if name != "__metadata__":
                return SAFETENSORS_DTYPES.get(entry.get("dtype"))
    return None


def read_shape(folder: Path) -> ModelShape:
    """The model's shape, or `ModelUnavailable` when the folder is not a Hugging Face model."""
    try:
        config = _text_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        shape = ModelShape(
            layers=int(config["num_hidden_layers"]),
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            max_positions=int(config.get("max_position_embeddings") or 0),
            weight_bytes=sum(p.stat().st_size for p in folder.glob("*.safetensors")),
            stored_dtype=_safetensors_dtype(folder),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"{folder} is not a Hugging Face model folder vLLM can read "
                               f"(config.json: {exc})") from exc
    if not shape.weight_bytes:
        raise ModelUnavailable(f"{folder.name} has no .safetensors weights; pickled weights are never loaded")
    return shape
