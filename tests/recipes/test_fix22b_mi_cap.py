"""An MI estimate near what its evaluation items can show (log n_eval; InfoNCE: log of the
items in a row) is reported, and InfoNCE's batch warning quotes the cap it is about
(geninf22-1, geninf22-7)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from infoblocks.recipes.mi import MINE, NWJ, CorrelatedGaussian, InfoNCE

#: a sub-second fit that learns: 100 training and 100 evaluation items
FAST = dict(epochs=200, hidden_dims=(32,), batch_size=50, learning_rate=1e-2)


def gaussian(n: int, dim: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    return x, rho * x + math.sqrt(1 - rho ** 2) * rng.standard_normal((n, dim))


def caught_fit(est, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(*args, **kwargs)
    return est, [str(w.message) for w in caught]


@pytest.mark.parametrize("cls", [MINE, NWJ])
def test_an_estimate_just_below_log_n_eval_is_reported(cls):
    # truth 9.32 nats, 100 evaluation items: log 100 = 4.605 is the most they can show; the
    # estimate lands just below it (MINE 4.04, NWJ 4.59) and was returned without a word
    x, y = gaussian(200, 3, 0.999, seed=1)
    est, messages = caught_fit(cls(seed=1, **FAST), x, y)
    assert est.estimate_nats_ < math.log(100)  # below the cap: the old "above" check is silent
    near = [m for m in messages if "within 1.5 nats of log(n_eval) = 4.605" in m]
    assert len(near) == 1, messages
    assert "true MI, which may be much larger" in near[0]
    assert "larger `test_fraction` (now 0.5)" in near[0]  # the fix, with the value


def test_infonce_near_its_row_cap_quotes_that_cap_not_the_batch_size():
    # geninf22-7: "the estimate 6.097 nats is close to its cap log(batch_size) = 4.852" — above
    # the cap it quoted; the final estimate's cap is log of the items in a row (here 100)
    x, y = gaussian(200, 3, 0.999, seed=0)
    est, messages = caught_fit(InfoNCE(seed=0, **FAST), x, y)
    assert math.log(50) < est.estimate_nats_ < math.log(100)  # above log(batch_size)
    capped = [m for m in messages if "cap" in m]
    assert len(capped) == 1, messages  # one warning, not the batch one beside it
    assert "its cap log(100) = 4.605" in capped[0] and "99 partners" in capped[0]
    assert "log(batch_size)" not in capped[0]


def test_infonce_batch_warning_says_above_or_close_to_and_names_the_final_cap():
    # ρ = 0.999: I = 3.1 nats, above log(8) = 2.08, the cap of a training batch's bound
    x, y = gaussian(400, 1, 0.999, seed=8)
    est, messages = caught_fit(InfoNCE(batch_size=8, epochs=30, hidden_dims=(16,),
                                       learning_rate=1e-2), x, y)
    batch = [m for m in messages if "log(batch_size) = 2.079" in m]
    assert len(batch) == 1, messages
    word = "above" if est.estimate_nats_ > math.log(8) else "close to"
    assert f"nats is {word} log(batch_size)" in batch[0]
    assert "its cap log(200) = 5.298" in batch[0]  # the estimate's own cap, for contrast


def test_fresh_infonce_near_cap_names_n_eval_and_max_pairs():
    # a row bound with 10 partners per item (max_pairs / n_eval): cap log 11 = 2.398
    source = CorrelatedGaussian(rho=0.999)  # I = 3.1 nats
    est, messages = caught_fit(InfoNCE(seed=0, epochs=20, hidden_dims=(16,), max_pairs=2_000,
                                       learning_rate=1e-2), sampler=source, n_eval=200)
    near = [m for m in messages if "within 1.5 nats" in m]
    assert len(near) == 1, messages
    assert "log(11) = 2.398" in near[0]
    assert "a larger `n_eval` (now 200)" in near[0]
    assert "a larger `max_pairs` (now 2000 pairs: 10 partners per item of 199)" in near[0]


def test_no_cap_warning_far_below_the_cap():
    # truth 0.83 nats against log 100 = 4.6: the estimate is a measurement
    x, y = gaussian(200, 1, 0.9, seed=0)
    for cls in (MINE, InfoNCE):
        _, messages = caught_fit(cls(seed=0, **FAST), x, y)
        assert not [m for m in messages if "cap" in m or "within" in m], messages
