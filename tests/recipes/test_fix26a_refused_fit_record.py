"""A refused fit leaves the last fit's record: ``pca_dims_``, ``init_batch_size_``, t-SNE's
``batch_size_`` / ``perplexity_`` and what the fit ran on (``fitted_caps``) are set before the
data is checked (the spec the check reads is capped by them), and were left at the refused
data's (10 rows, 3 features: ``pca_dims_`` 3, batches of 10) while ``routine_`` stayed the last
fit's, so ``to_toml(full=True)`` and the save wrote a config of neither."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes.tsne import ParametricTSNE
from infoblocks.recipes.umap import ParametricUMAP

UMAP_SHORT = dict(layout_epochs=2, init_epochs=1, epochs=1, hidden_dims=(8,), seed=0)
TSNE_SHORT = dict(layout_epochs=2, layout_exaggeration_epochs=1, init_epochs=1,
                  hidden_dims=(8,), perplexity=20, seed=0)  # k = 60
X = np.random.default_rng(0).normal(size=(200, 10)).astype(np.float32)
RECORD = ["pca_dims_", "init_batch_size_", "batch_size_", "perplexity_", "_fitted_on"]

REFUSED = [
    ("too few rows", dict(X=X[:10, :3]), r"`X` has 10 samples"),
    ("bad knn", dict(X=X[:, :5], knn=(np.zeros((200, 20), int), np.ones((200, 20)))),
     r"`knn` row 0 names a neighbour twice"),
    ("training fails", dict(X=X[:100, :4]), r"training failed here"),
]


def record(recipe) -> dict:
    return {name: getattr(recipe, name, None) for name in RECORD}


@pytest.mark.parametrize("cls, short", [(ParametricUMAP, UMAP_SHORT),
                                        (ParametricTSNE, TSNE_SHORT)])
@pytest.mark.parametrize("arguments, message", [pytest.param(a, m, id=n) for n, a, m in REFUSED])
def test_a_refused_fit_leaves_the_last_fits_record(cls, short, arguments, message, tmp_path,
                                                   monkeypatch):
    recipe = cls(**short, pca_dims=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe.fit(X)
    good, full = record(recipe), recipe.to_toml(full=True)
    assert good["pca_dims_"] == 10 and good["init_batch_size_"] == 200  # (capped by 200 x 10)
    recipe.save(tmp_path / "good")
    if "training" in message:
        def fail(*args, **kwargs):
            raise RuntimeError("training failed here")
        monkeypatch.setattr(recipe, "train_routine", fail)
    arguments = dict(arguments)
    with pytest.raises((ValidationError, RuntimeError), match=message):
        recipe.fit(arguments.pop("X"), **arguments)
    assert record(recipe) == good
    assert recipe.to_toml(full=True) == full
    recipe.save(tmp_path / "after")
    assert {p.name: p.read_bytes() for p in (tmp_path / "after").glob("*.toml")} == \
        {p.name: p.read_bytes() for p in (tmp_path / "good").glob("*.toml")}


def test_a_perplexity_the_rows_cannot_take_leaves_the_last_fits_perplexity():
    recipe = ParametricTSNE(**TSNE_SHORT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe.fit(X)
    good = record(recipe)
    assert good["perplexity_"] == 20 and good["batch_size_"] == 200
    with pytest.raises(ValidationError, match=r"`X` has 50 samples.*perplexity = 20 needs at "
                                              r"least 61"):
        recipe.fit(X[:50])
    assert record(recipe) == good
