"""The index side of the HTTP API, for `lampstand index ...` and `lampstand ask`.

`IndexClient` speaks to a running server; `LocalIndexes` runs the same `IndexService` in
this process with its own model pool (the `--local` flag), so both give the same cards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lampstand.plugins.errors import LampstandError

from .admin import AdminClient
from .wire import post_events

__all__ = ["IndexClient", "run_locally"]

POLL_SECONDS = 0.25


class IndexClient(AdminClient):
    """Indexes on a running server."""

    def list(self) -> list[dict[str, Any]]:
        """Every index's card."""
        return self._request("GET", "/v1/indexes")["data"]

    def get(self, name: str) -> dict[str, Any]:
        """One index's card, with its job's progress."""
        return self._request("GET", f"/v1/indexes/{name}")

    def create(self, name: str, paths: list[Path], include: list[str], exclude: list[str],
               store: str | None) -> dict[str, Any]:
        """Create the index and start its first run."""
        body = {"name": name, "paths": [str(p) for p in paths], "include": include, "exclude": exclude,
                **({"store": store} if store else {})}
        return self._request("POST", "/v1/indexes", body)

    def update(self, name: str, rebuild: bool = False, paths: list[str] | None = None) -> dict[str, Any]:
        """Start an update run (of `paths` only, when given), or join the one running."""
        body: dict[str, Any] = {"rebuild": rebuild, **({"paths": paths} if paths is not None else {})}
        return self._request("POST", f"/v1/indexes/{name}/update", body)

    def remove(self, name: str) -> dict[str, Any]:
        """Delete the index's files."""
        return self._request("DELETE", f"/v1/indexes/{name}")

    def search(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Ranked chunks."""
        return self._request("POST", f"/v1/indexes/{name}/search", body)

    def follow(self, name: str, on_card: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Poll the index until its job ends; returns the final card."""
        while True:
            card = self.get(name)
            on_card(card)
            if card["status"] != "indexing":
                return card
            time.sleep(POLL_SECONDS)

    def ask(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The streamed chunks of a rag answer."""
        return post_events(self.url + "/v1/rag/query", body | {"stream": True}, self.api_key)


def run_locally(settings: Any, action: Callable[[Any], Any], on_card: Callable[[dict[str, Any]], None],
                name: str | None) -> Any:
    """Run `action(service)` against an in-process `IndexService`, reporting `name`'s progress."""
    from lampstand.server.app import build_state

    async def run() -> Any:
        state = build_state(settings)
        try:
            work = asyncio.ensure_future(action(state.indexes))
            while name is not None and not work.done():
                try:
                    on_card(json.loads((await state.indexes.card(name)).to_json()))
                except LampstandError:
                    pass
                await asyncio.wait([work], timeout=POLL_SECONDS)
            result = await work
            return json.loads(result.to_json()) if hasattr(result, "to_json") else result
        finally:
            await state.indexes.close()
            await state.pool.close()

    return asyncio.run(run())
