"""Background responses (`background: true` on /v1/responses): the answer is written by a task
of the server, and the client polls `GET /v1/responses/{id}` or cancels it.

The response is stored `queued` before the request returns, `in_progress` once the model has
admitted it, and in its final state (completed, incomplete, failed, or cancelled with what was
written so far) when the task ends. Tasks a stopping server cancels end `cancelled` too, and a
response a crashed server left unfinished reads `failed` (`ResponseStore.fail_unfinished`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from lampstand.plugins.errors import InvalidRequest

from .. import protocol_responses as r
from ..response_store import ResponseStore

__all__ = ["BackgroundResponses"]

log = logging.getLogger(__name__)


class BackgroundResponses:
    """The background responses running in this server, by response id."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, ident: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` (which stores the response as it goes) as the task of response `ident`."""
        task = asyncio.create_task(work(), name=f"response {ident}")
        self._tasks[ident] = task
        task.add_done_callback(lambda _: self._tasks.pop(ident, None))

    async def stop(self, ident: str) -> None:
        """Cancel response `ident`'s task, if it runs, and wait until it has stored its end."""
        task = self._tasks.get(ident)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def cancel(self, ident: str) -> r.ResponseObject:
        """Stop a background response; the stored response, `cancelled` (400 for one that was not
        in the background, or that finished otherwise)."""
        await self.stop(ident)
        response = r.ResponseObject.model_validate_json((await self.store.require(ident)).body)
        if not response.background:
            raise InvalidRequest(f"response '{ident}' was not created with background: true; only background "
                                 "responses can be cancelled", param="response_id")
        if response.status not in ("cancelled", "queued", "in_progress"):
            raise InvalidRequest(f"response '{ident}' has already ended ({response.status})", param="response_id")
        return response

    async def close(self) -> None:
        """Cancel every running task (shutdown); each stores its response `cancelled`."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
