"""The `file_search` tool of /v1/responses, run by the server before the model answers.

The server searches the named vector stores (or folder indexes) with the conversation's last
user message as written: a small local model writes poorer queries than the user's own words,
and one search costs no extra model turn. What it finds is quoted to the chat model as the
`rag:` models quote it (retrieved text is data, never instructions), the search is recorded as
a `file_search_call` output item (its results too with `include: ["file_search_call.results"]`),
and each `[n]` the answer cites becomes a `file_citation` annotation on the quoted file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from lampstand.indexer.grounding import QuotedSource, citation_marks, select_sources
from lampstand.plugins.errors import InvalidRequest

from .. import protocol as p
from .. import protocol_responses as r
from .rag import question_of
from .vector_stores import FoundText, VectorStoreService

__all__ = ["FileSearchRun", "file_search_tool", "run_file_search"]


@dataclass(frozen=True)
class FileSearchRun:
    """One search for one response: its output item, the sources quoted, and their files
    (`files[i]` is what `sources[i]` quotes)."""

    call: r.FileSearchCallItem
    sources: list[QuotedSource]
    files: list[FoundText]

    def annotations(self, text: str) -> list[dict[str, Any]]:
        """A `file_citation` for each source number the answer cites, at the offset after its marker."""
        return [{"type": "file_citation", "file_id": found.file_id, "filename": found.filename, "index": offset}
                for offset, number in citation_marks(text, len(self.sources))
                for found in (self.files[number - 1],)]


def file_search_tool(tools: Sequence[r.FunctionToolIn | r.HostedToolIn]) -> r.FileSearchToolIn | None:
    """The request's `file_search` tool, validated (at most one); None without one."""
    found: list[r.FileSearchToolIn] = []
    for index, tool in enumerate(tools):
        if isinstance(tool, r.HostedToolIn) and tool.type == "file_search":
            try:
                found.append(r.FileSearchToolIn.model_validate(tool.model_dump()))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise InvalidRequest(f"tools[{index}].{where}: {first['msg']}", param=f"tools[{index}]") from None
    if len(found) > 1:
        raise InvalidRequest("send one file_search tool; it may name several vector stores", param="tools")
    return found[0] if found else None


async def run_file_search(stores: VectorStoreService, tool: r.FileSearchToolIn, messages: Sequence[p.ChatMessageIn],
                          *, call_id: str, include_results: bool, max_context_tokens: int) -> FileSearchRun:
    """Search `tool`'s stores for the last user message; 400 while a store's files are still processing."""
    _, question = question_of(messages)
    found = await stores.search_stores(tool.vector_store_ids, question, max_num_results=tool.max_num_results,
                                       filters=tool.filters, ranking=tool.ranking_options, require_ready=True)
    # the model sees a file by its name (an uploaded file's index path also holds its id)
    sources = select_sources([(replace(f.hit.chunk, path=f.filename), f.score) for f in found], max_context_tokens)
    results = [r.FileSearchResult(file_id=f.file_id, filename=f.filename, score=round(f.score, 6),
                                  text=f.hit.chunk.text, attributes=f.attributes) for f in found]
    call = r.FileSearchCallItem(id=call_id, status="completed", queries=[question],
                                results=results if include_results else None)
    return FileSearchRun(call=call, sources=sources, files=found[:len(sources)])
