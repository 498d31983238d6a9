"""POST /v1/completions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import protocol as p
from ..serving.completions import create_completion
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=p.Completion, responses=ERROR_RESPONSES)
async def completions(body: p.CompletionRequest,
                      state: Annotated[ServerState, Depends(get_state)], request: Request) -> Response:
    """Text completion (with `suffix` on fill-in-the-middle models), streamed when asked."""
    return await answer(request, create_completion(state.pool, state.settings.server, body))
