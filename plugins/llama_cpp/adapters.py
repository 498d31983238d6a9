"""LoRA adapters on one llama.cpp model: load at run time, apply one per request, free.

llama.cpp keeps an adapter beside the base weights and adds its product at compute time,
so loading one reads only the adapter file, and switching between requests is one call
(`llama_set_adapters_lora`) that costs nothing when the adapter is already set. The KV
cache is not: what was computed under one adapter is wrong for another, which is why the
caller keys its prompt cache by `active_key`.
"""

from __future__ import annotations

import ctypes
import threading
import time
from pathlib import Path
from typing import Any

from lampstand.plugins.errors import InvalidRequest, ModelNotFound
from lampstand.plugins.types import AdapterInfo, AdapterLoad, AdapterRef

__all__ = ["LoraAdapters", "AdapterKey"]

AdapterKey = tuple[str, float] | None  # (name, scale) of the adapter set on the context; None for the base


class LoraAdapters:
    """The adapters loaded into one `llama_cpp.Llama`, and which one its context runs with."""

    def __init__(self, base_path: Path) -> None:
        self.base_path = base_path
        self._loaded: dict[str, Any] = {}  # name -> llama_adapter_lora_p
        self.lock = threading.RLock()  # loads run beside a generation; the table is shared
        self.active_key: AdapterKey = None

    def names(self) -> list[str]:
        """Names of the loaded adapters."""
        with self.lock:
            return sorted(self._loaded)

    def load(self, llm: Any, request: AdapterLoad) -> AdapterInfo:
        """Read the adapter file into the model; 400 when it does not fit the base."""
        import llama_cpp

        from .lora_check import check_lora

        path = Path(request.path)
        with self.lock:
            if request.name in self._loaded:
                raise InvalidRequest(f"adapter {request.name!r} is already loaded; unload it first",
                                     param="lora_name")
        check_lora(path, self.base_path)  # damaged, other architecture, missing tensors: 400 here
        started = time.perf_counter()
        pointer = llama_cpp.llama_adapter_lora_init(llm.model, str(path).encode("utf-8"))
        if not pointer:
            raise InvalidRequest(f"llama.cpp could not load adapter {path.name} onto this model",
                                 param="lora_path")
        with self.lock:
            self._loaded[request.name] = pointer
        return AdapterInfo(name=request.name, bytes=path.stat().st_size,
                           seconds=time.perf_counter() - started)

    def unload(self, llm: Any, name: str, before_free: Any = None) -> None:
        """Free the adapter `name` (the caller holds the engine, so no generation on `llm` uses
        it); `before_free(name)` lets other users of the pointer (the batched context) let go."""
        with self.lock:
            pointer = self._loaded.pop(name, None)
        if pointer is None:
            raise ModelNotFound(f"adapter {name!r} is not loaded", param="lora_name")
        if before_free is not None:
            before_free(name)
        if self.active_key is not None and self.active_key[0] == name:
            self._set(llm, None)
        import llama_cpp

        llama_cpp.llama_adapter_lora_free(pointer)

    def pointer(self, name: str) -> Any:
        """The loaded adapter `name` (`llama_adapter_lora_p`); 404 when it is not loaded."""
        with self.lock:
            pointer = self._loaded.get(name)
        if pointer is None:
            raise ModelNotFound(f"adapter {name!r} is not loaded", param="model")
        return pointer

    def apply(self, llm: Any, ref: AdapterRef | None) -> AdapterKey:
        """Set the context to run with `ref` (None: the base alone); returns the cache key."""
        key: AdapterKey = None if ref is None else (ref.name, float(ref.scale))
        if key != self.active_key:
            self._set(llm, ref)
        return key

    def _set(self, llm: Any, ref: AdapterRef | None) -> None:
        import llama_cpp

        if ref is None:
            status = llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
        else:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.pointer(ref.name))
            scales = (ctypes.c_float * 1)(ref.scale)
            status = llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, scales)
        if status != 0:
            self.active_key = ("?", float("nan"))  # unknown: the next request sets its own
            raise InvalidRequest("llama.cpp refused to set the adapter on this model", param="model")
        self.active_key = None if ref is None else (ref.name, float(ref.scale))

    def free_all(self, llm: Any) -> None:
        """Forget every adapter before the model closes (llama.cpp frees them with it)."""
        with self.lock:
            self._loaded.clear()
        self.active_key = None
