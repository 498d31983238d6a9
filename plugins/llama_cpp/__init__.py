"""The `llama_cpp` plugin: GGUF models through llama-cpp-python (imported only on load)."""

from .plugin import LlamaCppPlugin

__all__ = ["LlamaCppPlugin"]
