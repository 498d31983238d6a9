"""Search queries a chat model writes: a vector-store search's `rewrite_query`, and the
`file_search` tool's query when `[vector_stores] file_search_queries = "model"`.

The model reads the last turns of the conversation and answers with keywords, greedy and short
(its first non-empty line is the query), so the query costs one small generation. A model that
writes nothing usable leaves the user's own words as the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lampstand.plugins.contract import CHAT, Capability

from .. import protocol as p
from .. import protocol_vector_stores as v
from ..routes.deps import ServerState
from .convert import chat_request
from .generation import generate
from .rag import default_chat_model, plain_text, question_of

__all__ = ["write_query", "rewrite_then_search", "QUERY_PROMPT"]

QUERY_PROMPT = ("You write queries for a search engine over the user's documents. Read the conversation "
                "and reply with one short search query, in keywords, that finds the passages answering "
                "the user's last message. Reply with the query only.")
EXAMPLES = (  # (conversation, query): small models copy the form of a worked example
    ("user: How do I reset the password of my home router?", "reset home router password"),
    ("user: What did Anna decide about the budget?\nassistant: She cut travel by a third.\n"
     "user: And what about hiring?", "Anna decision hiring budget"),
)
RECENT_TURNS = 6  # user and assistant turns the model reads
TURN_CHARS = 1000  # of each of them
MAX_QUERY_TOKENS = 32
MAX_QUERY_CHARS = 400


def _transcript(messages: Sequence[p.ChatMessageIn]) -> str:
    turns = [(m.role, plain_text(m)) for m in messages if m.role in ("user", "assistant")]
    return "\n".join(f"{role}: {text[:TURN_CHARS]}" for role, text in turns[-RECENT_TURNS:] if text)


def _turn(conversation: str, query: str | None = None) -> list[p.ChatMessageIn]:
    asked = p.ChatMessageIn(role="user", content=f"{conversation}\n\nSearch query:")
    return [asked] if query is None else [asked, p.ChatMessageIn(role="assistant", content=query)]


async def write_query(state: ServerState, model: str, messages: Sequence[p.ChatMessageIn]) -> str:
    """`model`'s search query for the conversation's last user message; that message itself
    when the model's line is empty."""
    _, question = question_of(messages)
    chat = p.ChatCompletionRequest(
        model=model, temperature=0, max_tokens=MAX_QUERY_TOKENS,
        messages=[p.ChatMessageIn(role="system", content=QUERY_PROMPT),
                  *(message for conversation, query in EXAMPLES for message in _turn(conversation, query)),
                  *_turn(_transcript(messages))])
    hosted, adapter = state.pool.target(model, Capability.CHAT)
    request = replace(chat_request(chat, state.settings.server, vision=False), adapter=adapter)
    chunks = await generate(state.pool, hosted, None, CHAT, lambda: [request])
    text = "".join([chunk.text async for _, chunk in chunks])
    lines = (line.strip().strip("\"'`").strip() for line in text.splitlines())
    return next((line[:MAX_QUERY_CHARS] for line in lines if line), question)


async def rewrite_then_search(state: ServerState, store_id: str, body: v.VectorStoreSearchRequest
                              ) -> v.VectorStoreSearchPage:
    """A vector-store search; with `rewrite_query`, its query as the chat model that answers rag
    queries (`[indexes] chat_model`, else the first) puts it, reported as `search_query`."""
    if not body.rewrite_query:
        return await state.vector_stores.search(store_id, body)
    await state.vector_stores.get(store_id)  # 404 before any generation
    given = body.query if isinstance(body.query, str) else " ".join(body.query)
    rewritten = await write_query(state, default_chat_model(state, None),
                                  [p.ChatMessageIn(role="user", content=given)])
    return await state.vector_stores.search(store_id, body, rewritten=rewritten)
