"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import protocol as p
from ..serving.chat import create_chat_completion
from ..serving.file_search import file_search_chat_completion, has_file_search
from ..serving.rag import is_rag_model, rag_chat_completion
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=p.ChatCompletion, responses=ERROR_RESPONSES)
async def chat_completions(body: p.ChatCompletionRequest,
                           state: Annotated[ServerState, Depends(get_state)], request: Request) -> Response:
    """Chat completion, streamed as server-sent events when `stream` is true.

    A model named `rag:INDEX` (or `rag:INDEX@CHAT_MODEL`) answers from that index, with sources;
    a `file_search` tool (`{"type": "file_search", "vector_store_ids": [...]}`, as in /v1/responses)
    has the server search those stores first and cite them.
    """
    if has_file_search(body):
        return await answer(request, file_search_chat_completion(state, body))
    if is_rag_model(body.model):
        return await answer(request, rag_chat_completion(state, body))
    return await answer(request, create_chat_completion(state.pool, state.settings.server, body,
                                                           images=state.images))
