"""The `transformers_vision` plugin: LLaVA chat about images through Hugging Face transformers."""

from .plugin import TransformersVisionPlugin

__all__ = ["TransformersVisionPlugin"]
