import numpy as np
import pytest
import torch

from infoblocks.blocks.distances import Cosine, Euclidean, Periodic, SquaredEuclidean
from infoblocks.blocks.errors import ValidationError
from infoblocks.plugins.testing import check_block

A = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])


def test_euclidean_matches_the_formula():
    d = Euclidean().pairwise(A)
    assert d[0, 1] == pytest.approx(5.0)  # 3-4-5 triangle
    assert torch.allclose(Euclidean().paired(A, A.flip(0)), torch.tensor([2 ** 0.5, 0.0, 2 ** 0.5]),
                          atol=1e-5)
    assert SquaredEuclidean().pairwise(A)[0, 1] == pytest.approx(25.0)


def test_euclidean_gradient_is_finite_at_zero_distance():
    x = A.clone().requires_grad_(True)
    Euclidean().pairwise(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_periodic_wraps_around_the_period():
    # angles 0.1 and 6.2 on a circle of period 2π are 0.183 apart, not 6.1
    a, b = torch.tensor([[0.1, 0.0]]), torch.tensor([[6.2, 3.0]])
    d = Periodic(periods=[2 * np.pi, None]).pairwise(a, b)
    expected = np.hypot(2 * np.pi - 6.1, 3.0)
    assert d.item() == pytest.approx(expected, rel=1e-5)


def test_periodic_rejects_periods_of_wrong_length():
    with pytest.raises(ValidationError, match="one period per feature"):
        Periodic(periods=[1.0]).pairwise(A)
    with pytest.raises(ValidationError, match="positive numbers or None"):
        Periodic(periods=[-1.0, None])


def test_cosine_is_zero_for_parallel_vectors():
    d = Cosine().pairwise(torch.tensor([[1.0, 2.0], [2.0, 4.0], [-1.0, -2.0]]))
    assert d[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert d[0, 2] == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("cls, example", [
    (Euclidean, None), (SquaredEuclidean, None), (Cosine, None),
    (Periodic, {"periods": [1.0, None, 2.0]}),
])
def test_builtin_distances_pass_the_conformance_check(cls, example):
    check_block(cls, example)


def test_dimension_mismatch_is_reported():
    with pytest.raises(ValidationError, match="different dimension"):
        Euclidean().pairwise(torch.ones(2, 3), torch.ones(2, 4))
