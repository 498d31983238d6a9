"""Answers grounded in an index: /v1/rag/query, and the `rag:NAME[@chat-model]` chat models.

Both retrieve chunks from the index, quote them in a prompt built by
`lampstand.indexer.grounding` (retrieved text is data, never instructions) and let a chat
model answer with numbered citations. /v1/rag/query returns the answer with its `sources`
and the ids it cites; a rag: chat model answers like any chat model, with the sources in an
extension field and a short list at the end of the text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from lampstand.indexer.grounding import (
    GROUNDING_SYSTEM_PROMPT,
    QuotedSource,
    cited_ids,
    grounded_user_message,
    select_sources,
    sources_footer,
)
from lampstand.plugins.contract import CHAT, Capability
from lampstand.plugins.errors import InvalidRequest, LampstandError, ModelNotFound
from lampstand.plugins.types import GenerationChunk, Usage

from .. import protocol as p
from ..routes.deps import ServerState
from .chat import AnswerExtras, create_chat_completion
from .convert import chat_request
from .generation import generate, new_id, now, sse_frames, sum_usage

__all__ = ["RAG_PREFIX", "answer_query", "ground_rag_chat", "grounded_messages", "is_rag_model",
           "rag_chat_completion", "rag_model_cards", "question_of", "plain_text", "default_chat_model"]

RAG_PREFIX = "rag:"


def is_rag_model(name: str) -> bool:
    """Whether a chat request names an index as its model."""
    return name.startswith(RAG_PREFIX)


def _sources_out(sources: Sequence[QuotedSource], with_text: bool) -> list[p.RagSource]:
    return [p.RagSource(id=s.id, path=s.chunk.path, start_line=s.chunk.start_line, end_line=s.chunk.end_line,
                        score=round(s.score, 6), **({"text": s.text} if with_text else {}))
            for s in sources]


async def _sources(state: ServerState, index: str, query: str, *, top_k: int | None, mode: str,
                   rerank: bool, filters: p.IndexFilters | None) -> list[QuotedSource]:
    hits = await state.indexes.retrieve(index, query, top_k=top_k, mode=mode, rerank=rerank, filters=filters)
    budget = state.settings.indexes.rag_max_context_tokens
    return select_sources([(hit.chunk, hit.score) for hit in hits], budget)


def default_chat_model(state: ServerState, name: str | None) -> str:
    """The chat model (or LoRA adapter) that writes rag answers: named, configured, or the first."""
    name = name or state.settings.indexes.chat_model
    if name:
        state.pool.target(name, Capability.CHAT)  # 404 now for an unknown name
        return name
    return state.pool.pick(None, Capability.CHAT, "a rag answer").id


# -- /v1/rag/query ---------------------------------------------------------------------------

async def answer_query(state: ServerState, body: p.RagQueryRequest) -> p.RagAnswer | AsyncIterator[str]:
    """The answer, whole or as SSE `rag.answer.chunk` frames."""
    model = default_chat_model(state, body.model)
    sources = await _sources(state, body.index, body.query, top_k=body.top_k, mode=body.mode,
                             rerank=body.rerank, filters=body.filters)
    sampling = {k: v for k, v in (("max_tokens", body.max_tokens), ("temperature", body.temperature),
                                  ("seed", body.seed)) if v is not None}
    chat = p.ChatCompletionRequest(model=model, messages=_messages(body.query, sources), **sampling)
    hosted, adapter = state.pool.target(model, Capability.CHAT)
    request = replace(chat_request(chat, state.settings.server, vision=False), adapter=adapter)
    chunks = await generate(state.pool, hosted, None, CHAT, lambda: [request])
    if body.stream:
        return sse_frames(_stream_answer(chunks, model, body.index, sources))
    text, usage = [], {}
    async for index, chunk in chunks:
        text.append(chunk.text)
        if chunk.usage:
            usage[index] = chunk.usage
    answer = "".join(text)
    return p.RagAnswer(id=new_id("rag"), created=now(), model=model, index=body.index, answer=answer,
                       sources=_sources_out(sources, True), citations=cited_ids(answer, len(sources)),
                       usage=sum_usage(usage))


def _messages(question: str, sources: Sequence[QuotedSource]) -> list[p.ChatMessageIn]:
    return [p.ChatMessageIn(role="system", content=GROUNDING_SYSTEM_PROMPT),
            p.ChatMessageIn(role="user", content=grounded_user_message(question, sources))]


async def _stream_answer(chunks: AsyncIterator[tuple[int, GenerationChunk]], model: str, index: str,
                         sources: list[QuotedSource]) -> AsyncIterator[str]:
    ident, created = new_id("rag"), now()

    def frame(**fields: object) -> str:
        return p.RagAnswerChunk(id=ident, created=created, model=model, index=index, **fields).to_json()

    yield frame(sources=_sources_out(sources, True))
    text: list[str] = []
    usage: dict[int, Usage] = {}
    async for position, chunk in chunks:
        text.append(chunk.text)
        if chunk.usage:
            usage[position] = chunk.usage
        if chunk.finish_reason is None:
            yield frame(delta=chunk.text)
        else:
            yield frame(delta=chunk.text, finish_reason=chunk.finish_reason,
                        citations=cited_ids("".join(text), len(sources)), usage=sum_usage(usage))


# -- rag:NAME chat models ---------------------------------------------------------------------

def _parse_model(name: str) -> tuple[str, str | None]:
    index, _, chat_model = name[len(RAG_PREFIX):].partition("@")
    if not index:
        raise ModelNotFound(f"The model '{name}' does not exist: name an index, as rag:NAME", param="model")
    return index, chat_model or None


def plain_text(message: p.ChatMessageIn) -> str:
    """A message's text: its string, or its text parts joined (images left out)."""
    content = message.content
    if isinstance(content, list):
        return " ".join(getattr(part, "text", "") for part in content).strip()
    return content or ""


def question_of(messages: Sequence[p.ChatMessageIn]) -> tuple[int, str]:
    """The last user turn: its position and its text."""
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if message.role == "user" and (content := plain_text(message)):
            return position, content
    raise InvalidRequest("searching the files needs a user message with text to search for", param="messages")


def grounded_messages(messages: list[p.ChatMessageIn], sources: Sequence[QuotedSource]) -> list[p.ChatMessageIn]:
    """Our system message first (the client's own system text appended to it), then the
    conversation, with the last user turn replaced by the quoted sources and its question;
    tool calls and their results stay where they were, before or after it."""
    position, question = question_of(messages)
    client_system = [m.content for m in messages if m.role in ("system", "developer") and isinstance(m.content, str)]
    system = GROUNDING_SYSTEM_PROMPT + "".join(f"\n\n{text}" for text in client_system if text)
    turns = [(at, m) for at, m in enumerate(messages) if m.role not in ("system", "developer")]
    return [p.ChatMessageIn(role="system", content=system), *(m for at, m in turns if at < position),
            p.ChatMessageIn(role="user", content=grounded_user_message(question, sources)),
            *(m for at, m in turns if at > position)]


async def rag_chat_completion(state: ServerState, body: p.ChatCompletionRequest
                              ) -> p.ChatCompletion | AsyncIterator[str]:
    """A chat completion for `rag:NAME[@chat-model]`: grounded, cited, sources attached."""
    grounded, extras = await ground_rag_chat(state, body)
    return await create_chat_completion(state.pool, state.settings.server, grounded, extras)


async def ground_rag_chat(state: ServerState, body: p.ChatCompletionRequest
                          ) -> tuple[p.ChatCompletionRequest, AnswerExtras]:
    """A `rag:NAME[@chat-model]` chat request made into the grounded request its chat model
    answers, and what the answer adds (sources, their footer)."""
    index, chat_model = _parse_model(body.model)
    _, question = question_of(body.messages)
    sources = await _sources(state, index, question, top_k=None, mode="hybrid", rerank=False, filters=None)
    grounded = body.model_copy(update={"messages": grounded_messages(body.messages, sources)})
    extras = AnswerExtras(chat_model=default_chat_model(state, chat_model),
                          fields={"sources": _sources_out(sources, False)},
                          footer=lambda text: sources_footer(sources, cited_ids(text, len(sources))))
    return grounded, extras


async def rag_model_cards(state: ServerState) -> list[p.ModelCard]:
    """One `rag:NAME` chat model per index, for /v1/models."""
    try:
        parent = default_chat_model(state, None)
    except LampstandError:
        return []
    return [p.ModelCard(id=f"{RAG_PREFIX}{definition.name}", created=definition.created, owned_by="lampstand",
                        parent=parent, capabilities=[Capability.CHAT.value],
                        status="loaded" if built else "unloaded")
            for definition, built in await state.indexes.definitions()]
