"""Ready-made recipes (parametric UMAP / t-SNE, DII, MI estimators, IMNN).

Recipe classes are importable by class name, e.g. ``from infoblocks.recipes import DII``, and
so is their base ``Recipe`` (``Recipe.load(path)`` loads any saved recipe, dispatching on what
it holds); the lookup is lazy so that importing this package costs nothing.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    import pkgutil

    if name.startswith("_") or name in {i.name for i in pkgutil.iter_modules(__path__)}:
        # a submodule being imported (``from . import mi_evaluation``) is not a recipe name:
        # answering it must not trigger the scan of every recipe module mid-import
        raise AttributeError(f"module 'infoblocks.recipes' has no attribute {name!r}")
    if name == "Recipe":  # the base (in the core), where users look for Recipe.load
        from infoblocks.blocks.recipe import Recipe

        return Recipe
    from .plugin import recipe_classes

    for cls in recipe_classes():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'infoblocks.recipes' has no attribute {name!r}")
