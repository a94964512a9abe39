"""author29-13: umap-learn / ParametricUMAP names pointed to the wrong settings
(`n_training_epochs` -> "Did you mean 'init_epochs', 'transform_epochs'?", `target_metric` /
`output_metric` -> 'metric', `autoencoder_loss` -> 'encoder'), and a Python function as
`metric` got "expected a string" with no pointer to a distance block."""

import re

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError, UnknownParameterError, ValidationError
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes import ParametricTSNE, ParametricUMAP

@pytest.mark.parametrize("name, says", [
    ("n_training_epochs", r"Did you mean 'epochs'\? \(infoblocks' name for it\)"),
    ("random_state", r"Did you mean 'seed'\?"),
    ("negative_sample_rate", r"Did you mean 'neg_sampling_rate'\?"),
    ("target_metric", r"supervised UMAP .* has no setting here: the fit is unsupervised\. To "
                      r"train with labels, write a routine: `recipe = \"routine\"`"),
    ("target_weight", r"supervised UMAP"),
    ("output_metric", r"the embedding is Euclidean, its kernel set by `min_dist` / `spread`"),
    ("autoencoder_loss", r"`\[models.decoder\]` and a reconstruction loss .* `trainable = "
                         r"\[\"main\", \"decoder\"\]`"),
    ("parametric_reconstruction", r"`\[models.decoder\]`"),
    ("densmap", r"densMAP is not built in: its density term can be a loss block of your own"),
    ("landmark_loss_weight", r"landmark re-training is not built in"),
])
def test_umap_learn_names_point_to_the_right_setting(name, says):
    with pytest.raises(UnknownParameterError, match=f"has no parameter '{name}'\\. .*{says}") \
            as caught:
        ParametricUMAP(**{name: 1})
    # the wrong pointers of the close matches are gone
    assert not re.search(r"Did you mean '(init_epochs|metric|encoder)'", str(caught.value))
    with pytest.raises(ConfigError, match=f"`{name}`:.*{says}" if name not in (
            "random_state", "negative_sample_rate") else says):
        recipe_from_dict({"recipe": "parametric_umap", name: 1})


def test_close_matches_still_name_a_misspelling():
    with pytest.raises(UnknownParameterError, match="Did you mean 'n_neighbors'"):
        ParametricUMAP(n_neigbors=5)
    with pytest.raises(ConfigError, match="Did you mean 'n_neighbors' for 'n_neigbors'"):
        recipe_from_dict({"recipe": "parametric_umap", "n_neigbors": 5})


def test_a_python_function_as_metric_points_to_a_distance_block():
    def my_metric(a, b):
        return float(np.abs(a - b).max())

    for cls in (ParametricUMAP, ParametricTSNE):
        with pytest.raises(ValidationError, match=r"`metric`: expected a string, got <function "
                                                  r".*a Python function is not taken as `metric`"
                                                  r".*`distance` block .*docs/plugins.md, \"Add "
                                                  r"a distance to UMAP \(a custom metric\)\""):
            cls(metric=my_metric)
    with pytest.raises(ValidationError, match="a Python function is not taken as `metric`"):
        ParametricUMAP().set_params(metric=my_metric)
