"""Reading a multipart upload form (audio, files) with limits, as one 400 for anything malformed."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import FormData

from lampstand.plugins.errors import InvalidRequest

__all__ = ["open_form"]


async def open_form(request: Request, *, sender: str, parts: str, max_fields: int, max_field_bytes: int) -> FormData:
    """The request's form, with at most one file; the caller closes it (deleting the spooled upload).

    `sender` and `parts` word the error for a body that is not multipart ("audio requests",
    "a `file` part").
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(f"{sender} must be sent as multipart/form-data with {parts}")
    try:
        return await request.form(max_files=1, max_fields=max_fields, max_part_size=max_field_bytes)
    except Exception as exc:  # malformed multipart, too many parts: Starlette's own 400s
        raise InvalidRequest(f"could not read the multipart form: {getattr(exc, 'detail', exc)}") from None
