"""Serving /v1/files: an uploaded file copied into the file store, and listings.

Files for fine-tuning (`fine-tune`, when `[fine_tuning] enabled`) and for vector stores
(`assistants`, `user_data`) are accepted. The route reads the multipart form (its file part
spooled by Starlette, to a temporary file past 1 MiB) and hands the file here; it is copied
into the store in chunks. The whole body is capped by the body-limit middleware and the file
itself by `[fine_tuning] max_file_bytes` or `[vector_stores] max_upload_bytes`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import BinaryIO, Literal

from lampstand.plugins.errors import InvalidRequest, PayloadTooLarge

from .. import protocol as p
from ..fine_tuning import FileStore, paginate

__all__ = ["Upload", "check_purpose", "create_file", "list_files", "PURPOSES", "FORM_OVERHEAD"]

PURPOSES = ("fine-tune", "assistants", "user_data")
FORM_OVERHEAD = 64 * 1024  # multipart framing and the small fields, beyond the file itself


@dataclass(frozen=True)
class Upload:
    """A file part of a form: its content (read from the start), the client's name for it, its size."""

    content: BinaryIO
    filename: str | None
    size: int | None


def check_purpose(purpose: str | None) -> str:
    """`purpose` if this server takes files for it; 400 otherwise."""
    if not purpose:
        raise InvalidRequest("the form has no `purpose` part", param="purpose")
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose {purpose[:64]!r} is not supported: this server accepts only files for "
                             f"{', '.join(PURPOSES)}", param="purpose")
    return purpose


async def create_file(files: FileStore, upload: Upload | None, purpose: str, max_bytes: int,
                      limit_name: str) -> p.FileObject:
    """Store the form's `file` part for `purpose`; 400 when it is missing, 413 beyond `max_bytes`
    (the setting `limit_name`)."""
    if upload is None:
        raise InvalidRequest("the form has no `file` part", param="file")
    if upload.size is not None and upload.size > max_bytes:
        raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes} bytes ({limit_name})", param="file")
    return await asyncio.to_thread(files.save, upload.content, upload.filename, purpose, max_bytes, limit_name)


async def list_files(files: FileStore, purpose: str | None, order: Literal["asc", "desc"], after: str | None,
                     limit: int) -> p.FileList:
    """The stored files, optionally of one purpose, by creation time."""
    found = [f for f in await asyncio.to_thread(files.all) if purpose is None or f.purpose == purpose]
    if order == "desc":
        found.reverse()
    page, more = paginate(found, after, limit)
    return p.FileList(data=page, first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                      has_more=more)
