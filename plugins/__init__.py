"""The plugin layer: hook specifications, the plugin manager and the (kind, name) registry."""

from .hookspecs import hookimpl, hookspec
from .registry import Registry, get_registry, override, unavailable

__all__ = ["hookimpl", "hookspec", "Registry", "get_registry", "override",
           "unavailable"]
