"""ParametricTSNE on fewer rows than its default perplexity needs (30: k = 90 neighbours, 91
rows): the perplexity is lowered to (N − 1) / 3, as openTSNE does, with a warning; an explicit
perplexity too large is an error naming the largest the rows allow (genemb22-2: `X has 64
samples; ... needs at least 91`)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes.tsne import ParametricTSNE

#: a short fit (the perplexity is set before training: the budget does not matter here)
SHORT = dict(layout_epochs=5, layout_exaggeration_epochs=2, init_epochs=2, seed=0)


def clusters(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n // 2, 5)), rng.normal(size=(n - n // 2, 5)) + 6])


def test_the_default_perplexity_is_lowered_on_a_small_data_set(tmp_path):
    x = clusters(64)
    recipe = ParametricTSNE(**SHORT)
    with pytest.warns(UserWarning, match=r"X has 64 samples, fewer than the 91 the default "
                      r"perplexity = 30 needs .* perplexity = \(samples − 1\) / 3 = 21 "):
        recipe.fit(x)
    assert recipe.perplexity == 30  # the hyperparameter as set; the fit's own:
    assert recipe.perplexity_ == pytest.approx(21.0)
    graph = recipe.routine_spec()["globals"]["P"]
    assert graph["relation"]["n_neighbors"] == 63  # k = N − 1
    assert graph["transforms"][0] == {"name": "perplexity_rescale",
                                      "perplexity": pytest.approx(21.0)}
    assert recipe.embedding_.shape == (64, 2) and np.isfinite(recipe.embedding_).all()
    # transform and a saved model use the lowered perplexity's fit
    new = np.random.default_rng(1).normal(size=(5, 5))
    placed = recipe.transform(new)
    recipe.save(tmp_path / "model")
    loaded = ParametricTSNE.load(tmp_path / "model")
    assert loaded.perplexity_ == pytest.approx(21.0)
    assert loaded.routine_spec()["globals"]["P"]["relation"]["n_neighbors"] == 63
    np.testing.assert_allclose(loaded.transform(new), placed, atol=1e-5)


def test_an_explicit_perplexity_too_large_names_the_largest_allowed():
    with pytest.raises(ValidationError, match=r"`X` has 50 samples; ParametricTSNE with "
                       r"perplexity = 25 needs at least 76 .* at most \(samples − 1\) / 3 = "
                       r"16.33, or set n_neighbors"):
        ParametricTSNE(perplexity=25, **SHORT).fit(clusters(50))


def test_enough_rows_keep_the_default_without_a_warning():
    recipe = ParametricTSNE(**SHORT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recipe.build(clusters(91))  # 91 rows: k = 90 fits
    assert recipe.perplexity_ == 30.0
    assert recipe.routine_spec()["globals"]["P"]["relation"]["n_neighbors"] == 90
