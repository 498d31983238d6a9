"""POST /v1/responses, and the stored responses: GET and DELETE /v1/responses/{id}, its input items.

(`responses.py` beside this module renders HTTP responses for every route; this one is
OpenAI's Responses API.)
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from .. import protocol_responses as r
from ..serving.responses import create_response, delete_response, get_response, list_input_items
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer, json_or_stream

router = APIRouter(tags=["responses"])
ResponseId = Annotated[str, Path(min_length=1, max_length=128)]


@router.post("/v1/responses", response_model=r.ResponseObject, responses=ERROR_RESPONSES)
async def create(body: r.ResponsesRequest, state: Annotated[ServerState, Depends(get_state)],
                 request: Request) -> Response:
    """A model response: `message` and `function_call` output items, streamed as typed
    `response.*` events when `stream` is true. Kept for `previous_response_id` unless `store`
    is false. Any chat model answers, `rag:INDEX` models and LoRA adapters included."""
    return await answer(request, create_response(state, state.responses, body))


@router.get("/v1/responses/{response_id}", response_model=r.ResponseObject, responses=ERROR_RESPONSES)
async def retrieve(response_id: ResponseId, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """A stored response."""
    return json_or_stream(await get_response(state.responses, response_id))


@router.post("/v1/responses/{response_id}/cancel", response_model=r.ResponseObject, responses=ERROR_RESPONSES)
async def cancel(response_id: ResponseId, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Stop a background response; it keeps what it wrote so far, with status `cancelled`."""
    return json_or_stream(await state.background_responses.cancel(response_id))


@router.delete("/v1/responses/{response_id}", response_model=r.ResponseDeleted, responses=ERROR_RESPONSES)
async def delete(response_id: ResponseId, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Forget a stored response (a background one stops first)."""
    await state.background_responses.stop(response_id)
    return json_or_stream(await delete_response(state.responses, response_id))


@router.get("/v1/responses/{response_id}/input_items", response_model=r.InputItemList,
            responses=ERROR_RESPONSES)
async def input_items(response_id: ResponseId, state: Annotated[ServerState, Depends(get_state)],
                      limit: Annotated[int, Query(ge=1, le=100)] = 20,
                      order: Literal["asc", "desc"] = "desc",
                      after: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """The input items a stored response was given, newest first unless `order=asc`."""
    return json_or_stream(await list_input_items(state.responses, response_id, limit=limit, order=order,
                                                 after=after))
