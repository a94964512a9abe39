"""t-SNE's all-pairs repulsion (exact and FFT-interpolated), the all_pairs_kl loss and the
delta_bar_delta optimizer."""

import numpy as np
import pytest
import torch

from infoblocks.blocks.embedding.tsne_layout import AllPairsKLLoss, _AllPairsKL
from infoblocks.blocks.embedding.tsne_repulsion import exact_repulsion, fft_boxes, fft_repulsion
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.optim import DeltaBarDelta
from infoblocks.blocks.phases import optimizer_class
from infoblocks.plugins.registry import get_registry


def _brute(y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """R_i = Σ_j w_ij² (y_i − y_j) and Z = Σ_{i≠j} w_ij from the n × n arrays (float64)."""
    y = y.double()
    diff = y[:, None, :] - y[None, :, :]
    w = 1.0 / (1.0 + diff.pow(2).sum(-1))
    w.fill_diagonal_(0.0)
    return (w.pow(2)[:, :, None] * diff).sum(1), float(w.sum())


def _clusters(n: int, spread: float, seed: int = 0) -> torch.Tensor:
    """A t-SNE-like map: 10 tight clusters (sd 1) on a circle of radius ``spread``."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randint(0, 10, (n,), generator=g)
    angle = centre.double() * (2 * np.pi / 10)
    centres = spread * torch.stack([angle.cos(), angle.sin()], 1)
    return (centres + torch.randn(n, 2, generator=g, dtype=torch.float64)).float()


def test_exact_repulsion_matches_the_n_by_n_sums():
    y = _clusters(300, 8.0)
    force, z = exact_repulsion(y.double(), rows_per_chunk=64)  # several chunks
    ref_force, ref_z = _brute(y)
    assert float(z) == pytest.approx(ref_z, rel=1e-12)
    assert torch.allclose(force, ref_force, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spread", [3.0, 20.0])
def test_fft_repulsion_within_its_interpolation_error(spread):
    # 400 points in 10 clusters, a map of span ~8 (50 boxes of 0.2) and ~45 (boxes of 1)
    y = _clusters(400, spread)
    force, z = fft_repulsion(y)
    ref_force, ref_z = _brute(y)
    # measured: span ~8: Z 1e-6, R 1e-4 relative; span ~45: Z 3e-3, R 1.3e-2 (3 nodes per box
    # of width 1: FIt-SNE's default); the bounds leave a factor ~3
    z_err, f_err = (0.0003, 0.003) if spread < 10 else (0.01, 0.04)
    assert float(z) == pytest.approx(ref_z, rel=z_err)
    assert float((force.double() - ref_force).norm() / ref_force.norm()) < f_err
    # finer boxes: closer
    fine_force, fine_z = fft_repulsion(y, box_width=0.25)
    assert abs(float(fine_z) / ref_z - 1) <= abs(float(z) / ref_z - 1) + 1e-6
    assert float((fine_force.double() - ref_force).norm() / ref_force.norm()) < f_err / 2


def test_fft_spectra_cache_and_grid_sizes():
    y = _clusters(200, 30.0)
    cache: dict = {}
    first = fft_repulsion(y, cache=cache)
    assert len(cache) == 1
    again = fft_repulsion(y, cache=cache)  # from the cached kernel spectra: the same sums
    assert torch.equal(first[0], again[0]) and float(first[1]) == float(again[1])
    assert fft_boxes(10.0) == 50  # at least 50 boxes
    assert fft_boxes(97.0) == 100  # 1 unit wide, up to a product of 2, 3, 5
    with pytest.raises(ValidationError, match="2-D"):
        fft_repulsion(torch.zeros(10, 3))


def test_all_pairs_kl_gradient_is_the_autograd_gradient_of_its_value():
    torch.manual_seed(0)
    n = 40
    y = torch.randn(n, 2, dtype=torch.float64) * 2
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = (rows != cols) & (torch.rand(n, n) < 0.2)
    keep = keep | keep.T  # symmetric support
    src, dst = rows[keep], cols[keep]  # row-major: sorted by row
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(src, minlength=n), 0)
    p = torch.rand(src.numel(), dtype=torch.float64)
    dense = torch.zeros(n, n, dtype=torch.float64).index_put_((src, dst), p)
    dense = dense + dense.T
    p = dense[src, dst] / dense[src, dst].sum()
    for alpha in (1.0, 12.0):
        leaf = y.clone().requires_grad_(True)
        value, cross, log_z = _AllPairsKL.apply(leaf, src, dst, crow, p, alpha, exact_repulsion,
                                                None)
        value.backward()
        ref = y.clone().requires_grad_(True)
        d2 = (ref[:, None] - ref[None]).pow(2).sum(-1)
        w = (1 + d2).reciprocal() * (1 - torch.eye(n, dtype=torch.float64))
        objective = -(p * torch.log(w[src, dst])).sum() + torch.log(w.sum()) / alpha
        objective.backward()
        assert float(value.detach()) == pytest.approx(float(objective.detach()), rel=1e-10)
        assert torch.allclose(leaf.grad, ref.grad, rtol=1e-8, atol=1e-12)


def test_all_pairs_kl_is_registered_and_checks_its_input():
    loss = get_registry().build("loss", {"name": "all_pairs_kl", "exaggeration": 12,
                                         "exaggeration_steps": 3})
    assert isinstance(loss, AllPairsKLLoss)
    assert loss.current_exaggeration() == 12.0
    loss._steps = 3
    assert loss.current_exaggeration() == 1.0
    with pytest.raises(ValidationError, match="repulsion"):
        AllPairsKLLoss(repulsion="barnes_hut")


def test_delta_bar_delta_is_named_by_phases_and_steps_like_t_sne():
    assert optimizer_class("delta_bar_delta") is DeltaBarDelta
    p = torch.nn.Parameter(torch.zeros(3, 2))
    opt = DeltaBarDelta([p], lr=0.5, momentum=0.5, max_step_norm=1.0)
    p.grad = torch.tensor([[1.0, -1.0], [0.1, 0.2], [-10.0, 0.5]])
    opt.step()
    # first step: every gain + 0.2 (no previous step), u = −lr · 1.2 · ∇, rows clipped to 1
    gains = opt.state[p]["gains"]
    assert torch.allclose(gains, torch.full((3, 2), 1.2))
    assert torch.allclose(p[1], torch.tensor([-0.06, -0.12]))
    assert torch.allclose(p[0], torch.tensor([-0.6, 0.6]))  # norm 0.85: not clipped
    assert float(p.detach()[2].norm()) == pytest.approx(1.0)  # 6.0 long: clipped to 1
    p.grad = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    opt.step()
    # the same direction as the last step (−∇ then, −∇ now where signs agree): gain + 0.2;
    # the gradient's sign equal to the last update's (uphill): gain × 0.8
    assert float(opt.state[p]["gains"][0, 0]) == pytest.approx(1.4)
    assert float(opt.state[p]["gains"][0, 1]) == pytest.approx(0.96)
    with pytest.raises(ValueError, match="momentum"):
        DeltaBarDelta([p], momentum=1.0)


def test_all_pairs_kl_with_another_kernel_is_the_closed_forms_objective():
    """A kernel that is not stated to be the Cauchy one (here Student-t's, not saying so)
    runs the general gradient (log_kernel and its autograd slope): the same value and gradient
    as the closed form, exact repulsion and FFT alike, with and without early exaggeration;
    no size limit (test_tsne_any_kernel.py runs 5,000 items)."""
    import attrs

    from infoblocks.blocks.embedding.kernels import StudentTTransform

    @attrs.define
    class Unsaid(StudentTTransform):  # the Cauchy kernel, but without student_t_dof
        def student_t_dof(self):
            return None

    gen = torch.Generator().manual_seed(0)
    n = 40
    y = torch.randn(n, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    p = torch.rand(n, n, generator=gen, dtype=torch.float64).fill_diagonal_(0)
    p = (p + p.T) / (p + p.T).sum()
    rows, cols = torch.nonzero(p > 0, as_tuple=True)
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    unsaid = Unsaid()
    for alpha in (1.0, 12.0):
        for closed_rep, general_rep in [
                (exact_repulsion, lambda v: exact_repulsion(v, kernel=unsaid)),
                (fft_repulsion, lambda v: fft_repulsion(v, kernel=unsaid))]:
            closed = _AllPairsKL.apply(y, rows, cols, crow, p[rows, cols], alpha, closed_rep,
                                       None)
            other = _AllPairsKL.apply(y, rows, cols, crow, p[rows, cols], alpha, general_rep,
                                      unsaid)
            for a, b in zip(closed, other):
                assert torch.allclose(a, b, rtol=1e-10)
            (g1,) = torch.autograd.grad(closed[0], y)
            (g2,) = torch.autograd.grad(other[0], y)
            assert torch.allclose(g1, g2, rtol=1e-8, atol=1e-14)
