"""Blocks and routines built from Python (user13): a misspelt keyword of a block or a phase
gets the close match (U13-14); an exception inside a built-in block is a ``BlockError`` that
says "built-in", a plugin's or a user's a ``PluginError`` (a BlockError)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.errors import BlockError, PluginError, UnknownParameterError
from infoblocks.blocks.losses import PositionLoss
from infoblocks.blocks.phases import Validation
from infoblocks.plugins import get_registry

PHASE = dict(name="fit", epochs=1, sampler={"name": "items", "batch_size": 20}, loss="position")


def _routine(model=None):
    a = np.random.default_rng(0).normal(size=(40, 4))
    model = model or get_registry().build("model", {"name": "mlp", "in_dim": 4, "out_dim": 2})
    return Routine(dataset={"data": a, "positions": a[:, :2]}, models={"main": model},
                   phases=[TrainingPhase(**PHASE)], seed=0)


# ---------------------------------------------------------------- U13-14: misspelt keywords

def test_training_phase_misspelt_keyword_gets_the_close_match():
    # was attrs' bare "TypeError: __init__() got an unexpected keyword argument 'epoch'"
    with pytest.raises(UnknownParameterError, match="no parameter 'epoch'. Did you mean 'epochs'"):
        TrainingPhase(name="fit", epoch=2, sampler="items", loss="position")


@pytest.mark.parametrize("build, match", [
    (lambda: PositionLoss(modle="main"), "PositionLoss has no parameter 'modle'. Did you mean "
                                         "'model'"),
    (lambda: Validation(sampler="items", loss="position", evry=2), "Did you mean 'every'"),
])
def test_every_block_built_from_python_gets_the_close_match(build, match):
    with pytest.raises(UnknownParameterError, match=match):
        build()


def test_a_misspelt_keyword_is_still_a_type_error():
    with pytest.raises(TypeError):  # what code written against attrs' error catches
        PositionLoss(modle="main")


# ---------------------------------------------------------------- BlockError vs PluginError

def test_a_built_in_block_that_raises_is_a_block_error_called_built_in(monkeypatch):
    def broken(self, batch, models, state):
        raise ValueError("math domain error")

    monkeypatch.setattr(PositionLoss, "__call__", broken)
    with pytest.raises(ValueError, match=r"phase 'fit': built-in loss 'position' raised "
                                         r"ValueError: math domain error") as caught:
        _routine().train()
    assert isinstance(caught.value, BlockError)
    assert not isinstance(caught.value, PluginError)  # was a PluginError
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_users_module_that_raises_is_a_plugin_error():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            raise RuntimeError("bug in my module")

    with pytest.raises(PluginError, match=r"phase 'fit': loss 'position' raised RuntimeError: "
                                          r"bug in my module.*models\.main, a torch module "
                                          r"passed as it is, module Broken") as caught:
        _routine(Broken()).train()
    assert isinstance(caught.value, (BlockError, RuntimeError))
