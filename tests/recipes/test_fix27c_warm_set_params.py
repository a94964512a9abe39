"""``set_params`` between warm fits (author27-D): the next ``fit(warm_start=True)`` continued the
fitted routine with the settings it was built with, while ``get_params()`` reported the new
ones (epochs 3 -> 2 ran 3 more epochs; learning_rate 0.003 -> 0.01 kept 0.003; a plugin
penalty's weight 0.1 -> 5.0 kept 0.1; a new critic block was ignored).  A changed ``epochs`` /
``learning_rate`` now reaches the continued phase (the optimizer's state kept, its rates
scaled), and any other change of the models or a continued phase is a ConfigError naming it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError
from infoblocks.recipes.infomax import InfoMax
from infoblocks.recipes.mi import MINE

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 4)).astype(np.float32)
A = RNG.normal(size=(300, 2)).astype(np.float32)
B = (A + RNG.normal(size=A.shape)).astype(np.float32)


def fit(model, *data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (short fits: convergence warnings)
        return model.fit(*data)


@pytest.fixture(params=["infomax", "mine"])
def case(request):
    if request.param == "infomax":
        return (lambda **kw: InfoMax(n_components=2, seed=0, warm_start=True, **kw)), (X,)
    return (lambda **kw: MINE(seed=0, warm_start=True, **kw)), (A, B)


def test_changed_epochs_and_learning_rate_reach_the_warm_fit(case):
    make, data = case
    model = fit(make(epochs=3, learning_rate=0.003), *data)
    model.set_params(epochs=2, learning_rate=0.01)
    fit(model, *data)
    assert len(model.history_) == 3 + 2  # (before: 3 + 3)
    assert [row["lr"] for row in model.history_] == pytest.approx([0.003] * 3 + [0.01] * 2)
    groups = model.routine_.phases[0].last_run["optimizer"]["param_groups"]
    assert max(group["lr"] for group in groups) == pytest.approx(0.01)


def test_an_unchanged_warm_fit_is_as_before(case):
    """Setting a value to what it was changes nothing: the same numbers as no set_params."""
    make, data = case
    plain, again = fit(make(epochs=2), *data), fit(make(epochs=2), *data)
    fit(plain, *data)
    again.set_params(epochs=2)
    fit(again, *data)
    assert [row["loss"] for row in plain.history_] == [row["loss"] for row in again.history_]
    assert len(plain.history_) == 4


def test_a_changed_block_is_refused_naming_it(case):
    make, data = case
    model = fit(make(epochs=2), *data)
    slot = "encoder" if isinstance(model, InfoMax) else "main"
    model.set_params(models={slot: {"name": "mlp" if slot == "encoder" else "separable_critic"}})
    with pytest.raises(ConfigError, match=rf"`models` changed since the last fit.*models\.{slot}"
                       r".*warm_start=False"):
        fit(model, *data)


def test_a_changed_penalty_weight_is_refused_naming_the_key():
    phases = [{"name": "train", "loss": {"penalties": [{"name": "parameter_l2",
                                                        "weight": 0.1}]}}]
    model = fit(InfoMax(n_components=2, epochs=2, seed=0, warm_start=True, phases=phases), X)
    phases[0]["loss"]["penalties"][0]["weight"] = 5.0  # (in place: get_params shows it too)
    with pytest.raises(ConfigError, match=r"phases\.train\.loss\.penalties\[parameter_l2\]\."
                                          r"weight: 0\.1 then, 5\.0 now"):
        fit(model, X)
    phases[0]["loss"]["penalties"][0]["weight"] = 0.1  # set back: continues
    fit(model, X)
    assert len(model.history_) == 4


def test_a_cold_fit_takes_any_change():
    model = fit(MINE(epochs=2, seed=0), A, B)
    model.set_params(hidden_dims=[8], epochs=1)
    fit(model, A, B)
    assert len(model.history_) == 1


def test_a_recipe_that_rebuilds_its_phases_gets_the_new_learning_rate_too():
    """DII (and IMNN) rebuild their phases on a warm fit, from the new settings, but the
    optimizer state they continue held the old rate: 0.01 -> 0.1 ran at 0.01."""
    from infoblocks.recipes.dii import DII

    a = RNG.normal(size=(200, 4)).astype(np.float32)
    model = fit(DII(epochs=3, seed=0, warm_start=True, learning_rate=0.01), a, a[:, :2] * 2)
    model.set_params(epochs=2, learning_rate=0.1)
    fit(model, a, a[:, :2] * 2)
    rows = model.routine_.history.rows
    assert [row["lr"] for row in rows] == pytest.approx([0.01] * 3 + [0.1] * 2)
