"""What crosses the pipe between the API process and a worker, besides plugin types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lampstand.plugins.contract import Footprint, Plugin
from lampstand.plugins.types import AdapterLoad

__all__ = ["WorkerSpec", "LoadedInfo"]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to load its model (pickled to the new process)."""

    model_id: str
    plugin_cls: type[Plugin]
    path: Path
    options: Any
    log_level: str = "info"
    log_format: str = "json"
    adapters: tuple[AdapterLoad, ...] = ()  # loaded right after the model, e.g. after a restart


@dataclass(frozen=True)
class LoadedInfo:
    """What a worker reports once its model is loaded."""

    pid: int
    context_length: int | None
    measured: Footprint
