"""lampstand's plugin contract, registry and built-in backends.

Import from here to write a plugin: subclass `Plugin` plus the capability interfaces it
serves (`ChatModel`, `CompletionModel`, `Embedder`, `Transcriber`), and register the class
under the `lampstand.plugins` entry-point group. Importing this package never imports an engine.
"""

from .contract import (
    Capability,
    ChatModel,
    CompletionModel,
    Embedder,
    Footprint,
    Health,
    Plugin,
    PluginOptions,
    Transcriber,
)
from .registry import ENTRY_POINT_GROUP, PluginRegistry, discover_plugins

__all__ = [
    "Capability",
    "ChatModel",
    "CompletionModel",
    "Embedder",
    "Footprint",
    "Health",
    "Plugin",
    "PluginOptions",
    "Transcriber",
    "ENTRY_POINT_GROUP",
    "PluginRegistry",
    "discover_plugins",
]
