"""Reads what a GGUF file says about itself (architecture, sizes) without llama.cpp.

Used to estimate a model's footprint before loading it. The header comes from the bounded
`scan_gguf`, so a damaged or hostile file, or one whose size keys are missing or of the wrong
type, becomes an `InvalidModelFile` naming only the file's base name, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lampstand.plugins.contract import Footprint
from lampstand.plugins.errors import InvalidModelFile

from .gguf_check import GgufArray, scan_gguf

__all__ = ["GgufInfo", "read_gguf_info"]


@dataclass(frozen=True)
class GgufInfo:
    """The metadata lampstand needs from a GGUF file."""

    file_bytes: int
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ctx_train: int
    n_vocab: int
    pooling_type: int | None

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """f16 keys and values for `n_ctx` positions in every layer."""
        n_embd_kv = self.n_embd * self.n_head_kv // max(self.n_head, 1)
        return 2 * n_ctx * self.n_layer * n_embd_kv * 2

    def footprint(self, n_ctx: int, n_batch: int) -> Footprint:
        """Weights, KV cache and a compute buffer sized for one batch of logits."""
        return Footprint(ram_bytes=self.file_bytes + self.kv_cache_bytes(n_ctx) + self.compute_bytes(n_batch))

    def compute_bytes(self, n_batch: int) -> int:
        """A context's compute buffer, sized for one batch of logits."""
        return n_batch * (self.n_vocab + 4 * self.n_embd) * 4


class _Keys:
    """Typed lookups in a GGUF's metadata; a wrong type is an `InvalidModelFile`."""

    def __init__(self, file_name: str, metadata: dict[str, object]) -> None:
        self._file_name = file_name
        self._metadata = metadata

    def invalid(self, problem: str) -> InvalidModelFile:
        return InvalidModelFile(f"{self._file_name} is not a valid GGUF file: {problem}")

    def text(self, key: str) -> str:
        value = self._metadata.get(key)
        if not isinstance(value, str) or not value:
            raise self.invalid(f"{key} is missing or not a string")
        return value

    def count(self, key: str, default: int) -> int:
        """A non-negative integer; a short per-layer array counts as its largest item."""
        value = self._metadata.get(key, default)
        items = value.values if isinstance(value, GgufArray) and value.values else (value,)
        counts = [item for item in items if isinstance(item, int) and not isinstance(item, bool) and item >= 0]
        if len(counts) != len(items):
            raise self.invalid(f"{key} is not a count")
        return max(counts)

    def optional_count(self, key: str) -> int | None:
        return self.count(key, 0) if key in self._metadata else None

    def array_length(self, key: str) -> int:
        value = self._metadata.get(key)
        if value is None:
            return 0
        if not isinstance(value, GgufArray):
            raise self.invalid(f"{key} is not an array")
        return value.length


def read_gguf_info(path: Path) -> GgufInfo:
    """The sizes lampstand needs from a GGUF file's header, read without llama.cpp."""
    header = scan_gguf(path)
    keys = _Keys(path.name, header.metadata)
    arch = keys.text("general.architecture")
    n_head = keys.count(f"{arch}.attention.head_count", 1)
    return GgufInfo(
        file_bytes=header.file_bytes,
        architecture=arch,
        n_layer=keys.count(f"{arch}.block_count", 0),
        n_embd=keys.count(f"{arch}.embedding_length", 0),
        n_head=n_head,
        n_head_kv=keys.count(f"{arch}.attention.head_count_kv", n_head),
        n_ctx_train=keys.count(f"{arch}.context_length", 0),
        n_vocab=keys.array_length("tokenizer.ggml.tokens"),
        pooling_type=keys.optional_count(f"{arch}.pooling_type"),
    )
