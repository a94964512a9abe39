"""A learning-rate schedule is a block too: the example plugin's ``step_decay`` (hook
``register_schedules``) is named from TOML in the recipes' ``lr_schedule`` — a shortcut or a
phase key, a name or a table — and the optimizer's rate follows it; the full config
round-trips the table."""

import tomllib

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.schedules import ExponentialSchedule
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.plugins.testing import check_block
from infoblocks.recipes.cli import main

pytest.importorskip("infoblocks_example_plugin",
                    reason="install it: pip install ./tests/example_plugin")


def _pairs(n=200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return x, (x + 0.5 * rng.normal(size=(n, 2))).astype(np.float32)


def _rates(recipe, phase):
    """The rate of each epoch's last step in ``phase`` (history's lr)."""
    return [row["lr"] for row in recipe.routine_.history.rows if row["phase"] == phase]


MINE = """
recipe = "mine"
epochs = 4
learning_rate = 0.01
lr_schedule = { name = "step_decay", milestones = [0.5, 0.75], gamma = 0.3 }
"""

DII = """
recipe = "dii"
epochs = 4
learning_rate = 0.02

[[phases]]
name = "dii"
lr_schedule = "step_decay"
"""


def test_the_example_plugin_registers_a_schedule_that_passes_the_conformance_check():
    entry = get_registry().entry("schedule", "step_decay")
    assert entry.plugin == "example"
    check_block(entry.block)


def test_mine_follows_a_plugin_schedule_given_as_a_table_shortcut():
    recipe = recipe_from_dict(tomllib.loads(MINE))
    recipe.fit(*_pairs())
    # history holds the rate of each epoch's last step, (e + 1) / 4 of the steps less one:
    # milestones 1/2 and 3/4 are passed in epochs 2 and 3 (the rate × 0.3 each time)
    assert _rates(recipe, "train") == pytest.approx([0.01, 0.01, 0.003, 0.0009], rel=1e-12)


def test_dii_follows_a_plugin_schedule_named_in_its_phase():
    recipe = recipe_from_dict(tomllib.loads(DII))
    recipe.fit(*_pairs(120))
    assert recipe.routine_.phases[0].lr_schedule == "step_decay"
    # the block's defaults: milestones [0.5, 0.75], gamma 0.1
    assert _rates(recipe, "dii") == pytest.approx([0.02, 0.02, 0.002, 0.0002], rel=1e-12)


def test_a_table_valued_schedule_round_trips_through_the_full_config(tmp_path, capsys):
    path = tmp_path / "mine.toml"
    path.write_text(MINE)
    assert main(["config", str(path), "--full"]) == 0
    full = tomllib.loads(capsys.readouterr().out)
    table = {"name": "step_decay", "milestones": [0.5, 0.75], "gamma": 0.3}
    assert full["lr_schedule"] == table
    assert [p["lr_schedule"] for p in full["phases"] if p["name"] == "train"] == [table]
    again = recipe_from_dict(full)
    assert again.to_toml(full=True) == recipe_from_dict(tomllib.loads(MINE)).to_toml(full=True)
    assert tomllib.loads(again.to_toml())["lr_schedule"] == table


@pytest.mark.parametrize("recipe", ["parametric_umap", "parametric_tsne", "dii", "mine",
                                    "infomax", "imnn"])
def test_every_recipe_takes_a_registered_schedule_and_refuses_an_unknown_one(recipe):
    cls = get_registry().get("recipe", recipe)
    table = {"name": "step_decay", "gamma": 0.5}
    assert cls(lr_schedule=table).lr_schedule == table
    assert cls(lr_schedule="warmup_cos").lr_schedule == "warmup_cos"
    # a block from Python is kept as its data form (what to_dict / TOML write)
    assert cls(lr_schedule=ExponentialSchedule(rate=0.9)).lr_schedule == \
        {"name": "exp", "rate": 0.9, "steps": 10, "staircase": True}
    with pytest.raises(ValidationError, match=r"No schedule named 'step_decy'. Did you mean "
                                              r"'step_decay'\?"):
        cls(lr_schedule="step_decy")
