"""The embeddings record every value a fit lowers to the data's size, at the depth where it is
lowered (``EmbeddingRecipe.build``, both recipes): an items sampler's ``batch_size`` at most
the rows, ``pca_dims`` at most the features.  The full form written after a fit
(``to_toml(full=True)``, ``infoblocks config --full``, saves) holds what ran, so that its
sections run as ``recipe = "routine"`` (docs/plugins.md); before, ParametricUMAP on 400 rows
wrote ``init_batch_size = 500`` ("`batch_size` = 500 exceeds the 400 items") and on 5 features
``pca_dims = 64`` ("`pca_dims` = 64 exceeds `in_dim` = 5") — values that did not run.  t-SNE's
``batch_size_`` / ``init_batch_size_`` (test_fix23a_tsne_batch_size.py) are the same record."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks.recipe import EXPANDED_KEY
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes.tsne import ParametricTSNE
from infoblocks.recipes.umap import ParametricUMAP

#: a short fit (what is checked is set before training)
SHORT = dict(layout_epochs=2, init_epochs=1, epochs=1, seed=0, hidden_dims=(8,))
TSNE_SHORT = dict(layout_epochs=2, layout_exaggeration_epochs=1, init_epochs=1, epochs=1,
                  seed=0, hidden_dims=(8,))


def clusters(n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(n // 2, d)),
                           rng.normal(size=(n - n // 2, d)) + 6]).astype(np.float32)


def batch_sizes(phases) -> dict[str, int]:
    return {p["name"]: p["sampler"]["batch_size"] for p in phases
            if isinstance(p.get("sampler"), dict) and p["sampler"].get("name") == "items"
            and isinstance(p["sampler"].get("batch_size"), int)}


def fitted(cls, x, **settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the init's reach on a 1-epoch fit)
        return cls(**settings).fit(x)


def runs_as_a_routine(full: dict, x: np.ndarray):
    """The full form's sections copied into a routine (docs/plugins.md) fit the same data."""
    sections = {k: full[k] for k in ("globals", "models", "phases")}
    sections["models"]["main"] = {**sections["models"]["main"], "out_dim": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return recipe_from_dict({"recipe": "routine", **sections}).fit(x)


def test_umap_on_fewer_rows_than_its_init_batch_writes_and_runs_the_batch_that_ran():
    x = clusters(400, 70)  # 70 features: pca_dims 64 as set
    recipe = fitted(ParametricUMAP, x, **SHORT)
    assert recipe.routine_.phases[1].sampler.batch_size == 400  # what ran
    assert (recipe.init_batch_size, recipe.init_batch_size_) == (500, 400)
    full = recipe.to_dict(full=True)
    assert batch_sizes(full["phases"]) == {"init": 400}  # before: 500
    assert full["init_batch_size"] == 500 and full[EXPANDED_KEY]["init_batch_size"] == 400
    routine = runs_as_a_routine(full, x)  # before: "`batch_size` = 500 exceeds the 400 items"
    assert batch_sizes(p.describe() for p in routine.routine_.phases) == {"init": 400}
    # read back as the recipe: its hyperparameters as set, for a new fit
    again = ParametricUMAP.from_dict(full)
    assert again.init_batch_size == 500 and again.init_batch_size_ is None
    assert batch_sizes(again.routine_spec()["phases"]) == {"init": 500}


def test_umap_on_fewer_features_than_pca_dims_writes_and_runs_the_front_end_that_ran():
    x = clusters(120, 5)
    recipe = fitted(ParametricUMAP, x, **SHORT)
    assert (recipe.pca_dims, recipe.pca_dims_) == (64, 5)
    full = recipe.to_dict(full=True)
    assert full["models"]["main"]["pca_dims"] == 5  # before: 64
    assert full["pca_dims"] == 64 and full[EXPANDED_KEY]["pca_dims"] == 5
    assert batch_sizes(full["phases"]) == {"init": 120}
    routine = runs_as_a_routine(full, x)  # before: "`pca_dims` = 64 exceeds `in_dim` = 5"
    assert routine.routine_.model_specs["main"]["pca_dims"] == 5
    assert ParametricUMAP.from_dict(full).routine_spec()["models"]["main"]["pca_dims"] == 64


def test_load_restores_the_record_and_writes_the_same_full_form(tmp_path):
    x = clusters(120, 5)
    recipe = fitted(ParametricUMAP, x, **SHORT, init_batch_size=300)
    recipe.save(tmp_path / "model")
    loaded = ParametricUMAP.load(tmp_path / "model")
    assert (loaded.init_batch_size, loaded.init_batch_size_) == (300, 120)
    assert (loaded.pca_dims, loaded.pca_dims_) == (64, 5)
    before, after = recipe.to_dict(full=True), loaded.to_dict(full=True)
    assert {k: after[k] for k in ("globals", "models", "phases")} == \
        {k: before[k] for k in ("globals", "models", "phases")}
    np.testing.assert_allclose(loaded.transform(x[:5]), recipe.transform(x[:5]), atol=1e-5)


def test_a_section_of_ones_own_is_written_as_it_ran():
    """Not only the shortcuts: an items batch or a pca_dims set in a section is capped when it
    runs, and the full form says so."""
    x = clusters(120, 5)
    recipe = fitted(ParametricUMAP, x, **SHORT, models={"main": {"pca_dims": 32}},
                    phases=[{"name": "init", "sampler": {"batch_size": 200}}])
    full = recipe.to_dict(full=True)
    assert full["models"]["main"]["pca_dims"] == 5
    assert batch_sizes(full["phases"]) == {"init": 120}
    runs_as_a_routine(full, x)
    again = ParametricUMAP.from_dict(full)  # reads back, without a conflict
    assert batch_sizes(again.routine_spec()["phases"]) == {"init": 120}


def test_tsne_records_its_front_end_too():
    x = clusters(120, 5)
    recipe = fitted(ParametricTSNE, x, **TSNE_SHORT)
    assert (recipe.pca_dims_, recipe.batch_size_, recipe.init_batch_size_) == (5, 120, 120)
    full = recipe.to_dict(full=True)
    assert full["models"]["main"]["pca_dims"] == 5 and full[EXPANDED_KEY]["pca_dims"] == 5
    runs_as_a_routine(full, x)


@pytest.mark.parametrize("cls", [ParametricUMAP, ParametricTSNE])
def test_a_new_fit_on_more_data_runs_the_values_as_set(cls):
    """The record is the last fit's: a second fit on larger data starts from the settings."""
    recipe = fitted(cls, clusters(100, 5), **(SHORT if cls is ParametricUMAP else TSNE_SHORT),
                    init_batch_size=150)
    assert (recipe.init_batch_size_, recipe.pca_dims_) == (100, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe.fit(clusters(200, 70))
    assert (recipe.init_batch_size_, recipe.pca_dims_) == (150, 64)
    assert batch_sizes(recipe.routine_spec()["phases"])["init"] == 150


def test_an_unfitted_recipe_writes_its_settings():
    full = ParametricUMAP(init_batch_size=800, pca_dims=32).to_dict(full=True)
    assert batch_sizes(full["phases"]) == {"init": 800}
    assert full["models"]["main"]["pca_dims"] == 32
    assert full[EXPANDED_KEY]["init_batch_size"] == 800
