"""A routine's full form writes each block with all its fields, its own defaults included
(author22-1: a hand-written UMAP routine ran `negative_edges` with `epoch_draws = "fixed"`
and Adam unfused where the recipe sets "edges" and `fused = true`; `config ROUTINE --full`
printed only what the file said, so a diff against the recipe's --full could not show it)."""

from __future__ import annotations

import tomllib

import numpy as np

from infoblocks.plugins.registry import recipe_from_dict

X = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")


def _routine():
    return {
        "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
        "globals": {"graph": {"input": "data",
                              "relation": {"name": "neighbor_pdist", "n_neighbors": 5},
                              "transforms": ["connectivity_rescale", "symmetrize"]}},
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
        "phases": [{"name": "main", "epochs": 1,
                    "sampler": {"name": "negative_edges", "relation": "graph", "batch_size": 50},
                    "loss": "relation"}]}


def test_the_full_form_names_every_blocks_fields():
    full = recipe_from_dict(_routine()).to_dict(full=True)
    phase = full["phases"][0]
    assert phase["sampler"]["epoch_draws"] == "fixed"  # the block's default, now visible
    assert phase["optimizer_options"] == {} and phase["lr_schedule"] == "none"
    assert phase["loss"]["kernel"]["name"] == "modified_cauchy"
    relation = full["globals"]["graph"]["relation"]
    assert relation["metric"] == {"name": "euclidean"} and "exact_threshold" in relation
    assert full["globals"]["graph"]["transforms"][0]["local_connectivity"] == 1.0
    model = full["models"]["main"]
    assert model["activation"] == "relu" and "in_dim" not in model  # the fit fills it in
    # what the file said is kept as written for the round trip
    assert full["expanded_from"]["sections"]["phases"][0]["loss"] == "relation"


def test_the_full_form_round_trips_and_trains_the_same():
    rec = recipe_from_dict(_routine())
    text = rec.to_toml(full=True)
    again = recipe_from_dict(tomllib.loads(text))
    assert again.to_toml(full=True) == text
    alone = tomllib.loads(text)
    alone.pop("expanded_from")  # the sections copied alone into a routine of one's own
    a = rec.fit(X).transform(X)
    np.testing.assert_array_equal(a, again.fit(X).transform(X))
    np.testing.assert_array_equal(a, recipe_from_dict(alone).fit(X).transform(X))


def test_a_key_edited_in_the_full_form_is_an_edit_of_the_routine():
    full = recipe_from_dict(_routine()).to_dict(full=True)
    full["phases"][0]["sampler"]["epoch_draws"] = "edges"
    edited = recipe_from_dict(full)
    assert edited.phases[0]["sampler"] == {"name": "negative_edges", "relation": "graph",
                                           "batch_size": 50, "epoch_draws": "edges"}
