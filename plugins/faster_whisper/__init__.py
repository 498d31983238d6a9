"""The `faster_whisper` plugin: Whisper speech to text through CTranslate2."""

from .plugin import FasterWhisperPlugin

__all__ = ["FasterWhisperPlugin"]
