"""author28-1: t-SNE's layout exaggeration is counted in epochs, whatever the layout sampler
yields per epoch.  Before, the recipe wrote ``exaggeration_steps = 10 × 10`` loss calls: a
layout sampler of 1 batch per epoch (or a plugin ``items`` sampler in place of the default,
which loses its ``batches_per_epoch = 10``) ran the whole layout exaggerated, silently
(digits trust@15 0.944, KL 3.31 instead of 0.989 / 0.78)."""

import warnings

import numpy as np
import pytest

from infoblocks.recipes import ParametricTSNE

pytestmark = pytest.mark.filterwarnings("ignore:.*cannot reach the layout")

SMALL = dict(layout_epochs=3, layout_exaggeration_epochs=1, init_epochs=1, seed=0)


def _data(n=200, d=10, k=4, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(k, d)) * 5
    return (c[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _layout_loss(recipe):
    return next(p for p in recipe.routine_.phases if p.name == "layout").loss


def _layout_losses(recipe):
    return [h["loss"] for h in recipe.history_ if h["phase"] == "layout"]


@pytest.mark.parametrize("per_epoch", [1, 5])
def test_exaggeration_ends_after_its_epochs_whatever_the_batches_per_epoch(per_epoch):
    recipe = ParametricTSNE(**SMALL, phases=[{"name": "layout",
                                              "sampler": {"batches_per_epoch": per_epoch}}])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        recipe.fit(_data())
    assert not [w for w in record if "exaggeration" in str(w.message)]  # it ends as set
    assert recipe.routine_spec()["phases"][0]["loss"]["exaggeration_epochs"] == 1
    loss = _layout_loss(recipe)
    assert loss._switch == per_epoch  # 1 epoch of per_epoch steps
    assert loss.current_exaggeration() == 1.0
    # the value is cross + log Z / α while exaggerated: it jumps up by far when α drops to 1
    # (before, with 1 batch per epoch: 3 exaggerated epochs, the loss never rose)
    values = _layout_losses(recipe)
    assert values[-1] / values[0] > 3, values


def test_the_default_layout_switches_after_its_100_steps_as_before():
    recipe = ParametricTSNE(layout_epochs=12, init_epochs=1, seed=0)
    assert recipe.routine_spec()["phases"][0]["loss"]["exaggeration_epochs"] == 10
    assert "exaggeration_steps" not in recipe.routine_spec()["phases"][0]["loss"]
    recipe.fit(_data(n=120))
    assert _layout_loss(recipe)._switch == 100  # 10 epochs of the default's 10 batches


def test_exaggeration_steps_outlasting_the_phase_is_a_warning():
    # a user's explicit step count, not below the phase's 30 steps: never un-exaggerated
    recipe = ParametricTSNE(**SMALL, phases=[{"name": "layout", "loss": {
        "exaggeration_steps": 30}}])
    with pytest.warns(UserWarning, match=r"`exaggeration_steps` = 30 is not below the phase's 30 "
                                         r"steps \(3 epochs of 10 batches\): the layout never "
                                         r"leaves the exaggeration") as record:
        recipe.fit(_data())
    assert any("exaggeration_epochs" in str(w.message) for w in record)
    assert _layout_loss(recipe)._switch == 30  # steps, where set, win over the epochs
    # fewer steps than the phase: as set, no warning
    recipe = ParametricTSNE(**SMALL, phases=[{"name": "layout", "loss": {
        "exaggeration_steps": 5}}])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        recipe.fit(_data())
    assert not [w for w in record if "exaggeration" in str(w.message)]
    assert _layout_loss(recipe)._switch == 5


def test_exaggeration_epochs_beyond_the_phase_is_a_warning():
    # (the recipe caps its own value at layout_epochs; a phase's table can go beyond)
    recipe = ParametricTSNE(init_epochs=1, seed=0, phases=[
        {"name": "layout", "epochs": 3, "loss": {"exaggeration_epochs": 4}}])
    with pytest.warns(UserWarning, match=r"`exaggeration_epochs` = 4 exceeds the phase's 3 "
                                         "epochs: the layout never leaves the exaggeration"):
        recipe.fit(_data())


def test_exaggeration_epochs_filling_the_phase_is_a_warning():
    # t-SNE caps layout_exaggeration_epochs (10) at layout_epochs (5): every epoch exaggerated
    recipe = ParametricTSNE(init_epochs=1, layout_epochs=5, seed=0)
    with pytest.warns(UserWarning, match=r"`exaggeration_epochs` = 5 equals the phase's 5 "
                                         "epochs: the layout never leaves the exaggeration"):
        recipe.fit(_data())
