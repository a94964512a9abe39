"""Every training draw of a fresh-sample ``sampler`` is checked as the evaluation draw is:
NaN in a later draw went through the rank-Gaussian map as finite values and a narrower x
broadcast through MINEE's standardisation, both giving an estimate silently; a sampler that
raises on the evaluation draw is named (baduser19 F10)."""

import pytest
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import MINE, MINEE


def sampler_that_turns(bad):
    """fn(generator, n) -> (x, y) correlated Gaussians, ``bad(x, y)`` from the second call
    (the first is the evaluation draw)."""
    calls = []

    def fn(generator, n):
        calls.append(n)
        x = torch.randn(n, 2, generator=generator)
        y = x + torch.randn(n, 2, generator=generator)
        return bad(x, y) if len(calls) > 1 else (x, y)
    return fn


@pytest.mark.parametrize("cls", [MINE, MINEE])
def test_nan_in_a_training_draw_is_refused(cls):
    fn = sampler_that_turns(lambda x, y: (x.masked_fill(x > 2.0, float("nan")), y))
    with pytest.raises(ValidationError, match=r"returned \d+ non-finite value\(s\) .* in x in a "
                                              "training draw of n = 1000"):
        cls(epochs=2, batch_size=50).fit(sampler=fn, n_eval=200)  # MINE: an estimate before


@pytest.mark.parametrize("cls", [MINE, MINEE])
def test_a_training_draw_of_another_width_is_refused(cls):
    fn = sampler_that_turns(lambda x, y: (x[:, :1], y))
    with pytest.raises(ValidationError, match=r"must return x of shape \(1000, 2\) for every n.*"
                                              r"has shape \(1000, 1\)"):
        cls(epochs=2, batch_size=50).fit(sampler=fn, n_eval=200)  # MINEE: 0.14 nats before


def test_a_sampler_that_raises_on_the_evaluation_draw_is_named():
    def broken(generator, n):
        return torch.randn(n, 2, generator=generator) / torch.zeros(n, 3)

    with pytest.raises(ValidationError, match=r"`sampler` failed when called as fn\(generator, "
                                              r"n\) for the evaluation draw \(n = 400\): "
                                              "RuntimeError") as info:
        MINE(epochs=1, batch_size=50).fit(sampler=broken, n_eval=200)
    assert isinstance(info.value.__cause__, RuntimeError)
