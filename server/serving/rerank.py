"""Serving /v1/rerank: a cross-encoder scores each document against the query.

`rerank_documents` is the engine-facing half (admission, the model's turn, the worker call)
and is also what in-process callers such as index search use; `create_rerank` checks the
request's limits and shapes the OpenAI-style response. Neither touches an engine.
"""

from __future__ import annotations

from collections.abc import Sequence

from lampstand.plugins.contract import RERANK, Capability
from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.types import RerankRequest, RerankResult

from .. import protocol as p
from ..config import ServerSettings
from ..leases import keep_alive_of
from ..model_pool import ModelPool
from .generation import new_id

__all__ = ["create_rerank", "rerank_documents"]


async def rerank_documents(pool: ModelPool, model: str, query: str, documents: Sequence[str],
                           keep_alive: str | float | None = None) -> RerankResult:
    """One relevance score per document, in input order, from the rerank model `model`."""
    hosted = pool.require(model, Capability.RERANK)
    if not documents:
        return RerankResult(scores=[], token_counts=[])
    async with pool.admit(hosted, keep_alive_of(keep_alive)) as lease:
        result = await lease.call(RERANK, RerankRequest(query, tuple(documents)))
    return result


def _check_limits(body: p.RerankRequest, settings: ServerSettings) -> None:
    if len(body.documents) > settings.max_embedding_inputs:
        raise InvalidRequest(f"at most {settings.max_embedding_inputs} documents per request", param="documents")


async def create_rerank(pool: ModelPool, settings: ServerSettings, body: p.RerankRequest) -> p.RerankResponse:
    """The documents ranked by relevance, most relevant first, cut to `top_n`."""
    _check_limits(body, settings)
    result = await rerank_documents(pool, body.model, body.query, body.documents, body.keep_alive)
    order = sorted(range(len(result.scores)), key=lambda i: -result.scores[i])  # stable: ties keep input order
    results = []
    for index in order[:body.top_n]:
        item = p.RerankResultOut(index=index, relevance_score=result.scores[index])
        if body.return_documents:
            item.document = p.RerankDocument(text=body.documents[index])
        results.append(item)
    tokens = result.prompt_tokens
    return p.RerankResponse(id=new_id("rerank"), model=body.model, results=results,
                            usage=p.RerankUsage(prompt_tokens=tokens, total_tokens=tokens))
