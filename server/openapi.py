"""The OpenAPI document, as the server really answers.

FastAPI documents what it can see: response models and a 422 for validation. lampstand
answers validation errors with 400 and the OpenAI envelope, streams `text/event-stream`
when `stream` is true, and serves `/metrics` as Prometheus text. This module corrects the
generated document accordingly, once, when it is first asked for.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from . import protocol as p
from . import protocol_responses as r
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

__all__ = ["install_openapi"]

REF = "#/components/schemas/{model}"
STREAMS: dict[str, tuple[type[BaseModel], ...]] = {  # each event's possible bodies; an error event may come last
    "/v1/chat/completions": (p.ChatCompletionChunk,),
    "/v1/responses": r.STREAM_EVENTS,
    "/v1/completions": (p.Completion,),
    "/v1/audio/transcriptions": (p.TranscriptTextDelta, p.TranscriptTextDone),
    "/v1/audio/translations": (p.TranscriptTextDelta, p.TranscriptTextDone),
    "/v1/images/generations": (p.ImageGenerationProgress, p.ImageGenerationCompleted),
    "/v1/rag/query": (p.RagAnswerChunk,),
}
MIDDLEWARE_ERRORS = {"401": "Missing or wrong API key", "413": "Body too large", "431": "Headers too large",
                     "503": "Starting or shutting down"}


def _add_schema(document: dict[str, Any], model: type[BaseModel]) -> str:
    schema = model.model_json_schema(ref_template=REF, mode="serialization")
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return REF.format(model=model.__name__)


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}


def _correct(document: dict[str, Any]) -> dict[str, Any]:
    _add_schema(document, p.ErrorResponse)
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in document["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, why in MIDDLEWARE_ERRORS.items():
                responses.setdefault(status, _error(why))
            if path in STREAMS:
                refs = [_add_schema(document, model) for model in (*STREAMS[path], p.ErrorResponse)]
                responses["200"]["content"]["text/event-stream"] = {"itemSchema": {
                    "type": "object", "required": ["data"],
                    "properties": {"data": {"oneOf": [
                        {"const": "[DONE]"},
                        {"contentMediaType": "application/json",
                         "contentSchema": {"anyOf": [{"$ref": ref} for ref in refs]}},
                    ]}},
                }}
            if path == "/metrics":
                responses["200"]["content"] = {METRICS_CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _correct(get_openapi(title=app.title, version=app.version, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
