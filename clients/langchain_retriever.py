"""A LangChain retriever over a lampstand index: `POST /v1/indexes/{name}/search` over HTTP.

`LampstandRetriever` turns each search result into a `Document` whose `page_content` is the
chunk's text and whose metadata says where it came from (path, lines, context such as a
Markdown heading path or `("page 3",)` for a PDF) and how it ranked. Sync and async calls
each make one request with `httpx`; a refusal or failure of the server raises
`SearchFailed` carrying the server's own message and error code.

Needs `langchain-core` (not a dependency of lampstand itself). This module only speaks HTTP;
it never imports the server or the indexer.
"""

from __future__ import annotations

import os
from typing import Any, Literal
from urllib.parse import quote

import httpx
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field, SecretStr

from lampstand.plugins.errors import LampstandError

__all__ = ["API_KEY_ENV", "DEFAULT_BASE_URL", "LampstandRetriever", "SearchFailed"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
API_KEY_ENV = "LAMPSTAND_API_KEY"


class SearchFailed(LampstandError):
    """A search the server refused or could not run, or a server that could not be reached.

    `http_status`, `error_type`, `code` and `param` come from the server's OpenAI-style
    error envelope; `http_status` is None when no answer came.
    """

    def __init__(self, message: str, *, http_status: int | None = None,
                 error_type: str | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.http_status = http_status
        if error_type:
            self.error_type = error_type


def _key_from_environment() -> SecretStr | None:
    key = os.environ.get(API_KEY_ENV)
    return SecretStr(key) if key else None


def _refusal(response: httpx.Response) -> SearchFailed:
    """The error a 4xx or 5xx answer stands for, in the server's words."""
    try:
        error = response.json()["error"]
        message, code = str(error["message"]), error.get("code")
        error_type, param = error.get("type"), error.get("param")
    except (ValueError, KeyError, TypeError):
        message, code, error_type, param = response.text[:300] or response.reason_phrase, None, None, None
    return SearchFailed(f"lampstand search failed ({response.status_code}"
                        f"{', ' + code if code else ''}): {message}",
                        http_status=response.status_code, error_type=error_type, code=code,
                        param=param)


def _unreachable(url: str, exc: httpx.HTTPError, timeout: float) -> SearchFailed:
    if isinstance(exc, httpx.TimeoutException):
        return SearchFailed(f"lampstand search: no answer from {url} within {timeout:g}s")
    return SearchFailed(f"lampstand search: cannot reach {url}: {exc}. Is `lampstand serve` running?")


class LampstandRetriever(BaseRetriever):
    """Chunks of a lampstand index that match a query, as LangChain `Document`s.

    >>> retriever = LampstandRetriever(index="notes", top_k=3)
    >>> docs = retriever.invoke("how do I rotate the keys?")  # doctest: +SKIP
    >>> docs[0].metadata["path"], docs[0].metadata["start_line"]  # doctest: +SKIP
    """

    base_url: str = DEFAULT_BASE_URL
    """The server's OpenAI-style root, ending in `/v1`."""
    index: str
    """The name of the index to search."""
    top_k: int = Field(5, ge=1)
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    rerank: bool = False
    """Rescore the candidates with the server's cross-encoder."""
    expand: bool = True
    """Each document is the span (up to 60 lines) around its matches; False: the matching chunk alone."""
    path_glob: str | None = None
    """Only chunks whose path matches this glob (SQLite GLOB rules)."""
    language: str | None = None
    """Only chunks of this language (`"python"`, `"markdown"`, `"pdf"`, ...)."""
    api_key: SecretStr | None = Field(default_factory=_key_from_environment)
    """Bearer key; by default `$LAMPSTAND_API_KEY`."""
    timeout: float = Field(60.0, gt=0)
    """Seconds to wait for the answer."""

    @property
    def search_url(self) -> str:
        """Where searches of this index are posted."""
        return f"{self.base_url.rstrip('/')}/indexes/{quote(self.index, safe='')}/search"

    def search_body(self, query: str) -> dict[str, Any]:
        """The JSON body of a search for `query`."""
        wanted = {"path_glob": self.path_glob, "language": self.language}
        filters = wanted if any(v is not None for v in wanted.values()) else None
        return {"query": query, "top_k": self.top_k, "mode": self.mode,
                "rerank": self.rerank, "expand": self.expand, "filters": filters}

    def _headers(self) -> dict[str, str]:
        key = self.api_key.get_secret_value() if self.api_key else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _documents(self, response: httpx.Response) -> list[Document]:
        if response.status_code >= 400:
            raise _refusal(response)
        try:
            return [self._document(result) for result in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SearchFailed(f"lampstand search: unexpected answer from {self.search_url}: "
                               f"{response.text[:300]}") from exc

    def _document(self, result: dict[str, Any]) -> Document:
        metadata = {key: result[key] for key in (
            "path", "start_line", "end_line", "score", "rank", "language", "kind", "chunk_id")}
        metadata["context"] = list(result["context"])
        metadata["index"] = self.index
        return Document(page_content=result["text"], metadata=metadata, id=result["chunk_id"])

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        try:
            response = httpx.post(self.search_url, json=self.search_body(query),
                                  headers=self._headers(), timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise _unreachable(self.search_url, exc, self.timeout) from exc
        return self._documents(response)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.search_url, json=self.search_body(query),
                                             headers=self._headers())
        except httpx.HTTPError as exc:
            raise _unreachable(self.search_url, exc, self.timeout) from exc
        return self._documents(response)
