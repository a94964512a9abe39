"""IMNN.abc / pmc check what the simulator returns, as fit does: a NaN simulation or a wrong
number of rows gave a posterior silently, a wrong width or a numpy array raised from inside
torch (baduser19 F1, F2)."""

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import IMNN
from infoblocks.recipes.imnn_problem import gaussian_simulations


def simulator(generator, theta):
    """10 Gaussian draws of mean theta[0], variance theta[1] (the tutorial's problem)."""
    noise = torch.randn(len(theta), 10, generator=generator, device=theta.device)
    return theta[:, :1] + theta[:, 1:].sqrt() * noise


@pytest.fixture(scope="module")
def fitted():
    fid, der = gaussian_simulations(200, seed=0)
    return IMNN(n_summaries=2, theta_fid=(0.0, 1.0), epochs=2, min_epochs=2).fit(fid, der)


PRIOR = torch.distributions.Uniform(torch.tensor([-1.0, 0.5]), torch.tensor([1.0, 2.0]))


def _methods(fitted, target, sim):
    return [lambda: fitted.abc(target, PRIOR, sim, n_simulations=400),
            lambda: fitted.pmc(target, PRIOR, sim, n_points=40, n_initial=200, max_rounds=2)]


@pytest.mark.parametrize("method", [0, 1], ids=["abc", "pmc"])
def test_a_simulator_that_gives_nan_is_named_with_its_theta(fitted, method):
    def nan_where_variance_large(generator, theta):
        out = simulator(generator, theta)
        return torch.where(theta[:, 1:] > 1.5, torch.nan, out)

    target = gaussian_simulations(1, seed=3)[0][0]
    with pytest.raises(ValidationError, match=r"non-finite values .* parameter draws \(the "
                                              r"first at theta = \[.*\]\)"):
        _methods(fitted, target, nan_where_variance_large)[method]()


@pytest.mark.parametrize("method", [0, 1], ids=["abc", "pmc"])
@pytest.mark.parametrize("wrong, got", [
    (lambda g, t: simulator(g, t)[:3], r"got \(3, 10\)"),  # abc returned 3 samples silently
    (lambda g, t: simulator(g, t)[:, :7], r"got \(\d+, 7\)"),  # torch's matrix error
    (lambda g, t: simulator(g, t).numpy(), r"got ndarray; wrap it in torch.as_tensor"),
], ids=["rows", "width", "ndarray"])
def test_a_simulator_of_the_wrong_shape_is_named(fitted, method, wrong, got):
    target = gaussian_simulations(1, seed=3)[0][0]
    with pytest.raises(ValidationError, match=r"`simulator` must return a tensor of shape "
                                              r"\(\d+, 10\) .*" + got):
        _methods(fitted, target, wrong)[method]()


def test_a_simulator_that_raises_is_named(fitted):
    def broken(generator, theta):
        raise KeyError("sigma")

    with pytest.raises(ValidationError, match="ABC / PMC: `simulator.*failed.*KeyError") as info:
        fitted.abc(gaussian_simulations(1, seed=3)[0][0], PRIOR, broken, n_simulations=100)
    assert isinstance(info.value.__cause__, KeyError)


def test_a_good_simulator_still_gives_the_posterior(fitted):
    post = fitted.abc(gaussian_simulations(1, seed=3)[0][0], PRIOR, simulator,
                      n_simulations=400)
    assert post.samples.shape == (4, 2) and np.isfinite(post.samples).all()


def test_fit_refuses_a_simulator_whose_shape_changes():
    calls = []

    def narrower_later(generator, theta):  # (10,) for the first calls, then (7,)
        calls.append(len(theta))
        out = simulator(generator, theta)
        return out if len(calls) <= 3 else out[:, :7]

    with pytest.raises(ValidationError, match=r"returned simulations of shape \(7,\), but its "
                                              r"first ones had shape \(10,\)"):
        # torch's "mat1 and mat2 shapes cannot be multiplied" before
        IMNN(n_summaries=2, theta_fid=(0.0, 1.0), epochs=3, min_epochs=3, n_s=50, n_d=50,
             n_validation=50).fit(simulator=narrower_later)
