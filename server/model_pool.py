"""The configured models of one server: lookup by id or alias, lazy loading, exclusive use.

Owned by the app's lifespan and handed to routes; never a module global. Each model is
loaded on first use (or at start with `preload`), and serves one generation at a time:
concurrent requests queue for it, so no request ever cuts off or corrupts another.
Engine work runs in threads; this module calls plugins only through the contract.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lampstand.plugins.contract import Capability, Plugin
from lampstand.plugins.errors import (
    CapabilityMissing,
    ConfigError,
    LampstandError,
    ModelNotFound,
    ModelUnavailable,
)
from lampstand.plugins.registry import PluginRegistry
from lampstand.plugins.sources import fetch_from_hub, resolve_local
from pydantic import ValidationError

from .config import ModelConfig
from .streaming import iterate_in_thread

__all__ = ["ModelStatus", "HostedModel", "ModelPool"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelStatus(str, enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass
class HostedModel:
    """One configured model and its state in this server."""

    config: ModelConfig
    plugin_cls: type[Plugin]
    options: Any
    capabilities: frozenset[Capability]
    created: int = field(default_factory=lambda: int(time.time()))
    plugin: Plugin | None = None
    status: ModelStatus = ModelStatus.UNLOADED
    error: str | None = None
    load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    slot: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    engine_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.config.id


def _declared_capabilities(config: ModelConfig, plugin_cls: type[Plugin], options: Any) -> frozenset[Capability]:
    """Capabilities follow from configuration alone; the probe instance loads nothing."""
    where = config.path if config.path is not None else Path(config.hf or "")
    return plugin_cls(config.id, where, options).capabilities()


def _plugin_options(config: ModelConfig, plugin_cls: type[Plugin]) -> Any:
    try:
        return plugin_cls.Options(**config.plugin_options())
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        why = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"model {config.id!r} (plugin {plugin_cls.name}): {key}: {why}") from exc


class ModelPool:
    """Every configured model, by id and alias."""

    def __init__(self, configs: list[ModelConfig], registry: PluginRegistry) -> None:
        self.models: dict[str, HostedModel] = {}
        self._names: dict[str, HostedModel] = {}
        for config in configs:
            plugin_cls = registry.get(config.plugin)
            options = _plugin_options(config, plugin_cls)
            hosted = HostedModel(config, plugin_cls, options, _declared_capabilities(config, plugin_cls, options))
            self.models[config.id] = hosted
            for name in (config.id, *config.aliases):
                self._names[name] = hosted

    def lookup(self, name: str) -> HostedModel:
        """The model called `name` (id or alias); 404 `model_not_found` otherwise."""
        hosted = self._names.get(name)
        if hosted is None:
            raise ModelNotFound(f"The model '{name}' does not exist", param="model")
        return hosted

    def require(self, name: str, capability: Capability) -> HostedModel:
        """The model called `name`, which must declare `capability`."""
        hosted = self.lookup(name)
        if capability not in hosted.capabilities:
            raise CapabilityMissing(
                f"model {name!r} does not support {capability.value} "
                f"(it serves: {', '.join(sorted(c.value for c in hosted.capabilities))})",
                param="model",
            )
        return hosted

    async def ensure_loaded(self, hosted: HostedModel) -> Plugin:
        """Load the model if needed; a failure marks it failed and is retried next time."""
        async with hosted.load_lock:
            if hosted.plugin is not None and hosted.status is ModelStatus.LOADED:
                return hosted.plugin
            hosted.status = ModelStatus.LOADING
            started = time.perf_counter()
            try:
                plugin = await asyncio.to_thread(self._load, hosted)
            except LampstandError as exc:
                hosted.status, hosted.error = ModelStatus.FAILED, exc.message
                raise ModelUnavailable(exc.message) from exc
            except Exception as exc:  # a plugin bug must not take the server down
                hosted.status, hosted.error = ModelStatus.FAILED, f"{type(exc).__name__}: {exc}"
                raise ModelUnavailable(f"model {hosted.id!r} failed to load: {hosted.error}") from exc
            hosted.plugin, hosted.status, hosted.error = plugin, ModelStatus.LOADED, None
            log.info("loaded %s in %.2fs", hosted.id, time.perf_counter() - started)
            return plugin

    @staticmethod
    def _load(hosted: HostedModel) -> Plugin:
        config = hosted.config
        if config.path is not None:
            path = resolve_local(config.path, config.id)
        else:
            path = fetch_from_hub(config.hf or "", config.file, config.id)
        plugin = hosted.plugin_cls(config.id, path, hosted.options)
        plugin.load()
        return plugin

    @asynccontextmanager
    async def exclusive(self, hosted: HostedModel) -> AsyncIterator[Plugin]:
        """The loaded plugin, held by this request alone until the block ends."""
        plugin = await self.ensure_loaded(hosted)
        async with hosted.slot:
            yield plugin

    async def stream(self, hosted: HostedModel, produce: Callable[[Plugin], Iterator[T]]) -> AsyncIterator[T]:
        """Run a plugin generator in a thread while holding the model; cancel on close."""
        async with self.exclusive(hosted) as plugin:
            async for item in iterate_in_thread(lambda: produce(plugin), hosted.engine_lock):
                yield item

    async def run(self, hosted: HostedModel, call: Callable[[Plugin], T]) -> T:
        """Run one blocking plugin call in a thread while holding the model."""
        def locked_call(plugin: Plugin) -> T:
            with hosted.engine_lock:
                return call(plugin)

        async with self.exclusive(hosted) as plugin:
            return await asyncio.to_thread(locked_call, plugin)

    async def preload(self) -> None:
        """Load the models configured with `preload = true`; failures are logged, not fatal."""
        for hosted in self.models.values():
            if hosted.config.preload:
                try:
                    await self.ensure_loaded(hosted)
                except ModelUnavailable as exc:
                    log.error("preload of %s failed: %s", hosted.id, exc.message)

    async def close(self) -> None:
        """Unload every model."""
        for hosted in self.models.values():
            if hosted.plugin is not None:
                await asyncio.to_thread(hosted.plugin.unload)
                hosted.plugin, hosted.status = None, ModelStatus.UNLOADED
