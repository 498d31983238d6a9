"""Options of the `vllm` plugin, as written in a `[[models]]` entry.

Most map one to one onto vLLM's engine arguments; `engine_args` hands any other one through
untouched (vLLM itself checks it, and a value it refuses fails the load with its reason).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lampstand.plugins.contract import PluginOptions

__all__ = ["VllmOptions"]


class VllmOptions(PluginOptions):
    """How vLLM loads and serves one Hugging Face model folder or repo."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on the CPU, the checkpoint's own dtype on CUDA")
    max_model_len: int | None = Field(None, ge=16, description="context tokens; default: the model's, at most 4096")
    max_num_seqs: int = Field(16, ge=1, le=1024, description="sequences vLLM schedules at once (the model's slots)")
    kv_cache_tokens: int | None = Field(None, ge=16, description=(
        "tokens of KV cache, shared by every sequence (paged); default: max_num_seqs sequences of "
        "up to 2048 tokens. Its bytes are part of the footprint the memory budget admits"))
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0, description=(
        "vLLM's own share of the device; unset, lampstand sizes the KV cache itself (kv_cache_tokens)"))
    enforce_eager: bool | None = Field(None, description="default: true on the CPU (no graph compile), false on CUDA")
    quantization: str | None = Field(None, description="awq, gptq, fp8, ... where vLLM supports it on the device")
    trust_remote_code: bool = False
    seed: int = 0
    # -- past one device: handed to vLLM as they are ----------------------------------
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = None
    ray_address: str | None = Field(None, description='join this Ray cluster ("auto": the local one); sets RAY_ADDRESS')
    # -- adapters and embeddings ------------------------------------------------------
    enable_lora: bool = Field(True, description="serve PEFT LoRA adapters per request")
    max_lora_rank: int = Field(16, ge=1)
    max_loras: int = Field(4, ge=1, description="adapters one batch may mix")
    embedding: bool = Field(False, description="serve embeddings (vLLM's pooling runner) instead of generation")
    pooling: Literal["model", "mean", "cls", "last"] = "model"
    engine_args: dict[str, Any] = Field(default_factory=dict, description="any other vLLM engine argument")

    @model_validator(mode="after")
    def _no_duplicates(self) -> VllmOptions:
        named = set(type(self).model_fields) - {"engine_args", "embedding", "pooling", "kv_cache_tokens", "ray_address"}
        twice = sorted(named & set(self.engine_args))
        if twice:
            raise ValueError(f"engine_args repeats options of their own: {', '.join(twice)}")
        if self.embedding and self.enable_lora and "enable_lora" in self.model_fields_set:
            raise ValueError("enable_lora needs a generation model; it cannot be set with embedding = true")
        return self
