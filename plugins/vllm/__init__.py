"""The `vllm` plugin: Hugging Face models through vLLM's async engine (imported only on load)."""

from .plugin import VllmPlugin

__all__ = ["VllmPlugin"]
