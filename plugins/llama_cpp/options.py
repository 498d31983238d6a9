"""Options of the `llama_cpp` plugin, as written in a `[[models]]` entry."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lampstand.plugins.contract import PluginOptions

__all__ = ["LlamaCppOptions", "VisionChatFormat"]

# llama-cpp-python's multimodal chat handlers whose prompt format lampstand renders (see vision.py)
VisionChatFormat = Literal[
    "llava-1-5", "llava-1-6", "obsidian", "moondream2", "nanollava", "llama-3-vision-alpha", "minicpm-v-2.6",
]


class LlamaCppOptions(PluginOptions):
    """How llama.cpp loads and samples one GGUF model."""

    n_ctx: int = Field(4096, ge=64, description="context tokens; capped at the model's training context")
    n_batch: int = Field(512, ge=1)
    cache_chunk: int = Field(128, ge=8, description=(
        "prompts are read in pieces of this many tokens; with flash_attn, KV is reused only in aligned chunks of it"))
    n_threads: int | None = Field(None, ge=1, description="default: all cores")
    n_threads_batch: int | None = Field(None, ge=1, description="threads for reading prompts; default: n_threads")
    n_gpu_layers: int = Field(0, ge=-1, description="-1 offloads every layer")
    flash_attn: bool = Field(False, description=(
        "flash attention; on CPU, llama.cpp computes a lone sequence's next token over 512 or more "
        "KV cells with another kernel than several sequences' tokens, so with it a greedy answer with "
        "a long context can differ alone and beside other requests (without it, it cannot)"))
    use_mmap: bool = True
    embedding: bool = Field(False, description="serve embeddings instead of text generation")
    pooling: Literal["model", "mean", "cls", "last"] = "model"
    chat_template: str | None = Field(None, description="Jinja source replacing the GGUF's template")
    top_k: int = Field(40, ge=0, description="default when a request names none")
    min_p: float = Field(0.05, ge=0.0, le=1.0, description="default when a request names none")
    repeat_penalty: float = Field(1.0, gt=0.0)
    parallel: int = Field(4, ge=1, le=64, description=(
        "requests decoded together (continuous batching), each with n_ctx tokens of KV (the memory "
        "estimate counts all of them); 1: one request at a time on the model's own context"))
    mmproj: Path | None = Field(None, description="LLaVA-style projector GGUF; the model then reads images")
    chat_handler: VisionChatFormat = Field(
        "llava-1-5", description="prompt format of chats with images (llama-cpp-python's handler name)")

    @model_validator(mode="after")
    def _chunk_fits_batch(self) -> LlamaCppOptions:
        if self.cache_chunk > self.n_batch:
            raise ValueError("cache_chunk must not be larger than n_batch")
        if self.mmproj is not None and self.embedding:
            raise ValueError("mmproj needs a generation model; it cannot be set with embedding = true")
        return self
