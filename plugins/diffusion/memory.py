"""How a pipeline fits a GPU memory budget: the plan is a pure function, applying it is not.

`plan_memory` picks the least intrusive measure that fits, in this order:

    full                whole pipeline on the GPU                      fastest
    slicing             + attention slicing, VAE tiling and slicing    a little slower
    offload             one component at a time on the GPU             (model CPU offload)
    sequential_offload  one layer at a time on the GPU                 much slower, fits almost anything

Working memory (activations, the VAE decode, allocator slack) is a rule of thumb in fp16 from
SD 1.5 at 512x512 and SDXL at 1024x1024 on CUDA: about 3.5 KiB a pixel without measures (the
VAE decode dominates), 1 KiB with slicing and tiling. The numbers aim at a 12 GB card: SD 1.5
runs whole, SDXL at 1024x1024 needs slicing, an 8 GB card offloads SDXL.

`plan_memory` never imports torch; `apply_memory_plan` is the only place that touches the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["MemoryPlan", "PlanMode", "apply_memory_plan", "plan_memory", "working_bytes"]

PlanMode = Literal["full", "slicing", "offload", "sequential_offload"]
MODES: tuple[PlanMode, ...] = ("full", "slicing", "offload", "sequential_offload")

MIB = 1024 * 1024
FIXED_WORKING = 256 * MIB  # cuBLAS workspace, text encoding, scheduler state
BYTES_PER_PIXEL = {"full": 3584, "sliced": 1024}
HEADROOM = 0.9  # plan to use 90% of the budget: the allocator fragments
SEQUENTIAL_RESIDENT = 256 * MIB  # the largest single layer of an SDXL UNet, with margin
LARGEST_COMPONENT_SHARE = 0.75  # the UNet's share of the weights when the caller does not know it


@dataclass(frozen=True)
class MemoryPlan:
    """The memory measures for one pipeline and image size, and the GPU memory they need."""

    mode: PlanMode
    vram_bytes: int  # GPU memory the plan needs at its peak
    budget_bytes: int
    fits: bool  # False only when even sequential offload does not fit (or a forced mode does not)

    @property
    def attention_slicing(self) -> bool:
        return self.mode != "full"

    @property
    def vae_tiling(self) -> bool:
        return self.mode != "full"

    @property
    def offloads(self) -> bool:
        return self.mode in ("offload", "sequential_offload")

    def describe(self) -> str:
        gib = 1024 * MIB
        return (f"{self.mode}: needs {self.vram_bytes / gib:.1f} GiB of a {self.budget_bytes / gib:.1f} GiB "
                f"budget{'' if self.fits else ' (does not fit; expect out-of-memory errors)'}")


def working_bytes(width: int, height: int, sliced: bool) -> int:
    """GPU memory one image of `width` x `height` needs beyond the weights (fp16, guidance on)."""
    return FIXED_WORKING + width * height * BYTES_PER_PIXEL["sliced" if sliced else "full"]


def _need(mode: PlanMode, weights: int, largest: int, width: int, height: int) -> int:
    resident = {"full": weights, "slicing": weights, "offload": largest, "sequential_offload": SEQUENTIAL_RESIDENT}
    return resident[mode] + working_bytes(width, height, sliced=mode != "full")


def plan_memory(weights_bytes: int, width: int, height: int, budget_bytes: int, *,
                largest_component_bytes: int | None = None, force: PlanMode | None = None) -> MemoryPlan:
    """The least intrusive plan whose need fits `budget_bytes` (or the `force`d one, sized)."""
    largest = largest_component_bytes or int(weights_bytes * LARGEST_COMPONENT_SHARE)
    usable = int(budget_bytes * HEADROOM)
    for mode in (force,) if force else MODES:
        need = _need(mode, weights_bytes, largest, width, height)
        if need <= usable or force:
            return MemoryPlan(mode, need, budget_bytes, fits=need <= usable)
    last: PlanMode = "sequential_offload"
    return MemoryPlan(last, _need(last, weights_bytes, largest, width, height), budget_bytes, fits=False)


def apply_memory_plan(pipe: Any, plan: MemoryPlan, device: str) -> None:
    """Put `pipe` on `device` under `plan`'s measures (once, right after loading)."""
    if plan.mode == "offload":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.mode == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if plan.attention_slicing:
        pipe.enable_attention_slicing()
    if plan.vae_tiling:
        pipe.vae.enable_tiling()
        pipe.vae.enable_slicing()
