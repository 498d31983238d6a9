"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from ..metrics import CONTENT_TYPE
from .deps import ServerState, get_state

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Request, token, latency, residency and memory metrics under the `lampstand:` prefix."""
    return Response(state.pool.metrics.render(), media_type=CONTENT_TYPE)
