"""InfoMax checks its encoder's width against ``n_components`` before training (author27-A).

Before, a plugin encoder returning one column for ``n_components = 2`` trained and transformed
to (n, 1), silently; a wider one failed in the critic with a broadcasting error that blamed the
built-in blocks and never named the encoder."""

from __future__ import annotations

import types
from typing import ClassVar

import attrs
import pytest
import torch
from torch import nn

from infoblocks.blocks.errors import ContractError
from infoblocks.blocks.models import Model
from infoblocks.plugins import hookimpl
from infoblocks.recipes.infomax import InfoMax, sanity_problem


class _FixedWidth(nn.Module):
    """tanh(W x) with ``width`` columns, whatever ``out_dim`` the recipe asks for."""

    def __init__(self, in_dim: int, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, width)

    def forward(self, x):
        return torch.tanh(self.lin(x))


@attrs.define
class NarrowEncoder(Model):
    name: ClassVar[str] = "fix27b_narrow_encoder"
    in_dim: int = 1
    out_dim: int = 1

    def build(self):
        return _FixedWidth(self.in_dim, 1)  # ignores out_dim: the bug


@attrs.define
class WideEncoder(Model):
    name: ClassVar[str] = "fix27b_wide_encoder"
    in_dim: int = 1

    def build(self):  # no out_dim field at all
        return _FixedWidth(self.in_dim, 3)


@pytest.fixture
def encoders(infoblocks_plugin):
    module = types.ModuleType("fix27b_encoders")
    module.register_models = hookimpl(lambda: [NarrowEncoder, WideEncoder])
    infoblocks_plugin(module, name="fix27b_encoders")


def _features():
    return sanity_problem(0, n=200)[1]


def test_narrow_plugin_encoder_is_refused_naming_it(encoders):
    with pytest.raises(ContractError, match=(
            r"`models.encoder` = model 'fix27b_narrow_encoder' \(plugin 'fix27b_encoders'\) "
            r"must map \(n, 6\) to \(n, 2\) \(n_components = 2\); on two rows it returned "
            r"\(2, 1\): the code \(and `transform`\) would have 1 column.*make its network "
            r"return \(n, out_dim\); or set n_components = 1")):
        InfoMax(n_components=2, epochs=1,
                models={"encoder": {"name": "fix27b_narrow_encoder"}}).fit(_features())


def test_wide_plugin_encoder_is_refused_naming_it(encoders):
    # before: "built-in loss 'infomax' raised RuntimeError: The size of tensor a (2) must
    # match the size of tensor b (3)" from the critic's fit_scale
    with pytest.raises(ContractError, match=(
            r"'fix27b_wide_encoder' \(plugin 'fix27b_encoders'\) must map \(n, 6\) to \(n, 2\).*"
            r"returned \(2, 3\): the channel and the critic are built for 2 columns\. Give the "
            r"block an `out_dim` field")):
        InfoMax(n_components=2, epochs=1,
                models={"encoder": {"name": "fix27b_wide_encoder"}}).fit(_features())


def test_out_dim_in_the_encoder_table_is_named():
    with pytest.raises(ContractError, match=r"model 'mlp' must map .* returned \(2, 3\).*"
                                            r"Remove `out_dim` = 3 from \[models.encoder\]"):
        InfoMax(n_components=2, epochs=1,
                models={"encoder": {"name": "mlp", "out_dim": 3}}).fit(_features())


def test_encoder_module_of_another_width_is_a_contract_error():
    with pytest.raises(ContractError, match=r"`encoder_module` must map \(n, 6\) to \(n, 2\).*"
                                            r"returned \(2, 1\).*set n_components = 1"):
        InfoMax(n_components=2, epochs=1, encoder_module=nn.Linear(6, 1)).fit(_features())


def test_the_check_leaves_the_fit_unchanged():
    # the check runs the encoder once in eval mode outside the routine's random stream: two
    # fits give the same codes bit for bit, and the built-in encoder passes it
    x = _features()
    a = InfoMax(n_components=2, epochs=2).fit_transform(x)
    b = InfoMax(n_components=2, epochs=2).fit_transform(x)
    assert a.shape == (200, 2) and (a == b).all()
