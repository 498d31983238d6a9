"""Searching one index: dense, lexical or hybrid (weighted reciprocal rank fusion), then reranking.

`search_index` asks the store for candidate chunks in the chosen mode; with `expand` (the
server's default) each ranking becomes a ranking of spans, the stretch of file around each
chunk (`spans`), so that neighbouring matches count once and a result shows its context.
Hybrid search fuses the dense and lexical rankings and a third, of prose chunks by the query's
word pairs (`term_index`), and, when a reranker is given, the best candidates are rescored with
it. In hybrid mode the lexical searches run in a thread while the query is being embedded.
The query embedder and the reranker are async callables; this module never imports an engine.

The fusion constants were chosen on the dev split of `bench/retrieval_quality.py` (npm's
docs, a slice of the standard library) and are reported on a split they were not tuned on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from .chunks import Chunk
from .spans import collapse_to_spans, span_chunk, spans_of
from .store import ChunkStore, Filters, Hit

__all__ = ["RRF_K", "SearchMode", "SearchQuery", "reciprocal_rank_fusion", "hybrid_relevance", "search_index"]

SearchMode = Literal["dense", "lexical", "hybrid"]
RRF_K = 10  # smaller than Cormack et al.'s 60: the first few ranks of each side decide
DENSE_WEIGHT, LEXICAL_WEIGHT = 1.0, 0.5  # MiniLM's ranking was the stronger one on both kinds
PHRASE_WEIGHT = 0.5  # word pairs: development notes recall@10 0.877 -> 0.893, MRR 0.619 -> 0.656
HYBRID_DEPTH = 4  # each side of a hybrid search contributes this many times top_k candidates
MIN_DEPTH = 20
SPAN_DEPTH = 100  # chunks fetched per side when spans are returned: several fold into one span

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
    expand: bool = False  # return the span around each matching chunk (see `spans`)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int = RRF_K,
                           weights: Sequence[float] | None = None) -> list[Hit]:
    """One ranking from several: each hit scores the sum of weight / (k + rank) over the rankings."""
    scores: dict[int, float] = {}
    hits: dict[int, Hit] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for hit in ranking:
            scores[hit.row_id] = scores.get(hit.row_id, 0.0) + weight / (k + hit.rank)
            hits.setdefault(hit.row_id, hit)
    order = sorted(scores, key=lambda row: (-scores[row], row))
    return [replace(hits[row], score=scores[row], rank=rank) for rank, row in enumerate(order, 1)]


def hybrid_relevance(score: float) -> float:
    """A hybrid hit's fused score as a fraction of being first in both the dense and the lexical
    ranking (1.0, also the most a place in the word-pair ranking can lift it to), so that scores
    compare across indexes and queries."""
    return min(1.0, score * (RRF_K + 1) / (DENSE_WEIGHT + LEXICAL_WEIGHT))


def _wanted(query: SearchQuery, reranking: bool) -> int:
    """Results the search must deliver: top_k, or the reranker's pool."""
    return max(query.top_k, query.rerank_candidates) if reranking else query.top_k


def _depth(query: SearchQuery, reranking: bool) -> int:
    wanted = _wanted(query, reranking)
    depth = wanted if query.mode != "hybrid" else max(wanted * HYBRID_DEPTH, MIN_DEPTH)
    return max(depth, SPAN_DEPTH) if query.expand else depth


def _lexical_and_phrases(store: ChunkStore, query: SearchQuery, depth: int) -> tuple[list[Hit], list[Hit]]:
    return (store.search_lexical(query.text, depth, query.filters),
            store.search_phrases(query.text, depth, query.filters))


async def _rankings(store: ChunkStore, query: SearchQuery, embed_query: EmbedQuery, depth: int) -> list[list[Hit]]:
    """The chunk rankings of the query's mode: [dense, lexical, word pairs] for hybrid, else one."""
    if query.mode == "lexical":
        return [await asyncio.to_thread(store.search_lexical, query.text, depth, query.filters)]
    if query.mode == "dense":
        vector = await embed_query(query.text)
        return [await asyncio.to_thread(store.search_dense, vector, depth, query.filters)]
    lexical = asyncio.ensure_future(asyncio.to_thread(_lexical_and_phrases, store, query, depth))
    try:
        vector = await embed_query(query.text)
    except BaseException:
        lexical.cancel()
        raise
    dense = await asyncio.to_thread(store.search_dense, vector, depth, query.filters)
    return [dense, *await lexical]


def _fused(rankings: list[list[Hit]]) -> list[Hit]:
    if len(rankings) == 1:
        return rankings[0]
    return reciprocal_rank_fusion(rankings, weights=(DENSE_WEIGHT, LEXICAL_WEIGHT, PHRASE_WEIGHT)[:len(rankings)])


def _span_candidates(store: ChunkStore, rankings: list[list[Hit]], wanted: int) -> list[Hit]:
    """The best `wanted` spans, each hit carrying its whole span as one chunk."""
    spans = spans_of(store, rankings)
    top = _fused([collapse_to_spans(ranking, spans) for ranking in rankings])[:wanted]
    chunks = store.chunks(row_id for hit in top for row_id in spans[hit.row_id].row_ids)
    return [replace(hit, chunk=span_chunk(spans[hit.row_id], chunks, hit.chunk)) for hit in top]


async def _candidates(store: ChunkStore, query: SearchQuery, embed_query: EmbedQuery, reranking: bool) -> list[Hit]:
    rankings = await _rankings(store, query, embed_query, _depth(query, reranking))
    if not query.expand:
        return _fused(rankings)
    return await asyncio.to_thread(_span_candidates, store, rankings, _wanted(query, reranking))


async def _reranked(query: SearchQuery, hits: list[Hit], rerank: Rerank) -> list[Hit]:
    pool = hits[: _wanted(query, True)]
    if not pool:
        return []
    scores = await rerank(query.text, [hit.chunk for hit in pool])
    order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
    return [replace(pool[i], score=float(scores[i]), rank=rank) for rank, i in enumerate(order, 1)]


async def search_index(
    store: ChunkStore, query: SearchQuery, embed_query: EmbedQuery, rerank: Rerank | None = None
) -> list[Hit]:
    """The `top_k` best chunks for the query, best first, ranks 1..n."""
    hits = await _candidates(store, query, embed_query, rerank is not None)
    if rerank is not None:
        hits = await _reranked(query, hits, rerank)
    return hits[: query.top_k]
