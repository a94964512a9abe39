"""The ``functional`` transform from a config: ``fn`` names an importable callable
(``"torch.exp"``, ``"numpy:log1p"``; author22-8: from TOML "Functional needs a callable `fn`,
got 'torch.exp'"), written back by that name; a name that does not resolve, or resolves to
something not callable, is an error naming ``fn``; a lambda refuses to be written."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.relations import DenseRelations
from infoblocks.blocks.transforms import Functional
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.recipes.umap import ParametricUMAP

ONES = DenseRelations(torch.ones(2, 2))


@pytest.mark.parametrize("fn, value", [("torch.exp", math.e), ("numpy:log1p", math.log(2)),
                                       ("torch.nn.functional:softplus", math.log1p(math.e))])
def test_a_name_builds_the_function_and_is_written_back(fn, value):
    block = get_registry().build("transform", {"name": "functional", "fn": fn})
    assert float(block(ONES).values[0, 0]) == pytest.approx(value, rel=1e-6)
    assert block.describe() == {"name": "functional", "fn": fn}


def test_a_callable_given_in_python_is_written_by_its_import_name():
    assert Functional(torch.exp).describe() == {"name": "functional", "fn": "torch.exp"}
    assert Functional(np.log1p).describe() == {"name": "functional", "fn": "numpy.log1p"}
    again = get_registry().build("transform", Functional(torch.sqrt).describe())
    assert float(again(DenseRelations(torch.full((2, 2), 4.0))).values[0, 0]) == 2.0


@pytest.mark.parametrize("fn, says", [
    ("torch.nope", r"`fn` = 'torch.nope' does not name an importable callable \(AttributeError"
                   r": module 'torch' has no attribute 'nope'\); write it as \"module.function\""),
    ("no_such_module_x.f", r"`fn` = 'no_such_module_x.f' does not name an importable callable "
                           r"\(ModuleNotFoundError"),
    ("torch.pi", r"`fn` = 'torch.pi' names float 3.14\d+, which is not callable"),
    (3, r"needs a callable `fn` or the name of one .*got 3"),
])
def test_a_name_that_does_not_resolve_names_fn(fn, says):
    with pytest.raises(ConfigError, match=r"Invalid transform 'functional': .*" + says):
        get_registry().build("transform", {"name": "functional", "fn": fn})


TOML = '''
recipe = "parametric_umap"
[globals.graph]
transforms = ["connectivity_rescale", "symmetrize", { name = "functional", fn = "torch.sqrt" }]
'''


def test_it_round_trips_through_the_full_form():
    recipe = recipe_from_dict(tomllib.loads(TOML))
    text = recipe.to_toml(full=True)
    assert '{ name = "functional", fn = "torch.sqrt" }' in text
    again = recipe_from_dict(tomllib.loads(text))
    assert again.routine_spec()["globals"]["graph"]["transforms"][-1] == \
        {"name": "functional", "fn": "torch.sqrt"}


def test_a_lambda_refuses_to_be_written():
    recipe = ParametricUMAP(globals={"graph": {"transforms": [
        "connectivity_rescale", "symmetrize", Functional(lambda v: v.sqrt())]}})
    for full in (False, True):  # before: written as fn = "<lambda>", which did not read back
        with pytest.raises(ConfigError, match=r"Functional `fn` = <function .*<lambda>.* has "
                           r"no importable name, so the transform cannot be written as data .*"
                           r"fn = \"mypackage.module:function\""):
            recipe.to_toml(full=full)
    # (in Python it still runs)
    assert float(Functional(lambda v: v.sqrt())(ONES).values[0, 0]) == 1.0
