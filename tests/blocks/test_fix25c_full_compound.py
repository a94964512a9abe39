"""A full form (``to_dict(full=True)`` / ``config --full``) whose phase loss is a ``compound``:
its parts compare and merge like any other block table (author25-8: a part lacking a key the
expansion writes — removed by the user, or a field a newer plugin version added — was refused
"a loss given as a table needs a 'name' key, got keys ['losses']")."""

from __future__ import annotations

import tomllib
from typing import ClassVar

import attrs
import numpy as np
import tomli_w

from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.plugins.registry import recipe_from_dict


def _routine(loss: dict) -> dict:
    return {"recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
            "globals": {"positions": {"input": "data",
                                      "transforms": [{"name": "pca_init", "n_components": 2}]}},
            "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [4]}},
            "phases": [{"name": "fit", "epochs": 1, "learning_rate": 0.01,
                        "sampler": {"name": "items", "batch_size": 8, "gather": ["positions"]},
                        "loss": loss}]}


COMPOUND = {"name": "compound", "weights": [1.0, 0.5], "losses": ["position", "position"]}


def _full(cfg: dict) -> dict:
    """The full form as a file holds it (through TOML)."""
    return tomllib.loads(tomli_w.dumps(recipe_from_dict(cfg).to_dict(full=True)))


def _loss(recipe) -> dict:
    return recipe.routine_spec()["phases"][0]["loss"]


def test_a_key_removed_from_a_compound_part_is_no_edit():
    full = _full(_routine(COMPOUND))
    part = full["phases"][0]["loss"]["losses"][0]
    assert "input" in part  # the expansion writes the part's fields
    del part["input"]
    again = recipe_from_dict(full)
    # no edit: the sections read back as written, the part keeps what the recipe gave it
    assert _loss(again) == _loss(recipe_from_dict(_routine(COMPOUND)))
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    assert again.fit(x).transform(x).shape == (32, 2)


def test_an_edited_compound_part_key_runs_and_the_others_keep_theirs():
    full = _full(_routine(COMPOUND))
    parts = full["phases"][0]["loss"]["losses"]
    del parts[0]["input"]  # removed: keeps its value
    parts[1]["target_model"] = "other"  # edited: the file's value runs
    loss = _loss(recipe_from_dict(full))
    assert loss["name"] == "compound" and loss["weights"] == [1.0, 0.5]
    assert [p["name"] for p in loss["losses"]] == ["position", "position"]
    assert loss["losses"][1]["target_model"] == "other"
    assert "target_model" not in loss["losses"][0] or loss["losses"][0]["target_model"] != "other"


@attrs.define(kw_only=True)
class Tabled(Loss):
    """A plugin loss, a release later: ``pairwise_table`` is new (its full forms written before
    lack it)."""
    name: ClassVar[str] = "f25c_tabled"
    reports: ClassVar[frozenset[str]] = frozenset()
    model: str = "main"
    pairwise_table: bool = True

    def required_fields(self):
        return frozenset({"data"})

    def __call__(self, batch, models, state):
        return LossOutput(models[self.model](batch["data"]).pow(2).mean(), {})


def test_a_compound_part_field_added_by_a_newer_plugin_version(infoblocks_plugin):
    import types

    from infoblocks.plugins import hookimpl

    module = types.ModuleType("f25c_tabled")
    module.register_losses = hookimpl(lambda: [Tabled])
    infoblocks_plugin(module, name="f25c_tabled")
    cfg = _routine({"name": "compound", "losses": ["f25c_tabled", "position"]})
    full = _full(cfg)
    part = full["phases"][0]["loss"]["losses"][0]
    assert part == {"name": "f25c_tabled", "model": "main", "pairwise_table": True}
    del part["pairwise_table"]  # the file as the older release wrote it, unedited
    again = recipe_from_dict(full)
    assert _loss(again) == _loss(recipe_from_dict(cfg))
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    assert again.fit(x).transform(x).shape == (32, 2)
