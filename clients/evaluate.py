"""`lampstand eval` over HTTP: a server's search and rag endpoints as the runner's callables.

`EvalClient.search(index)` is a `SearchFn` over `POST /v1/indexes/{index}/search` and
`EvalClient.answers(index, ...)` an `AnswerFn` over `POST /v1/rag/query`. A 400 to a search
that asked for reranking, naming `rerank` as its `param` (or no param), becomes
`RerankerUnavailable`: the server answers so when it has no reranker, and a 400 for any
other reason would already have failed the modes without reranking, which run first. The
runner then skips that mode. Everything else becomes a `LampstandError`
with the server's message. Scoring lives in `lampstand.indexer.evaluation`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from lampstand.indexer.evaluation import AnswerFn, RerankerUnavailable, SearchFn
from lampstand.plugins.errors import LampstandError

__all__ = ["EvalClient"]


def _error(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error envelope's `error` object, or one made of the body's first bytes."""
    try:
        error = response.json()["error"]
        if isinstance(error, dict) and "message" in error:
            return error
    except (ValueError, KeyError, TypeError):
        pass
    return {"message": response.text[:200], "param": None}


class EvalClient:
    """One connection to a running server, for the duration of an evaluation."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> EvalClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def search(self, index: str) -> SearchFn:
        """`(question, mode, rerank, top_k) -> data rows` of the search endpoint of `index`."""
        path = f"/v1/indexes/{quote(index, safe='')}/search"

        def run(question: str, mode: str, rerank: bool, top_k: int) -> list[dict[str, Any]]:
            body = {"query": question, "top_k": top_k, "mode": mode, "rerank": rerank}
            return list(self._post(path, body, rerank=rerank)["data"])

        return run

    def answers(self, index: str, *, model: str | None = None, top_k: int = 5, mode: str = "hybrid",
                rerank: bool = False, max_tokens: int | None = None, temperature: float | None = 0.0,
                seed: int | None = 0) -> AnswerFn:
        """`question -> rag answer` from `index`, greedy and seeded by default (repeatable)."""
        settings = {"index": index, "model": model, "top_k": top_k, "mode": mode, "rerank": rerank,
                    "stream": False, "max_tokens": max_tokens, "temperature": temperature, "seed": seed}

        def run(question: str) -> dict[str, Any]:
            return dict(self._post("/v1/rag/query", settings | {"query": question}))

        return run

    def index(self, name: str) -> dict[str, Any]:
        """The index's card (`paths`, `include`, `exclude`, ...), as `GET /v1/indexes/{name}` returns it."""
        return dict(self._send("GET", f"/v1/indexes/{quote(name, safe='')}"))

    def _post(self, path: str, body: dict[str, Any], rerank: bool = False) -> Any:
        return self._send("POST", path, body, rerank)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None, rerank: bool = False) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise LampstandError(f"cannot reach {self.url}: {exc}. Is `lampstand serve` running?") from exc
        if response.status_code < 400:
            return response.json()
        error = _error(response)
        if response.status_code == 400 and rerank and error.get("param") in ("rerank", None):
            raise RerankerUnavailable(str(error["message"]), param="rerank")
        raise LampstandError(f"{response.status_code}: {error['message']}")
