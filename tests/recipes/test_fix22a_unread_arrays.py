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
    with pytest.warns(UnreadArrayWarning, match="'labels'.* read by no loss, sampler or global"):
        recipe_from_dict(_routine(["data", "labels"])).fit(X, Y)


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
        recipe_from_dict(cfg).fit(X, labels)


def test_y_given_to_an_embedding_recipe_warns_that_it_is_ignored():
    rec = ParametricTSNE.preset("network").set_params(init_epochs=1, exaggeration_epochs=1,
                                                      epochs=1, perplexity=5.0)
    with pytest.warns(UserWarning, match=r"`y` is ignored.*recipe = \"routine\""):
        rec.fit(X, Y)
