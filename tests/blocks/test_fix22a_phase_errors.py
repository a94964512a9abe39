"""A sampler's setup error names the phase and the sampler's path (author22-5: "`batch_size`
= 500 exceeds the 120 items" named neither, in a routine of several phases); a compound's
contract error names the part (author22-6)."""

from __future__ import annotations

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.plugins.registry import recipe_from_dict

X = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")


def _routine(batch_size, validation_batch_size=60):
    items = {"name": "items", "gather": ["positions"]}
    return {
        "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
        "globals": {"positions": {"input": "data", "transforms": [
            {"name": "pca_init", "n_components": 2}]}},
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
        "phases": [{"name": "first", "epochs": 1, "sampler": {**items, "batch_size": 60},
                    "loss": {"name": "position", "target": "positions"}},
                   {"name": "second", "epochs": 1, "sampler": {**items, "batch_size": batch_size},
                    "loss": {"name": "position", "target": "positions"},
                    "validation": {"sampler": {**items, "batch_size": validation_batch_size},
                                   "loss": {"name": "position", "target": "positions"}}}]}


@pytest.mark.parametrize("sizes, where", [((500, 60), "phases.second.sampler 'items'"),
                                          ((60, 500), "phases.second.validation.sampler 'items'")])
def test_a_batch_larger_than_the_data_names_the_phase_and_the_sampler(sizes, where):
    with pytest.raises(ValidationError, match=rf"^Phase 'second' \({where}\): `batch_size` = "
                                              "500 exceeds the 120 items"):
        recipe_from_dict(_routine(*sizes)).fit(X)
    # the same routine with batches that fit the 120 items trains both phases
    fitted = recipe_from_dict(_routine(60)).fit(X)
    assert {row["phase"] for row in fitted.routine_.history.rows} == {"first", "second"}


def test_a_compound_contract_error_names_the_part():
    # author22-6: "loss 'compound' consumes the batch field(s) ['missing']" left the user to
    # guess which of the parts
    cfg = _routine(60)
    cfg["phases"][0]["loss"] = {"name": "compound", "losses": [
        {"name": "position", "target": "positions"}, {"name": "position", "target": "missing"}]}
    with pytest.raises(ValueError, match=r"loss 'compound' \(losses\[1\]: 'position'\) consumes "
                                         r"the batch field\(s\) \['missing'\]"):
        recipe_from_dict(cfg).fit(X)
    # both parts reading a field the batch has: it trains, each part's value recorded by name
    cfg["phases"][0]["loss"]["losses"][1]["target"] = "positions"
    rows = recipe_from_dict(cfg).fit(X).routine_.history.rows
    assert any("1.position" in row for row in rows if row["phase"] == "first")
