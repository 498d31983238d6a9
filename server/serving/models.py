"""The models of `/v1/models`: their cards, and registering a model file named by a load request.

A load request may register a new model from a file under `[server] model_roots`. It may set
the plugin's options but not the model's identity or the operator's limits (pinning, queue,
concurrency, timeouts, aliases), which only the configuration file sets; options typed as
paths are confined to the model roots like the model's own file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, get_args

from lampstand.plugins.contract import Footprint
from lampstand.plugins.errors import InvalidModelFile, InvalidRequest, LampstandError
from lampstand.plugins.paths import confine
from lampstand.plugins.registry import PluginRegistry

from .. import protocol as p
from ..config import ModelConfig, ServerSettings
from ..leases import keep_alive_of
from ..model_pool import HostedModel, ModelPool

__all__ = ["model_card", "load_model", "register_model"]

MODEL_SUFFIXES = (".gguf", ".safetensors")
RESERVED_OPTIONS = {"id", "plugin", "path", "hf", "file", "preload", "trust_remote_code",
                    "aliases", "pinned", "max_queue", "max_concurrency", "request_timeout"}


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
        running=hosted.admission.running, waiting=hosted.admission.waiting,
        worker_pid=worker.pid if worker else None,
    )


async def load_model(pool: ModelPool, registry: PluginRegistry, settings: ServerSettings, model_id: str,
                     body: p.ModelLoadRequest) -> p.ModelCard:
    """Load `model_id` now (registering `body.path` first when given), evicting idle models if the budget needs it."""
    if body.path is not None:
        hosted = await register_model(pool, registry, settings, model_id, body)
    else:
        hosted = pool.lookup(model_id)
    await pool.load(hosted)
    if body.keep_alive is not None:
        pool.touch(hosted, keep_alive_of(body.keep_alive))
    return model_card(hosted)


async def register_model(pool: ModelPool, registry: PluginRegistry, settings: ServerSettings, model_id: str,
                         body: p.ModelLoadRequest) -> HostedModel:
    """Add the model file `body.path` as `model_id`; a damaged or hostile file is refused before any worker opens it."""
    if model_id in pool.models:
        raise InvalidRequest(f"model {model_id!r} already exists; load it without 'path'", param="path")
    path = confine(body.path or "", settings.model_roots, allow_dirs=True)
    if path.is_file() and path.suffix.lower() not in MODEL_SUFFIXES:
        raise InvalidModelFile(f"{body.path!r}: only GGUF and safetensors model files are served", param="path")
    reserved = sorted(RESERVED_OPTIONS & body.options.keys())
    if reserved:
        raise InvalidRequest(f"options may not set {', '.join(reserved)}", param="options")
    plugin = body.plugin or settings.load_plugin
    options = _confined_paths(registry, settings, plugin, body.options)
    try:
        config = ModelConfig(id=model_id, plugin=plugin, path=path,
                             **({"keep_alive": body.keep_alive} if body.keep_alive is not None else {}),
                             **options)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"invalid model options: {exc}", param="options") from None
    try:
        hosted = pool.add(config)
    except LampstandError as exc:
        raise InvalidRequest(exc.message, param="options") from None
    try:
        hosted.estimate = await asyncio.to_thread(pool.estimate, hosted)
    except BaseException:
        pool.remove(hosted)
        raise
    return hosted


def _confined_paths(registry: PluginRegistry, settings: ServerSettings, plugin: str,
                    requested: dict[str, Any]) -> dict[str, Any]:
    """The request's plugin options, with every option typed as a path (a projector file, a
    config folder) confined to `model_roots` like the model's own path."""
    try:
        fields = registry.get(plugin).Options.model_fields
    except LampstandError as exc:
        raise InvalidRequest(exc.message, param="plugin") from None
    options = dict(requested)
    for key, value in requested.items():
        field = fields.get(key)
        if field is None or value is None or not _is_path(field.annotation):
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"option {key!r} must be a path relative to a model root", param="options")
        options[key] = confine(value, settings.model_roots, allow_dirs=True)
    return options


def _is_path(annotation: Any) -> bool:
    return annotation is Path or Path in get_args(annotation)
