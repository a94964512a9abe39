"""1-D labels into a built-in relation name the global, its input and the reshape
(author22-3: torch's "cdist only supports at least 2D tensors")."""

from __future__ import annotations

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.plugins.registry import recipe_from_dict

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
def test_1d_labels_into_pdist_name_the_global_and_the_reshape():
    # before: BlockError "... cdist only supports at least 2D tensors" (torch's)
    cfg = _routine(["data", "labels"], same={"input": "labels", "relation": "pdist"})
    with pytest.raises(ValidationError, match=r"globals\.same: relation 'pdist' .* input "
                                              r"`labels` has shape \(120,\).*labels\.reshape\(-1, 1\)"):
        recipe_from_dict(cfg).fit(X, Y)
    fitted = recipe_from_dict(cfg).fit(X, Y.reshape(-1, 1))  # the fix the message names
    assert fitted.routine_.compute_global_relations()["same"].values.shape == (120, 120)
