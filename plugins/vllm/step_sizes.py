"""Sequences in each of vLLM's engine steps, for the server's batch-size metric.

vLLM hands each step's scheduler statistics to the stat loggers its `AsyncLLM` was made with.
`StepSizes.logger()` is such a logger (a class: vLLM instantiates it); it keeps the number of
requests running in every step until the worker takes them (`take`), about once a second.
vLLM calls it on its engine loop's thread and the worker takes on another, so a deque carries
them (appends and pops from its two ends are thread-safe). Nothing here imports vLLM at module
import: the base class is imported when the logger is made.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["StepSizes"]

KEPT_STEPS = 100_000  # a worker that is never asked keeps at most this many


class StepSizes:
    """The running-request count of each engine step since the last `take`."""

    def __init__(self) -> None:
        self._sizes: deque[int] = deque(maxlen=KEPT_STEPS)

    def logger(self) -> type:
        """A vLLM stat logger class that records into this object."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        sizes = self._sizes

        class StepSizeLogger(StatLoggerBase):  # type: ignore[misc]
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                       engine_idx: int = 0) -> None:
                running = getattr(scheduler_stats, "num_running_reqs", 0)
                if iteration_stats is not None and running:
                    sizes.append(running)

            def record_admission_rejection(self, reason: str) -> None:
                pass

            def log_engine_initialized(self) -> None:
                pass

        return StepSizeLogger

    def take(self) -> tuple[int, ...]:
        """Every size recorded since the last call, oldest first."""
        taken = []
        while self._sizes:
            taken.append(self._sizes.popleft())
        return tuple(taken)
