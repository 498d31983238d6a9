"""lampstand's plugin contract, registry and built-in backends.

Import from here to write a plugin: subclass `Plugin` plus the interface of each capability
it declares (`ChatModel`, `CompletionModel`, `Embedder`, `Reranker`, `Transcriber`,
`ImageGenerator`, `AdapterHost`; `CONTRACT` maps each capability to its interface and
methods), and register the class under the `lampstand.plugins` entry-point group. The server
checks the class against what it declares when the configuration is read. Importing this
package never imports an engine.
"""

from .contract import (
    CONTRACT,
    AdapterHost,
    Capability,
    ChatModel,
    CompletionModel,
    Embedder,
    Footprint,
    Health,
    ImageGenerator,
    Plugin,
    PluginOptions,
    Reranker,
    Transcriber,
)
from .registry import ENTRY_POINT_GROUP, PluginRegistry, discover_plugins

__all__ = [
    "CONTRACT",
    "AdapterHost",
    "Capability",
    "ChatModel",
    "CompletionModel",
    "Embedder",
    "Footprint",
    "Health",
    "ImageGenerator",
    "Plugin",
    "PluginOptions",
    "Reranker",
    "Transcriber",
    "ENTRY_POINT_GROUP",
    "PluginRegistry",
    "discover_plugins",
]
