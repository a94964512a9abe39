"""The example plugin's DII distance (``weighted_l1``, a weighted Manhattan distance of space A)
put into the built-in ``dii`` recipe by name from TOML: it runs in training and in
``final_dii`` (also after save / load), and the weights it learns on the DADApy tutorial
problem recover the scales of B."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from infoblocks.plugins.registry import get_registry, recipe_from_dict

pytest.importorskip("infoblocks_example_plugin",
                    reason="install it: pip install ./tests/example_plugin")

from infoblocks_example_plugin.imbalance import WeightedManhattan  # noqa: E402

from infoblocks.recipes.dii import DEMO_SCALES, DII, demo_data  # noqa: E402

#: the distance named in both slots of the recipe: the training loss and the evaluation
SECTIONS_TOML = """
recipe = "dii"
epochs = 100
optimizer = "adam"
learning_rate = 0.01
lr_schedule = "cos"
k_init = 5
k_final = 1

[[phases]]
name = "dii"
loss.distance_A = "weighted_l1"

[evaluation]
distance_A = "weighted_l1"
"""

#: the same through the recipe's shortcut, which fills both slots
SHORTCUT_TOML = """
recipe = "dii"
distance_A = "weighted_l1"
epochs = 10
optimizer = "adam"
lr_schedule = "cos"
"""


def test_the_distance_is_registered_by_the_plugin():
    entry = get_registry().entry("distance", "weighted_l1")
    assert entry.plugin == "example" and entry.block is WeightedManhattan


def test_plugin_distance_in_training_and_final_dii_from_toml(tmp_path):
    data_a, data_b = demo_data()  # N = 500, B = [10, 3, 1, 30, 7.3] ⊙ A
    model = recipe_from_dict(tomllib.loads(SECTIONS_TOML))
    assert isinstance(model, DII)
    full = model.to_dict(full=True)
    assert full["phases"][0]["loss"]["distance_A"] == "weighted_l1"
    assert full["evaluation"]["distance_A"] == "weighted_l1"
    before = WeightedManhattan.calls
    model.fit(data_a, data_b)
    after_fit = WeightedManhattan.calls
    assert after_fit > before  # the loss called it every step
    assert type(model.routine_.phases[0].loss.distance_A) is WeightedManhattan
    dii, _ = model.final_dii()
    assert WeightedManhattan.calls > after_fit  # final_dii read it from [evaluation]
    # the learnt weights recover B's scales: same order, the ×30 feature largest
    w = model.weights_ / model.weights_.max()
    assert np.argmax(w) == 3
    assert list(np.argsort(w)) == list(np.argsort(DEMO_SCALES))
    np.testing.assert_allclose(w[[0, 4]], np.array([10.0, 7.3]) / 30, rtol=0.10)
    assert w[2] < 0.05 and dii < 0.02
    # saved and loaded, the evaluation still uses the plugin's distance
    loaded = DII.load(model.save(tmp_path / "dii"))
    calls = WeightedManhattan.calls
    assert loaded.final_dii()[0] == pytest.approx(dii, rel=1e-6)
    assert WeightedManhattan.calls > calls


def test_the_shortcut_fills_both_slots():
    data_a, data_b = demo_data(n=150)
    model = recipe_from_dict(tomllib.loads(SHORTCUT_TOML))
    full = model.to_dict(full=True)
    assert full["phases"][0]["loss"]["distance_A"] == "weighted_l1"
    assert full["evaluation"]["distance_A"] == "weighted_l1"
    sections = tomllib.loads(SECTIONS_TOML)
    sections.update(epochs=10, k_init=1, k_final=1, learning_rate=1e-2)
    by_sections = recipe_from_dict(sections).fit(data_a, data_b)
    by_shortcut = model.fit(data_a, data_b)
    np.testing.assert_allclose(by_shortcut.weights_, by_sections.weights_, rtol=1e-6)
    # select_features retrains and evaluates every candidate with the same spec
    calls = WeightedManhattan.calls
    selection = by_shortcut.select_features("backward", n_features_min=4, epochs=3)
    assert [e["n_features"] for e in selection] == [5, 4]
    assert WeightedManhattan.calls >= calls + 5 * 3  # five candidates, three epochs each
