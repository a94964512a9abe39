"""The registry: (kind, name) -> block class, built from the plugins' ``register_*`` hooks.

``get_registry().build("loss", {"name": "position", "target": "pca"})`` builds a block from a
name or a dict; unknown names list the closest known ones; duplicates name both plugins.
"""

from __future__ import annotations

import difflib
from typing import Any

import attrs

from infoblocks.blocks.base import BLOCK_KINDS, Block
from infoblocks.blocks.callbacks import Callback
from infoblocks.blocks.config import structure
from infoblocks.blocks.datasets import DatasetSource
from infoblocks.blocks.distances import Distance
from infoblocks.blocks.embedding.placement import Placement
from infoblocks.blocks.errors import ConfigError, PluginError, RegistryError
from infoblocks.blocks.losses import Loss
from infoblocks.blocks.models import Model
from infoblocks.blocks.optim import OptimizerBlock
from infoblocks.blocks.recipe import RECIPE_KEY, Recipe
from infoblocks.blocks.relations import Relation
from infoblocks.blocks.samplers import Sampler
from infoblocks.blocks.schedules import Schedule
from infoblocks.blocks.transforms import Transform

#: the base class every registered block of a kind must derive from
BASE_FOR_KIND: dict[str, type] = {
    "distance": Distance, "relation": Relation, "transform": Transform, "sampler": Sampler,
    "loss": Loss, "model": Model, "dataset": DatasetSource, "recipe": Recipe,
    "callback": Callback, "placement": Placement, "optimizer": OptimizerBlock,
    "schedule": Schedule,
}


@attrs.frozen
class Override:
    """Marks a registration that replaces an existing block of the same (kind, name)."""

    block: type


def override(block: type) -> Override:
    """Return this from a ``register_*`` hook to replace a block of the same name."""
    return Override(block)


@attrs.frozen
class Unavailable:
    """Returned by a ``register_*`` hook in place of the blocks of one part of a plugin that
    could not be loaded (see :func:`unavailable`)."""

    what: str
    error: str

    def __str__(self) -> str:
        return self.error


def unavailable(what: str, exc: BaseException, fix: str = "") -> Unavailable:
    """Return this from a hook, next to the blocks that did load, for one part of the plugin
    that failed (e.g. ``unavailable("module mypkg.extra", exc)`` where importing one of its
    modules raised): the plugin's other blocks stay registered, and the failure is reported as
    a failed plugin is (a ``PluginFailureWarning`` naming ``what``, the exception's type,
    message and file:line, then ``fix``; listed by ``infoblocks list`` and by a missing
    name's ``No X named``; raised under ``INFOBLOCKS_STRICT_PLUGINS=1``)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        text, place = exc.msg, f"{exc.filename}:{exc.lineno}"
    else:
        text, place = str(exc), _raised_in(exc.__traceback__)
    at = f" (at {place})" if place else ""
    return Unavailable(what, f"{what} raised {type(exc).__name__}: {str(text).rstrip('.')}{at}; "
                             "its blocks are not registered, the plugin's other blocks are"
                             + (f". {fix}" if fix else ""))


def _raised_in(traceback: Any) -> str:
    """``FILE:LINE`` of the last frame outside the import machinery ('' where there is none
    but this plugin layer's own)."""
    import importlib
    import os

    skipped = (os.path.dirname(importlib.__file__), os.path.dirname(__file__), "<frozen ")
    place = ""
    while traceback is not None:
        name = traceback.tb_frame.f_code.co_filename
        if not name.startswith(skipped):
            place = f"{name}:{traceback.tb_lineno}"
        traceback = traceback.tb_next
    return place


@attrs.frozen
class Entry:
    """One registered block: its class and the plugin that provides it."""

    kind: str
    name: str
    block: type
    plugin: str


def _check_kind(kind: str) -> None:
    if kind not in BLOCK_KINDS:
        raise RegistryError(f"Unknown block kind {kind!r}; kinds are {list(BLOCK_KINDS)}.")


class Registry:
    """Mapping (kind, name) -> :class:`Entry`."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        #: plugins that failed to load when this registry was built (named by "No X named")
        self.failures: list[Any] = []

    # ------------------------------------------------------------------ registration

    def add(self, kind: str, block: type | Override, plugin: str) -> Entry:
        """Register ``block`` for ``kind`` on behalf of ``plugin``."""
        _check_kind(kind)
        replace = isinstance(block, Override)
        cls = block.block if isinstance(block, Override) else block
        base = BASE_FOR_KIND[kind]
        if not isinstance(cls, type) or not issubclass(cls, base):
            raise PluginError(
                f"Plugin {plugin!r} registered {cls!r} as a {kind}, but it is not a subclass of "
                f"{base.__module__}.{base.__name__}."
            )
        name = cls.__dict__.get("name") or getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise PluginError(f"Plugin {plugin!r} registered {cls.__qualname__} without a `name` "
                              "class attribute; declare e.g. `name: ClassVar[str] = 'my_loss'`.")
        key = (kind, name)
        if key in self._entries and not replace:
            other = self._entries[key]
            raise RegistryError(
                f"Duplicate {kind} {name!r}: plugin {plugin!r} ({cls.__module__}.{cls.__qualname__})"
                f" and plugin {other.plugin!r} ({other.block.__module__}.{other.block.__qualname__})"
                " both register it. Rename one, or return override(cls) from the hook to replace it."
            )
        entry = Entry(kind, name, cls, plugin)
        self._entries[key] = entry
        return entry

    # ------------------------------------------------------------------ lookup

    def names(self, kind: str) -> list[str]:
        _check_kind(kind)
        return sorted(name for (k, name) in self._entries if k == kind)

    def entries(self, kind: str | None = None) -> list[Entry]:
        if kind is not None:
            _check_kind(kind)
        return [e for (k, _), e in sorted(self._entries.items()) if kind is None or k == kind]

    def entry(self, kind: str, name: str) -> Entry:
        _check_kind(kind)
        try:
            return self._entries[(kind, name)]
        except KeyError:
            known = self.names(kind)
            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise RegistryError(
                f"No {kind} named {name!r}.{hint} Known ({kind}): {', '.join(known) or 'none'}. "
                "A plugin may add more (see `infoblocks list`)." + self.failed_hint()
            ) from None

    def failed_hint(self) -> str:
        """The plugins that failed to load: one of them may be what provides a missing name."""
        if not self.failures:
            return ""
        listed = "; ".join(str(f) for f in self.failures[:3])
        more = f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        return (f" {len(self.failures)} plugin(s) failed to load and may provide it: "
                f"{listed}{more}. Fix the plugin, or set INFOBLOCKS_STRICT_PLUGINS=1 to stop "
                "at the failure.")

    def get(self, kind: str, name: str) -> type:
        return self.entry(kind, name).block

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries

    # ------------------------------------------------------------------ building

    def build(self, kind: str, spec: Any, path: str | None = None) -> Any:
        """A block from a name, a ``{"name": ..., **params}`` dict, or an instance.

        Parameters go through the strict converter (:mod:`infoblocks.blocks.config`): wrong
        types and unknown keys raise :class:`ConfigError` naming ``path`` (the key's place in
        a config, e.g. ``parametric_umap.globals.graph.relation``)."""
        base = BASE_FOR_KIND.get(kind)
        _check_kind(kind)
        if isinstance(spec, base):
            return spec
        where = path or kind
        if isinstance(spec, Block):
            raise ConfigError(f"{where}: expected a {kind}, got the {spec.kind} {spec.name!r}.")
        if isinstance(spec, str):
            name, params = spec, {}
        elif isinstance(spec, dict):
            params = dict(spec)
            name = params.pop(RECIPE_KEY if kind == "recipe" and RECIPE_KEY in params else "name",
                              None)
            if name is None:
                raise ConfigError(f"{where}: a {kind} given as a table needs a 'name' key, got "
                                  f"keys {sorted(spec)}.")
        else:
            raise ConfigError(f"{where}: a {kind} must be given as a name, a table with 'name', "
                              f"or a {base.__name__} instance; got {type(spec).__name__}.")
        try:
            cls = self.get(kind, name)
        except RegistryError as exc:
            raise RegistryError(f"{where}: {exc}") from None if path else exc
        if kind == "recipe":
            return cls.from_dict(params)
        label = f"{path} ({kind} {name!r})" if path else f"{kind} {name!r}"
        return structure(params, cls, path or f"{kind} {name!r}", label=label)  # names the keys


def get_registry() -> Registry:
    """The registry of the current plugin manager (built on first use)."""
    from .manager import get_plugin_manager

    return get_plugin_manager().registry


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Any registered recipe from ``{"recipe": name, **hyperparameters}``."""
    if RECIPE_KEY not in data:
        raise ConfigError(f"A recipe config needs a '{RECIPE_KEY}' key naming the recipe, e.g. "
                          f"recipe = \"parametric_umap\"; got keys {sorted(data)}.")
    return get_registry().build("recipe", data)


__all__ = ["Registry", "Entry", "Override", "override", "Unavailable", "unavailable",
           "get_registry", "recipe_from_dict",
           "BASE_FOR_KIND"]
