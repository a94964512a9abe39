"""A string or a table where a config key takes a list, and a list, string or number where
it takes a table, are refused naming the key: cattrs iterated a string's characters
(``arrays = "xy"`` became the arrays ['x', 'y'], silently), a table's keys, and raised a bare
AttributeError / TypeError for a list given as a table (baduser19 F5-F7)."""

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes import RoutineRecipe


@pytest.mark.parametrize("config, where, expected", [
    ({"recipe": "routine", "arrays": "xy"}, "routine.arrays",
     r"expected a list, got the string 'xy' \(a list is written \[a, b, \.\.\.\], here \['xy'\]"),
    ({"recipe": "mine", "hidden_dims": "64,64"}, "mine.hidden_dims",
     "expected a list, got the string '64,64'"),
    ({"recipe": "mine", "callbacks": "tensorboard"}, "mine.callbacks",
     "expected a list, got the string 'tensorboard'"),
    ({"recipe": "imnn", "theta_fid": {"a": 1}}, "imnn.theta_fid",
     r"expected a list, got a table \{'a': 1\}"),
    ({"recipe": "mine", "models": [1, 2]}, "mine.models", r"expected a table .* got \[1, 2\]"),
    ({"recipe": "mine", "models": "mlp"}, "mine.models", "expected a table .* got 'mlp'"),
    ({"recipe": "parametric_umap", "globals": [1]}, "parametric_umap.globals",
     r"expected a table .* got \[1\]"),
    ({"recipe": "mine", "evaluation": [1]}, "mine.evaluation", r"expected a table"),
    ({"recipe": "imnn", "optimizer_options": [1]}, "imnn.optimizer_options",
     r"expected a table"),
])
def test_a_container_of_the_wrong_kind_is_named(config, where, expected):
    with pytest.raises(ConfigError, match=f"{expected}.* @ {where}"):
        recipe_from_dict(config)


def test_a_phase_key_of_the_wrong_kind_is_named():
    recipe = recipe_from_dict({"recipe": "parametric_umap",
                               "phases": [{"name": "main", "trainable": "main"}]})
    with pytest.raises(ConfigError, match="got the string 'main'.* @ parametric_umap.phases"
                                          ".main.trainable"):
        recipe.build_phases()  # list("main") was the models ['m', 'a', 'i', 'n']


def test_python_arguments_are_checked_alike():
    with pytest.raises(ValidationError, match="`arrays`: expected a list, got the string"):
        RoutineRecipe(arrays="xy")
    assert RoutineRecipe(arrays=["x", "y"]).arrays == ["x", "y"]


X = np.random.default_rng(0).normal(size=(30, 3))


def test_a_model_entry_that_is_not_a_block_is_named():
    recipe = recipe_from_dict({"recipe": "mine", "epochs": 1, "batch_size": 10,
                               "models": {"main": 3}})
    with pytest.raises(ConfigError, match=r"mine.models.main must be a model's name or a "
                                          r"table \{name = \"mlp\", \.\.\.\}, got 3"):
        recipe.fit(X, X)  # dict(3): TypeError 'int' object is not iterable


def test_a_global_entry_that_is_not_a_table_is_named():
    with pytest.raises(ConfigError, match=r"parametric_umap.globals.graph must be a table "
                                          r"with keys \['input', 'relation', 'transforms'\]"):
        # fit raised AttributeError: 'int' object has no attribute 'get'
        recipe_from_dict({"recipe": "parametric_umap", "globals": {"graph": 3}}).fit(X)
