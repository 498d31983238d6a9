"""/v1/indexes: create, list, describe, update, remove and search the named indexes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from .. import protocol as p
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["indexes"])
State = Annotated[ServerState, Depends(get_state)]


@router.get("/v1/indexes", response_model=p.IndexList, responses=ERROR_RESPONSES)
async def list_indexes(state: State, request: Request) -> Response:
    """Every index with its counts and its last indexing run."""
    return await answer(request, state.indexes.list())


@router.post("/v1/indexes", response_model=p.IndexCard, responses=ERROR_RESPONSES)
async def create_index(body: p.IndexCreateRequest, state: State, request: Request) -> Response:
    """Create an index over folders under the source roots and start building it."""
    return await answer(request, state.indexes.create(body))


@router.get("/v1/indexes/{name}", response_model=p.IndexCard, responses=ERROR_RESPONSES)
async def get_index(name: str, state: State, request: Request) -> Response:
    """One index, with the progress of its running or last job."""
    return await answer(request, state.indexes.card(name))


@router.post("/v1/indexes/{name}/update", response_model=p.IndexCard, responses=ERROR_RESPONSES)
async def update_index(name: str, state: State, request: Request,
                       body: Annotated[p.IndexUpdateRequest | None, Body()] = None) -> Response:
    """Re-index what changed since the last run (everything with `rebuild`)."""
    return await answer(request, state.indexes.update(name, body or p.IndexUpdateRequest()))


@router.delete("/v1/indexes/{name}", response_model=p.IndexDeleted, responses=ERROR_RESPONSES)
async def delete_index(name: str, state: State, request: Request) -> Response:
    """Stop its job and delete the index's files (never the indexed sources)."""
    return await answer(request, state.indexes.remove(name))


@router.post("/v1/indexes/{name}/search", response_model=p.SearchResponse, responses=ERROR_RESPONSES)
async def search_index(name: str, body: p.IndexSearchRequest, state: State, request: Request) -> Response:
    """Ranked chunks: dense, lexical or hybrid, optionally reranked by a cross-encoder."""
    return await answer(request, state.indexes.search(name, body))
