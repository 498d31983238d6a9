"""The LoRA adapters loaded into this server's models: names, bases, files and scales.

An adapter is served under its own model name (and as `BASE:NAME`); a request naming it
runs on its base model's worker with the adapter applied. The registry is the server's
record; each base worker holds the adapter's weights, and gets them all again when it
restarts (`loads_for` goes into its `WorkerSpec`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.types import AdapterLoad, AdapterRef

__all__ = ["LoadedAdapter", "AdapterRegistry", "ADAPTER_NAME"]

ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")


@dataclass
class LoadedAdapter:
    """One adapter the server serves."""

    name: str
    base: str  # the id of the model it runs on
    path: Path  # the GGUF LoRA file
    scale: float = 1.0  # when a request gives no lora_scale
    source: str = ""  # the lora_path the load named
    created: int = field(default_factory=lambda: int(time.time()))
    status: Literal["loading", "loaded"] = "loading"

    def ref(self, scale: float | None = None) -> AdapterRef:
        """What a request carries to the worker to run with this adapter."""
        return AdapterRef(self.name, self.scale if scale is None else scale)


class AdapterRegistry:
    """Adapters by name; a name is reserved from the moment its load starts."""

    def __init__(self) -> None:
        self._by_name: dict[str, LoadedAdapter] = {}

    def __iter__(self) -> Iterator[LoadedAdapter]:
        return iter(list(self._by_name.values()))

    def get(self, name: str) -> LoadedAdapter | None:
        """The adapter called exactly `name`."""
        return self._by_name.get(name)

    def find(self, name: str, model_names: Mapping[str, object]) -> LoadedAdapter | None:
        """The adapter a request's `model` names: `NAME`, or `BASE:NAME` with BASE its model's id or alias."""
        adapter = self._by_name.get(name)
        if adapter is not None:
            return adapter
        base, sep, rest = name.partition(":")
        adapter = self._by_name.get(rest) if sep else None
        if adapter is not None and model_names.get(base) is model_names.get(adapter.base) is not None:
            return adapter
        return None

    def reserve(self, adapter: LoadedAdapter, model_names: Mapping[str, object], per_base: int) -> None:
        """Claim the adapter's name before loading it; 400 for a taken or malformed name."""
        if not ADAPTER_NAME.fullmatch(adapter.name) or adapter.name.startswith("rag:"):
            raise InvalidRequest("lora_name must be 1-128 letters, digits or ._:@+- and start with a letter "
                                 "or digit (and not rag:)", param="lora_name")
        if adapter.name in model_names:
            raise InvalidRequest(f"lora_name {adapter.name!r} is already a model's name", param="lora_name")
        if adapter.name in self._by_name:
            raise InvalidRequest(f"the lora adapter {adapter.name!r} has already been loaded; unload it first",
                                 param="lora_name")
        if sum(a.base == adapter.base for a in self._by_name.values()) >= per_base:
            raise InvalidRequest(f"model {adapter.base!r} already has {per_base} adapters loaded "
                                 "([adapters] max_loaded); unload one first", param="lora_name")
        self._by_name[adapter.name] = adapter

    def remove(self, name: str) -> LoadedAdapter | None:
        """Forget the adapter (its worker must already have freed it, or be gone)."""
        return self._by_name.pop(name, None)

    def loads_for(self, base: str) -> tuple[AdapterLoad, ...]:
        """What a (re)starting worker of `base` loads after its model."""
        return tuple(AdapterLoad(a.name, str(a.path)) for a in self._by_name.values()
                     if a.base == base and a.status == "loaded")
