"""The recipes package as a plugin: registers every recipe class defined in
``infoblocks.recipes`` through ``register_recipes`` (entry point ``recipes`` of this package),
exactly as a third-party package would."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from infoblocks.blocks.base import is_abstract
from infoblocks.blocks.recipe import Recipe
from infoblocks.plugins import hookimpl

#: modules of this package that are not recipes
_NOT_RECIPES = {"cli", "plugin", "plotting"}


@cache
def recipe_classes() -> tuple[type[Recipe], ...]:
    import infoblocks.recipes as package

    found: dict[str, type[Recipe]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_RECIPES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, Recipe) and not is_abstract(obj)
                    and obj.__module__ == module.__name__):
                found[obj.__qualname__] = obj
    return tuple(found.values())


@hookimpl
def register_recipes():
    return list(recipe_classes())
