"""GET /health and /version."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ..error_handlers import error_response
from .deps import ServerState, get_state

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(state: Annotated[ServerState, Depends(get_state)]) -> JSONResponse:
    """200 `{"status": "ok"}` when serving; 503 with the envelope while starting."""
    if not state.ready:
        return error_response(503, "lampstand is starting", "unavailable", code="starting",
                              headers={"Retry-After": "1"})
    return JSONResponse({"status": "ok"})


@router.get("/version")
async def server_version(state: Annotated[ServerState, Depends(get_state)]) -> JSONResponse:
    """lampstand's version and the installed plugins."""
    return JSONResponse({
        "version": version("lampstand"),
        "plugins": sorted(state.registry.plugins),
        "broken_plugins": state.registry.broken,
    })
