"""The plugin manager: built-ins, then entry points (group ``infoblocks``), then checks.

Load order and failure policy live in :meth:`InfoblocksPlugins.load`: a plugin that fails to
import, declares a misspelt hook, or returns something that is not a block is reported with
its name, package and error and skipped; ``strict=True`` (or ``INFOBLOCKS_STRICT_PLUGINS=1``)
raises instead.  Nothing happens at import: the manager is built by :func:`get_plugin_manager`.
"""

from __future__ import annotations

import os
import warnings
from importlib import metadata
from typing import Any

import attrs
import pluggy

from infoblocks.blocks.base import BLOCK_KINDS
from infoblocks.blocks.errors import InfoblocksError, PluginError

from . import hookspecs
from .registry import Registry

ENTRY_POINT_GROUP = "infoblocks"
BUILTIN_NAME = "builtin"


@attrs.frozen
class PluginFailure:
    """A plugin that could not be used, and why."""

    name: str
    package: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} (package {self.package}) failed: {self.error}"


class PluginFailureWarning(UserWarning):
    """Issued for each plugin that is skipped in non-strict mode."""


class InfoblocksPlugins:
    """Typed wrapper around the pluggy manager; the engine talks to plugins only through it."""

    def __init__(self, strict: bool | None = None) -> None:
        if strict is None:
            strict = os.environ.get("INFOBLOCKS_STRICT_PLUGINS", "") not in ("", "0")
        self.strict = strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.packages: dict[str, tuple[str, str]] = {}  # plugin name -> (dist, version)
        self._registry: Registry | None = None

    # ------------------------------------------------------------------ loading

    def load(self, entry_points: bool = True) -> InfoblocksPlugins:
        from . import builtin

        self.register(builtin, BUILTIN_NAME, package=("infoblocks", _version("infoblocks")))
        if entry_points:
            for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                dist = (ep.dist.name, ep.dist.version) if ep.dist else ("?", "?")
                try:
                    plugin = ep.load()
                except Exception as exc:  # noqa: BLE001 - any import error is reported
                    self._fail(ep.name, dist[0], f"import of {ep.value!r} raised "
                                                 f"{type(exc).__name__}: {exc}")
                    continue
                self.register(plugin, ep.name, package=dist)
        return self

    def register(self, plugin: Any, name: str, package: tuple[str, str] = ("?", "?")) -> bool:
        """Register one plugin object; misspelt or malformed hooks make it fail (reported)."""
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:  # already registered
            self._fail(name, package[0], str(exc))
            return False
        except pluggy.PluginValidationError as exc:
            self._fail(name, package[0], str(exc))
            return False
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            known = ", ".join(sorted(hookspecs.HOOK_FOR_KIND.values()))
            self._fail(name, package[0], f"{exc} (known hooks: {known})")
            return False
        self.packages[name] = package
        self._registry = None
        return True

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.packages.pop(name, None)
        self._registry = None

    def _fail(self, name: str, package: str, error: str) -> None:
        failure = PluginFailure(name, package, error)
        if self.strict:
            raise PluginError(str(failure))
        self.failures.append(failure)
        warnings.warn(str(failure), PluginFailureWarning, stacklevel=3)

    # ------------------------------------------------------------------ registry

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        for kind in BLOCK_KINDS:
            hook = getattr(self.pm.hook, hookspecs.HOOK_FOR_KIND[kind])
            # get_hookimpls() lists plugins in registration order: built-ins first
            for impl in hook.get_hookimpls():
                try:
                    blocks = impl.function() or []
                    for block in blocks:
                        registry.add(kind, block, impl.plugin_name)
                except InfoblocksError as exc:
                    if impl.plugin_name == BUILTIN_NAME:
                        raise
                    self._fail(impl.plugin_name,
                               self.packages.get(impl.plugin_name, ("?",))[0], str(exc))
                except Exception as exc:  # noqa: BLE001 - a plugin's own bug
                    self._fail(impl.plugin_name, self.packages.get(impl.plugin_name, ("?",))[0],
                               f"{hookspecs.HOOK_FOR_KIND[kind]} raised "
                               f"{type(exc).__name__}: {exc}")
        return registry

    def plugin_versions(self) -> dict[str, str]:
        return {name: f"{dist}=={version}" for name, (dist, version) in self.packages.items()}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


_MANAGER: InfoblocksPlugins | None = None


def get_plugin_manager() -> InfoblocksPlugins:
    """The process-wide manager, built on first use (built-ins + entry points)."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = InfoblocksPlugins().load()
    return _MANAGER


def reset_plugin_manager(manager: InfoblocksPlugins | None = None) -> None:
    """Forget the current manager (tests), or install ``manager`` in its place."""
    global _MANAGER
    _MANAGER = manager


__all__ = ["InfoblocksPlugins", "PluginFailure", "PluginFailureWarning", "get_plugin_manager",
           "reset_plugin_manager", "ENTRY_POINT_GROUP"]
