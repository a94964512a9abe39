"""The ``functional`` transform from a config: ``fn`` names an elementwise function
(``"exp"``, ``"log1p"``; author22-8: from TOML "Functional needs a callable `fn`, got
'torch.exp'"), written back by that name; another name (an import path among them: a config
never imports code) is an error naming ``fn`` and the names it takes; a lambda refuses to be
written."""

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


@pytest.mark.parametrize("fn, value", [("exp", math.e), ("log1p", math.log(2)),
                                       ("softplus", math.log1p(math.e))])
def test_a_name_builds_the_function_and_is_written_back(fn, value):
    block = get_registry().build("transform", {"name": "functional", "fn": fn})
    assert float(block(ONES).values[0, 0]) == pytest.approx(value, rel=1e-6)
    assert block.describe() == {"name": "functional", "fn": fn}


def test_a_callable_given_in_python_is_written_by_its_name():
    assert Functional(torch.exp).describe() == {"name": "functional", "fn": "exp"}
    again = get_registry().build("transform", Functional(torch.sqrt).describe())
    assert float(again(DenseRelations(torch.full((2, 2), 4.0))).values[0, 0]) == 2.0


@pytest.mark.parametrize("fn, says", [
    ("torch.exp", r"`fn` = 'torch.exp' is not one of the elementwise functions a config can "
                  r"name: \['abs', .*'tanh'\]. Did you mean 'exp'\? A config names functions, "
                  r"it never imports code: a function of your own is a plugin transform"),
    ("os:system", r"`fn` = 'os:system' is not one of the elementwise functions"),
    ("sqrtt", r"Did you mean 'sqrt'\?"),
    (3, r"needs a callable `fn` or the name of an elementwise function .*got 3"),
])
def test_another_name_is_refused_naming_fn(fn, says):
    with pytest.raises(ConfigError, match=r"Invalid transform 'functional': .*" + says):
        get_registry().build("transform", {"name": "functional", "fn": fn})


TOML = '''
recipe = "parametric_umap"
[globals.graph]
transforms = ["connectivity_rescale", "symmetrize", { name = "functional", fn = "sqrt" }]
'''


def test_it_round_trips_through_the_full_form():
    recipe = recipe_from_dict(tomllib.loads(TOML))
    text = recipe.to_toml(full=True)
    assert '{ name = "functional", fn = "sqrt" }' in text
    again = recipe_from_dict(tomllib.loads(text))
    assert again.routine_spec()["globals"]["graph"]["transforms"][-1] == \
        {"name": "functional", "fn": "sqrt"}


def test_a_lambda_refuses_to_be_written():
    recipe = ParametricUMAP(globals={"graph": {"transforms": [
        "connectivity_rescale", "symmetrize", Functional(lambda v: v.sqrt())]}})
    for full in (False, True):  # before: written as fn = "<lambda>", which did not read back
        with pytest.raises(ConfigError, match=r"Functional `fn` = <function .*<lambda>.* has "
                           r"no name a config can hold, so the transform cannot be written as "
                           r"data .*make the function a plugin transform"):
            recipe.to_toml(full=full)
    # (in Python it still runs)
    assert float(Functional(lambda v: v.sqrt())(ONES).values[0, 0]) == 1.0


def test_a_routine_with_a_lambda_still_saves_its_weights(tmp_path):
    """Routine.save (and a checkpoint's fingerprint) records the unwritable global by name
    and reason instead of refusing the whole save; load says what it could not rebuild."""
    from infoblocks.blocks import Routine, TrainingPhase
    from infoblocks.blocks.models import MLP
    from infoblocks.blocks.routine import GlobalRelation

    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    routine = Routine(
        dataset={"data": x, "positions": x[:, :2]},
        models={"main": MLP(in_dim=3, out_dim=2, hidden_dims=(4,))},
        global_relations={"graph": GlobalRelation(
            relation={"name": "pdist"}, transforms=[Functional(lambda v: v.sqrt())])},
        phases=[TrainingPhase(name="fit", epochs=1, loss="position",
                              sampler={"name": "items", "batch_size": 30})]).train()
    assert float(routine.compute_global_relations()["graph"].values.max()) > 0
    path = routine.save(tmp_path / "model")
    with pytest.warns(UserWarning, match=r"the phases and globals could not be rebuilt .*"
                      r"no name a config can hold") as caught:
        again = Routine.load(path)
    assert len(caught) == 1
    assert again.phases == [] and again.global_relations == {}
    assert torch.equal(again.apply(x), routine.apply(x))
