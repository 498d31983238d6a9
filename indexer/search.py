"""Searching one index: dense, lexical or hybrid (reciprocal rank fusion), then reranking.

`search_index` asks the store for candidates in the chosen mode, fuses the two rankings for
hybrid search, and, when a reranker is given, rescores the best candidates with it. In
hybrid mode the lexical search runs in a thread while the query is being embedded. The
query embedder and the reranker are async callables; this module never imports an engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from .chunks import Chunk
from .store import ChunkStore, Filters, Hit

__all__ = ["RRF_K", "SearchMode", "SearchQuery", "reciprocal_rank_fusion", "search_index"]

SearchMode = Literal["dense", "lexical", "hybrid"]
RRF_K = 60  # the constant of Cormack et al.; ranks beyond the first few weigh about the same
HYBRID_DEPTH = 4  # each side of a hybrid search contributes this many times top_k candidates
MIN_DEPTH = 20

EmbedQuery = Callable[[str], Awaitable[np.ndarray]]
Rerank = Callable[[str, Sequence[Chunk]], Awaitable[Sequence[float]]]


@dataclass(frozen=True)
class SearchQuery:
    """One search: the text, how many results, which mode, and what may match."""

    text: str
    top_k: int = 5
    mode: SearchMode = "hybrid"
    filters: Filters | None = None
    rerank_candidates: int = 30


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int = RRF_K) -> list[Hit]:
    """One ranking from several: each hit scores the sum of 1 / (k + rank) over the rankings."""
    scores: dict[int, float] = {}
    hits: dict[int, Hit] = {}
    for ranking in rankings:
        for hit in ranking:
            scores[hit.row_id] = scores.get(hit.row_id, 0.0) + 1.0 / (k + hit.rank)
            hits.setdefault(hit.row_id, hit)
    order = sorted(scores, key=lambda row: (-scores[row], row))
    return [replace(hits[row], score=scores[row], rank=rank) for rank, row in enumerate(order, 1)]


def _depth(query: SearchQuery, reranking: bool) -> int:
    wanted = max(query.top_k, query.rerank_candidates) if reranking else query.top_k
    return wanted if query.mode != "hybrid" else max(wanted * HYBRID_DEPTH, MIN_DEPTH)


async def _candidates(store: ChunkStore, query: SearchQuery, embed_query: EmbedQuery, depth: int) -> list[Hit]:
    if query.mode == "lexical":
        return await asyncio.to_thread(store.search_lexical, query.text, depth, query.filters)
    if query.mode == "dense":
        vector = await embed_query(query.text)
        return await asyncio.to_thread(store.search_dense, vector, depth, query.filters)
    lexical = asyncio.ensure_future(asyncio.to_thread(store.search_lexical, query.text, depth, query.filters))
    try:
        vector = await embed_query(query.text)
    except BaseException:
        lexical.cancel()
        raise
    dense = await asyncio.to_thread(store.search_dense, vector, depth, query.filters)
    return reciprocal_rank_fusion([dense, await lexical])


async def _reranked(query: SearchQuery, hits: list[Hit], rerank: Rerank) -> list[Hit]:
    pool = hits[: max(query.top_k, query.rerank_candidates)]
    if not pool:
        return []
    scores = await rerank(query.text, [hit.chunk for hit in pool])
    order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
    return [replace(pool[i], score=float(scores[i]), rank=rank) for rank, i in enumerate(order, 1)]


async def search_index(
    store: ChunkStore, query: SearchQuery, embed_query: EmbedQuery, rerank: Rerank | None = None
) -> list[Hit]:
    """The `top_k` best chunks for the query, best first, ranks 1..n."""
    hits = await _candidates(store, query, embed_query, _depth(query, rerank is not None))
    if rerank is not None:
        hits = await _reranked(query, hits, rerank)
    return hits[: query.top_k]
