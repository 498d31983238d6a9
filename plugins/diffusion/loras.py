"""Style LoRAs kept loaded in one pipeline, applied to one request at a time.

A LoRA file is loaded once with `pipe.load_lora_weights` under an adapter name of its own and
stays in the pipeline, disabled, until `capacity` others have been used since (least recently
used first, freed with `delete_adapters`). A request turns its LoRAs on at its scales with
`set_adapters` and `deactivate` turns every adapter off again, so the next request without
LoRAs runs the base weights exactly. A file is known by its path, modification time and size:
a file rewritten in place is loaded afresh.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.types import StyleLora

__all__ = ["StyleLoraCache"]

log = logging.getLogger(__name__)
FileKey = tuple[str, int, int]  # (path, mtime in ns, size)


class StyleLoraCache:
    """The style LoRAs loaded into `pipe`, at most `capacity` of them."""

    def __init__(self, pipe: Any, capacity: int) -> None:
        self._pipe = pipe
        self.capacity = capacity
        self._adapters: OrderedDict[FileKey, str] = OrderedDict()  # least recently used first

    @property
    def loaded(self) -> list[str]:
        """File names of the LoRAs in the pipeline, least recently used first."""
        return [Path(key[0]).name for key in self._adapters]

    def activate(self, loras: Sequence[StyleLora]) -> None:
        """Load what is missing and turn on exactly `loras`, at their scales."""
        if len(loras) > self.capacity:
            raise InvalidRequest(f"at most {self.capacity} style LoRAs can be applied at once", param="lora")
        keys = [_file_key(lora.path) for lora in loras]
        if len(set(keys)) < len(keys):
            raise InvalidRequest("a style LoRA is named twice; give it one scale", param="lora")
        names = [self._ensure(key, set(keys)) for key in keys]
        if not names:
            self.deactivate()
            return
        self._pipe.enable_lora()
        self._pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])

    def deactivate(self) -> None:
        """Every adapter off: the pipeline computes with its base weights."""
        if self._adapters:
            self._pipe.disable_lora()

    def _ensure(self, key: FileKey, keep: set[FileKey]) -> str:
        if key in self._adapters:
            self._adapters.move_to_end(key)
            return self._adapters[key]
        stale = [k for k in self._adapters if k[0] == key[0]]  # the same path, rewritten since
        self._evict(stale)
        while len(self._adapters) >= self.capacity:
            oldest = next((k for k in self._adapters if k not in keep), None)
            if oldest is None:
                break
            self._evict([oldest])
        name = "style_" + hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        self._load(Path(key[0]), name)
        self._adapters[key] = name
        return name

    def _load(self, path: Path, name: str) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))  # read here so a missing file never turns into a hub lookup
        except (SafetensorError, OSError) as exc:
            raise InvalidRequest(f"style LoRA {path.name!r} is not a readable .safetensors file: {exc}",
                                 param="lora") from exc
        try:
            with _quiet_load_report():
                self._pipe.load_lora_weights(state, adapter_name=name)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:  # not a LoRA, or one for other shapes
            self._forget(name)
            raise InvalidRequest(f"{path.name!r} is not a LoRA for this model: {_first_line(exc)}",
                                 param="lora") from exc
        if not any(name in names for names in self._pipe.get_list_adapters().values()):
            self._forget(name)  # every key was for modules this pipeline does not have
            raise InvalidRequest(f"{path.name!r} is not a LoRA for this model: none of its weights apply",
                                 param="lora")
        log.info("style LoRA loaded", extra={"lora": path.name, "adapter": name})

    def _evict(self, keys: list[FileKey]) -> None:
        for key in keys:
            name = self._adapters.pop(key)
            self._forget(name)
            log.info("style LoRA evicted", extra={"lora": Path(key[0]).name, "adapter": name})

    def _forget(self, name: str) -> None:
        if any(name in names for names in self._pipe.get_list_adapters().values()):
            self._pipe.delete_adapters([name])


@contextmanager
def _quiet_load_report() -> Iterator[None]:
    """transformers logs a "LOAD REPORT" calling every base weight of a text encoder MISSING when
    diffusers loads only a LoRA's weights into it; the base weights are untouched (the tests
    check the base image comes back byte for byte), so the report would only mislead."""
    reporter = logging.getLogger("transformers.utils.loading_report")
    level = reporter.level
    reporter.setLevel(logging.ERROR)
    try:
        yield
    finally:
        reporter.setLevel(level)


def _file_key(path: str) -> FileKey:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InvalidRequest(f"style LoRA {Path(path).name!r} cannot be read: {exc.strerror}", param="lora") from exc
    return path, info.st_mtime_ns, info.st_size


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
