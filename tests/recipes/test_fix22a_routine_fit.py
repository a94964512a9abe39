"""``fit_transform(X, y)`` passes y as ``fit(X, y)`` does (author22-10: "['labels'] was not
given"), ``warm_start=True`` continues the fitted routine (author22-4: it was taken for an
array named 'warm_start'), and 1-D labels into a built-in relation name the global, its input
and the reshape (author22-3: torch's "cdist only supports at least 2D tensors")."""

from __future__ import annotations

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes.routine import RoutineRecipe

X = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")
Y = (np.arange(120) % 3).astype("float32")


def _routine(arrays=("data",), epochs=1, **globals_):
    return {
        "recipe": "routine", "arrays": list(arrays), "output_model": "main", "seed": 0,
        "globals": {"positions": {"input": "data", "transforms": [
            {"name": "pca_init", "n_components": 2}]}, **globals_},
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
        "phases": [{"name": "regress", "epochs": epochs, "learning_rate": 0.01,
                    "sampler": {"name": "items", "batch_size": 60, "gather": ["positions"]},
                    "loss": {"name": "position", "target": "positions"}}]}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fit_transform_passes_y_as_fit_does():
    cfg = _routine(["data", "labels"])
    a = recipe_from_dict(cfg).fit(X, Y).transform(X)
    np.testing.assert_array_equal(a, recipe_from_dict(cfg).fit_transform(X, Y))


def test_warm_start_continues_the_fitted_routine():
    # 2 + 2 warm epochs at a constant rate = 4 epochs
    warm = recipe_from_dict(_routine(epochs=2)).fit(X)
    warm.fit(X, warm_start=True)
    once = recipe_from_dict(_routine(epochs=4)).fit(X)
    assert [r["loss"] for r in warm.history_] == [r["loss"] for r in once.history_]
    np.testing.assert_array_equal(warm.transform(X), once.transform(X))
    with pytest.raises(ValidationError, match="continues the fitted routine on the arrays"):
        warm.fit(X + 1, warm_start=True)
    assert recipe_from_dict(_routine()).fit(X, warm_start=True).routine_ is not None  # fresh


def test_warm_start_after_load_trains_on_the_arrays_given(tmp_path):
    fitted = recipe_from_dict(_routine(epochs=2)).fit(X)
    fitted.save(tmp_path / "m")
    loaded = RoutineRecipe.load(tmp_path / "m")
    loaded.fit(X, warm_start=True)
    assert len(loaded.history_) == 4


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_1d_labels_into_pdist_name_the_global_and_the_reshape():
    # before: BlockError "... cdist only supports at least 2D tensors" (torch's)
    cfg = _routine(["data", "labels"], same={"input": "labels", "relation": "pdist"})
    with pytest.raises(ValidationError, match=r"globals\.same: relation 'pdist' .* input "
                                              r"`labels` has shape \(120,\).*labels\.reshape\(-1, 1\)"):
        recipe_from_dict(cfg).fit(X, Y)
    fitted = recipe_from_dict(cfg).fit(X, Y.reshape(-1, 1))  # the fix the message names
    assert fitted.routine_.compute_global_relations()["same"].values.shape == (120, 120)
