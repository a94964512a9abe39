"""fix26b (author26-10): a distance of A without a `unit` field on data_A in units far from 1
gets a DIIWarning naming it, the unit and the fix.  Before, A × 1e-6 with such a plugin
distance gave a final DII of 0.975 and wrong weights without any message (the built-in, which
takes the unit, gives the same weights at every scale)."""
import re
import types
import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest

from infoblocks.blocks.imbalance import FeatureWeightedDistance
from infoblocks.plugins import hookimpl
from infoblocks.recipes.dii import DIIWarning


@attrs.define(frozen=True)
class PlainSq(FeatureWeightedDistance):
    name: ClassVar[str] = "f26b_plain_sq"
    weights: tuple | None = None

    def weighted_pairwise(self, a, b, weights):
        sq = (a[:, None, :] - b[None, :, :]) ** 2
        return sq.sum(-1) if weights is None else sq @ (weights * weights)


@attrs.define(frozen=True)
class UnitSq(PlainSq):
    name: ClassVar[str] = "f26b_unit_sq"
    unit_power: ClassVar[float] = 2.0
    unit: float = 1.0

    def weighted_pairwise(self, a, b, weights):
        return super().weighted_pairwise(a / self.unit, b / self.unit, weights)


@pytest.fixture
def plugin(infoblocks_plugin):
    module = types.ModuleType("f26b_units")
    module.register_distances = hookimpl(lambda: [PlainSq, UnitSq])
    return infoblocks_plugin(module, name="f26b_units")


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 4)).astype(np.float32)
    return A, A[:, :2] * np.array([3.0, 1.0], dtype=np.float32)


def _unit_warnings(scale, **settings):
    from infoblocks.recipes import DII
    A, B = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DII(epochs=2, **settings).fit(A * np.float32(scale), B)
    return [str(w.message) for w in caught
            if issubclass(w.category, DIIWarning) and "`unit`" in str(w.message)]


@pytest.mark.parametrize("scale, why", [(1e-6, r"under the λ floor"),
                                        (1e12, r"self-distance sentinel")])
def test_a_distance_without_unit_on_data_far_from_unit_scale_warns(plugin, scale, why):
    messages = _unit_warnings(scale, distance_A="f26b_plain_sq")
    assert len(messages) == 1
    assert "distance_A = 'f26b_plain_sq' has no `unit` field" in messages[0]
    unit = float(re.search(r"units of about ([0-9.e+-]+) ", messages[0]).group(1))
    assert scale / 2 <= unit <= scale * 2  # (a power of two)
    assert re.search(why, messages[0]) and "unit_power" in messages[0]


def test_a_distance_named_in_the_loss_section_is_looked_at_too(plugin):
    messages = _unit_warnings(1e-6, phases=[{"name": "dii",
                                             "loss": {"distance_A": "f26b_plain_sq"}}])
    assert len(messages) == 1 and "'f26b_plain_sq'" in messages[0]


@pytest.mark.parametrize("settings, scale", [(dict(distance_A="f26b_plain_sq"), 1.0),
                                             (dict(distance_A="f26b_plain_sq"), 1e-3),
                                             (dict(distance_A="f26b_unit_sq"), 1e-6),
                                             ({}, 1e-6), ({}, 1e12)])
def test_no_warning_where_the_distance_takes_the_unit_or_the_data_are_near_it(
        plugin, settings, scale):
    assert _unit_warnings(scale, **settings) == []
