"""author28-3: an entry of a replaced list of blocks (``transforms``) that names a default
entry's block keeps what the recipe gave that entry, its own keys winning — as a block named
alone in a table does.  Before, a bare ``"symmetrize"`` in t-SNE's P list built the block's
default, UMAP's fuzzy union P + Pᵀ − P∘Pᵀ (``subtract_product = true``), in place of the
recipe's (P + Pᵀ)/2, silently (written so in ``--full``; digits KL 0.850 against 0.859)."""

import tomllib

import numpy as np

from infoblocks.recipes import ParametricTSNE, ParametricUMAP


def _transforms(recipe, graph):
    return recipe.routine_spec()["globals"][graph]["transforms"]


def test_bare_symmetrize_in_tsne_P_keeps_the_recipes_average():
    recipe = ParametricTSNE(globals={"P": {"transforms": [
        "perplexity_rescale", "symmetrize", "normalize"]}})
    assert _transforms(recipe, "P")[:2] == _transforms(ParametricTSNE(), "P")[:2] == [
        {"name": "perplexity_rescale", "perplexity": 30.0},
        {"name": "symmetrize", "subtract_product": False}]
    assert _transforms(recipe, "P")[2] == "normalize"  # (the recipe sets nothing there)
    full = tomllib.loads(recipe.to_toml(full=True))
    assert full["globals"]["P"]["transforms"][1] == {"name": "symmetrize",
                                                     "subtract_product": False}
    # the entry's own keys win; an entry of another block gets nothing
    recipe = ParametricTSNE(globals={"P": {"transforms": [
        {"name": "perplexity_rescale", "perplexity": 5.0},
        {"name": "symmetrize", "subtract_product": True}, "normalize"]}})
    assert _transforms(recipe, "P")[:2] == [{"name": "perplexity_rescale", "perplexity": 5.0},
                                            {"name": "symmetrize", "subtract_product": True}]
    recipe = ParametricUMAP(globals={"graph": {"transforms": ["connectivity_rescale",
                                                              "symmetrize"]}})
    assert _transforms(recipe, "graph") == _transforms(ParametricUMAP(), "graph")


def test_the_bare_list_runs_the_default_fit():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 8))[rng.integers(0, 4, 120)] * 5
         + rng.normal(size=(120, 8))).astype(np.float32)
    p = {}
    for name, sections in (("default", {}), ("bare", {"globals": {"P": {"transforms": [
            "perplexity_rescale", "symmetrize", "normalize"]}}})):
        routine = ParametricTSNE(seed=0, layout_epochs=1, init_epochs=1, **sections).build(x)
        p[name] = routine.compute_global_relations()["P"].to_dense().values
    assert np.array_equal(p["bare"].numpy(), p["default"].numpy())
