"""Reads what a GGUF file says about itself (architecture, sizes, template) without llama.cpp.

Used to estimate a model's footprint before loading it. Any parse failure of a damaged or
hostile file becomes a `ModelUnavailable`, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lampstand.plugins.contract import Footprint
from lampstand.plugins.errors import ModelUnavailable

__all__ = ["GgufInfo", "read_gguf_info"]

GGUF_MAGIC = b"GGUF"


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
        compute = n_batch * (self.n_vocab + 4 * self.n_embd) * 4
        return Footprint(ram_bytes=self.file_bytes + self.kv_cache_bytes(n_ctx) + compute)


def _value(fields, key: str, default=None):  # type: ignore[no-untyped-def]
    field = fields.get(key)
    return default if field is None else field.contents()


def read_gguf_info(path: Path) -> GgufInfo:
    """Parse the header of a GGUF file."""
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelUnavailable(f"{path.name} is not a GGUF file (bad magic bytes)")
    try:
        from gguf import GGUFReader

        fields = GGUFReader(path).fields
        arch = str(_value(fields, "general.architecture"))
        n_head = int(_value(fields, f"{arch}.attention.head_count", 1))
        tokens = fields.get("tokenizer.ggml.tokens")
        return GgufInfo(
            file_bytes=path.stat().st_size,
            architecture=arch,
            n_layer=int(_value(fields, f"{arch}.block_count", 0)),
            n_embd=int(_value(fields, f"{arch}.embedding_length", 0)),
            n_head=n_head,
            n_head_kv=int(_value(fields, f"{arch}.attention.head_count_kv", n_head)),
            n_ctx_train=int(_value(fields, f"{arch}.context_length", 0)),
            n_vocab=len(tokens.data) if tokens is not None else 0,
            pooling_type=_value(fields, f"{arch}.pooling_type"),
        )
    except ModelUnavailable:
        raise
    except Exception as exc:  # gguf raises many kinds of errors on damaged files
        raise ModelUnavailable(f"{path.name} is not a readable GGUF file: {type(exc).__name__}: {exc}") from exc
