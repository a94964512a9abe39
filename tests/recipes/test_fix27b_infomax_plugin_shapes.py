"""Inside InfoMax, a plugin bound or penalty of the wrong shape is named with its plugin and
TOML path (author27-C). Before, both were reported as the built-in loss's fault: "loss
'infomax' returned a value (LossOutput.value) that is a tensor of shape (3,)" (a bound) /
"of shape (256,)" (a penalty), the plugin block never named."""

from __future__ import annotations

import types
from typing import ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.errors import ContractError
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.mutual_information import MIBound
from infoblocks.plugins import hookimpl
from infoblocks.recipes.infomax import InfoMax, sanity_problem


@attrs.define
class VectorBound(MIBound):
    name: ClassVar[str] = "fix27b_vector_bound"
    shift_invariant: ClassVar[bool] = True

    def bound(self, scores):  # the bug: three copies of the DV value
        return (scores.mean_joint() - scores.log_mean_exp()) * torch.ones(3)


@attrs.define
class RowPenalty(Loss):
    name: ClassVar[str] = "fix27b_row_penalty"

    def __call__(self, batch, models, state):  # the bug: one value per row
        return LossOutput(batch["code"].pow(2).sum(-1), {})


@pytest.fixture
def blocks(infoblocks_plugin):
    module = types.ModuleType("fix27b_shapes")
    module.register_losses = hookimpl(lambda: [VectorBound, RowPenalty])
    infoblocks_plugin(module, name="fix27b_shapes")


def _fit(**options):
    InfoMax(epochs=1, **options).fit(sanity_problem(0, n=200)[1])


@pytest.mark.parametrize("d", [1, 2])  # 2: the nested bound
def test_bound_of_the_wrong_shape_names_the_bound(blocks, d):
    with pytest.raises(ContractError, match=(
            r"^loss 'fix27b_vector_bound' \(plugin 'fix27b_shapes'\): `bound\(scores\)` "
            r"returned a tensor of shape \(3,\) in `phases.train.loss.bound`, where an MI bound returns a scalar")):
        _fit(n_components=d, phases=[{"name": "train",
                                      "loss": {"bound": "fix27b_vector_bound"}}])


def test_penalty_of_the_wrong_shape_names_the_penalty(blocks):
    with pytest.raises(ContractError, match=(
            r"^Phase 'train': penalty 'fix27b_row_penalty' \(plugin 'fix27b_shapes'\) in "
            r"`phases.train.loss.penalties\[1\]` returned a value \(LossOutput.value\) that is "
            r"a tensor of shape \(180,\); a penalty's value is a scalar")):
        _fit(n_components=2, phases=[{"name": "train", "loss": {"penalties": [
            {"name": "parameter_l2"}, "fix27b_row_penalty"]}}])
