"""The `sentence_transformers` plugin: embedding models (torch imported only on load)."""

from .plugin import SentenceTransformersPlugin

__all__ = ["SentenceTransformersPlugin"]
