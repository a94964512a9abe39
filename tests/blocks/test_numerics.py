"""The shared numerics layer against direct computations."""

import math

import numpy as np
import torch

from infoblocks.blocks.numerics import (chunked_topk, cosine_schedule, pca_axes, wrap_periodic)


def test_chunked_topk_equals_the_full_sort_in_tiny_chunks():
    x = torch.randn(97, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    expected = torch.argsort(d, dim=1)[:, :4]
    got = chunked_topk(x, None, 4, chunk_elements=300)  # 3 rows per block
    assert torch.equal(got, expected)
    other = torch.randn(11, 5, dtype=torch.float64)
    expected = torch.argsort(torch.cdist(other, x), dim=1)[:, :3]
    assert torch.equal(chunked_topk(other, x, 3, chunk_elements=200), expected)


def test_wrap_periodic_is_the_minimum_image():
    diff = torch.tensor([[0.9, 3.5, -2.6, 7.0]])
    periods = torch.tensor([1.0, 0.0, 2.0, float("inf")])
    got = wrap_periodic(diff, periods)
    assert torch.allclose(got, torch.tensor([[-0.1, 3.5, -0.6, 7.0]]), atol=1e-6)


def test_pca_axes_recovers_the_axes_with_fixed_signs():
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    x = torch.from_numpy((rng.normal(size=(2000, 4)) * [5.0, 2.0, 0.5, 0.1]) @ rotation.T + 3.0)
    mean, axes = pca_axes(x, 2)
    assert torch.allclose(mean, torch.full((4,), 3.0, dtype=torch.float64), atol=0.2)
    for k in range(2):  # the k-th axis is the k-th column of the rotation, up to sign
        assert abs(abs(float(axes[:, k] @ torch.from_numpy(rotation[:, k]))) - 1.0) < 1e-3
        assert axes[axes[:, k].abs().argmax(), k] > 0


def test_cosine_schedule_ends():
    assert cosine_schedule(1.0, 0.0, 0, 10) == 1.0
    assert math.isclose(cosine_schedule(5.0, 1.0, 5, 10), 3.0)
    assert cosine_schedule(5.0, 1.0, 10, 10) == 1.0 == cosine_schedule(5.0, 1.0, 12, 10)
