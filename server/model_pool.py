"""The configured models of one server: lookup, residency within the memory budget, leases.

Owned by the app's lifespan and handed to routes; never a module global. A model is loaded
into its own worker process on first use (or at start with `preload`). Before a load the
plugin's footprint estimate is checked against the budget of each device; idle models are
evicted least recently used first, and never one with requests admitted or one `pinned`.
Idle models are unloaded when their keep-alive runs out. A request reaches a model through
a `Lease` (see `leases.py`), which is where queueing and overload are decided. LoRA adapters
loaded into a model are named in `adapters` (see `adapters.py`); a request naming one runs on
its base model's worker.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lampstand.plugins.contract import Capability, Footprint, Plugin
from lampstand.plugins.errors import (
    CapabilityMissing,
    ConfigError,
    InvalidRequest,
    LampstandError,
    MemoryBudgetExceeded,
    ModelNotFound,
    ModelUnavailable,
    ShuttingDown,
)
from lampstand.plugins.registry import PluginRegistry
from lampstand.plugins.sources import fetch_from_hub, resolve_local
from lampstand.plugins.types import AdapterRef

from .adapters import AdapterRegistry
from .admission import Admission
from .config import MemorySettings, ModelConfig, ServerSettings
from .leases import DEFAULT, Lease
from .memory import Budget, format_size, parse_duration
from .metrics import Metrics, PoolGauges
from .workers import WorkerHandle, WorkerSpec

__all__ = ["ModelStatus", "HostedModel", "ModelPool"]

log = logging.getLogger(__name__)
REAP_INTERVAL = 1.0


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
    keep_alive: float | None
    admission: Admission
    created: int = field(default_factory=lambda: int(time.time()))
    status: ModelStatus = ModelStatus.UNLOADED
    error: str | None = None
    worker: WorkerHandle | None = None
    estimate: Footprint | None = None
    last_used: float | None = None
    expires_at: float | None = None
    load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def pinned(self) -> bool:
        return self.config.pinned

    @property
    def device(self) -> str:
        """Where the model's weights live (or will): "gpu" when it takes GPU memory."""
        return "gpu" if self.estimate is not None and self.estimate.vram_bytes > 0 else "cpu"

    def held(self) -> Footprint:
        """Memory counted against the budget: the larger of estimate and measurement."""
        estimate = self.estimate or Footprint(0)
        if self.worker is None:
            return estimate
        measured = self.worker.info.measured
        return Footprint(max(estimate.ram_bytes, measured.ram_bytes), max(estimate.vram_bytes, measured.vram_bytes))

    def idle(self) -> bool:
        return self.admission.idle()


def _probe(config: ModelConfig, plugin_cls: type[Plugin], options: Any, path: Path | None = None) -> Plugin:
    where = path or (config.path if config.path is not None else Path(config.hf or ""))
    return plugin_cls(config.id, where, options)


def _plugin_options(config: ModelConfig, plugin_cls: type[Plugin]) -> Any:
    try:
        return plugin_cls.Options(**config.plugin_options())
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        why = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"model {config.id!r} (plugin {plugin_cls.name}): {key}: {why}") from exc


class ModelPool:
    """Every configured model, by id and alias, and the workers that host the loaded ones."""

    def __init__(self, configs: list[ModelConfig], registry: PluginRegistry, server: ServerSettings,
                 memory: MemorySettings, metrics: Metrics | None = None) -> None:
        self.registry, self.server = registry, server
        self.default_keep_alive = parse_duration(memory.keep_alive)
        self.budget = Budget.from_settings(memory.cpu, memory.gpu)
        self.metrics = metrics or Metrics()
        self.models: dict[str, HostedModel] = {}
        self._names: dict[str, HostedModel] = {}
        self.adapters = AdapterRegistry()
        self._residency = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self.draining = False
        for config in configs:
            self.add(config)
        self.metrics.watch_pool(self.gauges)

    # -- the catalogue --

    def add(self, config: ModelConfig) -> HostedModel:
        """Register one model (at start, or through the admin API)."""
        plugin_cls = self.registry.get(config.plugin)
        options = _plugin_options(config, plugin_cls)
        keep_alive = parse_duration(config.keep_alive) if config.keep_alive is not None else self.default_keep_alive
        probe = _probe(config, plugin_cls, options)  # configuration alone decides; it loads nothing
        capabilities = probe.capabilities()
        self.registry.check_contract(config.id, plugin_cls, capabilities)
        max_queue = config.max_queue if config.max_queue is not None else self.server.max_queue
        turns = config.max_concurrency or probe.slots()
        hosted = HostedModel(config, plugin_cls, options, capabilities, keep_alive=keep_alive,
                             admission=Admission(config.id, turns, max_queue, self.metrics))
        for name in (config.id, *config.aliases):
            if name in self._names:
                raise ConfigError(f"model name {name!r} is used twice")
        self.models[config.id] = hosted
        for name in (config.id, *config.aliases):
            self._names[name] = hosted
        return hosted

    def remove(self, hosted: HostedModel) -> None:
        """Forget a model that holds no worker (a registration that failed its checks)."""
        if hosted.worker is None:
            self.models.pop(hosted.id, None)
            for name in (hosted.id, *hosted.config.aliases):
                self._names.pop(name, None)

    @property
    def names(self) -> Mapping[str, HostedModel]:
        """Every model id and alias."""
        return self._names

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

    def target(self, name: str, capability: Capability,
               lora_scale: float | None = None) -> tuple[HostedModel, AdapterRef | None]:
        """The model a request's `model` names and the adapter to run it with, if it names one."""
        if name not in self._names:
            adapter = self.adapters.find(name, self._names)
            if adapter is not None:
                return self.require(adapter.base, capability), adapter.ref(lora_scale)
        hosted = self.require(name, capability)
        if lora_scale is not None:
            raise InvalidRequest("lora_scale applies only when model names a LoRA adapter", param="lora_scale")
        return hosted, None

    @asynccontextmanager
    async def using(self, hosted: HostedModel) -> AsyncIterator[WorkerHandle]:
        """The model's loaded worker for an admin call (an adapter load), kept from eviction meanwhile."""
        with hosted.admission.held():
            yield await self.ensure_loaded(hosted)

    def pick(self, configured: str | None, capability: Capability, purpose: str) -> HostedModel:
        """The configured model for `purpose`, else the first model with `capability`."""
        if configured:
            return self.require(configured, capability)
        for hosted in self.models.values():
            if capability in hosted.capabilities:
                return hosted
        raise ModelNotFound(f"{purpose} needs a model with capability {capability.value}; none is configured")

    def admit(self, hosted: HostedModel, keep_alive: float | None | str = DEFAULT) -> Lease:
        """A place in the model's queue, or 429/503 now, before any work is done."""
        if self.draining:
            hosted.admission.refused("shutting_down")
            raise ShuttingDown("the server is shutting down", retry_after=5)
        return Lease(self, hosted, keep_alive)

    # -- residency --

    async def ensure_loaded(self, hosted: HostedModel) -> WorkerHandle:
        """The model's worker, loading it (and evicting others) if needed."""
        async with hosted.load_lock:
            if hosted.worker is not None and hosted.worker.alive:
                return hosted.worker
            started = time.perf_counter()
            try:
                spec = await asyncio.to_thread(self._spec, hosted)
                async with self._residency:
                    await self._make_room(hosted)
                    hosted.status, hosted.error = ModelStatus.LOADING, None
                worker = await WorkerHandle.start(spec, partial(self._worker_exited, hosted),
                                                  timeout=self.server.load_timeout,
                                                  on_stats=partial(self.metrics.observe_engine, hosted.id))
            except MemoryBudgetExceeded:
                self.metrics.loads.labels(hosted.id, "no_room").inc()
                if hosted.status is ModelStatus.LOADING:
                    hosted.status = ModelStatus.UNLOADED
                raise
            except TimeoutError:
                self._failed(hosted, f"did not load within load_timeout ({self.server.load_timeout:g} s)")
                raise ModelUnavailable(f"model {hosted.id!r} {hosted.error}") from None
            except LampstandError as exc:
                self._failed(hosted, exc.message)
                raise ModelUnavailable(exc.message) from exc
            except Exception as exc:  # a plugin bug must not take the server down
                self._failed(hosted, f"{type(exc).__name__}: {exc}")
                raise ModelUnavailable(f"model {hosted.id!r} failed to load: {hosted.error}") from exc
            hosted.worker, hosted.status = worker, ModelStatus.LOADED
            elapsed = time.perf_counter() - started
            self.metrics.loads.labels(hosted.id, "loaded").inc()
            self.metrics.load_seconds.labels(hosted.id).observe(elapsed)
            log.info("model loaded", extra={"model": hosted.id, "seconds": round(elapsed, 3),
                                            "pid": worker.pid, "ram_bytes": worker.info.measured.ram_bytes})
            return worker

    def _spec(self, hosted: HostedModel) -> WorkerSpec:
        """Resolve the model's file and estimate its footprint (blocking: file reads, downloads)."""
        config = hosted.config
        if config.path is not None:
            path = resolve_local(config.path, config.id)
        else:
            path = fetch_from_hub(config.hf or "", config.file, config.id, hosted.plugin_cls.hub_files)
        if hosted.estimate is None:
            hosted.estimate = self.estimate(hosted, path)
        return WorkerSpec(config.id, hosted.plugin_cls, path, hosted.options, self.server.log_level,
                          self.server.log_format, adapters=self.adapters.loads_for(config.id))

    def estimate(self, hosted: HostedModel, path: Path | None = None) -> Footprint:
        """The plugin's footprint estimate; reads the model file's header (blocking)."""
        return _probe(hosted.config, hosted.plugin_cls, hosted.options, path).estimate_footprint()

    def _failed(self, hosted: HostedModel, reason: str) -> None:
        hosted.status, hosted.error = ModelStatus.FAILED, reason
        self.metrics.loads.labels(hosted.id, "failed").inc()
        log.error("model failed to load", extra={"model": hosted.id, "reason": reason})

    def used(self, exclude: HostedModel | None = None) -> Footprint:
        """Memory held by loading and loaded models."""
        ram = vram = 0
        for model in self.models.values():
            if model is not exclude and model.status in (ModelStatus.LOADING, ModelStatus.LOADED):
                held = model.held()
                ram, vram = ram + held.ram_bytes, vram + held.vram_bytes
        return Footprint(ram, vram)

    async def _make_room(self, hosted: HostedModel) -> None:
        need = hosted.estimate or Footprint(0)
        if self.budget.shortfall(self.used(exclude=hosted), need) is None:
            return
        victims = sorted((m for m in self.models.values()
                          if m is not hosted and m.status is ModelStatus.LOADED and m.idle() and not m.pinned),
                         key=lambda m: m.last_used or 0.0)
        before = self.used(exclude=hosted)
        after = Footprint(before.ram_bytes - sum(m.held().ram_bytes for m in victims),
                          before.vram_bytes - sum(m.held().vram_bytes for m in victims))
        why = self.budget.shortfall(after, need)
        if why is not None:
            raise MemoryBudgetExceeded(f"cannot load model {hosted.id!r}: {why} "
                                       f"even after unloading every idle model; held by: {self._holders()}",
                                       retry_after=5)
        for victim in victims:
            self.metrics.evictions.labels(victim.id).inc()
            await self._stop(victim, "evicted")
            if self.budget.shortfall(self.used(exclude=hosted), need) is None:
                return

    def _holders(self) -> str:
        parts = []
        for m in self.models.values():
            if m.status in (ModelStatus.LOADING, ModelStatus.LOADED):
                why = "pinned" if m.pinned else ("busy" if not m.idle() else m.status.value)
                parts.append(f"{m.id} {format_size(m.held().ram_bytes + m.held().vram_bytes)} ({why})")
        return ", ".join(parts) or "nothing"

    async def _stop(self, hosted: HostedModel, reason: str) -> None:
        """Detach and stop the worker; its memory returns to the system when it exits."""
        worker, hosted.worker = hosted.worker, None
        hosted.status, hosted.expires_at = ModelStatus.UNLOADED, None
        if worker is None:
            return
        self.metrics.unloads.labels(hosted.id, reason).inc()
        log.info("model unloaded", extra={"model": hosted.id, "reason": reason})
        await worker.stop()

    def _worker_exited(self, hosted: HostedModel, reason: str, in_flight: list[str]) -> None:
        """Mark the model failed; the log names the requests the worker was serving, not its loader's."""
        if hosted.worker is not None and not hosted.worker.alive:
            hosted.worker = None
            hosted.status, hosted.error = ModelStatus.FAILED, f"worker {reason}"
            self.metrics.worker_crashes.labels(hosted.id).inc()
            log.error("worker died", extra={"model": hosted.id, "reason": reason, "in_flight": in_flight})

    async def load(self, hosted: HostedModel) -> WorkerHandle:
        """Admin load: bring the model in now (evicting idle ones if needed)."""
        worker = await self.ensure_loaded(hosted)
        self.touch(hosted)
        return worker

    async def unload(self, hosted: HostedModel) -> None:
        """Admin unload: wait for the model's running requests, then stop its worker."""
        async with hosted.admission.exclusive(), hosted.load_lock:
            await self._stop(hosted, "requested")
            hosted.error = None

    def touch(self, hosted: HostedModel, keep_alive: float | None | str = DEFAULT) -> None:
        """Record use now and restart the keep-alive clock (`keep_alive` seconds; None keeps it)."""
        seconds = hosted.keep_alive if keep_alive == DEFAULT else keep_alive
        hosted.last_used = time.time()
        hosted.expires_at = None if seconds is None else hosted.last_used + float(seconds)
        if seconds == 0 and hosted.idle() and not hosted.pinned:
            asyncio.get_running_loop().create_task(self._expire(hosted))

    async def _expire(self, hosted: HostedModel) -> None:
        async with hosted.load_lock:
            if hosted.worker is not None and hosted.idle() and not hosted.pinned:
                await self._stop(hosted, "keep_alive")

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.time()
            for hosted in list(self.models.values()):
                if (hosted.worker is not None and not hosted.pinned and hosted.idle()
                        and hosted.expires_at is not None and hosted.expires_at <= now):
                    await self._expire(hosted)

    # -- lifecycle --

    async def start(self) -> None:
        """Begin unloading expired models; then load the `preload` ones (failures are logged)."""
        self._reaper = asyncio.create_task(self._reap())
        for hosted in self.models.values():
            if hosted.config.preload:
                try:
                    await self.load(hosted)
                except LampstandError as exc:
                    log.error("preload failed", extra={"model": hosted.id, "reason": exc.message})

    async def drain(self, timeout: float) -> None:
        """Refuse new requests, give admitted ones `timeout` seconds, then abort the rest."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while not all(m.idle() for m in self.models.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for hosted in self.models.values():
            if hosted.worker is not None and not hosted.idle():
                hosted.worker.abort(ShuttingDown("the server shut down before this request finished"))

    async def close(self) -> None:
        """Stop every worker."""
        self.draining = True
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(self._stop(h, "shutdown") for h in self.models.values() if h.worker is not None))

    def gauges(self) -> PoolGauges:
        """Running, waiting and memory figures for the metrics scrape."""
        used = self.used()
        budget = {"cpu": self.budget.cpu, **({"gpu": self.budget.gpu} if self.budget.gpu is not None else {})}
        return PoolGauges(
            per_model={m.id: (m.admission.running, m.admission.waiting, m.status.value) for m in self.models.values()},
            memory_used={"cpu": used.ram_bytes, **({"gpu": used.vram_bytes} if self.budget.gpu is not None else {})},
            memory_budget=budget,
        )

