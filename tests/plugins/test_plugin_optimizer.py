"""An optimizer is a block too: a plugin registers one (hook ``register_optimizers``) and any
phase of any recipe names it, with ``optimizer_options`` as its fields, from TOML."""

import tomllib
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.optim import DeltaBarDelta, OptimizerBlock
from infoblocks.blocks.phases import TrainingPhase, optimizer_class
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.plugins.testing import check_block


class SignSGD(torch.optim.Optimizer):
    """θ ← θ − lr · sign(∇) (signSGD)."""

    steps: ClassVar[int] = 0

    def __init__(self, params, lr=1e-3, scale=1.0):
        super().__init__(params, dict(lr=lr, scale=scale))

    @torch.no_grad()
    def step(self, closure=None):
        SignSGD.steps += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-group["lr"] * group["scale"])


@attrs.define
class SignSGDBlock(OptimizerBlock):
    name: ClassVar[str] = "test_sign_sgd"
    optimizer: ClassVar[type] = SignSGD
    scale: float = 1.0


class _Plugin:
    @hookimpl
    def register_optimizers(self):
        return [SignSGDBlock]


#: a sampler and a loss for phases built directly (the optimizer is what these tests look at)
_BLOCKS = {"sampler": "items", "loss": "position"}

CONFIG = """
recipe = "parametric_umap"
layout_epochs = 0
init_epochs = 2
epochs = 3

[[phases]]
name = "main"
optimizer = "test_sign_sgd"
optimizer_options = { scale = 0.5 }
"""


def test_a_plugin_optimizer_trains_a_phase_by_name_from_toml(infoblocks_plugin):
    infoblocks_plugin(_Plugin(), "test_optimizer")
    check_block(SignSGDBlock)
    assert optimizer_class("test_sign_sgd") is SignSGD
    x = get_registry().build("dataset", "digits").load()["data"][:300].astype(np.float32)
    recipe = recipe_from_dict(tomllib.loads(CONFIG))
    before = SignSGD.steps
    recipe.fit(x)
    phase = recipe.routine_.phases[-1]
    # 3 epochs x the main phase's batches (300 digits: 6, ⌈undirected edges / 500⌉), every
    # step its own
    batches = phase.sampler.num_batches(recipe.routine_.state)
    assert 1 < batches <= 10 and SignSGD.steps - before == 3 * batches
    built = phase.make_optimizer([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(built, SignSGD) and built.param_groups[0]["scale"] == 0.5
    assert np.isfinite(recipe.embedding_).all()


def test_optimizer_options_are_the_blocks_fields_checked_by_name(infoblocks_plugin):
    infoblocks_plugin(_Plugin(), "test_optimizer")
    phase = TrainingPhase(name="main", epochs=1, **_BLOCKS, optimizer="test_sign_sgd",
                          optimizer_options={"scael": 2.0})
    with pytest.raises(ConfigError, match="scael.*scale"):
        phase.make_optimizer([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValidationError, match=r"registered optimizer block \[.*'test_sign_sgd'"):
        TrainingPhase(name="main", epochs=1, **_BLOCKS, optimizer="test_sign_sdg")


def test_the_built_in_delta_bar_delta_is_a_block():
    assert get_registry().entry("optimizer", "delta_bar_delta").plugin == "builtin"
    phase = TrainingPhase(name="layout", epochs=1, **_BLOCKS, optimizer="delta_bar_delta",
                          learning_rate=0.5, optimizer_options={"momentum": 0.5})
    built = phase.make_optimizer([torch.nn.Parameter(torch.zeros(3, 2))])
    assert isinstance(built, DeltaBarDelta)
    assert built.param_groups[0]["momentum"] == 0.5 and built.param_groups[0]["lr"] == 0.5
    assert built.param_groups[0]["max_step_norm"] == 5.0
    decayed = TrainingPhase(name="layout", epochs=1, **_BLOCKS, optimizer="delta_bar_delta",
                            weight_decay=0.1)
    with pytest.raises(ValidationError, match="'delta_bar_delta' cannot be built.*weight_decay"):
        decayed.make_optimizer([torch.nn.Parameter(torch.zeros(3, 2))])


@pytest.mark.parametrize("recipe", ["mine", "dii", "infomax", "imnn"])
def test_every_recipes_optimizer_shortcut_takes_a_plugin_block(recipe, infoblocks_plugin):
    infoblocks_plugin(_Plugin(), "test_optimizer")
    cls = get_registry().get("recipe", recipe)
    extra = {"theta_fid": (0.0, 1.0)} if recipe == "imnn" else {}
    phase = cls(optimizer="test_sign_sgd", **extra).routine_spec()["phases"][0]
    assert phase["optimizer"] == "test_sign_sgd" and not phase.get("optimizer_options")
    assert cls(optimizer="RAdam", **extra).routine_spec()["phases"][0]["optimizer"] == "RAdam"
    with pytest.raises(ValidationError, match="registered optimizer block"):
        cls(optimizer="test_sign_sdg", **extra)
