"""An array given to fit that nothing reads is named (author22-2: labels given, the loss that
reads them forgotten, trained an unsupervised map silently; ParametricUMAP / ParametricTSNE
ignored ``y`` silently)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes import ParametricTSNE
from infoblocks.recipes.routine import UnreadArrayWarning

X = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")
Y = np.arange(120) % 3


def _routine(arrays, loss=None, validation=None):
    phase = {"name": "regress", "epochs": 1,
             "sampler": {"name": "items", "batch_size": 60, "gather": ["positions"]},
             "loss": loss or {"name": "position", "target": "positions"}}
    if validation:
        phase["validation"] = validation
    return {"recipe": "routine", "arrays": arrays, "output_model": "main", "seed": 0,
            "globals": {"positions": {"input": "data", "transforms": [
                {"name": "pca_init", "n_components": 2}]}},
            "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
            "phases": [phase]}


def test_an_array_no_block_reads_warns_naming_it():
    with pytest.warns(UnreadArrayWarning, match="'labels'.* read by no loss, sampler or global"
                      ) as caught:
        fitted = recipe_from_dict(_routine(["data", "labels"])).fit(X, Y)
    named = [str(w.message) for w in caught if w.category is UnreadArrayWarning]
    # data is read: only labels is named as the array no block reads
    assert len(named) == 1 and named[0].startswith("routine: the array 'labels' (")
    # a warning, not a refusal: the fit is the one without the labels array
    alone = recipe_from_dict(_routine(["data"])).fit(X)
    np.testing.assert_array_equal(fitted.transform(X), alone.transform(X))


@pytest.mark.parametrize("where", ["loss", "validation", "global"])
def test_an_array_a_block_reads_does_not_warn(where):
    labels = Y[:, None].astype("float32")  # (n, 1): a relation input
    cfg = _routine(["data", "labels"])
    part = {"name": "position", "target": "labels", "model": "main"}
    if where == "loss":
        cfg["models"]["main"]["out_dim"] = 1
        cfg["phases"][0]["loss"] = part
    elif where == "validation":
        cfg["phases"][0]["validation"] = {"sampler": "items", "loss": {
            "name": "compound", "losses": [{**part, "model": "head"}]}}
        cfg["models"]["head"] = {"name": "mlp", "out_dim": 1, "hidden_dims": [4]}
    else:
        cfg["globals"]["same"] = {"input": "labels", "relation": "pdist"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadArrayWarning)
        fitted = recipe_from_dict(cfg).fit(X, labels)
    routine = fitted.routine_
    if where == "global":  # the labels' relation was built: 120 x 120 distances, 0 within a class
        same = routine.compute_global_relations()["same"].values
        assert same.shape == (120, 120) and float(same[0, 3]) == 0.0 and float(same[0, 1]) > 0
    else:  # the loss that reads labels ran: its value is in the history
        key = "loss" if where == "loss" else "val_loss"
        assert np.isfinite([row[key] for row in routine.history.rows if key in row]).all()
        assert any(key in row for row in routine.history.rows)


def test_y_given_to_an_embedding_recipe_warns_that_it_is_ignored():
    rec = ParametricTSNE.preset("network").set_params(init_epochs=1, exaggeration_epochs=1,
                                                      epochs=1, perplexity=5.0)
    with pytest.warns(UserWarning, match=r"`y` is ignored.*recipe = \"routine\""):
        with_y = rec.fit(X, Y).embedding_.copy()
    # ignored indeed: the same embedding as without y
    np.testing.assert_array_equal(with_y, rec.fit(X).embedding_)
