"""fix26b (author26-11): a weights model whose parameter is not the weight (w = exp θ):
`weights_` / `weights_history_` report the feature weights |feature_weights()|, as
docs/dii.md says ("learned |w|"), not |θ| (before: the informative features had the
*smallest* weights_); the built-in is unchanged (its feature_weights() is its parameter; with
groups, one weight per group).  select_features names the fields it needs and why."""
import math
import types
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch
from torch import nn

from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.models import Model
from infoblocks.plugins import hookimpl


class _ExpModule(nn.Module):
    def __init__(self, n_features, init):
        super().__init__()
        self.weights = nn.Parameter(torch.full((n_features,), math.log(init)))

    def feature_weights(self):
        return torch.exp(self.weights)


@attrs.define
class ExpWeights(Model):
    name: ClassVar[str] = "f26b_exp_weights"
    n_features: int = 1
    init: float = 0.1

    def build(self):
        return _ExpModule(self.n_features, self.init)


@pytest.fixture
def plugin(infoblocks_plugin):
    module = types.ModuleType("f26b_expw")
    module.register_models = hookimpl(lambda: [ExpWeights])
    return infoblocks_plugin(module, name="f26b_expw")


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 5)).astype(np.float32)
    return A, A[:, [0, 2]] * np.array([3.0, 2.0], dtype=np.float32)


def test_weights_are_the_feature_weights_of_a_reparametrised_model(plugin, tmp_path):
    from infoblocks.recipes import DII
    A, B = _data()
    m = DII(epochs=40, optimizer="adam", learning_rate=0.05,
            models={"weights": {"name": "f26b_exp_weights"}}).fit(A, B)
    module = m.routine_.models["weights"]
    features = module.feature_weights().detach().abs().numpy()
    np.testing.assert_array_equal(m.weights_, features)
    np.testing.assert_array_equal(m.weights_history_[-1], features)
    np.testing.assert_allclose(m.weights_history_[0], 0.1, rtol=1e-6)  # exp(log 0.1), not θ
    # the informative features 0 and 2 carry the largest weights (|θ| ranked them last)
    assert set(np.argsort(m.weights_)[-2:]) == {0, 2}
    m.save(tmp_path / "m")
    np.testing.assert_array_equal(DII.load(tmp_path / "m").weights_, m.weights_)


@pytest.mark.parametrize("groups", [None, [2, 1, 2]])
def test_the_built_in_still_reports_its_parameter(groups):
    from infoblocks.recipes import DII
    A, B = _data()
    m = DII(epochs=3, params_groups=groups).fit(A, B)
    np.testing.assert_array_equal(
        m.weights_, m.routine_.models["weights"].weights.detach().abs().numpy())
    assert m.weights_.shape == ((5,) if groups is None else (3,))


@pytest.mark.parametrize("method, needs", [("forward", r"`params_init` or `l1_strength`"),
                                           ("l1", r"`l1_strength`")])
def test_select_features_names_the_fields_it_needs(plugin, method, needs):
    from infoblocks.recipes import DII
    A, B = _data()
    m = DII(epochs=2, models={"weights": {"name": "f26b_exp_weights"}}).fit(A, B)
    with pytest.raises(ConfigError, match=rf"select_features\('{method}'\) retrains the weights "
                       rf"model .* models\.weights \('f26b_exp_weights'\) has no field {needs}"):
        m.select_features(method)
