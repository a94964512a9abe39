"""ParametricTSNE on fewer rows than its ``batch_size`` / ``init_batch_size``: the fit runs
batches of all N rows and records them (``batch_size_``, ``init_batch_size_``, as
``perplexity_``); the full form written after the fit shows them, so that its sections run
as ``recipe = "routine"`` on the same data (author22-5: ``to_toml(full=True)`` wrote
``batch_size = 1000`` for the 600 rows that ran, and the routine refused it: "`batch_size` =
1000 exceeds the 600 items"), and a save with a ``batch_size`` set above the rows loads."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks.recipe import EXPANDED_KEY
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes.tsne import ParametricTSNE

N = 120  # rows: below the default batch_size 1000 and init_batch_size 500
#: a short fit (what is checked is set before training); 70 features keep pca_dims 64
SHORT = dict(layout_epochs=2, layout_exaggeration_epochs=1, init_epochs=1, epochs=1, seed=0,
             hidden_dims=(8,))


def clusters(n: int = N) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(n // 2, 70)),
                           rng.normal(size=(n - n // 2, 70)) + 6]).astype(np.float32)


def batch_sizes(phases) -> dict[str, int]:
    return {p["name"]: p["sampler"]["batch_size"] for p in phases
            if isinstance(p.get("sampler", {}).get("batch_size"), int)}


def fitted(**settings) -> ParametricTSNE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the init's reach on a 1-epoch fit)
        return ParametricTSNE(**SHORT, **settings).fit(clusters())


def test_the_full_form_after_a_fit_shows_the_batches_that_ran_and_runs_as_a_routine():
    recipe = fitted()
    ran = {p.name: p.sampler.batch_size for p in recipe.routine_.phases
           if getattr(p.sampler, "batch_size", None) is not None}
    assert ran == {"init": N, "main": N}
    assert (recipe.batch_size, recipe.init_batch_size) == (1000, 500)  # as set
    assert (recipe.batch_size_, recipe.init_batch_size_) == (N, N)      # as fitted
    full = recipe.to_dict(full=True)
    assert batch_sizes(full["phases"]) == {"init": N, "main": N}  # before: 500 / 1000
    assert full["batch_size"] == 1000 and full[EXPANDED_KEY]["batch_size"] == N
    # the sections copied into a routine (plugins.md) run on the same data
    sections = {k: full[k] for k in ("globals", "models", "phases")}
    sections["models"]["main"]["out_dim"] = 2
    routine = recipe_from_dict({"recipe": "routine", **sections}).fit(clusters())
    assert batch_sizes(p.describe() for p in routine.routine_.phases) == {"init": N, "main": N}
    # the full form read back as the recipe: its hyperparameters as set, for a new fit
    again = ParametricTSNE.from_dict(full)
    assert again.batch_size == 1000 and batch_sizes(again.routine_spec()["phases"]) == \
        {"init": 500, "main": 1000}


def test_a_batch_size_set_above_the_rows_saves_and_loads(tmp_path):
    recipe = fitted(batch_size=800, init_batch_size=400)
    assert batch_sizes(recipe.routine_spec()["phases"]) == {"init": N, "main": N}
    recipe.save(tmp_path / "model")
    # before: ConfigError "`init_batch_size` = 400 and `phases.init.sampler.batch_size` = 120
    # both set this value"
    loaded = ParametricTSNE.load(tmp_path / "model")
    assert (loaded.batch_size, loaded.batch_size_) == (800, N)
    assert batch_sizes(loaded.routine_spec()["phases"]) == {"init": N, "main": N}
    x = clusters()[:5]
    np.testing.assert_allclose(loaded.transform(x), recipe.transform(x), atol=1e-5)


def test_an_unfitted_recipe_writes_its_settings():
    full = ParametricTSNE(batch_size=800).to_dict(full=True)
    assert batch_sizes(full["phases"]) == {"init": 500, "main": 800}
    assert full[EXPANDED_KEY]["batch_size"] == 800


@pytest.mark.parametrize("n", [N])
def test_enough_rows_keep_the_batch_size(n):
    recipe = ParametricTSNE(**SHORT, batch_size=50, init_batch_size=40)
    recipe.build(clusters(n))
    assert (recipe.batch_size_, recipe.init_batch_size_) == (50, 40)
    assert batch_sizes(recipe.routine_spec()["phases"]) == {"init": 40, "main": 50}
