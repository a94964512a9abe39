"""The recipes package as a plugin: registers every recipe class defined in
``infoblocks.recipes`` through ``register_recipes`` (entry point ``recipes`` of this package),
exactly as a third-party package would.

Each module is imported on its own: one that fails (a half-edited file's SyntaxError, a
missing optional dependency) is reported by name through :func:`~infoblocks.plugins.unavailable`
and its recipes are missing, while the other modules' recipes stay registered."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from infoblocks.blocks.base import is_abstract
from infoblocks.blocks.recipe import Recipe
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import Unavailable, unavailable

#: modules of this package that are not recipes
_NOT_RECIPES = {"cli", "plugin", "plotting"}


@cache
def _scan() -> tuple[tuple[type[Recipe], ...], tuple[Unavailable, ...]]:
    import infoblocks.recipes as package

    found: dict[str, type[Recipe]] = {}
    failed: list[Unavailable] = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_RECIPES or info.name.startswith("_"):
            continue
        name = f"{package.__name__}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported by name, the other modules load
            failed.append(unavailable(f"module {name}", exc, _fix(exc)))
            continue
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, Recipe) and not is_abstract(obj)
                    and obj.__module__ == module.__name__):
                found[obj.__qualname__] = obj
    return tuple(found.values()), tuple(failed)


def _fix(exc: Exception) -> str:
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing and missing.split(".")[0] != "infoblocks":
        return (f"Install the package that provides {missing!r} (an optional dependency of "
                "these recipes), or fix the import there")
    return "Fix or revert the edit there (an installed infoblocks: reinstall it)"


def recipe_classes() -> tuple[type[Recipe], ...]:
    """The recipe classes of the modules that imported."""
    return _scan()[0]


def failed_modules() -> tuple[Unavailable, ...]:
    """The modules of ``infoblocks.recipes`` that failed to import, and why."""
    return _scan()[1]


@hookimpl
def register_recipes():
    return [*recipe_classes(), *failed_modules()]
