"""Options of the `sentence_transformers` plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lampstand.plugins.contract import PluginOptions

__all__ = ["SentenceTransformersOptions"]


class SentenceTransformersOptions(PluginOptions):
    """How sentence-transformers loads and runs one embedding model or cross-encoder."""

    task: Literal["auto", "embeddings", "rerank"] = Field(
        "auto", description="auto: rerank when config.json names a *ForSequenceClassification architecture",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    batch_size: int = Field(64, ge=1)
    normalize: bool = Field(True, description="unit-length vectors, as OpenAI's are (embeddings only)")
    max_seq_length: int | None = Field(None, ge=1, description="truncate inputs (or query-document pairs) to this many tokens")
    trust_remote_code: bool = False
