"""A block instance whose class is not registered by its name (a loss defined in a notebook)
is named when the recipe is written, and a load that cannot rebuild the phases says so
(author22-11: ``to_toml(full=True)`` wrote its table without a name, and the saved routine
loaded with no phases and no warning)."""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import pytest

from infoblocks.blocks.losses import PositionLoss
from infoblocks.blocks.recipe import UnregisteredBlockWarning
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes.routine import RoutineRecipe

X = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")


@attrs.define
class NotebookLoss(PositionLoss):
    name: ClassVar[str] = "fix22a_notebook_position"


@attrs.define
class SameName(PositionLoss):  # a subclass that keeps its parent's name
    pass


def _routine(*parts):
    return {
        "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
        "globals": {"positions": {"input": "data", "transforms": [
            {"name": "pca_init", "n_components": 2}]}},
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
        "phases": [{"name": "regress", "epochs": 1,
                    "sampler": {"name": "items", "batch_size": 60, "gather": ["positions"]},
                    "loss": {"name": "compound", "losses": list(parts)}}]}


def test_a_registered_instance_is_written_with_its_name_and_no_warning(recwarn):
    rec = recipe_from_dict(_routine(PositionLoss(target="positions")))
    part = rec.to_dict()["phases"][0]["loss"]["losses"][0]
    assert part["name"] == "position"  # before: its fields without the name (unreadable)
    assert not [w for w in recwarn if w.category is UnregisteredBlockWarning]
    again = recipe_from_dict(rec.to_dict())
    assert again.to_dict() == rec.to_dict()


@pytest.mark.parametrize("block, then", [(NotebookLoss(), "fails: no block has that name"),
                                         (SameName(), "builds PositionLoss instead")])
def test_an_unregistered_instance_is_named_with_the_hook(block, then):
    rec = recipe_from_dict(_routine(PositionLoss(target="positions"), block))
    with pytest.warns(UnregisteredBlockWarning, match=f"{type(block).__qualname__}.*{then}.*"
                                                      "`register_losses` hook"):
        rec.to_toml(full=True)


def test_a_saved_routine_whose_phases_cannot_be_rebuilt_warns_on_load(tmp_path):
    rec = recipe_from_dict(_routine(NotebookLoss()))
    with pytest.warns(UnregisteredBlockWarning):
        rec.fit(X).save(tmp_path / "m")
    with pytest.warns(UserWarning, match="phases and globals could not be rebuilt .*"
                                         "fix22a_notebook_position.*train\\(\\) does not"):
        loaded = RoutineRecipe.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.transform(X), rec.transform(X))  # apply still works
