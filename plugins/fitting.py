"""What every local backend decides the same way: whether a model will run on CUDA (guessed
before loading, decided at load), the dtype it loads in, and how many tokens an answer may take
in the context that is left. torch is imported only by `cuda_at_load`."""

from __future__ import annotations

import shutil
from dataclasses import replace

from .errors import ContextLengthExceeded, ModelUnavailable
from .types import SamplingParams

__all__ = ["expects_cuda", "cuda_at_load", "default_dtype", "fit_to_context"]


def expects_cuda(device: str) -> bool:
    """Whether a model set to `device` ("auto", "cpu", "cuda") will run on CUDA, decided without
    importing torch (the server asks for estimates in its own process): on "auto", whether an
    NVIDIA driver is installed."""
    if device != "auto":
        return device == "cuda"
    return shutil.which("nvidia-smi") is not None


def cuda_at_load(device: str) -> bool:
    """Whether a model set to `device` loads on CUDA, as torch sees the machine now;
    `ModelUnavailable` when "cuda" is asked for and torch sees none."""
    import torch

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise ModelUnavailable('device = "cuda" but torch sees no CUDA device')
    return available if device == "auto" else device == "cuda"


def default_dtype(dtype: str, on_gpu: bool) -> str:
    """The torch dtype name to load in: the option, or for "auto" float16 on CUDA, float32 on the CPU."""
    if dtype != "auto":
        return dtype
    return "float16" if on_gpu else "float32"


def fit_to_context(n_ctx: int, n_prompt: int, sampling: SamplingParams, *, images: bool = False) -> SamplingParams:
    """`sampling` with max_tokens fitted to the context left after the prompt, or a 400 when an
    explicit max_tokens (or the prompt alone) does not fit. `images`: the prompt counts images."""
    room = n_ctx - n_prompt
    if room <= 0 or (sampling.max_tokens_explicit and sampling.max_tokens > room):
        where = "in the messages, images included" if images else "in the messages"
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{n_prompt + sampling.max_tokens} tokens ({n_prompt} {where}, {sampling.max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.", param="messages")
    return sampling if sampling.max_tokens <= room else replace(sampling, max_tokens=room)
