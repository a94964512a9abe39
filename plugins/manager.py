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
from .registry import Registry, Unavailable

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


class _HookFailed(Exception):
    """A plugin's hook raised (its own bug); the message says which hook and what."""


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
        self._report_unmarked(plugin, name, package)
        return True

    def _report_unmarked(self, plugin: Any, name: str, package: tuple[str, str]) -> None:
        """A ``register_*`` function without ``@hookimpl`` is not a hook to pluggy: its blocks
        would be missing with no word.  Reported (the plugin's marked hooks still count)."""
        known = set(hookspecs.HOOK_FOR_KIND.values())
        for attr in sorted(dir(plugin)):
            if not attr.startswith("register_") or attr.startswith("register__"):
                continue
            function = getattr(plugin, attr, None)
            if not callable(function) or isinstance(function, type) or \
                    self.pm.parse_hookimpl_opts(plugin, attr) is not None:
                continue
            hint = "" if attr in known else \
                f" (and it is not a known hook: {', '.join(sorted(known))})"
            self._fail(name, package[0], f"`{attr}` is not marked with `@hookimpl` (from "
                                         f"infoblocks.plugins import hookimpl){hint}, so "
                                         "infoblocks never calls it and its blocks are not "
                                         "registered")

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
        # plugin by plugin (built-ins first, then in registration order), so that a plugin
        # whose hook raises is skipped whole: none of its hooks' blocks stay registered
        for plugin, hooks in self._hooks_by_plugin().items():
            before = dict(registry._entries)
            parts_failed: list[Unavailable] = []
            try:
                for kind, impl in hooks:
                    try:
                        blocks = impl.function() or []
                    except InfoblocksError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a plugin's own bug
                        raise _HookFailed(f"{hookspecs.HOOK_FOR_KIND[kind]} raised "
                                          f"{type(exc).__name__}: {exc}") from exc
                    for block in blocks:
                        if isinstance(block, Unavailable):  # one part failed, not the plugin
                            parts_failed.append(block)
                        else:
                            registry.add(kind, block, plugin)
            except (InfoblocksError, _HookFailed) as exc:
                if plugin == BUILTIN_NAME:  # infoblocks' own bug: never skipped silently
                    raise
                registry._entries = before
                self._fail(plugin, self.packages.get(plugin, ("?",))[0],
                           f"{str(exc).rstrip('.')}; none of its blocks are registered")
                continue
            for part in parts_failed:  # once each, however often the registry is rebuilt
                failure = PluginFailure(plugin, self.packages.get(plugin, ("?",))[0], str(part))
                if failure not in self.failures:
                    self._fail(failure.name, failure.package, failure.error)
        registry.failures = self.failures  # the same list: later failures show too
        return registry

    def _hooks_by_plugin(self) -> dict[str, list[tuple[str, Any]]]:
        """``plugin name -> [(kind, hook implementation), ...]``, plugins in registration
        order (built-ins first), kinds in :data:`BLOCK_KINDS` order."""
        order = {name: k for k, name in enumerate(self.packages)}
        hooks: dict[str, list[tuple[str, Any]]] = {}
        for kind in BLOCK_KINDS:
            for impl in getattr(self.pm.hook, hookspecs.HOOK_FOR_KIND[kind]).get_hookimpls():
                hooks.setdefault(impl.plugin_name, []).append((kind, impl))
        return dict(sorted(hooks.items(), key=lambda item: order.get(item[0], len(order))))

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
