"""InfoMax's ``infomax`` loss reads the sampler's ``x`` only: a sampler whose ``y`` is another
view of the rows (SimCLR pairs) is refused on the phase's first batch (author25-3: accepted by
name, its ``y`` dropped with no word — codes bit-identical with ``y`` zeroed)."""

from __future__ import annotations

import types
from typing import ClassVar

import attrs
import numpy as np
import pytest

from infoblocks.blocks.errors import ContractError
from infoblocks.blocks.mutual_information.samplers import InBatchSampler
from infoblocks.plugins import hookimpl
from infoblocks.recipes import InfoMax


@attrs.define(kw_only=True)
class ShiftedView(InBatchSampler):
    """all_pairs whose `y` is a second "view" of each row (x + 1)."""
    name: ClassVar[str] = "f25c_shifted_view"

    def generate(self, state, generator):
        for batch in super().generate(state, generator):
            yield {**batch, "y": batch["y"] + 1.0}


@attrs.define(kw_only=True)
class SameView(InBatchSampler):
    """all_pairs whose `y` is a new tensor equal to `x`: nothing is dropped."""
    name: ClassVar[str] = "f25c_same_view"

    def generate(self, state, generator):
        for batch in super().generate(state, generator):
            yield {**batch, "y": batch["x"].clone()}


@pytest.fixture
def views(infoblocks_plugin):
    module = types.ModuleType("f25c_views")
    module.register_samplers = hookimpl(lambda: [ShiftedView, SameView])
    infoblocks_plugin(module, name="f25c_views")


X = np.random.default_rng(0).normal(size=(120, 5)).astype(np.float32)


def test_a_sampler_whose_y_is_another_view_is_refused(views):
    recipe = InfoMax(n_components=2, epochs=1, batch_size=32, seed=0,
                     negatives="f25c_shifted_view")
    with pytest.raises(ContractError, match=r"Phase 'train': the loss 'infomax' reads the "
                       r"batch's `x` only .* the sampler in phases\.train\.sampler yields a `y` "
                       r"that is not `x` .* a `routine` recipe with a loss that encodes both"):
        recipe.fit(X)


def test_a_y_equal_to_x_is_accepted(views):
    same = InfoMax(n_components=2, epochs=1, batch_size=32, seed=0, negatives="f25c_same_view")
    default = InfoMax(n_components=2, epochs=1, batch_size=32, seed=0)
    # the same pairs as the built-in all_pairs: the same codes, bit for bit
    assert np.array_equal(same.fit(X).transform(X), default.fit(X).transform(X))
