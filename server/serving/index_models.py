"""The served models an index uses: its embedder (building and querying) and the reranker.

Both go through the model pool like any request, so indexing and searching queue fairly
with API traffic, load models on demand and respect the memory budget. Embedding calls join
the `/v1/embeddings` batcher of their model, so concurrent queries share batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lampstand.indexer.chunks import Chunk
from lampstand.indexer.pipeline import chunk_passage
from lampstand.plugins.contract import Capability
from lampstand.plugins.errors import InvalidRequest, ModelNotFound

from ..model_pool import HostedModel, ModelPool
from .embeddings import EmbeddingBatcher, batcher_for
from .rerank import rerank_documents

__all__ = ["PoolEmbedder", "PoolReranker"]


class PoolEmbedder:
    """Vectors from a served embeddings model; `model_id` is what an index records."""

    def __init__(self, pool: ModelPool, batchers: dict[str, EmbeddingBatcher], hosted: HostedModel) -> None:
        self.pool, self.batchers, self.hosted = pool, batchers, hosted
        self.model_id = hosted.id

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32."""
        batcher = batcher_for(self.pool, self.batchers, self.hosted)
        async with self.pool.admit(self.hosted) as lease:
            result = await batcher.embed(list(texts), lease)
        return np.asarray(result.vectors, dtype=np.float32)

    async def embed_query(self, text: str) -> np.ndarray:
        """One query's vector, (dim,)."""
        return (await self.embed([text]))[0]


class PoolReranker:
    """Relevance scores from a served cross-encoder (capability `rerank`)."""

    def __init__(self, pool: ModelPool, hosted: HostedModel) -> None:
        self.pool, self.hosted = pool, hosted

    async def rerank(self, query: str, chunks: Sequence[Chunk]) -> list[float]:
        """One score per chunk, in order; each chunk is read with its path and heading."""
        result = await rerank_documents(self.pool, self.hosted.id, query, [chunk_passage(c) for c in chunks])
        return list(result.scores)

    @classmethod
    def configured(cls, pool: ModelPool, name: str | None) -> PoolReranker:
        """The reranker named in the config, else the first model that reranks (400 if none)."""
        try:
            return cls(pool, pool.pick(name, Capability.RERANK, "rerank"))
        except ModelNotFound as exc:
            raise InvalidRequest(f"{exc.message}; configure a cross-encoder model to rerank",
                                 param="rerank") from None
