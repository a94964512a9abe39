"""fix26b (author26-3): a weights model whose feature_weights() is a learnt map (a flat
low-rank map L, (r·D,)) trains with a distance of A that declares `per_feature_weights =
False` (d = ‖L(x − y)‖²), as docs/dii.md's "Options not taken" said the protocol allows;
before, the loss refused any output but one weight per feature.  A distance that does not
declare it still gets the per-feature error, which now names the declaration."""
import types
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch
from torch import nn

from infoblocks.blocks.errors import ConfigError, ContractError, ValidationError
from infoblocks.blocks.imbalance import FeatureWeightedDistance
from infoblocks.blocks.models import Model
from infoblocks.plugins import hookimpl


class _LowRank(nn.Module):
    def __init__(self, d, r):
        super().__init__()
        g = torch.Generator().manual_seed(0)  # near 0.1 × the first r rows of the identity
        start = 0.1 * torch.eye(d)[:r] + 0.01 * torch.randn(r, d, generator=g)
        self.weights = nn.Parameter(start.reshape(-1))

    def feature_weights(self):
        return self.weights


@attrs.define
class LowRank(Model):
    name: ClassVar[str] = "f26b_lowrank"
    n_features: int = 1
    rank: int = 1

    def build(self):
        return _LowRank(self.n_features, self.rank)


@attrs.define(frozen=True)
class LowRankDist(FeatureWeightedDistance):
    name: ClassVar[str] = "f26b_lowrank_dist"
    per_feature_weights: ClassVar[bool] = False
    weights: tuple | None = None

    def weighted_pairwise(self, a, b, weights):
        L = torch.eye(a.shape[1]) if weights is None else weights.reshape(-1, a.shape[1])
        pa, pb = a @ L.T, b @ L.T
        return ((pa[:, None] - pb[None]) ** 2).sum(-1)


@attrs.define(frozen=True)
class PerFeatureDist(LowRankDist):
    name: ClassVar[str] = "f26b_per_feature_dist"
    per_feature_weights: ClassVar[bool] = True


@pytest.fixture
def plugin(infoblocks_plugin):
    module = types.ModuleType("f26b_map")
    module.register_distances = hookimpl(lambda: [LowRankDist, PerFeatureDist])
    module.register_models = hookimpl(lambda: [LowRank])
    return infoblocks_plugin(module, name="f26b_map")


def _data(n=100, seed=0):
    """B = (A₀ + A₁, A₀ − A₁): A's first two features, rotated."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 4)).astype(np.float32)
    return A, np.stack([A[:, 0] + A[:, 1], A[:, 0] - A[:, 1]], 1)


def test_a_learnt_map_trains_with_a_distance_that_takes_it(plugin):
    from infoblocks.recipes import DII
    A, B = _data()
    m = DII(epochs=30, optimizer="adam", learning_rate=0.01, k_init=5, k_final=1,
            distance_A="f26b_lowrank_dist",
            models={"weights": {"name": "f26b_lowrank", "rank": 4}}).fit(A, B)
    assert m.weights_.shape == (16,) and m.weights_history_.shape == (31, 16)
    L = m.routine_.models["weights"].feature_weights().detach().numpy().reshape(4, 4)
    assert np.abs(L[:, 2:]).max() < 0.05 * np.abs(L).max()  # A₂, A₃ carry nothing about B
    assert m.dii_history_[-1] < 0.3 * m.dii_history_[0]       # 0.185 -> 0.023
    assert m.final_dii()[0] < 0.05
    with pytest.raises(ConfigError, match=r"select_features\('backward'\).*per_feature_weights"):
        m.select_features("backward")
    with pytest.raises(ValidationError, match=r"information_imbalance .*'f26b_lowrank_dist'"):
        m.information_imbalance()


def test_a_rank_2_map_of_a_distance_that_does_not_declare_it_is_refused(plugin):
    from infoblocks.recipes import DII
    A, B = _data()
    with pytest.raises(ContractError, match=r"got \(8,\); a learnt map .* `per_feature_weights "
                       r"= False`\), which 'f26b_per_feature_dist' does not declare"):
        DII(epochs=2, distance_A="f26b_per_feature_dist",
            models={"weights": {"name": "f26b_lowrank", "rank": 2}}).fit(A, B)
