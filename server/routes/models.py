"""/v1/models: list and describe models; load and unload them (admin)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from pydantic import Field

from lampstand.plugins.contract import Footprint
from lampstand.plugins.errors import InvalidModelFile, InvalidRequest, LampstandError
from lampstand.plugins.paths import confine


from .. import protocol as p
from ..config import ModelConfig
from ..leases import keep_alive_of
from ..model_pool import HostedModel, ModelPool
from ..serving.adapters import adapter_model_cards
from ..serving.rag import rag_model_cards
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, json_or_stream

__all__ = ["router", "model_card", "LoadRequest"]

router = APIRouter(tags=["models"])
MODEL_SUFFIXES = (".gguf", ".safetensors")
# What a load request may not set: the model's identity and source, and the operator's limits
# (pinning, queue and concurrency, timeouts, aliases), which only the configuration file sets.
RESERVED_OPTIONS = {"id", "plugin", "path", "hf", "file", "preload", "trust_remote_code",
                    "aliases", "pinned", "max_queue", "max_concurrency", "request_timeout"}


class LoadRequest(p.Request):
    """POST /v1/models/{id}/load. With `path`, registers a new model from a file under `model_roots`."""

    path: str | None = Field(None, max_length=4096, description="file (or folder) relative to a model root")
    plugin: str = Field("llama_cpp", max_length=100)
    options: dict[str, Any] = Field({}, description="plugin options, as in [[models]]")
    keep_alive: str | float | None = None


def _bytes(footprint: Footprint | None) -> p.FootprintBytes | None:
    return None if footprint is None else p.FootprintBytes(ram=footprint.ram_bytes, vram=footprint.vram_bytes)


def model_card(hosted: HostedModel) -> p.ModelCard:
    """The `/v1/models` entry of one model."""
    worker = hosted.worker
    footprint = p.Footprint(estimated=_bytes(hosted.estimate),
                            measured=_bytes(worker.info.measured) if worker else None,
                            worker_rss=worker.rss_bytes() if worker else None)
    return p.ModelCard(
        id=hosted.id, created=hosted.created, owned_by="lampstand",
        capabilities=sorted(c.value for c in hosted.capabilities),
        status=hosted.status.value, plugin=hosted.plugin_cls.name, aliases=list(hosted.config.aliases),
        context_length=worker.info.context_length if worker else None,
        error=hosted.error, footprint=footprint, device=hosted.device, pinned=hosted.pinned,
        keep_alive=hosted.keep_alive,
        last_used=int(hosted.last_used) if hosted.last_used else None,
        expires_at=int(hosted.expires_at) if hosted.expires_at and worker else None,
        running=hosted.running, waiting=hosted.admitted - hosted.running,
        worker_pid=worker.pid if worker else None,
    )


@router.get("/v1/models", response_model=p.ModelList, responses=ERROR_RESPONSES)
async def list_models(state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Every configured model with its residency, its loaded LoRA adapters, and one `rag:NAME` per index."""
    cards = [model_card(h) for h in state.pool.models.values()] + adapter_model_cards(state.pool)
    return json_or_stream(p.ModelList(data=cards + await rag_model_cards(state)))


@router.post("/v1/models/{model_id:path}/load", response_model=p.ModelCard, responses=ERROR_RESPONSES)
async def load_model(model_id: str, state: Annotated[ServerState, Depends(get_state)],
                     body: Annotated[LoadRequest | None, Body()] = None) -> Response:
    """Load a model now (evicting idle ones if the budget needs it)."""
    body = body or LoadRequest()
    pool = state.pool
    if body.path is not None:
        hosted = await _register(pool, state, model_id, body)
    else:
        hosted = pool.lookup(model_id)
    await pool.load(hosted)
    if body.keep_alive is not None:
        pool.touch(hosted, keep_alive_of(body.keep_alive))
    return json_or_stream(model_card(hosted))


@router.post("/v1/models/{model_id:path}/unload", response_model=p.ModelCard, responses=ERROR_RESPONSES)
async def unload_model(model_id: str, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Unload a model once its running requests finish; its worker exits and frees the memory."""
    hosted = state.pool.lookup(model_id)
    await state.pool.unload(hosted)
    return json_or_stream(model_card(hosted))


@router.get("/v1/models/{model_id:path}", response_model=p.ModelCard, responses=ERROR_RESPONSES)
async def get_model(model_id: str, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """One model, by id or alias, or a loaded LoRA adapter."""
    if model_id not in state.pool.names:
        adapter = next((c for c in adapter_model_cards(state.pool) if c.id == model_id), None)
        if adapter is not None:
            return json_or_stream(adapter)
    return json_or_stream(model_card(state.pool.lookup(model_id)))


def _confined_paths(state: ServerState, body: LoadRequest) -> dict[str, Any]:
    """The request's plugin options, with every option typed as a path (a projector file, a
    config folder) confined to `model_roots` like the model's own path."""
    try:
        fields = state.registry.get(body.plugin).Options.model_fields
    except LampstandError as exc:
        raise InvalidRequest(exc.message, param="plugin") from None
    options = dict(body.options)
    for key, value in body.options.items():
        field = fields.get(key)
        if field is None or value is None or not _is_path(field.annotation):
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"option {key!r} must be a path relative to a model root", param="options")
        options[key] = confine(value, state.settings.server.model_roots, allow_dirs=True)
    return options


def _is_path(annotation: Any) -> bool:
    return annotation is Path or Path in get_args(annotation)


async def _register(pool: ModelPool, state: ServerState, model_id: str, body: LoadRequest) -> HostedModel:
    if model_id in pool.models:
        raise InvalidRequest(f"model {model_id!r} already exists; load it without 'path'", param="path")
    path = confine(body.path or "", state.settings.server.model_roots, allow_dirs=True)
    if path.is_file() and path.suffix.lower() not in MODEL_SUFFIXES:
        raise InvalidModelFile(f"{body.path!r}: only GGUF and safetensors model files are served", param="path")
    reserved = sorted(RESERVED_OPTIONS & body.options.keys())
    if reserved:
        raise InvalidRequest(f"options may not set {', '.join(reserved)}", param="options")
    options = _confined_paths(state, body)
    try:
        config = ModelConfig(id=model_id, plugin=body.plugin, path=path,
                             **({"keep_alive": body.keep_alive} if body.keep_alive is not None else {}),
                             **options)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"invalid model options: {exc}", param="options") from None
    try:
        hosted = pool.add(config)
    except LampstandError as exc:
        raise InvalidRequest(exc.message, param="options") from None
    try:  # a damaged or hostile file is refused here, before any worker opens it
        hosted.estimate = await asyncio.to_thread(pool.estimate, hosted)
    except BaseException:
        pool.remove(hosted)
        raise
    return hosted
