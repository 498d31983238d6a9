"""POST /v1/audio/transcriptions and /v1/audio/translations (multipart forms)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from lampstand.plugins.errors import InvalidRequest

from .. import protocol as p
from .forms import BeforeFile, open_form
from ..serving.transcript_formats import MEDIA_TYPES
from ..serving.transcriptions import EarlyAdmission, Task, create_transcription
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["audio"])

MAX_FIELDS = 32
MAX_FIELD_BYTES = 64 * 1024
_GRANULARITIES = ("timestamp_granularities[]", "timestamp_granularities")


async def read_audio_form(request: Request, before_file: BeforeFile | None = None) -> tuple[p.AudioForm, bytes]:
    """The validated fields and the uploaded file's bytes; 400 for anything else.

    `before_file` sees the fields sent ahead of the file and may refuse the request there.
    """
    form = await open_form(request, sender="audio requests", parts="a `file` part", max_fields=MAX_FIELDS,
                           max_field_bytes=MAX_FIELD_BYTES, before_file=before_file)
    try:
        return _validated(form), await _file_bytes(form)
    finally:
        await form.close()  # uploads over 1 MiB were spooled to a temporary file: delete it now


async def _file_bytes(form: FormData) -> bytes:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("the form has no `file` part with the audio", param="file")
    return await upload.read()


def _validated(form: FormData) -> p.AudioForm:
    fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and k not in _GRANULARITIES}
    granularities = [v for key in _GRANULARITIES for v in form.getlist(key) if isinstance(v, str)]
    if granularities:
        fields["timestamp_granularities[]"] = granularities
    try:
        return p.AudioForm.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"{param}: {first['msg']}" if param else first["msg"], param=param) from None


_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "model"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                **{name: field for name, field in p.AudioForm.model_json_schema(by_alias=True)["properties"].items()},
            },
        }}},
    },
    "responses": {"200": {"content": {  # response_format text, srt and vtt; JSON and SSE come from the route
        media.split(";")[0]: {"schema": {"type": "string"}} for media in sorted(set(MEDIA_TYPES.values()))
        if not media.startswith("application/json")}}},
}


async def _audio(request: Request, state: ServerState, task: Task) -> Response:
    early = EarlyAdmission(state.pool, task)  # joins the model's queue before the upload is read
    try:
        form, audio = await read_audio_form(request, early)
        return await answer(request, create_transcription(state.pool, state.settings.server, form, audio, task,
                                                          early))
    finally:
        early.release()  # only if the transcription never took the lease over


def _route(path: str, task: Task, summary: str) -> None:
    @router.post(path, responses=ERROR_RESPONSES, openapi_extra=_MULTIPART_BODY, summary=summary,
                 response_model=p.TranscriptionVerbose | p.Transcription)
    async def endpoint(request: Request, state: Annotated[ServerState, Depends(get_state)]) -> Response:
        return await _audio(request, state, task)


_route("/v1/audio/transcriptions", "transcribe", "Speech to text in the spoken language")
_route("/v1/audio/translations", "translate", "Speech to English text")
