"""author28-6: a new phase in ``[[phases]]`` runs where the list puts it — after the phase
listed before it, else before the recipe's phase listed after it, else at the end (as
before).  Before, every new phase was appended after the recipe's own: t-SNE's "exaggerated
layout, then a plain layout phase" written as phases ran the plain phase after ``init`` and
``main``, so the network was regressed onto the exaggerated map (digits network trust@15
0.916 instead of 0.960), silently."""

import tomllib
import warnings

import numpy as np
import pytest

from infoblocks.plugins.registry import recipe_from_dict

PLAIN = {"name": "layout_plain", "epochs": 2, "trainable": ["layout"],
         "optimizer": "delta_bar_delta", "learning_rate": 0.25, "lr_schedule": "none",
         "sampler": {"name": "items", "shuffle": False, "keys": [], "batches_per_epoch": 10},
         "loss": {"name": "all_pairs_kl", "relation": "P", "exaggeration": 1.0,
                  "model": "layout", "input": "index"}}


def _names(recipe):
    return [p["name"] for p in recipe.routine_spec()["phases"]]


@pytest.mark.parametrize("recipe", ["parametric_tsne", "parametric_umap"])
@pytest.mark.parametrize("listed, expected", [
    (["layout", "new", "init", "main"], ["layout", "new", "init", "main"]),
    (["layout", "new"], ["layout", "new", "init", "main"]),  # after the phase before it
    (["new", "init"], ["layout", "new", "init", "main"]),  # before the phase after it
    (["init", "new"], ["layout", "init", "new", "main"]),
    (["new"], ["layout", "init", "main", "new"]),  # no neighbour listed: at the end
    (["main", "new"], ["layout", "init", "main", "new"]),
])
def test_a_new_phase_runs_where_the_list_puts_it(recipe, listed, expected):
    new = {**PLAIN, "name": "new"}
    if recipe == "parametric_umap":  # (a phase that reads UMAP's graph)
        new = {"name": "new", "epochs": 1, "sampler": "edges",
               "loss": {"name": "relation", "model": "layout", "input": "items"}}
    phases = [new if name == "new" else {"name": name} for name in listed]
    assert _names(recipe_from_dict({"recipe": recipe, "phases": phases})) == expected


def test_the_full_form_keeps_the_order_and_an_added_phase_runs_where_the_file_lists_it():
    recipe = recipe_from_dict({"recipe": "parametric_tsne",
                               "phases": [{"name": "layout"}, PLAIN]})
    order = ["layout", "layout_plain", "init", "main"]
    assert _names(recipe) == order
    assert _names(recipe_from_dict(tomllib.loads(recipe.to_toml(full=True)))) == order
    # a phase written into the full form of the defaults: where it is written
    for at, expected in ((1, order), (0, ["layout_plain", "layout", "init", "main"])):
        data = tomllib.loads(recipe_from_dict({"recipe": "parametric_tsne"}).to_toml(full=True))
        data["phases"].insert(at, PLAIN)
        assert _names(recipe_from_dict(data)) == expected


def test_exaggerated_layout_then_plain_phase_then_the_network():
    # the author's routine, small: the network is regressed onto the plain layout's map
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 8))[rng.integers(0, 4, 150)] * 5
         + rng.normal(size=(150, 8))).astype(np.float32)
    recipe = recipe_from_dict({"recipe": "parametric_tsne", "seed": 0, "init_epochs": 1,
                               "layout_epochs": 2, "layout_exaggeration_epochs": 2,
                               "phases": [{"name": "layout"}, PLAIN, {"name": "init"}]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe.fit(x)
    ran = list(dict.fromkeys(h["phase"] for h in recipe.history_))
    assert ran == ["layout", "layout_plain", "init"]  # (main: 0 epochs)
