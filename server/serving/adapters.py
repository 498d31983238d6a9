"""Loading and unloading LoRA adapters in the running server (vLLM's two routes).

A load names a folder (or a `.gguf` file) inside `[adapters] dir`; the base's plugin says which
form it loads (`AdapterHost.adapter_files`): the folder's GGUF LoRA (llama.cpp) or the folder of
peft's files (vLLM). The adapter's manifest, when it has one, names the base it was trained on;
a base file with another sha256 is refused. The base worker checks the adapter against the model
(architecture, tensors, shapes) before its engine reads it, and loads it beside the request it may
be serving: the base never stops and is never reloaded.
"""

from __future__ import annotations

import asyncio
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from lampstand.plugins.contract import LOAD_ADAPTER, UNLOAD_ADAPTER, Capability
from lampstand.plugins.errors import FeatureDisabled, InvalidRequest, ModelNotFound, PathNotAllowed
from lampstand.plugins.paths import confine, confine_absolute
from lampstand.plugins.sources import resolve_local
from lampstand.plugins.types import AdapterInfo, AdapterLoad
from lampstand.training.base_cache import is_complete
from lampstand.training.base_model import BaseSource
from lampstand.training.base_model import base_sha256 as folder_sha256
from lampstand.training.manifest import (
    MANIFEST_FILE,
    PEFT_WEIGHTS_FILE,
    AdapterManifest,
    file_sha256,
    find_gguf,
    holds_peft,
    read_manifest,
)

from .. import protocol as p
from ..adapters import LoadedAdapter
from ..config import AdapterSettings
from ..model_pool import HostedModel, ModelPool

__all__ = ["load_adapter", "unload_adapter", "adapter_card", "adapter_model_cards", "adapter_files",
           "resolve_adapter_file"]


def _require_hot_load(settings: AdapterSettings) -> None:
    if not settings.hot_load:
        raise FeatureDisabled("loading LoRA adapters at run time is off; set hot_load = true under [adapters]")


def resolve_adapter_file(lora_path: str, root: Path, files: Literal["gguf", "peft"] = "gguf") -> tuple[
        Path, AdapterManifest | None]:
    """The adapter `lora_path` names inside `root` in the form its base loads (`AdapterHost.adapter_files`):
    a GGUF LoRA file, or a folder of peft's files; and its folder's manifest if any."""
    found, manifest = _locate(lora_path, root)
    return _adapter_file(found, manifest, lora_path, root, files), manifest


def _locate(lora_path: str, root: Path) -> tuple[Path, AdapterManifest | None]:
    """The file or folder `lora_path` names, confined to `root`, and its folder's manifest."""
    try:
        if os.path.isabs(lora_path) or lora_path.startswith("~"):
            found = confine_absolute(lora_path, [root], "adapters dir")
        else:
            found = confine(lora_path, [root], allow_dirs=True, what="adapters dir")
    except PathNotAllowed as exc:
        exc.param = "lora_path"
        raise
    folder = found if found.is_dir() else found.parent
    return found, read_manifest(folder) if (folder / MANIFEST_FILE).is_file() else None


def _adapter_file(found: Path, manifest: AdapterManifest | None, lora_path: str, root: Path,
                  files: Literal["gguf", "peft"]) -> Path:
    if files == "peft":
        folder = found if found.is_dir() else found.parent
        if not holds_peft(folder):
            raise InvalidRequest(f"{lora_path!r} holds no PEFT adapter ({PEFT_WEIGHTS_FILE}); this model "
                                 "loads PEFT adapters", param="lora_path")
        return folder
    if found.is_dir():
        gguf = find_gguf(found, manifest)
        if gguf is None:
            if holds_peft(found):
                raise InvalidRequest(f"{lora_path!r} holds a PEFT adapter but no GGUF LoRA; convert it with "
                                     f"`lampstand adapters convert {lora_path}`", param="lora_path")
            raise InvalidRequest(f"{lora_path!r} holds no .gguf adapter", param="lora_path")
        return confine_absolute(str(gguf), [root], "adapters dir")
    if found.suffix.lower() != ".gguf":
        raise InvalidRequest(f"{lora_path!r}: adapters are loaded as GGUF LoRA files (.gguf); convert a PEFT "
                             "adapter with `lampstand adapters convert`", param="lora_path")
    return found


def adapter_files(hosted: HostedModel) -> Literal["gguf", "peft"]:
    """The form of adapter `hosted`'s plugin loads."""
    return getattr(hosted.plugin_cls, "adapter_files", "gguf")


@lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def base_sha256(path: Path) -> str:
    """The base model file's sha256, computed once per file version."""
    info = path.stat()
    return _sha256(path, info.st_size, info.st_mtime_ns)


def _takes_adapters(hosted: HostedModel) -> bool:
    return Capability.ADAPTERS in hosted.capabilities


def _base_model(pool: ModelPool, body: p.LoadLoraAdapterRequest, manifest: AdapterManifest | None) -> HostedModel:
    name = body.base_model or (manifest.base.id if manifest and manifest.base.id in pool.names else None)
    if name:
        try:
            hosted = pool.lookup(name)
        except ModelNotFound as exc:
            exc.param = "base_model"
            raise
    else:
        hosts = [h for h in pool.models.values() if _takes_adapters(h)]
        if len(hosts) != 1:
            raise InvalidRequest("name the model the adapter runs on in base_model "
                                 f"({len(hosts)} models take adapters)", param="base_model")
        hosted = hosts[0]
    if not _takes_adapters(hosted):
        raise InvalidRequest(f"model {hosted.id!r} (plugin {hosted.plugin_cls.name}) does not take LoRA adapters",
                             param="base_model")
    return hosted


def served_base_sha256s(path: Path) -> set[str]:
    """The base sha256 an adapter's manifest may name to run on the model served from `path`:
    a file's sha256; for a model folder, the trainer's digest of its weights and, when it is the
    trainer's dequantised copy of a GGUF (`training/base_cache`), that GGUF's sha256, its name."""
    if not path.is_dir():
        return {base_sha256(path)}
    found = {folder_sha256(BaseSource(str(path), path, None), hash_file=base_sha256)}
    return found | {path.name} if is_complete(path) else found


async def _check_base(hosted: HostedModel, manifest: AdapterManifest | None, lora_name: str) -> None:
    """400 when the manifest says the adapter was trained on another base."""
    if manifest is None or not manifest.base.sha256 or hosted.config.path is None:
        return
    path = resolve_local(hosted.config.path, hosted.id)
    served = await asyncio.to_thread(served_base_sha256s, path)
    if manifest.base.sha256 not in served:
        raise InvalidRequest(
            f"adapter {lora_name!r} was trained on a base file with sha256 {manifest.base.sha256[:12]}..., "
            f"but model {hosted.id!r} is {min(served)[:12]}...: train it on this model or load it onto its own base",
            param="base_model")


async def load_adapter(pool: ModelPool, settings: AdapterSettings, body: p.LoadLoraAdapterRequest,
                       *, check_enabled: bool = True) -> p.LoraAdapterCard:
    """Load the adapter into its base model's worker and serve it under `lora_name`."""
    if check_enabled:
        _require_hot_load(settings)
    found, manifest = await asyncio.to_thread(_locate, body.lora_path, settings.dir)
    hosted = _base_model(pool, body, manifest)
    path = await asyncio.to_thread(_adapter_file, found, manifest, body.lora_path, settings.dir, adapter_files(hosted))
    await _check_base(hosted, manifest, body.lora_name)
    adapter = LoadedAdapter(body.lora_name, hosted.id, path, body.scale, source=body.lora_path)
    pool.adapters.reserve(adapter, pool.names, settings.max_loaded)
    try:
        async with pool.using(hosted) as worker:
            info: AdapterInfo = await worker.call(LOAD_ADAPTER, AdapterLoad(adapter.name, str(path)))
    except BaseException:
        pool.adapters.remove(adapter.name)
        raise
    adapter.status = "loaded"
    return adapter_card(adapter, info)


async def unload_adapter(pool: ModelPool, settings: AdapterSettings, body: p.UnloadLoraAdapterRequest,
                         *, check_enabled: bool = True) -> p.LoraAdapterCard:
    """Stop serving the adapter once the requests using it finish, and free it."""
    if check_enabled:
        _require_hot_load(settings)
    adapter = pool.adapters.get(body.lora_name)
    if adapter is None or adapter.status != "loaded":
        raise ModelNotFound(f"the lora adapter {body.lora_name!r} is not loaded", param="lora_name")
    hosted = pool.lookup(adapter.base)
    adapter.status = "loading"  # no new load under this name meanwhile
    try:
        if hosted.worker is not None and hosted.worker.alive:
            async with pool.using(hosted) as worker:
                await worker.call(UNLOAD_ADAPTER, adapter.name)
    except ModelNotFound:
        pass  # the worker restarted without it
    except BaseException:
        adapter.status = "loaded"
        raise
    pool.adapters.remove(adapter.name)
    return adapter_card(adapter)


def adapter_card(adapter: LoadedAdapter, info: AdapterInfo | None = None) -> p.LoraAdapterCard:
    """The answer to a load or unload."""
    return p.LoraAdapterCard(id=adapter.name, parent=adapter.base, root=adapter.source, scale=adapter.scale,
                             created=adapter.created, bytes=info.bytes if info else None,
                             load_seconds=round(info.seconds, 4) if info else None)


def adapter_model_cards(pool: ModelPool) -> list[p.ModelCard]:
    """One `/v1/models` entry per loaded adapter, with `parent` = its base."""
    cards = []
    for adapter in pool.adapters:
        if adapter.status != "loaded":
            continue
        base = pool.lookup(adapter.base)
        cards.append(p.ModelCard(
            id=adapter.name, created=adapter.created, owned_by="lampstand", parent=base.id, root=adapter.source,
            capabilities=sorted(c.value for c in base.capabilities if c in (Capability.CHAT, Capability.COMPLETIONS)),
            status=base.status.value, plugin=base.plugin_cls.name))
    return cards
