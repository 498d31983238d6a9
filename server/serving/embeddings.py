"""Serving /v1/embeddings, with requests to one model batched together.

While the embedder works on one batch, newly arriving requests queue; the next batch takes
all of them at once (up to `max_batch` inputs). Many small concurrent requests therefore
cost about what one large request costs. A batch that fails on one request's bad input is
retried request by request, so only that request fails.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from lampstand.plugins.contract import EMBED, Capability
from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.types import EmbeddingResult

from .. import protocol as p
from ..config import ServerSettings
from ..leases import Lease, keep_alive_of
from ..model_pool import HostedModel, ModelPool

__all__ = ["EmbeddingBatcher", "batcher_for", "create_embeddings"]

Inputs = list[str | list[int]]


@dataclass
class _Pending:
    inputs: Inputs
    lease: Lease
    future: asyncio.Future[EmbeddingResult]


class EmbeddingBatcher:
    """Coalesces concurrent embedding requests for one model into shared batches."""

    def __init__(self, max_batch: int = 256, observe: Callable[[int], None] = lambda requests: None) -> None:
        self.max_batch = max_batch
        self.observe = observe  # told the number of requests of each batch
        self.pending: list[_Pending] = []
        self.draining: asyncio.Task[None] | None = None

    async def embed(self, inputs: Inputs, lease: Lease) -> EmbeddingResult:
        """Vectors for `inputs`, computed in whichever batch they join.

        Every request holds its own lease (its place in the model's queue); a batch runs on
        the turn of its first request, and the others ride along.
        """
        future: asyncio.Future[EmbeddingResult] = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(inputs, lease, future))
        if self.draining is None or self.draining.done():
            self.draining = asyncio.create_task(self._drain())
        return await future

    def _take_batch(self) -> list[_Pending]:
        batch, size = [], 0
        while self.pending and (not batch or size + len(self.pending[0].inputs) <= self.max_batch):
            item = self.pending.pop(0)
            if not item.future.done():  # its client may have gone
                batch.append(item)
                size += len(item.inputs)
        return batch

    async def _drain(self) -> None:
        while self.pending:
            batch = self._take_batch()
            if batch:
                self.observe(len(batch))
                await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        flat = [x for item in batch for x in item.inputs]
        leader = batch[0].lease
        call = asyncio.ensure_future(leader.call(EMBED, flat))
        leader.hold(call)  # the batch runs on its leader's turn, which lasts while others still wait
        try:
            result = await _unless_abandoned(call, [item.future for item in batch])
            if result is None:
                return  # every request of the batch went away: the worker was told to stop
        except InvalidRequest as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc)
            else:
                for item in batch:
                    await self._run([item])
            return
        except Exception as exc:  # load failure or engine error: every waiter hears it
            for item in batch:
                _settle(item.future, exc)
            return
        start = 0
        for item in batch:
            end = start + len(item.inputs)
            _settle(item.future, EmbeddingResult(result.vectors[start:end], result.token_counts[start:end]))
            start = end


def batcher_for(pool: ModelPool, batchers: dict[str, EmbeddingBatcher], hosted: HostedModel) -> EmbeddingBatcher:
    """The model's batcher (one per model, shared by the API and the indexer), made on first use."""
    batcher = batchers.get(hosted.id)
    if batcher is None:
        batcher = batchers[hosted.id] = EmbeddingBatcher(observe=pool.metrics.embedding_batch.labels(hosted.id).observe)
    return batcher


async def _unless_abandoned(call: asyncio.Future[EmbeddingResult],
                            waiters: list[asyncio.Future[EmbeddingResult]]) -> EmbeddingResult | None:
    """`call`'s result; None, with the call cancelled, once every waiter has gone."""

    def abandon(_: object) -> None:
        if all(waiter.done() for waiter in waiters):
            call.cancel()

    for waiter in waiters:
        waiter.add_done_callback(abandon)
    try:
        return await call
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if call.cancelled() and not (current is not None and current.cancelling()):
            return None
        raise
    finally:
        for waiter in waiters:
            waiter.remove_done_callback(abandon)


def _settle(future: asyncio.Future[EmbeddingResult], outcome: EmbeddingResult | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _inputs(value: str | list[str] | list[int] | list[list[int]], settings: ServerSettings) -> Inputs:
    if isinstance(value, str):
        items: Inputs = [value]
    elif value and all(isinstance(x, int) for x in value):
        items = [cast(list[int], value)]
    else:
        items = cast(Inputs, list(value))
    if not items:
        raise InvalidRequest("input must not be empty", param="input")
    if len(items) > settings.max_embedding_inputs:
        raise InvalidRequest(f"at most {settings.max_embedding_inputs} inputs per request", param="input")
    if any(len(x) == 0 for x in items):
        raise InvalidRequest("input must not contain empty strings or empty token lists", param="input")
    return items


def _encode(vector: list[float], dimensions: int | None, fmt: str) -> list[float] | str:
    array = np.asarray(vector, dtype="<f4")
    if dimensions is not None:
        if dimensions > array.shape[0]:
            raise InvalidRequest(f"dimensions must be at most {array.shape[0]} for this model",
                                 param="dimensions")
        array = array[:dimensions]
        norm = float(np.linalg.norm(array))
        array = array / norm if norm else array
    if fmt == "base64":
        return base64.b64encode(array.astype("<f4").tobytes()).decode("ascii")
    return array.tolist()


async def create_embeddings(pool: ModelPool, batchers: dict[str, EmbeddingBatcher],
                            settings: ServerSettings, body: p.EmbeddingRequest) -> p.EmbeddingResponse:
    """An `embedding` list in input order."""
    hosted = pool.require(body.model, Capability.EMBEDDINGS)
    inputs = _inputs(body.input, settings)
    batcher = batcher_for(pool, batchers, hosted)
    async with pool.admit(hosted, keep_alive_of(body.keep_alive)) as lease:
        result = await batcher.embed(inputs, lease)
    return p.EmbeddingResponse(
        data=[p.EmbeddingData(embedding=_encode(v, body.dimensions, body.encoding_format), index=i)
              for i, v in enumerate(result.vectors)],
        model=body.model,
        usage=p.UsageInfo(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )
