"""Prometheus metrics, named the way vLLM users know them, under the `lampstand:` prefix.

One `Metrics` per app (its own registry, so several apps in one process never collide).
Gauges that describe the pool (requests running and waiting, memory in use) are read at
scrape time from the pool itself, so they can never drift from the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lampstand.plugins.contract import EngineStats

__all__ = ["Metrics", "PoolGauges", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "lampstand:"
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                    20.0, 40.0, 80.0, 160.0, 640.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class PoolGauges:
    """What the pool reports at scrape time: per model (running, waiting, status) and per device bytes."""

    per_model: dict[str, tuple[int, int, str]]
    memory_used: dict[str, int]
    memory_budget: dict[str, int]


class _PoolCollector(Collector):
    def __init__(self, read: Callable[[], PoolGauges]) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauges = self.read()
        running = GaugeMetricFamily(PREFIX + "num_requests_running", "Requests running on a model.",
                                    labels=["model_name"])
        waiting = GaugeMetricFamily(PREFIX + "num_requests_waiting", "Requests queued for a model.",
                                    labels=["model_name"])
        loaded = GaugeMetricFamily(PREFIX + "model_loaded", "1 when the model is loaded.", labels=["model_name"])
        for model, (run, wait, status) in gauges.per_model.items():
            running.add_metric([model], run)
            waiting.add_metric([model], wait)
            loaded.add_metric([model], 1 if status == "loaded" else 0)
        used = GaugeMetricFamily(PREFIX + "memory_used_bytes", "Memory held by loaded models, per device.",
                                 labels=["device"])
        for device, value in gauges.memory_used.items():
            used.add_metric([device], value)
        budget = GaugeMetricFamily(PREFIX + "memory_budget_bytes", "Memory budget, per device.",
                                   labels=["device"])
        for device, value in gauges.memory_budget.items():
            budget.add_metric([device], value)
        yield from (running, waiting, loaded, used, budget)


class Metrics:
    """Every counter and histogram lampstand exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        model = ["model_name"]
        r = self.registry
        self.rejected = Counter(PREFIX + "num_requests_rejected", "Requests refused before any work (429/503).",
                                model + ["reason"], registry=r)
        self.success = Counter(PREFIX + "request_success", "Finished generation requests.",
                               model + ["finished_reason"], registry=r)
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Time to first token.", model,
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram(PREFIX + "inter_token_latency_seconds", "Time between streamed tokens.", model,
                             buckets=_ITL_BUCKETS, registry=r)
        self.batch_size = Histogram(PREFIX + "batch_size", "Sequences decoded together in one engine step "
                                    "(continuous batching).", model, buckets=_BATCH_BUCKETS, registry=r)
        self.embedding_batch = Histogram(PREFIX + "embedding_batch_size", "Embedding requests served by one "
                                         "encode (coalesced while the model was busy).", model,
                                         buckets=_BATCH_BUCKETS, registry=r)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "Request latency, arrival to last token.",
                             model, buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens processed.", model, registry=r)
        self.generation_tokens = Counter(PREFIX + "generation_tokens", "Tokens generated.", model, registry=r)
        self.audio_seconds = Counter(PREFIX + "audio_seconds", "Seconds of audio transcribed or translated.",
                                     model, registry=r)
        self.image_steps = Counter(PREFIX + "image_steps", "Denoising steps run for image generation.",
                                   model, registry=r)
        self.image_step_seconds = Histogram(PREFIX + "image_step_seconds", "Time per denoising step.", model,
                                            buckets=_ITL_BUCKETS + (5.0, 10.0, 30.0), registry=r)
        self.images_generated = Counter(PREFIX + "images_generated", "Images generated.", model, registry=r)
        self.image_generations_cancelled = Counter(
            PREFIX + "image_generations_cancelled", "Image requests stopped before they finished.", model, registry=r)
        self.loads = Counter(PREFIX + "model_loads", "Model loads, by outcome.", model + ["outcome"], registry=r)
        self.load_seconds = Histogram(PREFIX + "model_load_seconds", "Time to load a model into its worker.",
                                      model, buckets=_LOAD_BUCKETS, registry=r)
        self.evictions = Counter(PREFIX + "model_evictions", "Models unloaded to make room for another.",
                                 model, registry=r)
        self.unloads = Counter(PREFIX + "model_unloads", "Models unloaded, by reason.", model + ["reason"],
                               registry=r)
        self.worker_crashes = Counter(PREFIX + "worker_crashes", "Worker processes that died unasked.", model,
                                      registry=r)

    def observe_engine(self, model: str, stats: EngineStats) -> None:
        """A batching engine's report: the size of each step it ran."""
        histogram = self.batch_size.labels(model)
        for size in stats.batch_sizes:
            histogram.observe(size)

    def watch_pool(self, read: Callable[[], PoolGauges]) -> None:
        """Report the pool's gauges at every scrape."""
        self.registry.register(_PoolCollector(read))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

