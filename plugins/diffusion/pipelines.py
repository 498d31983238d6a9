"""Loading a `ModelSource` into a diffusers pipeline object, offline.

Everything loads with `local_files_only=True`: a folder from itself, a single checkpoint with
the component configs of a local folder (`config`), so no call here reaches the network.
The safety checker of an SD folder is left out unless asked for: it costs 1.2 GB and blacks
out images, which a local server's owner decides on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lampstand.plugins.errors import ModelUnavailable

from .model_files import ModelSource

__all__ = ["load_pipeline"]

PIPELINE_CLASS_NAMES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}


def load_pipeline(source: ModelSource, config_folder: Path | None, dtype: Any, safety_checker: bool) -> Any:
    """The pipeline of `source` in `dtype`, on the CPU; `ModelUnavailable` when it cannot load."""
    import diffusers

    cls = getattr(diffusers, PIPELINE_CLASS_NAMES[source.kind])
    extra: dict[str, Any] = {}
    if source.kind == "sd" and not safety_checker:
        extra = {"safety_checker": None, "requires_safety_checker": False}
    extra[_dtype_keyword()] = dtype
    try:
        if source.single_file:
            return cls.from_single_file(str(source.path), config=str(config_folder), local_files_only=True,
                                        **extra)
        return cls.from_pretrained(str(source.path), local_files_only=True, **extra)
    except Exception as exc:  # missing component, shapes that do not match the configs, damaged weights
        raise ModelUnavailable(f"diffusers could not load {source.path.name} as {cls.__name__}: "
                               f"{_first_line(exc)}") from exc


def _dtype_keyword() -> str:
    """`dtype` where diffusers has deprecated `torch_dtype` (diffusers PR 14205), else `torch_dtype`."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
