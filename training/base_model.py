"""The model a run trains on: find it from `--base`, then load its config, tokenizer and weights.

`--base` may be a served model id or alias from the config, a GGUF file, a Hugging Face folder,
or a Hugging Face repo id (fetched through huggingface_hub; offline, a missing repo is one
`ModelUnavailable` line). GGUF weights are dequantised to floats by transformers for training
(`base_cache` keeps a dequantised copy that a source's `cached` points the loaders at).
Finding (`resolve_base`) is cheap and never loads weights; the `load_*` functions do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lampstand.plugins.errors import InvalidRequest, ModelUnavailable
from lampstand.plugins.sources import fetch_from_hub, resolve_local

from .manifest import file_sha256

if TYPE_CHECKING:
    from lampstand.server.config import Settings

__all__ = ["BaseSource", "resolve_base", "load_base_config", "load_tokenizer", "load_model", "base_sha256"]

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]


@dataclass(frozen=True)
class BaseSource:
    """Where the base model's files are, and what the server calls it."""

    source: str  # what --base said
    path: Path  # a .gguf file or a Hugging Face folder
    served_id: str | None  # the configured model with these weights, if any
    cached: Path | None = None  # a Hugging Face folder with the GGUF's dequantised weights, loaded instead

    @property
    def gguf(self) -> Path | None:
        """The GGUF file, when the base is one."""
        return self.path if self.path.is_file() else None

    def from_pretrained_args(self) -> tuple[str, dict[str, Any]]:
        """The folder and keyword arguments transformers' `from_pretrained` takes for this base."""
        if self.cached is not None:
            return str(self.cached), {}
        if self.gguf is not None:
            return str(self.path.parent), {"gguf_file": self.path.name}
        return str(self.path), {}


def _local(path: Path, source: str) -> Path:
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise InvalidRequest(f"--base {source}: expected a .gguf file or a Hugging Face model folder (with config.json)")


def _served_path(model: Any) -> Path:
    if model.path is not None:
        path = resolve_local(model.path, model.id)
    else:
        path = fetch_from_hub(model.hf, model.file, model.id)
    return _local(path, model.id)


def resolve_base(base: str, settings: Settings) -> BaseSource:
    """Find the base model's files without loading them."""
    for model in settings.models:
        if base == model.id or base in model.aliases:
            return BaseSource(base, _served_path(model), model.id)
    path = Path(base).expanduser()
    if path.exists():
        resolved = _local(path.resolve(), base)
        served = next((m.id for m in settings.models
                       if m.path is not None and m.path.expanduser().resolve() == resolved), None)
        return BaseSource(base, resolved, served)
    if REPO_ID.match(base):
        return BaseSource(base, _local(_fetch_repo(base), base), None)
    names = ", ".join(name for m in settings.models for name in (m.id, *m.aliases)) or "none configured"
    raise InvalidRequest(f"--base {base}: not a served model ({names}), an existing file or folder, "
                         "or a Hugging Face repo id")


def _fetch_repo(repo_id: str) -> Path:
    """A Hugging Face model repo's config, tokenizer and safetensors weights (from the cache offline)."""
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=HUB_FILES))
    except Exception as exc:  # offline, missing repo, auth: all mean the same to the user
        raise ModelUnavailable(f"--base {repo_id}: cannot get it from Hugging Face and it is not in the local "
                               f"cache ({constants.HF_HUB_CACHE}): {type(exc).__name__}") from exc


def base_sha256(source: BaseSource, hash_file: Callable[[Path], str] = file_sha256) -> str:
    """The GGUF file's sha256; for a folder, the sha256 of its weight files' names and hashes."""
    if source.gguf is not None:
        return hash_file(source.gguf)
    digest = hashlib.sha256()
    for weight in sorted(p for p in source.path.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(f"{weight.name} {hash_file(weight)}\n".encode())
    return digest.hexdigest()


def _unavailable(source: BaseSource, what: str, exc: Exception) -> ModelUnavailable:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelUnavailable(f"--base {source.source}: cannot load its {what}: {detail}")


def load_base_config(source: BaseSource) -> Any:
    """The transformers config (architecture, sizes), read without the weights."""
    from transformers import AutoConfig

    folder, kwargs = source.from_pretrained_args()
    try:
        return AutoConfig.from_pretrained(folder, **kwargs)
    except Exception as exc:  # unsupported GGUF architecture, damaged file: one line for the user
        raise _unavailable(source, "config", exc) from exc


def load_tokenizer(source: BaseSource) -> Any:
    """The base model's tokenizer (a fast one: encoding needs character offsets)."""
    from transformers import AutoTokenizer

    folder, kwargs = source.from_pretrained_args()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except Exception as exc:
        raise _unavailable(source, "tokenizer", exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelUnavailable(f"--base {source.source}: needs a fast tokenizer (character offsets)")
    return tokenizer


def load_model(source: BaseSource, dtype: Any, device: str, quantization: Any = None, config: Any = None) -> Any:
    """The causal LM's weights in `dtype` on `device` (4-bit when `quantization` is given).

    Pass the `load_base_config` result as `config`: for a GGUF, transformers would read it again.
    """
    from transformers import AutoModelForCausalLM

    folder, kwargs = source.from_pretrained_args()
    kwargs["dtype"] = dtype
    if config is not None:
        kwargs["config"] = config
    if quantization is not None:
        kwargs |= {"quantization_config": quantization, "device_map": {"": device}}
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except Exception as exc:
        raise _unavailable(source, "weights", exc) from exc
    return model if quantization is not None else model.to(device)  # type: ignore[arg-type]
