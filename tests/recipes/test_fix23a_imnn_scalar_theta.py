"""IMNN's settings with one number per parameter (``theta_fid``, ``delta_theta``) take one
number for one parameter, as the converter reads it (geninf22-10: ``IMNN(theta_fid=5.0)`` was
refused by the recipe's type check, "expected tuple[float, ...]"); a flag, a string or a count
of steps other than the parameters' is an error naming the setting."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.recipes.imnn import IMNN


@pytest.mark.parametrize("value", [5.0, 5, [5.0], (5.0,), np.float32(5.0), np.array(5.0),
                                   torch.tensor(5.0)])
def test_one_number_is_one_parameter(value):
    imnn = IMNN(theta_fid=value, delta_theta=0.5)
    assert imnn.theta_fid == (5.0,) and imnn.delta_theta == (0.5,)
    assert imnn.n_params == 1
    sampler = imnn.routine_spec()["phases"][0]["sampler"]
    assert sampler["theta_fid"] == [5.0] and sampler["delta_theta"] == [0.5]


def test_one_number_from_toml_round_trips():
    imnn = IMNN.from_dict(tomllib.loads("theta_fid = 5.0\ndelta_theta = 0.5\n"))
    assert imnn.theta_fid == (5.0,) and imnn.delta_theta == (0.5,)
    again = IMNN.from_dict(tomllib.loads(imnn.to_toml(full=True)))
    assert again.theta_fid == (5.0,) and again.delta_theta == (0.5,)


@pytest.mark.parametrize("kwargs, says", [
    (dict(theta_fid=True), r"`theta_fid` must be a number per parameter: a list of numbers "
                           r".*got True"),
    (dict(theta_fid=[0.0, True]), r"`theta_fid` must be a number per parameter.*got \[0.0, "
                                  r"True\]"),
    (dict(theta_fid="5"), r"`theta_fid`: expected a list, got the string '5'"),
    (dict(theta_fid=float("nan")), r"`theta_fid` must be a non-empty sequence of finite "
                                   r"numbers, got nan"),
    (dict(theta_fid=(0.0, 1.0), delta_theta=0.1),
     r"`delta_theta` has 1 step for the 2 parameters of theta_fid=\[0.0, 1.0\]: give one step "
     r"per parameter, e.g. delta_theta = \[0.1, 0.1\]"),
    (dict(theta_fid=5.0, delta_theta=[0.1, 0.2]),
     r"`delta_theta` has 2 steps for the 1 parameter of theta_fid=\[5.0\]"),
])
def test_wrong_values_name_the_setting(kwargs, says):
    with pytest.raises(ValidationError, match=says):
        IMNN(**kwargs)


def test_a_wrong_count_from_toml_names_the_setting():
    with pytest.raises(ConfigError, match=r"delta_theta` has 1 step for the 2 parameters"):
        IMNN.from_dict({"theta_fid": [0.0, 1.0], "delta_theta": 0.1})


def test_a_one_parameter_fit_with_a_scalar_theta():
    def simulator(generator, theta):  # 10 draws of N(θ, 1): F = 10 per simulation
        return theta[:, :1] + torch.randn(theta.shape[0], 10, generator=generator)

    imnn = IMNN(theta_fid=5.0, derivative_mode="numerical", delta_theta=0.1, n_s=200, n_d=200,
                epochs=5, n_validation=200, hidden_dims=(8,)).fit(simulator=simulator)
    assert imnn.F_.shape == (1, 1) and 0 < float(imnn.F_[0, 0]) < 12  # at most ~10 (+ noise)
    estimate = imnn.estimate(simulator(torch.Generator().manual_seed(1),
                                       torch.full((2, 1), 5.0)))
    assert estimate.shape == (2, 1) and np.isfinite(estimate).all()
