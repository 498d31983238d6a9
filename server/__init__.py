"""lampstand's OpenAI-compatible HTTP server: the app factory and its settings."""

from .app import build_state, create_app
from .config import Settings, load_settings

__all__ = ["create_app", "build_state", "Settings", "load_settings"]
