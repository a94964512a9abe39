"""The fused batch KL of t-SNE (closed-form gradient) against autograd through the formulas."""

import math

import numpy as np
import pytest
import torch

from infoblocks.blocks.embedding import KLLoss, StudentTTransform
from infoblocks.blocks.embedding.tsne_loss import batch_edges, batch_rows, row_index, student_t_kl
from infoblocks.blocks.relations import DenseRelations
from infoblocks.blocks.state import TrainState


def _sparse_p(n, edges, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.randint(n, (edges,), generator=g), torch.randint(n, (edges,), generator=g)
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    values = torch.rand(rows.numel(), generator=g, dtype=torch.float64)
    rows, cols, values = torch.cat([rows, cols]), torch.cat([cols, rows]), values.repeat(2)
    return rows, cols, values / values.sum()


def _reference(y, src, dst, p, alpha, dof):
    """−α Σ P log w + log Σ_{k≠l} w by autograd on dense arrays (the unfused KLLoss's formula)."""
    size = y.shape[0]
    dense = torch.zeros(size, size, dtype=y.dtype).index_put_((src, dst), p.to(y.dtype),
                                                              accumulate=True)
    log_w = -0.5 * (dof + 1) * torch.log1p((y[:, None] - y[None]).pow(2).sum(-1) / dof)
    log_z = torch.logsumexp(log_w.masked_fill(torch.eye(size, dtype=torch.bool), -math.inf)
                            .reshape(-1), 0)
    return -alpha * (dense * log_w).sum() + log_z


@pytest.mark.parametrize("dof", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("alpha", [1.0, 12.0])
def test_fused_value_and_gradient_equal_autograd(dof, alpha):
    n, size = 400, 150
    rows, cols, values = _sparse_p(n, 4000)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:size]
    src, dst, p = batch_edges(rows, cols, values, n, index)
    assert float(p.sum()) == pytest.approx(1.0)
    y0 = torch.randn(size, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 4
    ya, yb = y0.clone().requires_grad_(), y0.clone().requires_grad_()
    ref = _reference(ya, src, dst, p, alpha, dof)
    ref.backward()
    value, _ = student_t_kl(yb, src, dst, p, alpha, dof)
    (2.5 * value).backward()  # the upstream gradient is applied
    assert float(value.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    torch.testing.assert_close(yb.grad, 2.5 * ya.grad, rtol=1e-10, atol=1e-12)


def test_batch_edges_are_p_restricted_to_the_batch():
    n = 30
    rows, cols, values = _sparse_p(n, 200)
    index = torch.tensor([7, 3, 21, 11])
    src, dst, p = batch_edges(rows, cols, values, n, index)
    dense = torch.zeros(n, n, dtype=torch.float64).index_put_((rows, cols), values,
                                                              accumulate=True)
    expected = dense[index][:, index]
    got = torch.zeros(4, 4, dtype=torch.float64).index_put_((src, dst), p, accumulate=True)
    torch.testing.assert_close(got, expected / expected.sum())
    # the same entries read by rows (CSR): only the batch's rows are visited
    src, dst, p = batch_rows(*row_index(rows, cols, values, n), index)
    got = torch.zeros(4, 4, dtype=torch.float64).index_put_((src, dst), p, accumulate=True)
    torch.testing.assert_close(got, expected / expected.sum())


def test_kl_loss_fused_and_unfused_agree():
    n = 60
    rows, cols, values = _sparse_p(n, 600)
    p = torch.zeros(n, n).index_put_((rows, cols), values.float(), accumulate=True)
    state = TrainState(models=torch.nn.ModuleDict(), dataset=None,
                       globals={"P": DenseRelations(p).to_sparse()}, device=torch.device("cpu"),
                       generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0))
    index = torch.arange(0, n, 2)
    y0 = torch.randn(index.numel(), 2, generator=torch.Generator().manual_seed(3)) * 3
    outs = []
    for fused in (True, False):
        y = y0.clone().requires_grad_()
        loss = KLLoss(fused=fused, exaggeration=4.0, kernel=StudentTTransform(dof=0.7))
        out = loss({"data": y, "index": index}, torch.nn.ModuleDict({"main": torch.nn.Identity()}),
                   state)
        out.value.backward()
        outs.append((out, y.grad))
    (fa, ga), (ua, gu) = outs
    assert float(fa.value.detach()) == pytest.approx(float(ua.value.detach()), rel=1e-5)
    assert float(fa.metrics["kl"]) == pytest.approx(float(ua.metrics["kl"]), rel=1e-4)
    torch.testing.assert_close(ga, gu, rtol=1e-4, atol=1e-6)
