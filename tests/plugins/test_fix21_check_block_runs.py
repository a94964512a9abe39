"""check_block runs what it checks (a sampler's batches, a loss's __call__, a Fisher loss's
statistics) on a small built-in state of the block's batch type, and says so where it cannot;
MINE and the other bounds without a reference refuse MI-NEE's reference sampler (its draws were
ignored, silently)."""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest

from infoblocks.blocks.contracts import MARGINAL_PAIRS, BatchType
from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.fisher.loss import FisherLoss
from infoblocks.blocks.losses import LossOutput, PositionLoss
from infoblocks.blocks.mutual_information.samplers import InBatchSampler, MarginalSampler
from infoblocks.blocks.samplers import Sampler
from infoblocks.plugins.registry import get_registry
from infoblocks.plugins.testing import NotExercisedWarning, check_block


# ------------------------------------------------------------------ samplers

@attrs.define
class NoMarginals(InBatchSampler):
    """Declares marginal_pairs batches but yields the joint pairs only."""

    name: ClassVar[str] = "fix21_no_marginals"
    batch_type: ClassVar[BatchType] = MARGINAL_PAIRS


@attrs.define
class NanMarginals(MarginalSampler):
    name: ClassVar[str] = "fix21_nan_marginals"

    def generate(self, state, generator):
        for batch in super().generate(state, generator):
            yield {**batch, "x_marginal": batch["x_marginal"] * float("nan")}


@attrs.define
class NoBatches(MarginalSampler):
    name: ClassVar[str] = "fix21_no_batches"

    def num_batches(self, state):
        return 0


@attrs.define
class ShortY(MarginalSampler):
    """y of one row fewer than x: not one row per pair."""

    name: ClassVar[str] = "fix21_short_y"

    def generate(self, state, generator):
        for batch in super().generate(state, generator):
            yield {**batch, "y": batch["y"][1:]}


@pytest.mark.parametrize("cls, says", [
    (NoMarginals, r"sampler 'fix21_no_marginals' \(NoMarginals, module .*\): its first batch .* "
                  r"not the declared field\(s\) \['x_marginal', 'y_marginal'\]"
                  r".*yield them, or declare only the fields the sampler yields"),
    (NanMarginals, r"sampler 'fix21_nan_marginals' .*`x_marginal` holds non-finite values"),
    (NoBatches, r"sampler 'fix21_no_batches' .*num_batches\(state\) = 0 .*at least one batch"),
    (ShortY, r"sampler 'fix21_short_y' .*`x` has 100, `y` has 99 rows.*same length"),
])
def test_check_block_runs_a_samplers_first_batch(cls, says):
    # before: a sampler's batches were never drawn; all four passed check_block
    with pytest.raises(AssertionError, match=says):
        check_block(cls)


def test_check_block_says_it_cannot_draw_a_custom_batch_type():
    @attrs.define
    class Custom(Sampler):
        name: ClassVar[str] = "fix21_custom"
        batch_type: ClassVar[BatchType] = BatchType("fix21_triples", {"a", "b", "c"})

        def num_batches(self, state):
            return 1

        def batches(self, state):
            yield {}

    with pytest.warns(NotExercisedWarning, match=r"sampler 'fix21_custom' .*batches\(state\) was "
                      r"not run: its batch type 'fix21_triples' is none of the built-in ones"):
        check_block(Custom)


# ------------------------------------------------------------------ losses

def _position_loss(name: str, call) -> type:
    return attrs.define(type(name, (PositionLoss,), {"name": f"fix21_{name.lower()}",
                                                     "__call__": call,
                                                     "__annotations__": {"name": ClassVar[str]}}))


def _per_item(self, batch, models, state):
    return LossOutput(((models["main"](batch["data"]) - batch["positions"]) ** 2)[:3].sum(1))


def _nan(self, batch, models, state):
    return LossOutput(models["main"](batch["data"]).sum() * float("nan"))


def _detached(self, batch, models, state):
    return LossOutput(((models["main"](batch["data"]) - batch["positions"]) ** 2).mean().detach())


@pytest.mark.parametrize("call, says", [
    (_per_item, r"loss 'fix21_peritem' \(PerItem, module .*\): LossOutput.value is a tensor of "
                r"shape \(3,\) on 'items' batches; a loss's value is a scalar .*`.mean\(\)`"),
    (_nan, r"loss 'fix21_nan' .*LossOutput.value = nan on the first 'items' batch .*must be "
           r"finite"),
    (_detached, r"loss 'fix21_detached' .*carries no gradient to the parameters of model\(s\) "
                r"\['main'\] .*detached"),
])
def test_check_block_runs_a_loss_on_a_built_in_batch(call, says):
    # before: a loss's __call__ was never run (but an MI bound's bound); all three passed
    name = {_per_item: "PerItem", _nan: "Nan", _detached: "Detached"}[call]
    with pytest.raises(AssertionError, match=says):
        check_block(_position_loss(name, call))


def test_check_block_runs_a_fisher_losss_statistics():
    @attrs.define
    class Transposed(FisherLoss):
        name: ClassVar[str] = "fix21_transposed"

        def statistics(self, model, batch):
            stats = super().statistics(model, batch)
            return attrs.evolve(stats, dmu_dtheta=stats.dmu_dtheta.T[:1])

    with pytest.raises(AssertionError, match=r"loss 'fix21_transposed' .*statistics\(model, "
                       r"batch\) gives `dmu_dtheta` of shape \(1, 2\), not \(2, 2\)"):
        check_block(Transposed)


#: built-ins whose __call__ check_block cannot run on its built-in states, and why
NOT_RUN = {("loss", "parameter_l2"): "refused the first batch"}  # (an encoder's own parameter)
# (encoded_mi: its labels are given by check_block, its critic named as a recipe names it)
EXAMPLES = {"compound": {"losses": ["position"]}, "simulations": {"theta_fid": (0.0, 1.0)},
            "encoded_mi": {"bound": {"name": "infonce_loss", "critic": "critic"}}}


def test_every_registered_sampler_and_loss_passes_check_block_and_runs():
    registry = get_registry()
    skipped = {}
    for kind in ("sampler", "loss"):
        for name in registry.names(kind):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                check_block(registry.get(kind, name), EXAMPLES.get(name))
            said = [str(w.message) for w in caught if issubclass(w.category, NotExercisedWarning)]
            if said:
                skipped[(kind, name)] = said[0]
    assert set(skipped) == set(NOT_RUN), skipped
    for key, why in NOT_RUN.items():
        assert why in skipped[key]


# ------------------------------------------------------------------ MINE and a reference sampler

def _pairs(n=300):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1)).astype(np.float32)
    return x, (x + rng.normal(size=(n, 1))).astype(np.float32)


@pytest.mark.parametrize("recipe, options, key", [
    ("mine", {"negatives": "reference"}, "mine.negatives"),
    ("nwj", {"negatives": {"name": "reference", "reference": "uniform"}}, "nwj.negatives"),
    ("infonce", {"phases": [{"name": "train", "sampler": "reference"}]},
     "infonce.phases.train.sampler"),
])
def test_a_recipe_without_a_reference_refuses_a_reference_sampler(recipe, options, key):
    # before: MINE trained on the reference sampler's joint pairs with in-batch negatives and
    # never read its draws (x_reference, y_reference), with no message (author19)
    cls = get_registry().get("recipe", recipe)
    with pytest.raises(ConfigError, match=rf"{key}: the sampler 'reference' yields MI-NEE's "
                       r"reference draws .*never reads.*\"marginal_pairs\", \"all_pairs\".*"
                       r"recipe = \"minee\""):
        cls(epochs=1, **options).fit(*_pairs())

