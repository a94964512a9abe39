"""DII on features in very different units: the weights start equal, the widest feature
decides the neighbourhoods, and the result read as "A does not predict B" (geninf22-5: A0 ×
100, A3 × 0.01, B = [A0, 3·A3] + noise: near-uniform weights, DII 0.80; DADApy the same).
The fit warns, naming the spread, the two features and the fix (standardise A's columns)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.recipes.dii import DII, DIIWarning


def _spread_is_an_error() -> None:
    """The units warning raises (inside ``catch_warnings``); the other DIIWarning — weights
    still moving at the last epoch, which this problem's 200 epochs give — does not."""
    warnings.filterwarnings("error", message="DII: data_A's features differ in spread",
                            category=DIIWarning)


def problem(seed: int = 500, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 12))
    b = a[:, [0, 3]] * [1, 3] + 0.05 * rng.standard_normal((n, 2))
    return a, b


def in_units(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    out[:, 0] *= 100.0  # feature 0 in cm
    out[:, 3] *= 0.01   # feature 3 in hm
    return out


def test_features_in_very_different_units_are_reported():
    a, b = problem(n=200)
    with pytest.warns(DIIWarning, match=r"differ in spread by 1\.\d+e\+04× \(standard deviation "
                      r"0\.0\d+ for feature 3, \d+ for feature 0; .*Standardise data_A's "
                      r"columns first \(data_A / data_A\.std\(0\)"):
        DII(epochs=2).fit(in_units(a), b)


def test_features_within_ten_times_of_each_other_are_not_reported():
    a, b = problem(n=200)
    a[:, 5] *= 5.0  # the tutorial's B spans 30×, but A is what is weighted: A's spread counts
    with warnings.catch_warnings():
        _spread_is_an_error()
        DII(epochs=2).fit(a, b * [30.0, 0.1])


def test_warm_start_does_not_repeat_it():
    a, b = problem(n=200)
    model = DII(epochs=2, warm_start=True)
    with pytest.warns(DIIWarning):
        model.fit(in_units(a), b)
    with warnings.catch_warnings():
        _spread_is_an_error()
        model.fit(in_units(a), b)


@pytest.mark.slow
def test_standardising_recovers_the_features():
    # measured: raw DII 0.81 with a nuisance weight 1.6× the smallest informative one;
    # standardised 0.0067 with nuisances < 4 % of it
    a, b = problem()
    with pytest.warns(DIIWarning):
        raw = DII(seed=0).fit(in_units(a), b)
    assert raw.final_dii()[0] > 0.5
    scaled = in_units(a) / in_units(a).std(0)
    with warnings.catch_warnings():
        _spread_is_an_error()
        fixed = DII(seed=0).fit(scaled, b)
    assert fixed.final_dii()[0] < 0.02
    w = np.asarray(fixed.weights_)
    assert np.delete(w, [0, 3]).max() < 0.1 * min(w[0], w[3])
