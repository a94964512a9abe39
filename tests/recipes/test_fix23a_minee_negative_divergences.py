"""MI-NEE's "negative divergence" warning fires beyond the small-sample bias of a critic that
learnt noise (about −8 × dimensions / training rows), not at −0.02 nats (geninf22-9: on 5+5-D
Gaussians, whose d_x = d_y = 0 exactly, every fit warned "{'d_x': -0.0574, 'd_y': -0.0605}
are negative ... did not converge"); a learning rate far too high still warns."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from infoblocks.recipes.mi import MINEE
from infoblocks.recipes.mi_evaluation import negative_divergences

DIMS_5 = {"d_x": 5, "d_y": 5, "d_xy": 10}


@pytest.mark.parametrize("d, dims, n_train", [
    # measured (fix23a): Gaussians ρ = 0.9, n = 1000 (500 train), seeds 0-2, and 5-D n = 5000
    ({"d_xy": 3.7308, "d_x": -0.0778, "d_y": -0.0553}, DIMS_5, 500),
    ({"d_xy": 3.8488, "d_x": -0.0602, "d_y": -0.0703}, DIMS_5, 500),
    ({"d_xy": 6.5455, "d_x": -0.3479, "d_y": -0.2778}, {"d_x": 20, "d_y": 20, "d_xy": 40}, 500),
    ({"d_xy": 0.8176, "d_x": -0.0064, "d_y": -0.0079}, {"d_x": 1, "d_y": 1, "d_xy": 2}, 500),
    ({"d_xy": 3.9174, "d_x": -0.0062, "d_y": -0.0037}, DIMS_5, 2500),
])
def test_the_bias_of_gaussian_fits_is_not_reported(d, dims, n_train):
    assert negative_divergences(d, dims, n_train) == ({}, {})  # before: −0.02 flagged them


def test_a_diverged_fit_and_a_small_sample_are_reported():
    # learning rate 1.0 on the 5-D Gaussian (measured): every divergence far below zero
    failed = {"d_xy": -154.97, "d_x": -21.29, "d_y": -12.48}
    negative, limits = negative_divergences(failed, DIMS_5, 500)
    assert negative == failed and limits == {"d_xy": -0.32, "d_x": -0.16, "d_y": -0.16}
    # on many rows the floor −0.02 holds: −0.05 on 5-D is then reported
    assert negative_divergences({"d_xy": 1.0, "d_x": -0.05, "d_y": 0.0}, DIMS_5, 100_000) == \
        ({"d_x": -0.05}, {"d_x": -0.02})


def gaussian(n: int, d: int = 5, rho: float = 0.9, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return (x.astype(np.float32),
            (rho * x + math.sqrt(1 - rho ** 2) * rng.normal(size=(n, d))).astype(np.float32))


def fit_messages(**settings) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MINEE(seed=0, hidden_dims=(32,), **settings).fit(*gaussian(400))
    return [str(w.message) for w in caught]


def test_a_learning_rate_far_too_high_still_warns():
    said = [m for m in fit_messages(epochs=10, learning_rate=1.0) if "divergence estimate" in m]
    assert len(said) == 1 and "'d_xy': -" in said[0]
    assert "beyond the small-sample bias of a fit on 200 rows" in said[0]
    assert "down to {'d_xy': -0.8, 'd_x': -0.4, 'd_y': -0.4} here" in said[0]
    assert "the critic(s) ['main', 'critic_x', 'critic_y'] did not converge" in said[0]


def test_a_gaussian_fit_does_not_warn_of_negative_divergences():
    # 5+5-D, 400 rows, 30 epochs: d_x −0.029, d_y −0.017 (true 0); before: the warning
    said = fit_messages(epochs=30)
    assert not [m for m in said if "divergence estimate" in m]
    assert any("still rising" in m for m in said)  # (30 epochs: that is said)
