"""author29-16: a NaN compound weight was accepted; the fit then died with "the loss became
nan. Lower `learning_rate` ...", blaming the optimiser."""

import numpy as np
import pytest

from infoblocks.blocks.embedding.training import RelationLoss
from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.losses import CompoundLoss
from infoblocks.blocks.recipe import read_toml
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes import ParametricUMAP


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "1", True])
def test_compound_refuses_a_weight_that_is_not_a_finite_number(bad):
    with pytest.raises(ValidationError, match=r"CompoundLoss: `weights\[1\]` = .* must be a "
                                              r"finite number \(the weight of losses\[1\]\)"):
        CompoundLoss(losses=[RelationLoss(), RelationLoss()], weights=[1.0, bad])


def test_compound_takes_negative_zero_and_numpy_weights():
    loss = CompoundLoss(losses=[RelationLoss(), RelationLoss()], weights=[np.float32(2), -0.5])
    assert loss.weights[1] == -0.5
    CompoundLoss(losses=[RelationLoss(), RelationLoss()], weights=[1, 0])


def test_a_nan_weight_in_toml_is_named_before_training(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('recipe = "parametric_umap"\nn_neighbors = 5\n[[phases]]\nname = "main"\n'
                      'loss = { name = "compound", weights = [1.0, nan], '
                      'losses = ["relation", "relation"] }\n')
    recipe = recipe_from_dict(read_toml(config))
    assert isinstance(recipe, ParametricUMAP)
    with pytest.raises(ConfigError, match=r"phases.main.loss .*`weights\[1\]` = nan must be a "
                                          r"finite number"):
        recipe.fit(np.random.default_rng(0).normal(size=(60, 4)))
    assert recipe.routine_ is None  # refused before any training
