"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .. import protocol as p
from ..serving.chat import create_chat_completion
from .deps import ServerState, get_state
from .responses import json_or_stream

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=p.ChatCompletion)
async def chat_completions(body: p.ChatCompletionRequest,
                           state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Chat completion, streamed as server-sent events when `stream` is true."""
    return json_or_stream(await create_chat_completion(state.pool, state.settings.server, body))
