"""/v1/models: list and describe models; load and unload them (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from .. import protocol as p
from ..serving.adapters import adapter_model_cards
from ..serving import models as serving
from ..serving.rag import rag_model_cards
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, json_or_stream

__all__ = ["router"]

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=p.ModelList, responses=ERROR_RESPONSES)
async def list_models(state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Every configured model with its residency, its loaded LoRA adapters, and one `rag:NAME` per index."""
    cards = [serving.model_card(h) for h in state.pool.models.values()] + adapter_model_cards(state.pool)
    return json_or_stream(p.ModelList(data=cards + await rag_model_cards(state)))


@router.post("/v1/models/{model_id:path}/load", response_model=p.ModelCard, responses=ERROR_RESPONSES)
async def load_model(model_id: str, state: Annotated[ServerState, Depends(get_state)],
                     body: Annotated[p.ModelLoadRequest | None, Body()] = None) -> Response:
    """Load a model now (evicting idle ones if the budget needs it)."""
    card = await serving.load_model(state.pool, state.registry, state.settings.server, model_id,
                            body or p.ModelLoadRequest())
    return json_or_stream(card)


@router.post("/v1/models/{model_id:path}/unload", response_model=p.ModelCard, responses=ERROR_RESPONSES)
async def unload_model(model_id: str, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Unload a model once its running requests finish; its worker exits and frees the memory."""
    hosted = state.pool.lookup(model_id)
    await state.pool.unload(hosted)
    return json_or_stream(serving.model_card(hosted))


@router.get("/v1/models/{model_id:path}", response_model=p.ModelCard, responses=ERROR_RESPONSES)
async def get_model(model_id: str, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """One model, by id or alias, or a loaded LoRA adapter."""
    if model_id not in state.pool.names:
        adapter = next((c for c in adapter_model_cards(state.pool) if c.id == model_id), None)
        if adapter is not None:
            return json_or_stream(adapter)
    return json_or_stream(serving.model_card(state.pool.lookup(model_id)))
