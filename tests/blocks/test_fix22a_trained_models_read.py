"""A phase whose loss reads none of the models it trains is refused before the first step
(author22-12: it ran its epochs and changed no parameter, silently)."""

from __future__ import annotations

import numpy as np
import pytest

from infoblocks.blocks.errors import ContractError
from infoblocks.plugins.registry import recipe_from_dict

X = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")


def _routine(trainable, loss):
    return {
        "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
        "globals": {"positions": {"input": "data", "transforms": [
            {"name": "pca_init", "n_components": 2}]}},
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]},
                   "other": {"name": "mlp", "out_dim": 2, "hidden_dims": [4]}},
        "phases": [{"name": "regress", "epochs": 1, "trainable": trainable,
                    "sampler": {"name": "items", "batch_size": 60, "gather": ["positions"]},
                    "loss": loss},
                   {"name": "use_other", "epochs": 1, "trainable": ["other"],
                    "sampler": {"name": "items", "batch_size": 60, "gather": ["positions"]},
                    "loss": {"name": "position", "target": "positions", "model": "other"}}]}


@pytest.mark.parametrize("loss", [
    {"name": "position", "target": "positions"},
    {"name": "compound", "losses": [{"name": "position", "target": "positions"}]}])
def test_a_phase_training_no_model_its_loss_reads_is_refused(loss):
    rec = recipe_from_dict(_routine(["other"], loss))
    with pytest.raises(ContractError, match=r"Phase 'regress' trains \['other'\] .* reads only "
                                            r"\['main'\]: no parameter would get a gradient"):
        rec.fit(X)
    assert rec.routine_ is None  # before the first step


def test_a_phase_training_a_model_its_loss_reads_runs():
    rec = recipe_from_dict(_routine(["main", "other"], {"name": "position",
                                                        "target": "positions"})).fit(X)
    assert [r["phase"] for r in rec.history_] == ["regress", "use_other"]
