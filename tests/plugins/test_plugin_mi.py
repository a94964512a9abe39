"""The example plugin's MI bound (``js``: Jensen–Shannon training, Donsker–Varadhan estimate)
and negative sampler (``shifted``: x_i paired with y_{(i+s) mod b}) put into the built-in
``mine`` recipe by name from TOML: each really runs (call counters) — the bound also in the
final all-pairs estimate and its bootstrap — and the estimate on the seed problem is near the
truth (measured: js −0.041 / +0.017 / +0.003 nats on seeds 0 / 1 / 2, shifted −0.046 / +0.013 /
+0.003; the recipe's own MINE −0.041 / +0.017 / +0.008)."""

from __future__ import annotations

import tomllib
import warnings

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError
from infoblocks.plugins.registry import get_registry, recipe_from_dict

pytest.importorskip("infoblocks_example_plugin",
                    reason="install it: pip install ./tests/example_plugin")

from infoblocks_example_plugin.mutual_information import JSBound, ShiftedSampler  # noqa: E402

from infoblocks.recipes.mi import MINE, MIConvergenceWarning, seed_problem  # noqa: E402

#: the bound in the three bound slots of MINE: training loss, validation loss, final estimate
BOUND_TOML = """
recipe = "mine"
seed = 0

[[phases]]
name = "train"
loss = "js"

[phases.validation]
loss = "js"

[evaluation]
bound = "js"
"""

#: the negative sampler in the training slot (the split and batch size are filled in)
SAMPLER_TOML = """
recipe = "mine"
seed = 0

[[phases]]
name = "train"
sampler = "shifted"
"""


def _fit(text: str):
    x, y, truth = seed_problem(0)
    recipe = recipe_from_dict(tomllib.loads(text))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MIConvergenceWarning)
        return recipe.fit(x, y), truth


def test_the_blocks_are_registered_by_the_plugin():
    registry = get_registry()
    assert registry.entry("loss", "js").plugin == "example"
    assert registry.entry("sampler", "shifted").plugin == "example"


def test_a_plugin_bound_trains_validates_and_gives_the_final_estimate():
    before = JSBound.calls
    est, truth = _fit(BOUND_TOML)
    assert isinstance(est, MINE)
    phase = est.routine_.phases[0]
    assert isinstance(phase.loss, JSBound) and isinstance(phase.validation.loss, JSBound)
    assert isinstance(est.bound_, JSBound)
    assert JSBound.calls > before
    # the held-out bound every validate_every-th epoch (MINE's default: 5)
    every = est.validation_interval()
    assert "js" in est.history_[0] and "val_mi" in est.history_[every - 1]
    # the final estimate and its bootstrap call the block's own bound
    calls = JSBound.calls
    interval = est.estimate(ci=0.9)
    assert JSBound.calls > calls
    assert interval.low < float(interval) < interval.high
    assert abs(float(est.estimate()) - truth) < 0.1  # measured −0.041


def test_a_plugin_negative_sampler_trains_mine():
    before = ShiftedSampler.calls
    est, truth = _fit(SAMPLER_TOML)
    sampler = est.routine_.phases[0].sampler
    assert isinstance(sampler, ShiftedSampler)
    # context the TOML left out: the training split and the recipe's batch size
    assert sampler.index_key == "train_index" and sampler.batch_size == 100
    assert ShiftedSampler.calls > before
    assert abs(float(est.estimate()) - truth) < 0.1  # measured −0.046


def test_the_negatives_shortcut_names_the_sampler_of_both_phases():
    spec = MINE(negatives="shifted").routine_spec()["phases"][0]
    assert spec["sampler"]["name"] == "shifted" and "marginal_factor" not in spec["sampler"]
    validation = spec["validation"]["sampler"]
    assert validation["name"] == "shifted" and validation["index_key"] == "test_index"
    assert validation["fixed"] is True
    again = recipe_from_dict(MINE(negatives="shifted").to_dict(full=True))
    assert again.routine_spec() == MINE(negatives="shifted").routine_spec()


def test_the_negatives_shortcut_takes_a_table_of_the_sampler_and_its_options():
    # the table's options win over the recipe's settings, in training and validation
    recipe = recipe_from_dict({"recipe": "mine", "negatives": {"name": "shifted",
                                                               "batch_size": 40}})
    spec = recipe.routine_spec()["phases"][0]
    assert spec["sampler"]["name"] == "shifted" and spec["sampler"]["batch_size"] == 40
    assert spec["sampler"]["index_key"] == "train_index"  # the recipe's context still fills
    assert spec["validation"]["sampler"]["batch_size"] == 40
    assert recipe_from_dict(recipe.to_dict()).routine_spec() == recipe.routine_spec()
    assert recipe_from_dict(recipe.to_dict(full=True)).routine_spec() == recipe.routine_spec()
    # an option and the shortcut of the same key, both set to different values, conflict
    with pytest.raises(ConfigError, match=r"negatives\.batch_size.*`batch_size` = 64"):
        recipe_from_dict({"recipe": "mine", "batch_size": 64,
                          "negatives": {"name": "shifted", "batch_size": 40}})
    # an unknown sampler in the table is refused by name, before anything is built
    with pytest.raises(ConfigError, match="negatives.*registered negative sampler"):
        recipe_from_dict({"recipe": "infomax", "negatives": {"name": "shiftd"}})
    # an option the sampler does not have is refused naming the sampler and its keys
    bad = recipe_from_dict({"recipe": "infomax", "n_components": 1, "epochs": 1,
                            "negatives": {"name": "shifted", "shift": 3}})
    with pytest.raises(ConfigError, match="'shifted'.*shift"):
        bad.fit(np.random.default_rng(0).normal(size=(100, 3)))
