"""The one-sided marginal prior (``marginal_target = "uniform_tails"``): only a code further out
than U(−1, 1) costs (geninf25: the two-sided prior pulled the digits' clustered code apart and
lost 4 points of the linear probe; the one-sided one removes the saturation and keeps them)."""

import pytest
import torch

from infoblocks.blocks.mutual_information.infomax import marginal_distance
from infoblocks.recipes import InfoMax


def _grid(b: int) -> torch.Tensor:
    return ((torch.arange(1, b + 1, dtype=torch.float64) - 0.5) / b * 2 - 1)[:, None]


def test_a_central_code_costs_nothing_a_saturated_one_a_third():
    b = 400
    assert marginal_distance(_grid(b), "uniform_tails").item() == 0.0
    # more central than uniform (a peaked or clustered marginal): free one-sided, not two-sided
    assert marginal_distance(0.5 * _grid(b), "uniform_tails").item() == 0.0
    assert marginal_distance(0.5 * _grid(b), "uniform").item() == pytest.approx(1 / 12, rel=1e-3)
    # every value at ±1: every gap is outward, as the two-sided distance, 1/3 − 1/(3b²)
    saturated = torch.sign(_grid(b))
    expected = 1 / 3 - 1 / (3 * b * b)
    assert marginal_distance(saturated, "uniform_tails").item() == pytest.approx(expected, rel=1e-9)


def test_the_gradient_pulls_only_the_outer_values_in():
    code = torch.cat([0.3 * _grid(100), torch.full((100, 1), 0.999, dtype=torch.float64)])
    code.requires_grad_(True)
    marginal_distance(code, "uniform_tails").backward()
    grad = code.grad.reshape(-1)
    assert torch.all(grad[:100] == 0)           # the central values: no pull
    assert grad[100:].gt(0).sum() > 40          # many of the ±1 values pulled in (loss falls)


def test_the_recipe_takes_the_target_by_name():
    recipe = InfoMax(marginal_prior=1.0, marginal_target="uniform_tails")
    loss = recipe.routine_spec()["phases"][0]["loss"]
    entries = [p for p in loss["penalties"] if p["name"] == "marginal_matching"]
    assert entries and entries[0]["target"] == "uniform_tails" and entries[0]["weight"] == 1.0
