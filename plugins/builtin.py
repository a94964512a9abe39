"""The built-in plugin: registers every block defined in ``infoblocks.blocks`` through the
same hooks a third-party plugin uses.

Blocks are found by type, not by a hand-kept list: every class in a module of the blocks
package (sub-packages included) that derives from a kind's base and declares its own ``name`` is registered.  Recipes
are not here: the recipes package registers itself through its own entry point.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import infoblocks.blocks as blocks_package
from infoblocks.blocks.base import is_abstract

from .hookspecs import hookimpl
from .registry import BASE_FOR_KIND


@cache
def _block_classes() -> tuple[type, ...]:
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(blocks_package.__path__, f"{blocks_package.__name__}."):
        module = importlib.import_module(info.name)  # family sub-packages included
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return tuple(found.values())


def blocks_of(kind: str) -> list[type]:
    """Built-in classes of ``kind`` (concrete: with their own ``name``)."""
    base = BASE_FOR_KIND[kind]
    return [cls for cls in _block_classes()
            if issubclass(cls, base) and not is_abstract(cls) and kind != "recipe"]


@hookimpl
def register_distances():
    return blocks_of("distance")


@hookimpl
def register_relations():
    return blocks_of("relation")


@hookimpl
def register_transforms():
    return blocks_of("transform")


@hookimpl
def register_samplers():
    return blocks_of("sampler")


@hookimpl
def register_losses():
    return blocks_of("loss")


@hookimpl
def register_models():
    return blocks_of("model")


@hookimpl
def register_datasets():
    return blocks_of("dataset")


@hookimpl
def register_callbacks():
    return blocks_of("callback")


@hookimpl
def register_placements():
    return blocks_of("placement")


@hookimpl
def register_optimizers():
    return blocks_of("optimizer")


@hookimpl
def register_schedules():
    return blocks_of("schedule")
