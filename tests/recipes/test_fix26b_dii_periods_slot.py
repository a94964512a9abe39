"""fix26b (author26-1): `periods_A` / `periods_B` reach a plugin distance named in the loss or
evaluation section (as they do through the `distance_A` / `distance_B` shortcut); a distance
there without a `periods` field gets a ShortcutWarning.  Before, the section's distance was
built with periods=None, silently (a periodic B gave cos:sin weights 1:0.61, not 1:0.98)."""
import math
import types
import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.assembly import ShortcutWarning
from infoblocks.blocks.imbalance import FeatureWeightedDistance
from infoblocks.plugins import hookimpl


@attrs.define(frozen=True)
class Angular(FeatureWeightedDistance):
    name: ClassVar[str] = "f26b_angular"
    periods: tuple | None = None
    weights: tuple | None = None

    def weighted_pairwise(self, a, b, weights):
        diff = a[:, None, :] - b[None, :, :]
        if self.periods is not None:
            p = torch.as_tensor(self.periods, dtype=a.dtype)
            safe = torch.where(p > 0, p, torch.ones_like(p))
            diff = torch.where(p > 0, safe / math.pi * torch.sin(math.pi * diff / safe), diff)
        sq = diff * diff
        return sq.sum(-1) if weights is None else sq @ (weights * weights)


@attrs.define(frozen=True)
class NoPeriods(FeatureWeightedDistance):
    name: ClassVar[str] = "f26b_no_periods"
    weights: tuple | None = None

    def weighted_pairwise(self, a, b, weights):
        sq = (a[:, None, :] - b[None, :, :]) ** 2
        return sq.sum(-1) if weights is None else sq @ (weights * weights)


@pytest.fixture
def plugin(infoblocks_plugin):
    module = types.ModuleType("f26b_periods")
    module.register_distances = hookimpl(lambda: [Angular, NoPeriods])
    return infoblocks_plugin(module, name="f26b_periods")


def _angles(n=120, seed=0):
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    A = np.stack([np.cos(ang), np.sin(ang), rng.standard_normal(n)], 1).astype(np.float32)
    return A, ang[:, None]


@pytest.mark.parametrize("spec", ["f26b_angular", {"name": "f26b_angular"}])
def test_periods_B_reach_a_plugin_distance_named_in_the_sections(plugin, spec):
    from infoblocks.recipes import DII
    A, B = _angles()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortcutWarning)
        m = DII(epochs=2, periods_B=[2 * math.pi],
                phases=[{"name": "dii", "loss": {"distance_B": spec}}],
                evaluation={"distance_B": spec}).fit(A, B)
    assert m.routine_.phases[0].loss.distance_B.periods == (2 * math.pi,)
    assert m._evaluation_blocks()["distance_B"].periods == (2 * math.pi,)
    full = m.to_dict(full=True)
    assert full["phases"][0]["loss"]["distance_B"]["periods"] == [2 * math.pi]


def test_periods_A_reach_a_plugin_distance_of_A_named_in_the_loss(plugin):
    from infoblocks.recipes import DII
    A, B = _angles()
    periods = [2 * math.pi, 0.0, 0.0]
    m = DII(epochs=2, periods_A=periods,
            phases=[{"name": "dii", "loss": {"distance_A": "f26b_angular"}}]).fit(A, B)
    assert m.routine_.phases[0].loss.distance_A.periods == tuple(periods)


def test_periods_B_that_reach_no_distance_warn(plugin):
    from infoblocks.recipes import DII
    A, B = _angles()
    with pytest.warns(ShortcutWarning, match=r"`periods_B`.*reaches no block.*"
                      r"'f26b_no_periods', which has no field `periods`"):
        DII(epochs=2, periods_B=[2 * math.pi],
            phases=[{"name": "dii", "loss": {"distance_B": "f26b_no_periods"}}],
            evaluation={"distance_B": "f26b_no_periods"}).fit(A, B)
