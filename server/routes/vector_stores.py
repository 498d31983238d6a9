"""/v1/vector_stores: OpenAI's vector stores, their files and file batches, and search."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from .. import protocol_vector_stores as v
from ..serving.query_writer import rewrite_then_search
from ..serving.vector_stores import VectorStoreService
from .deps import state_of
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["vector_stores"])
Id = Annotated[str, Path(min_length=1, max_length=128)]
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]
Cursor = Annotated[str | None, Query(max_length=128)]
FileStatus = Literal["in_progress", "completed", "failed", "cancelled"]


async def service(request: Request) -> VectorStoreService:
    """FastAPI dependency: the vector stores."""
    return state_of(request).vector_stores


Service = Annotated[VectorStoreService, Depends(service)]


@router.post("/v1/vector_stores", response_model=v.VectorStoreObject, responses=ERROR_RESPONSES)
async def create_store(body: v.VectorStoreCreateRequest, stores: Service, request: Request) -> Response:
    """Create a vector store, attaching `file_ids` (uploaded with purpose `assistants` or `user_data`)."""
    return await answer(request, stores.create(body))


@router.get("/v1/vector_stores", response_model=v.VectorStoreList, responses=ERROR_RESPONSES)
async def list_stores(stores: Service, request: Request, limit: Limit = 20, order: Order = "desc",
                      after: Cursor = None, before: Cursor = None) -> Response:
    """Vector stores, newest first: those made here, and every folder index (read-only)."""
    return await answer(request, stores.list(limit=limit, order=order, after=after, before=before))


@router.get("/v1/vector_stores/{store_id}", response_model=v.VectorStoreObject, responses=ERROR_RESPONSES)
async def get_store(store_id: Id, stores: Service, request: Request) -> Response:
    """One vector store and its file counts."""
    return await answer(request, stores.get(store_id))


@router.post("/v1/vector_stores/{store_id}", response_model=v.VectorStoreObject, responses=ERROR_RESPONSES)
async def update_store(store_id: Id, body: v.VectorStoreUpdateRequest, stores: Service,
                       request: Request) -> Response:
    """Change a store's name, metadata or expiry."""
    return await answer(request, stores.update(store_id, body))


@router.delete("/v1/vector_stores/{store_id}", response_model=v.VectorStoreDeleted, responses=ERROR_RESPONSES)
async def delete_store(store_id: Id, stores: Service, request: Request) -> Response:
    """Delete a store and its index (the uploaded files stay)."""
    return await answer(request, stores.delete(store_id))


@router.post("/v1/vector_stores/{store_id}/search", response_model=v.VectorStoreSearchPage,
             responses=ERROR_RESPONSES)
async def search_store(store_id: Id, body: v.VectorStoreSearchRequest, stores: Service,
                       request: Request) -> Response:
    """The passages that best answer `query`: hybrid search, filtered on file attributes.
    With `rewrite_query`, the chat model that answers rag queries rewrites it first."""
    return await answer(request, rewrite_then_search(state_of(request), store_id, body))


@router.post("/v1/vector_stores/{store_id}/files", response_model=v.VectorStoreFileObject,
             responses=ERROR_RESPONSES)
async def add_file(store_id: Id, body: v.VectorStoreFileCreateRequest, stores: Service,
                   request: Request) -> Response:
    """Attach an uploaded file; it is indexed in the background (`status` says when it is done)."""
    return await answer(request, stores.add_file(store_id, body))


@router.get("/v1/vector_stores/{store_id}/files", response_model=v.VectorStoreFileList, responses=ERROR_RESPONSES)
async def list_files(store_id: Id, stores: Service, request: Request, limit: Limit = 20, order: Order = "desc",
                     after: Cursor = None, before: Cursor = None,
                     filter: FileStatus | None = None) -> Response:  # noqa: A002 (OpenAI's name)
    """A store's files, newest first, optionally of one status."""
    return await answer(request, stores.list_files(store_id, limit=limit, order=order, after=after, before=before,
                                                   status=filter))


@router.get("/v1/vector_stores/{store_id}/files/{file_id}", response_model=v.VectorStoreFileObject,
            responses=ERROR_RESPONSES)
async def get_file(store_id: Id, file_id: Id, stores: Service, request: Request) -> Response:
    """One attached file: its status, error and attributes."""
    return await answer(request, stores.get_file(store_id, file_id))


@router.post("/v1/vector_stores/{store_id}/files/{file_id}", response_model=v.VectorStoreFileObject,
             responses=ERROR_RESPONSES)
async def update_file(store_id: Id, file_id: Id, body: v.VectorStoreFileUpdateRequest, stores: Service,
                      request: Request) -> Response:
    """Replace a file's attributes."""
    return await answer(request, stores.update_file(store_id, file_id, body))


@router.delete("/v1/vector_stores/{store_id}/files/{file_id}", response_model=v.VectorStoreFileDeleted,
               responses=ERROR_RESPONSES)
async def delete_file(store_id: Id, file_id: Id, stores: Service, request: Request) -> Response:
    """Take a file out of the store (the upload stays in /v1/files)."""
    return await answer(request, stores.delete_file(store_id, file_id))


@router.get("/v1/vector_stores/{store_id}/files/{file_id}/content", response_model=v.VectorStoreFileContent,
            responses=ERROR_RESPONSES)
async def file_content(store_id: Id, file_id: Id, stores: Service, request: Request) -> Response:
    """The text the file was indexed from."""
    return await answer(request, stores.file_content(store_id, file_id))


@router.post("/v1/vector_stores/{store_id}/file_batches", response_model=v.FileBatchObject,
             responses=ERROR_RESPONSES)
async def create_batch(store_id: Id, body: v.FileBatchCreateRequest, stores: Service,
                       request: Request) -> Response:
    """Attach several uploaded files at once."""
    return await answer(request, stores.create_batch(store_id, body))


@router.get("/v1/vector_stores/{store_id}/file_batches/{batch_id}", response_model=v.FileBatchObject,
            responses=ERROR_RESPONSES)
async def get_batch(store_id: Id, batch_id: Id, stores: Service, request: Request) -> Response:
    """A batch's status and file counts."""
    return await answer(request, stores.get_batch(store_id, batch_id))


@router.post("/v1/vector_stores/{store_id}/file_batches/{batch_id}/cancel", response_model=v.FileBatchObject,
             responses=ERROR_RESPONSES)
async def cancel_batch(store_id: Id, batch_id: Id, stores: Service, request: Request) -> Response:
    """Cancel the batch's files not yet indexed."""
    return await answer(request, stores.cancel_batch(store_id, batch_id))


@router.get("/v1/vector_stores/{store_id}/file_batches/{batch_id}/files", response_model=v.VectorStoreFileList,
            responses=ERROR_RESPONSES)
async def batch_files(store_id: Id, batch_id: Id, stores: Service, request: Request, limit: Limit = 20,
                      order: Order = "desc", after: Cursor = None, before: Cursor = None,
                      filter: FileStatus | None = None) -> Response:  # noqa: A002
    """The files of one batch."""
    await stores.get_batch(store_id, batch_id)
    return await answer(request, stores.list_files(store_id, limit=limit, order=order, after=after, before=before,
                                                   status=filter, batch_id=batch_id))
