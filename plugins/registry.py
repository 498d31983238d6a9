"""Finds installed plugins through the `lampstand.plugins` entry-point group.

Our own backends are registered exactly like a third party's, in pyproject.toml. Loading an
entry point imports only the plugin's class module; engines stay unimported until `load`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from .contract import Capability, Plugin, contract_errors
from .errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "PluginRegistry", "discover_plugins"]

ENTRY_POINT_GROUP = "lampstand.plugins"
log = logging.getLogger(__name__)


@dataclass
class PluginRegistry:
    """Plugin classes by name, plus the entry points that failed to import and why."""

    plugins: dict[str, type[Plugin]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> type[Plugin]:
        """The plugin class called `name`, or a `ConfigError` listing the installed ones."""
        if name in self.plugins:
            return self.plugins[name]
        if name in self.broken:
            raise ConfigError(f"plugin {name!r} is installed but failed to import: {self.broken[name]}")
        known = ", ".join(sorted(self.plugins)) or "none"
        raise ConfigError(f"unknown plugin {name!r} (installed: {known})")

    def check_contract(self, model_id: str, plugin_cls: type[Plugin], capabilities: frozenset[Capability]) -> None:
        """A `ConfigError` when `plugin_cls` lacks an interface or method for what it declares."""
        errors = contract_errors(plugin_cls, capabilities)
        if errors:
            raise ConfigError(f"model {model_id!r}: plugin {plugin_cls.name!r} ({plugin_cls.__module__}."
                              f"{plugin_cls.__qualname__}) " + "; ".join(errors))

    def distribution_of(self, name: str) -> str | None:
        """The distribution that registered plugin `name`, for `lampstand models`."""
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            return ep.dist.name if ep.dist else None
        return None


def discover_plugins() -> PluginRegistry:
    """Import every registered plugin class; a broken one is recorded, never fatal."""
    registry = PluginRegistry()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a third party's import error must not stop the server
            registry.broken[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("plugin %s failed to import: %s", ep.name, exc)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            registry.broken[ep.name] = f"{ep.value} is not a lampstand Plugin subclass"
            continue
        registry.plugins[ep.name] = cls
    return registry
