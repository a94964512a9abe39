"""Ready-made recipes (parametric UMAP / t-SNE, DII, MI estimators, IMNN).

Recipe classes are importable by class name, e.g. ``from infoblocks.recipes import DII``;
the lookup is lazy so that importing this package costs nothing.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    from .plugin import recipe_classes

    for cls in recipe_classes():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'infoblocks.recipes' has no attribute {name!r}")
