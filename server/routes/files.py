"""/v1/files: upload, list, describe, download and delete files for fine-tuning and vector stores."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response

from .. import protocol as p
from ..serving.files import check_purpose, create_file, list_files
from ..serving.fine_tuning import FineTuningService
from .deps import state_of
from .forms import file_part, open_form, text_part
from .responses import ERROR_RESPONSES, json_or_stream

router = APIRouter(tags=["files"])
MAX_FIELDS = 8
MAX_FIELD_BYTES = 16 * 1024


async def file_service(request: Request) -> FineTuningService:
    """FastAPI dependency: the service that owns the uploaded files (whether fine-tuning is on or not)."""
    return state_of(request).fine_tuning


Service = Annotated[FineTuningService, Depends(file_service)]
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES, 403: {"model": p.ErrorResponse, "description": "fine-tune files while [fine_tuning] "
                                                                      "enabled is off"}}
_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "purpose"],
            "properties": {"file": {"type": "string", "format": "binary"},
                           "purpose": {"type": "string", "enum": ["fine-tune", "assistants", "user_data"]}},
        }}},
    }
}


@router.post("/v1/files", response_model=p.FileObject, responses=RESPONSES, openapi_extra=_MULTIPART_BODY)
async def upload_file(request: Request, service: Service) -> Response:
    """Upload a JSONL file of training data (`purpose` = `fine-tune`, when fine-tuning is on), or a
    document for vector stores (`assistants` or `user_data`)."""
    form = await open_form(request, sender="uploads", parts="`file` and `purpose` parts", max_fields=MAX_FIELDS,
                           max_field_bytes=MAX_FIELD_BYTES)
    try:
        purpose = check_purpose(text_part(form, "purpose"))
        if purpose == "fine-tune":
            service.require_enabled()
            limit = (service.settings.max_file_bytes, "[fine_tuning] max_file_bytes")
        else:
            limit = (state_of(request).settings.vector_stores.max_upload_bytes, "[vector_stores] max_upload_bytes")
        stored = await create_file(service.files, file_part(form, "file"), purpose, *limit)
    finally:
        await form.close()  # deletes the spooled temporary file
    return json_or_stream(stored)


@router.get("/v1/files", response_model=p.FileList, responses=RESPONSES)
async def get_files(service: Service, purpose: str | None = None,
                    order: Literal["asc", "desc"] = "desc", after: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=10000)] = 10000) -> Response:
    """The uploaded files, newest first by default."""
    return json_or_stream(await list_files(service.files, purpose, order, after, limit))


@router.get("/v1/files/{file_id}", response_model=p.FileObject, responses=RESPONSES)
async def get_file(file_id: str, service: Service) -> Response:
    """One file's metadata."""
    return json_or_stream(service.files.get(file_id))


@router.get("/v1/files/{file_id}/content", response_class=FileResponse, responses={
    **RESPONSES, 200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                       "description": "The file's bytes"}})
async def get_file_content(file_id: str, service: Service) -> FileResponse:
    """The file's bytes, as uploaded."""
    return FileResponse(service.files.path(file_id), media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}", response_model=p.FileDeleted, responses=RESPONSES)
async def delete_file(file_id: str, service: Service) -> Response:
    """Delete the file (jobs created from it keep their copy)."""
    return json_or_stream(service.files.delete(file_id))
