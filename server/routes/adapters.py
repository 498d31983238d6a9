"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter: vLLM's routes for run-time LoRA."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .. import protocol as p
from ..serving.adapters import load_adapter, unload_adapter
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, json_or_stream

router = APIRouter(tags=["adapters"])
RESPONSES = {**ERROR_RESPONSES, 403: {"model": p.ErrorResponse, "description": "[adapters] hot_load is off"}}


@router.post("/v1/load_lora_adapter", response_model=p.LoraAdapterCard, responses=RESPONSES)
async def load_lora_adapter(body: p.LoadLoraAdapterRequest,
                            state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Load a GGUF LoRA adapter into its running base model; requests then name it as `model`."""
    return json_or_stream(await load_adapter(state.pool, state.settings.adapters, body))


@router.post("/v1/unload_lora_adapter", response_model=p.LoraAdapterCard, responses=RESPONSES)
async def unload_lora_adapter(body: p.UnloadLoraAdapterRequest,
                              state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Stop serving an adapter once the requests using it finish."""
    return json_or_stream(await unload_adapter(state.pool, state.settings.adapters, body))
