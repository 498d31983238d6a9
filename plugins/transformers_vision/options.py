"""Options of the `transformers_vision` plugin, as written in a `[[models]]` entry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lampstand.plugins.contract import PluginOptions

__all__ = ["TransformersVisionOptions"]


class TransformersVisionOptions(PluginOptions):
    """How transformers loads and runs one LLaVA model."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when torch sees a GPU")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: float16 on CUDA, float32 on CPU")
    load_in_4bit: bool | Literal["auto"] = Field(
        "auto", description="bitsandbytes NF4 weights (CUDA only); auto: on CUDA when bitsandbytes is installed")
    cpu_threads: int = Field(0, ge=0, description="torch threads on CPU; 0: torch's default (all cores)")
    chat_template: str | None = Field(None, description="Jinja source replacing the processor's template")
    max_image_side: int | None = Field(
        None, ge=16, description="shrink larger images to this many pixels per side before the processor "
                                 "(which resizes to the tower's input anyway); saves time on huge photos")
