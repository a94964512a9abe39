"""The plugin authors' kit: check_block works without pytest, the fixture is opt-in, and the
conformance check reads the declared contracts."""

import subprocess
import sys
from typing import ClassVar

import attrs
import pytest

from infoblocks.blocks.losses import Loss
from infoblocks.plugins.testing import check_block


def test_check_block_imports_and_runs_without_pytest():
    code = ("import sys; sys.modules['pytest'] = None\n"
            "from infoblocks.plugins.testing import check_block\n"
            "from infoblocks.blocks.distances import Euclidean\n"
            "check_block(Euclidean); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_installing_infoblocks_adds_no_pytest_plugin():
    from importlib import metadata

    assert not [e for e in metadata.entry_points(group="pytest11")
                if e.value.startswith("infoblocks")]


@attrs.define
class _BadContract(Loss):
    name: ClassVar[str] = "bad_contract"
    reports: ClassVar = ["mi"]  # a list: must be a frozenset


def test_conformance_checks_the_declared_contract():
    with pytest.raises(AssertionError, match="reports must be a frozenset"):
        check_block(_BadContract)


def test_conformance_names_own_fields_that_are_not_fields():
    from infoblocks.blocks.distances import Euclidean

    @attrs.define
    class Typo(Euclidean):
        name: ClassVar[str] = "typo_own_fields"
        own_fields: ClassVar[tuple[str, ...]] = ("scael",)
        scale: float = 1.0

    with pytest.raises(AssertionError, match=r"own_fields names \['scael'\].*'scale'"):
        check_block(Typo)
    Typo.own_fields = ("scale",)
    check_block(Typo)


def test_conformance_builds_models_and_optimizers_and_names_a_missing_method():
    import torch

    from infoblocks.blocks.distances import Distance
    from infoblocks.blocks.models import MLP, Model
    from infoblocks.blocks.optim import OptimizerBlock

    @attrs.define
    class Narrow(MLP):  # says out_dim but builds a network of another width
        name: ClassVar[str] = "narrow_mlp"

        def build(self):
            return torch.nn.Linear(self.in_dim, self.out_dim + 1)

    @attrs.define
    class NoBuild(Model):
        name: ClassVar[str] = "no_build"

    @attrs.define
    class NotTorch(OptimizerBlock):
        name: ClassVar[str] = "not_torch"

        def build(self, params, lr, weight_decay=0.0):
            return {"params": params, "lr": lr}

    @attrs.define
    class Uphill(OptimizerBlock):  # ascends: a sign error in a hand-written step
        name: ClassVar[str] = "uphill"
        optimizer: ClassVar = torch.optim.SGD

        def build(self, params, lr, weight_decay=0.0):
            return torch.optim.SGD(params, lr=lr, maximize=True)

    @attrs.define
    class NoPairwise(Distance):
        name: ClassVar[str] = "no_pairwise"

    example = {"in_dim": 3, "out_dim": 2}
    with pytest.raises(AssertionError, match=r"maps \(4, in_dim=3\) to \(4, 3\), not "
                                             r"\(4, out_dim=2\)"):
        check_block(Narrow, example)
    check_block(MLP, example)  # the built-in passes
    with pytest.raises(NotImplementedError, match=r"NoBuild \(model 'no_build'\) does not "
                                                  r"define build\(\), which its base Model"):
        check_block(NoBuild)
    with pytest.raises(AssertionError, match=r"must return a torch.optim.Optimizer, got dict"):
        check_block(NotTorch)
    with pytest.raises(AssertionError, match=r"did not lower it"):
        check_block(Uphill)
    with pytest.raises(NotImplementedError, match=r"does not define pairwise\(\)"):
        check_block(NoPairwise)


def test_conformance_names_a_loss_without_call_and_an_optimizer_class_that_is_not_torchs():
    from infoblocks.blocks.errors import ValidationError
    from infoblocks.blocks.optim import OptimizerBlock

    @attrs.define
    class Silent(Loss):
        name: ClassVar[str] = "silent_loss"

    @attrs.define
    class Dictionary(OptimizerBlock):
        name: ClassVar[str] = "dictionary_optimizer"
        optimizer: ClassVar = dict

    with pytest.raises(NotImplementedError, match=r"Silent \(loss 'silent_loss'\) does not "
                                                  r"define __call__\(\)"):
        check_block(Silent)
    with pytest.raises(ValidationError, match=r"`optimizer` must be a torch.optim.Optimizer "
                                              r"subclass, got <class 'dict'>"):
        check_block(Dictionary)


def test_conformance_names_a_block_a_recipe_names_but_nobody_registers():
    from infoblocks.blocks.recipe import Recipe

    @attrs.define(kw_only=True)
    class Dangling(Recipe):
        name: ClassVar[str] = "dangling_recipe"

        def default_phases(self):
            return [{"name": "fit", "epochs": 1, "sampler": {"name": "items"},
                     "loss": {"name": "no_such_loss_anywhere"}}]

    with pytest.raises(AssertionError, match=r"names 'no_such_loss_anywhere' at "
                                             r"phases.fit.loss, which no plugin registers"):
        check_block(Dangling)
