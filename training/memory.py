"""Will the run fit? A rough estimate of training memory, checked before any weight is loaded.

    weights      parameters x bytes per parameter (0.5 + scales for 4-bit)
    lora         trainable parameters x 16 bytes (fp32 value, gradient, two Adam moments)
    activations  per layer and token: ~(12 hidden + 4 intermediate) values kept for backward,
                 or only the layer input with gradient checkpointing (plus one layer recomputed)
    logits       batch x seq x vocab x 4 bytes x 3 (logits, log-softmax, their gradient)
    overhead     the runtime (allocator, kernels, Python): a fixed 400 MiB plus 10%

It errs high on purpose: a refused run costs a flag, an out-of-memory run costs the machine.
`--max-memory` replaces the device's free memory figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lampstand.plugins.errors import InvalidRequest
from lampstand.server.memory import format_size

__all__ = ["MemoryEstimate", "estimate_training_memory", "available_memory", "check_fits", "MemoryRefused"]

_RUNTIME = 400 * 1024**2


class MemoryRefused(InvalidRequest):
    """The run would not fit in the memory the device has."""

    code = "insufficient_memory"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by part, and what the device has."""

    weights: int
    lora: int
    activations: int
    logits: int
    overhead: int
    available: int
    device: str
    available_source: str  # "free RAM", "free GPU memory" or "--max-memory"

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.activations + self.logits + self.overhead

    @property
    def fits(self) -> bool:
        return self.total <= self.available

    def describe(self) -> str:
        """One line with the numbers."""
        return (f"needs about {format_size(self.total)} on {self.device} (weights {format_size(self.weights)}, "
                f"LoRA + optimizer {format_size(self.lora)}, activations {format_size(self.activations)}, "
                f"logits {format_size(self.logits)}, runtime {format_size(self.overhead)}); "
                f"{format_size(self.available)} available ({self.available_source})")


def _config_sizes(config: Any) -> tuple[int, int, int, int]:
    """(hidden, intermediate, layers, vocab) from a transformers config of any common family."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", 0)
    hidden = int(hidden or 0)
    intermediate = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
    layers = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None) or 0
    return hidden, int(intermediate), int(layers), int(getattr(text, "vocab_size", None) or 0)


def estimate_training_memory(config: Any, parameters: int, lora_parameters: int, weight_bytes: float,
                             activation_bytes: int, batch_size: int, seq_len: int, checkpointing: bool,
                             available: int, device: str, available_source: str) -> MemoryEstimate:
    """The estimate for one run; `weight_bytes` per base parameter, `activation_bytes` per value."""
    hidden, intermediate, layers, vocab = _config_sizes(config)
    tokens = batch_size * seq_len
    per_layer_token = (12 * hidden + 4 * intermediate) * activation_bytes
    if checkpointing:
        activations = tokens * (layers * hidden * activation_bytes + per_layer_token)
    else:
        activations = tokens * layers * per_layer_token
    weights = int(parameters * weight_bytes)
    lora = lora_parameters * 16
    logits = tokens * vocab * 4 * 3
    overhead = _RUNTIME + (weights + lora + activations + logits) // 10
    return MemoryEstimate(weights, lora, activations, logits, overhead, available, device, available_source)


def available_memory(device: str) -> int:
    """Free bytes on `device` now: free GPU memory, or RAM available to new allocations."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(estimate: MemoryEstimate) -> None:
    """Refuse a run that will not fit, with the numbers and what to change."""
    if not estimate.fits:
        raise MemoryRefused(f"not enough memory to train: {estimate.describe()}. Lower --batch-size or "
                            "--max-seq-len, add --gradient-checkpointing, or use --qlora on a GPU")
