"""Serving /v1/files: uploads read from a multipart form into the file store, and listings.

Only files for fine-tuning are accepted. The form's file part is spooled by Starlette (to a
temporary file past 1 MiB) and copied into the store in chunks; the whole body is capped by
the body-limit middleware and the file itself by `[fine_tuning] max_file_bytes`.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from lampstand.plugins.errors import InvalidRequest, PayloadTooLarge

from .. import protocol as p
from ..fine_tuning import FileStore, paginate
from .multipart import open_form

__all__ = ["create_file", "list_files", "PURPOSES", "FORM_OVERHEAD"]

PURPOSES = ("fine-tune",)
FORM_OVERHEAD = 64 * 1024  # multipart framing and the small fields, beyond the file itself
MAX_FIELDS = 8
MAX_FIELD_BYTES = 16 * 1024


async def create_file(request: Request, files: FileStore, max_bytes: int) -> p.FileObject:
    """Store the form's `file` part for `purpose`; 400 for a bad form, 413 beyond `max_bytes`."""
    form = await open_form(request, sender="uploads", parts="`file` and `purpose` parts", max_fields=MAX_FIELDS,
                           max_field_bytes=MAX_FIELD_BYTES)
    try:
        upload, purpose = _fields(form)
        if upload.size is not None and upload.size > max_bytes:
            raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes} bytes "
                                  "([fine_tuning] max_file_bytes)", param="file")
        return await asyncio.to_thread(files.save, upload.file, upload.filename, purpose, max_bytes)
    finally:
        await form.close()  # deletes the spooled temporary file


def _fields(form: FormData) -> tuple[UploadFile, str]:
    purpose = form.get("purpose")
    if not isinstance(purpose, str) or not purpose:
        raise InvalidRequest("the form has no `purpose` part", param="purpose")
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose {purpose[:64]!r} is not supported: this server accepts only files for "
                             f"{', '.join(PURPOSES)}", param="purpose")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("the form has no `file` part", param="file")
    return upload, purpose


async def list_files(files: FileStore, purpose: str | None, order: Literal["asc", "desc"], after: str | None,
                     limit: int) -> p.FileList:
    """The stored files, optionally of one purpose, by creation time."""
    found = [f for f in await asyncio.to_thread(files.all) if purpose is None or f.purpose == purpose]
    if order == "desc":
        found.reverse()
    page, more = paginate(found, after, limit)
    return p.FileList(data=page, first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                      has_more=more)
