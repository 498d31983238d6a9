"""LoRA on the base model: which linear layers get adapters, precision, QLoRA, checkpointing.

Default targets come from a table keyed by the transformers `model_type`; an architecture
not in it gets every linear layer but the output head (peft's "all-linear"). Targets are
checked against the model's real linear layers first, so a typo names what is there instead
of failing deep inside peft. QLoRA (bitsandbytes 4-bit) needs CUDA.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from lampstand.plugins.errors import InvalidRequest

__all__ = ["DEFAULT_TARGETS", "Precision", "default_targets", "linear_layers", "check_targets", "lora_parameter_count",
           "choose_precision", "quantization_config", "apply_lora", "skeleton_model"]

_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": _LLAMA_LIKE, "mistral": _LLAMA_LIKE, "mixtral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": _LLAMA_LIKE, "qwen3": _LLAMA_LIKE, "gemma": _LLAMA_LIKE, "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE, "stablelm": _LLAMA_LIKE, "starcoder2": ("q_proj", "k_proj", "v_proj", "o_proj",
                                                                     "c_fc", "c_proj"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "falcon": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "bloom": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}


@dataclass(frozen=True)
class Precision:
    """The dtypes a run uses: weights, autocast (None: no autocast), and whether to scale the loss."""

    name: str
    device: str
    weights: Any  # torch.dtype
    autocast: Any  # torch.dtype | None
    grad_scaler: bool


def skeleton_model(config: Any) -> Any:
    """The model built on the meta device: its layers and sizes, with no memory for weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def linear_layers(model: Any) -> dict[str, tuple[int, int]]:
    """Full name -> (in, out) features of every linear layer but the output head."""
    import torch
    from transformers.pytorch_utils import Conv1D

    output = model.get_output_embeddings()
    layers = {}
    for name, module in model.named_modules():
        if module is output:
            continue
        if isinstance(module, torch.nn.Linear):
            layers[name] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # gpt2-style: weight is (in, out)
            layers[name] = tuple(module.weight.shape)  # type: ignore[assignment]
    return layers


def default_targets(model_type: str, layers: dict[str, tuple[int, int]]) -> list[str]:
    """The table's targets for `model_type`, or every linear layer's short name."""
    known = DEFAULT_TARGETS.get(model_type)
    names = {name.rsplit(".", 1)[-1] for name in layers}
    if known and all(t in names for t in known):
        return list(known)
    return sorted(names)


def _matches(target: str, name: str) -> bool:
    return name == target or name.endswith("." + target)


def check_targets(targets: list[str], layers: dict[str, tuple[int, int]], model_type: str) -> None:
    """Raise naming the available linear layers when a target matches none."""
    missing = [t for t in targets if not any(_matches(t, name) for name in layers)]
    if missing:
        available = ", ".join(sorted({name.rsplit(".", 1)[-1] for name in layers}))
        raise InvalidRequest(f"--target-modules {', '.join(missing)}: no such linear layer in this "
                             f"{model_type} model; it has: {available}")


def lora_parameter_count(targets: list[str], layers: dict[str, tuple[int, int]], rank: int) -> int:
    """Trainable parameters LoRA adds: rank x (in + out) per targeted layer."""
    return sum(rank * (fin + fout) for name, (fin, fout) in layers.items()
               if any(_matches(t, name) for t in targets))


def choose_precision(requested: str, qlora: bool) -> Precision:
    """fp32 on CPU; bf16 (or fp16 where bf16 is missing) on a GPU; errors for what cannot run."""
    import torch

    cuda = torch.cuda.is_available()
    if qlora and not cuda:
        raise InvalidRequest("--qlora needs a CUDA GPU (bitsandbytes 4-bit); this machine has none: "
                             "train without --qlora")
    if not cuda:
        if requested == "fp16":
            raise InvalidRequest("--precision fp16 needs a GPU; on CPU use fp32 (the default) or bf16")
        dtype = torch.bfloat16 if requested == "bf16" else torch.float32
        return Precision("bf16" if requested == "bf16" else "fp32", "cpu", dtype, None, False)
    name = requested if requested != "auto" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        raise InvalidRequest("--precision bf16 is not supported by this GPU: use fp16")
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
    # fp16 weights overflow in training: keep them fp32 and autocast; bf16 weights are fine.
    weights = torch.float32 if name in ("fp32", "fp16") else half
    return Precision(name, "cuda", weights, half, name == "fp16")


def quantization_config(precision: Precision) -> Any:
    """bitsandbytes NF4 settings for QLoRA, computing in the run's half precision."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise InvalidRequest("--qlora needs bitsandbytes: pip install bitsandbytes") from exc
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=precision.autocast)


def apply_lora(model: Any, targets: list[str], rank: int, alpha: float, dropout: float,
               quantized: bool, gradient_checkpointing: bool) -> Any:
    """The peft model: base frozen, LoRA adapters (fp32) on `targets`."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,  # type: ignore[arg-type]  # a float works target_modules=targets,
                        bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft still asks transformers the deprecated way
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)
