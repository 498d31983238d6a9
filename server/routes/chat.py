"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import protocol as p
from ..serving.chat import create_chat_completion
from ..serving.rag import is_rag_model, rag_chat_completion
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=p.ChatCompletion, responses=ERROR_RESPONSES)
async def chat_completions(body: p.ChatCompletionRequest,
                           state: Annotated[ServerState, Depends(get_state)], request: Request) -> Response:
    """Chat completion, streamed as server-sent events when `stream` is true.

    A model named `rag:INDEX` (or `rag:INDEX@CHAT_MODEL`) answers from that index, with sources.
    """
    if is_rag_model(body.model):
        return await answer(request, rag_chat_completion(state, body))
    return await answer(request, create_chat_completion(state.pool, state.settings.server, body,
                                                           images=state.images))
