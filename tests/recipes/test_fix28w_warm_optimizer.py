"""A warm fit of a recipe that rebuilds its phases from the settings (DII, IMNN) continues each
phase's optimizer state, which torch's ``load_state_dict`` puts back whole: a changed
``weight_decay`` or ``optimizer_options`` was reported by the phase and ``get_params()`` but
not run (IMNN's weight_decay 0 -> 0.1 ran at 0.0), and a changed ``optimizer`` failed with a
raw ``KeyError: 'betas'`` (DII's sgd -> adam).  Each is now a ConfigError naming the phase's
key, then / now, and the fix (fix28w); the learning rate is still taken (its groups scaled)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError
from infoblocks.recipes.dii import DII
from infoblocks.recipes.imnn import IMNN, gaussian_simulations

RNG = np.random.default_rng(0)
A = RNG.normal(size=(120, 4)).astype(np.float32)


def fit(model, *data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (short fits: convergence warnings)
        return model.fit(*data)


def test_dii_refuses_another_optimizer_on_a_warm_fit():
    model = fit(DII(epochs=2, seed=0, warm_start=True), A, A[:, :2] * 2)
    model.set_params(optimizer="adam")
    with pytest.raises(ConfigError, match=r"phases\.dii\.optimizer: sgd then, adam now, whose "
                                          r"old value the optimizer state this warm fit "
                                          r"continues keeps.*warm_start=False"):
        fit(model, A, A[:, :2] * 2)
    model.set_params(optimizer="sgd", learning_rate=0.1, epochs=1)  # the rate: taken
    fit(model, A, A[:, :2] * 2)
    assert [row["lr"] for row in model.routine_.history.rows] == pytest.approx([0.01] * 2 + [0.1])


@pytest.mark.parametrize("change", [{"weight_decay": 0.1},
                                    {"optimizer_options": {"amsgrad": True}}])
def test_imnn_refuses_an_optimizer_setting_its_continued_state_would_override(change):
    fid, der = gaussian_simulations(200, seed=0)
    model = fit(IMNN(n_summaries=2, theta_fid=(0, 1), hidden_dims=(16,), min_epochs=0,
                     restore_best=False, epochs=2, warm_start=True), fid, der)
    key = next(iter(change))
    model.set_params(**change)
    with pytest.raises(ConfigError, match=rf"but `{key}` changed.*phases\.fit\.{key}"):
        fit(model)
    assert model.n_epochs_ == 2
    groups = model.routine_.phases[0].last_run["optimizer"]["param_groups"]
    assert [group["weight_decay"] for group in groups] == [0.0]
    model.set_params(weight_decay=0.0, optimizer_options={}, epochs=1)
    fit(model)
    assert model.n_epochs_ == 2 + 1
