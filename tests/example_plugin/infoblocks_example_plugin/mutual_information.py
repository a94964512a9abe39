"""Example plugin blocks for the MI estimator recipes: a bound and a negative sampler.

* ``js`` — a bound block trained with the Jensen–Shannon (f-GAN) objective
  −mean softplus(−t(joint)) − mean softplus(t(negatives)), whose optimal critic is the log
  density ratio log p/(p_X p_Y); its ``bound`` (what the recipe reports as ``mi``, validates
  and evaluates over all pairs for the final estimate) is the Donsker–Varadhan value of those
  scores.  Written only with the reductions of the scores protocol, so the same method serves
  batches, the all-pairs final estimate and its interval.
* ``shifted`` — a negative sampler: joint batches of the training split, and as negatives each
  x_i paired with y_{(i + s) mod b} for one random shift s ∈ [1, b − 1] per batch (b negative
  pairs, no resampling of the marginals).

Both count their calls (class attributes), so a test can check that they really ran.  Used by
name from TOML, e.g. in MINE::

    recipe = "mine"
    [[phases]]
    name = "train"
    loss = "js"
    sampler = "shifted"
    [phases.validation]
    loss = "js"
    [evaluation]
    bound = "js"
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import nn

from infoblocks.blocks.contracts import MARGINAL_PAIRS
from infoblocks.blocks.mutual_information import MIBound, PairSampler


@attrs.define
class JSBound(MIBound):
    """Jensen–Shannon training objective, Donsker–Varadhan estimate."""

    name: ClassVar[str] = "js"
    reports: ClassVar[frozenset[str]] = frozenset({"mi", "js"})
    #: calls of :meth:`bound` (training batches, validation, final estimate, interval)
    calls: ClassVar[int] = 0

    def bound(self, scores):
        type(self).calls += 1
        return scores.mean_joint() - scores.log_mean_exp()

    def objective(self, scores, mi, state):
        softplus = nn.functional.softplus
        js = -scores.mean_joint(lambda t: softplus(-t)) - scores.mean_negatives(softplus)
        return -js, {"js": js.detach()}


@attrs.define
class ShiftedSampler(PairSampler):
    """Joint batches; negatives (x_i, y_{(i + s) mod b}) with one random shift s per batch."""

    name: ClassVar[str] = "shifted"
    batch_type: ClassVar = MARGINAL_PAIRS
    #: batches generated
    calls: ClassVar[int] = 0

    def batch_fields(self, state):
        return MARGINAL_PAIRS.fields | {"index"}

    def generate(self, state, generator):
        joint = self.joint_indices(state, generator)  # (batches, b) item indices
        count, b = joint.shape
        shifts = torch.randint(1, b, (count,), generator=generator, device=state.device)
        x, y = state.dataset[self.x_key][joint], state.dataset[self.y_key][joint]
        for k in range(count):
            type(self).calls += 1
            yield {"index": joint[k], "x": x[k], "y": y[k], "x_marginal": x[k],
                   "y_marginal": torch.roll(y[k], -int(shifts[k]), 0)}


#: hook name without ``register_`` -> block classes
BLOCKS: dict[str, list[type]] = {"losses": [JSBound], "samplers": [ShiftedSampler]}
