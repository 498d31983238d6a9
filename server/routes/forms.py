"""Reading a multipart upload form (audio, files) with limits, as one 400 for anything malformed.

Part of the HTTP layer: routes read their forms here and hand plain values to the serving
modules.

A caller can look at the fields sent before the file (`before_file`) and refuse the request
there, before the upload itself is read: the audio routes admit the request to its model's
queue at that point, so a full queue answers 429 without taking in megabytes first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartParser

from lampstand.plugins.errors import InvalidRequest, LampstandError

from ..serving.files import Upload

__all__ = ["open_form", "BeforeFile", "file_part", "text_part"]

BeforeFile = Callable[[Mapping[str, str]], None]  # the text fields read so far; raises to refuse


class _GatedParser(MultiPartParser):
    """Starlette's parser, calling `before_file` once a file part's headers are read."""

    def __init__(self, request: Request, before_file: BeforeFile, **limits: int) -> None:
        super().__init__(request.headers, request.stream(), **limits)
        self.before_file = before_file

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        if self._current_part.file is not None:
            self.before_file({name: value for name, value in self.items if isinstance(value, str)})


async def open_form(request: Request, *, sender: str, parts: str, max_fields: int, max_field_bytes: int,
                    before_file: BeforeFile | None = None) -> FormData:
    """The request's form, with at most one file; the caller closes it (deleting the spooled upload).

    `sender` and `parts` word the error for a body that is not multipart ("audio requests",
    "a `file` part"). An error `before_file` raises ends the reading and is raised as it is.
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(f"{sender} must be sent as multipart/form-data with {parts}")
    parser = _GatedParser(request, before_file or _accept, max_files=1, max_fields=max_fields,
                          max_part_size=max_field_bytes)
    try:
        return await parser.parse()
    except LampstandError:
        raise
    except Exception as exc:  # malformed multipart, too many parts: Starlette's own 400s
        raise InvalidRequest(f"could not read the multipart form: {getattr(exc, 'message', exc)}") from None


def _accept(fields: Mapping[str, str]) -> None:
    """The default `before_file`: every form may send its file."""


def file_part(form: FormData, name: str) -> Upload | None:
    """The form's file part `name`, or None when it has none (or a text part of that name)."""
    part = form.get(name)
    return Upload(part.file, part.filename, part.size) if isinstance(part, UploadFile) else None


def text_part(form: FormData, name: str) -> str | None:
    """The form's text part `name`, or None."""
    part = form.get(name)
    return part if isinstance(part, str) else None
