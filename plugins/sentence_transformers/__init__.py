"""The `sentence_transformers` plugin: embedding models and cross-encoders (torch imported only on load)."""

from .plugin import SentenceTransformersPlugin

__all__ = ["SentenceTransformersPlugin"]
