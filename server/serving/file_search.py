"""The `file_search` tool of /v1/responses and /v1/chat/completions, run by the server before
the model answers.

The server searches the named vector stores (or folder indexes) with the conversation's last
user message as written: a small local model writes poorer queries than the user's own words,
and one search costs no extra model turn. With `[vector_stores] file_search_queries = "model"`
the answering model writes the query from the conversation first (query_writer.py).

What it finds is quoted to the chat model as the `rag:` models quote it (retrieved text is
data, never instructions), the search is recorded as a `file_search_call` output item (its
results too with `include: ["file_search_call.results"]`), and each `[n]` the answer cites
becomes a `file_citation` annotation on the quoted file.
Chat has no output items, so a chat completion carries the search as its `file_search_call`
extension field (results included) and the annotations on its message.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from lampstand.indexer.grounding import QuotedSource, citation_marks, select_sources
from lampstand.plugins.errors import InvalidRequest

from .. import protocol as p
from .. import protocol_responses as r
from ..routes.deps import ServerState
from .chat import AnswerExtras, create_chat_completion
from .query_writer import write_query
from .rag import grounded_messages, is_rag_model, question_of
from .vector_stores import FoundText, VectorStoreService

__all__ = ["FileSearchRun", "file_search_tool", "run_file_search", "search_and_ground", "has_file_search",
           "choice_beside_search", "file_search_chat_completion"]


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

    def chat_annotations(self, text: str) -> list[dict[str, Any]]:
        """The same citations in chat's annotation shape (`{"type": T, T: {...}}`, as `url_citation`)."""
        return [{"type": "file_citation", "file_citation": {k: v for k, v in cite.items() if k != "type"}}
                for cite in self.annotations(text)]


def _is_file_search(tool: object) -> bool:
    return isinstance(tool, p.HostedToolIn) and tool.type == "file_search"


def choice_beside_search(choice: Any, has_functions: bool) -> Any:
    """The tool choice left for the model once the server has searched: `required` with no
    function tool is met by the search itself."""
    return None if choice == "required" and not has_functions else choice


def has_file_search(body: p.ChatCompletionRequest) -> bool:
    """Whether a chat request carries the `file_search` tool."""
    return any(_is_file_search(tool) for tool in body.tools or ())


def file_search_tool(tools: Sequence[object]) -> r.FileSearchToolIn | None:
    """The request's `file_search` tool, validated (at most one); None without one."""
    found: list[r.FileSearchToolIn] = []
    for index, tool in enumerate(tools):
        if _is_file_search(tool):
            try:
                found.append(r.FileSearchToolIn.model_validate(tool.model_dump()))  # type: ignore[attr-defined]
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise InvalidRequest(f"tools[{index}].{where}: {first['msg']}", param=f"tools[{index}]") from None
    if len(found) > 1:
        raise InvalidRequest("send one file_search tool; it may name several vector stores", param="tools")
    return found[0] if found else None


async def run_file_search(stores: VectorStoreService, tool: r.FileSearchToolIn, question: str,
                          *, call_id: str, include_results: bool, max_context_tokens: int) -> FileSearchRun:
    """Search `tool`'s stores for `question`; 400 while a store's files are still processing."""
    found = await stores.search_stores(tool.vector_store_ids, question, max_num_results=tool.max_num_results,
                                       filters=tool.filters, ranking=tool.ranking_options, require_ready=True)
    # the model sees a file by its name (an uploaded file's index path also holds its id)
    sources = select_sources([(replace(f.hit.chunk, path=f.filename), f.score) for f in found], max_context_tokens)
    results = [r.FileSearchResult(file_id=f.file_id, filename=f.filename, score=round(f.score, 6),
                                  text=f.hit.chunk.text, attributes=f.attributes) for f in found]
    call = r.FileSearchCallItem(id=call_id, status="completed", queries=[question],
                                results=results if include_results else None)
    return FileSearchRun(call=call, sources=sources, files=found[:len(sources)])


async def search_and_ground(state: ServerState, tool: r.FileSearchToolIn, chat: p.ChatCompletionRequest, *,
                            include_results: bool) -> tuple[p.ChatCompletionRequest, FileSearchRun]:
    """The search for `chat`'s last user message (as written, or as the model puts it when
    `[vector_stores] file_search_queries = "model"`), and `chat` grounded in what it found."""
    if is_rag_model(chat.model):
        raise InvalidRequest("a rag: model searches its own index; send file_search to a chat model "
                             "(a folder index can be named in vector_store_ids)", param="tools")
    _, question = question_of(chat.messages)
    if state.settings.vector_stores.file_search_queries == "model":
        question = await write_query(state, chat.model, chat.messages)
    search = await run_file_search(state.vector_stores, tool, question, call_id=f"fs_{uuid.uuid4().hex}",
                                   include_results=include_results,
                                   max_context_tokens=state.settings.indexes.rag_max_context_tokens)
    return chat.model_copy(update={"messages": grounded_messages(chat.messages, search.sources)}), search


async def file_search_chat_completion(state: ServerState, body: p.ChatCompletionRequest
                                      ) -> p.ChatCompletion | AsyncIterator[str]:
    """A chat completion with the `file_search` tool: searched, grounded, cited.

    The tool is taken out of the tools the model sees (its function tools stay); with
    `tool_choice: "none"` nothing is searched. `required` with no function tool left is met
    by the search itself.
    """
    tool = file_search_tool(body.tools or ())
    functions = [t for t in body.tools or () if not _is_file_search(t)]
    choice = choice_beside_search(body.tool_choice, bool(functions))
    chat = body.model_copy(update={"tools": functions or None, "tool_choice": choice})
    if tool is None or body.tool_choice == "none":
        return await create_chat_completion(state.pool, state.settings.server, chat, images=state.images)
    grounded, search = await search_and_ground(state, tool, chat, include_results=True)
    extras = AnswerExtras(chat_model=chat.model, fields={"file_search_call": search.call.model_dump(
        mode="json", exclude_unset=True)}, annotations=search.chat_annotations)
    return await create_chat_completion(state.pool, state.settings.server, grounded, extras, images=state.images)
