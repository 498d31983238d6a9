"""Sampler names users write (`scheduler = "dpm++_2m_karras"`) and the diffusers schedulers they mean.

A swap keeps the pipeline's own noise schedule (betas, timestep spacing, prediction type) and
changes only the sampling method: the new scheduler is built `from_config` of the old one,
plus the few settings a name implies. diffusers is imported only inside `swap_scheduler`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SCHEDULERS", "SchedulerName", "swap_scheduler"]

SchedulerName = Literal[
    "euler", "euler_a", "ddim", "dpm++_2m", "dpm++_2m_karras", "dpm++_2m_sde", "dpm++_2m_sde_karras",
    "pndm", "lms", "unipc", "heun",
]


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler class and the settings that make it the named sampler."""

    class_name: str
    settings: dict[str, Any] = field(default_factory=dict)


SCHEDULERS: dict[str, Sampler] = {
    "euler": Sampler("EulerDiscreteScheduler"),
    "euler_a": Sampler("EulerAncestralDiscreteScheduler"),
    "ddim": Sampler("DDIMScheduler"),
    "dpm++_2m": Sampler("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpm++_2m_karras": Sampler("DPMSolverMultistepScheduler",
                               {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++_2m_sde": Sampler("DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False}),
    "dpm++_2m_sde_karras": Sampler("DPMSolverMultistepScheduler",
                                   {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "pndm": Sampler("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": Sampler("LMSDiscreteScheduler"),
    "unipc": Sampler("UniPCMultistepScheduler"),
    "heun": Sampler("HeunDiscreteScheduler"),
}


def swap_scheduler(pipe: Any, name: str) -> None:
    """Give `pipe` the sampler called `name`, on the noise schedule it already has."""
    import diffusers

    sampler = SCHEDULERS[name]
    cls = getattr(diffusers, sampler.class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **sampler.settings)
