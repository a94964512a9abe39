"""docs/plugins.md's InfoMax slots say how a plugin critic scores the nested bound's prefixes
and how to check a penalty with check_block (author27-6): both undocumented before."""

from __future__ import annotations

import re
import types
import warnings
from pathlib import Path
from typing import ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.models import Model
from infoblocks.plugins import hookimpl
from infoblocks.plugins.testing import NotExercisedWarning, check_block
from infoblocks.recipes.infomax import InfoMax, sanity_problem

DOC = " ".join((Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text().split())
SEEN: list[tuple[torch.Tensor, torch.Tensor]] = []


class _Bilinear(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(dim))

    def forward(self, z, u):
        return ((z @ self.w) * u).sum(-1)

    def pairwise(self, z, u):
        SEEN.append((z.detach().clone(), u.detach().clone()))
        return z @ self.w @ u.T


@attrs.define
class SpyCritic(Model):
    name: ClassVar[str] = "fix27b_spy_critic"
    x_dim: int = 1
    y_dim: int = 1

    def build(self):
        return _Bilinear(self.x_dim)


def test_a_plugin_critic_scores_prefixes_with_the_later_coordinates_zeroed(infoblocks_plugin):
    assert "without it prefix k is scored by the critic's `pairwise` (or `forward`) on z, and " \
        "u for a code critic, with the coordinates after k set to 0" in DOC
    module = types.ModuleType("fix27b_spy")
    module.register_models = hookimpl(lambda: [SpyCritic])
    infoblocks_plugin(module, name="fix27b_spy")
    SEEN.clear()
    InfoMax(n_components=2, epochs=1, batches_per_epoch=1, test_fraction=0.0,
            models={"critic": "fix27b_spy_critic"}).fit(sanity_problem(0, n=100)[1])
    # one step: the whole code's scores, then prefix 1 (second coordinate 0), then prefix 2
    firsts = [bool((z[:, 1] == 0).all() and (u[:, 1] == 0).all()) for z, u in SEEN]
    assert firsts == [False, True, False]
    assert bool((SEEN[1][0][:, 0] == SEEN[2][0][:, 0]).all())  # the first coordinate kept


@attrs.define
class CodeEnergy(Loss):
    name: ClassVar[str] = "fix27b_code_energy"
    consumes: ClassVar[frozenset[str]] = frozenset({"code"})
    weight: float = 1.0
    per_row: ClassVar[bool] = False

    def __call__(self, batch, models, state):
        energy = batch["code"].pow(2).sum(-1)
        return LossOutput(self.weight * (energy if self.per_row else energy.mean()), {})


def test_the_check_block_call_for_a_penalty_in_the_docs_runs():
    found = re.search(r"`check_block\(MyPenalty, batch=(lambda b: [^`]*)\)`", DOC)
    assert found, "docs/plugins.md shows check_block for a penalty"
    batch = eval(found.group(1), {"torch": torch})  # noqa: S307 - the docs' own snippet
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotExercisedWarning)  # the call is run, not skipped
        check_block(CodeEnergy, batch=batch)

    @attrs.define
    class PerRow(CodeEnergy):
        name: ClassVar[str] = "fix27b_per_row_energy"
        per_row: ClassVar[bool] = True

    with pytest.raises(AssertionError, match=r"LossOutput.value is a tensor of shape \(40,\)"):
        check_block(PerRow, batch=batch)
