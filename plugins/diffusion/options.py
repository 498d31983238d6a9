"""Options of the `diffusers` plugin, as written in a `[[models]]` entry."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lampstand.plugins.contract import PluginOptions
from pydantic import Field, field_validator

from .schedulers import SchedulerName

__all__ = ["DiffusersOptions", "MemoryMode", "parse_size"]

MemoryMode = Literal["auto", "full", "slicing", "offload", "sequential_offload"]


def parse_size(text: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" (or one number for a square) as two ints; `ValueError` otherwise."""
    width, x, height = text.lower().partition("x")
    if not x:
        height = width
    if not (width.isdigit() and height.isdigit()):
        raise ValueError(f'{text!r} is not "auto", "WIDTHxHEIGHT" or one number')
    return int(width), int(height)


class DiffusersOptions(PluginOptions):
    """How diffusers loads one Stable Diffusion (1.x/2.x) or SDXL pipeline and how it paints."""

    config: Path | str | None = Field(
        None, description="for a single-file checkpoint: a local diffusers folder (or an HF repo id the "
                          "server has fetched) giving the component configs; default: the usual repo for "
                          "the checkpoint's kind, when it is in the HF cache")
    pipeline: Literal["auto", "sd", "sdxl"] = Field("auto", description="force the pipeline kind")
    scheduler: SchedulerName | None = Field(None, description="sampler; default: the pipeline's own")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description='"auto": float16 on CUDA, float32 on the CPU')
    memory_mode: MemoryMode = Field("auto", description="CUDA memory measures; auto: the least that fits")
    vram_budget: int | Literal["auto"] = Field(
        "auto", description='bytes of GPU memory the pipeline may use; "auto": the card\'s free memory')
    default_steps: int = Field(30, ge=1)
    default_guidance_scale: float = Field(7.5, ge=0.0, le=50.0)
    default_size: str = Field("auto", description='"WIDTHxHEIGHT"; "auto": the UNet\'s native size')
    max_steps: int = Field(150, ge=1)
    max_side: int = Field(2048, ge=64, description="largest width or height in pixels")
    cpu_threads: int = Field(0, ge=0, description="torch threads on the CPU; 0: torch's default")
    lora_cache: int = Field(4, ge=1, description="style LoRAs kept loaded, least recently used evicted")

    @field_validator("vram_budget", mode="before")
    @classmethod
    def _budget_positive(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise ValueError("must be a positive number of bytes or \"auto\"")
        return value

    @field_validator("default_size")
    @classmethod
    def _size_readable(cls, value: str) -> str:
        if value != "auto":
            width, height = parse_size(value)
            if width % 8 or height % 8 or min(width, height) < 64:
                raise ValueError("width and height must be multiples of 8, at least 64")
        return value
