"""GET /v1/models and /v1/models/{id}: configured models with status and capabilities."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .. import protocol as p
from ..model_pool import HostedModel
from .deps import ServerState, get_state
from .responses import json_or_stream

router = APIRouter(tags=["models"])


def model_card(hosted: HostedModel) -> p.ModelCard:
    """The `/v1/models` entry of one model."""
    plugin = hosted.plugin
    return p.ModelCard(
        id=hosted.id, created=hosted.created, owned_by="lampstand",
        capabilities=sorted(c.value for c in hosted.capabilities),
        status=hosted.status.value, plugin=hosted.plugin_cls.name, aliases=list(hosted.config.aliases),
        context_length=plugin.context_length() if plugin is not None else None,
        error=hosted.error,
    )


@router.get("/v1/models", response_model=p.ModelList)
async def list_models(state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Every configured model."""
    return json_or_stream(p.ModelList(data=[model_card(h) for h in state.pool.models.values()]))


@router.get("/v1/models/{model_id:path}", response_model=p.ModelCard)
async def get_model(model_id: str, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """One model, by id or alias."""
    return json_or_stream(model_card(state.pool.lookup(model_id)))
