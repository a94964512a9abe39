"""author28-4: ``heavy_tailed`` is openTSNE's / Kobak et al. (2019)'s kernel
w = (1 + d²/α)^−α, α = ``dof``; ``student_t``'s ``dof`` is Student-t's ν,
w = (1 + d²/ν)^−(ν+1)/2 — another kernel under the same name (an openTSNE user's
``dof = 0.5`` got the tail d^−1.5, not d^−1)."""

import warnings

import numpy as np
import pytest
import torch

from infoblocks.blocks.embedding.kernels import HeavyTailedTransform, StudentTTransform
from infoblocks.blocks.embedding.tsne_layout import AllPairsKLLoss
from infoblocks.blocks.relations import SparseRelations
from infoblocks.blocks.state import TrainState
from infoblocks.plugins.registry import get_registry
from infoblocks.plugins.testing import check_block
from infoblocks.recipes import ParametricTSNE

# openTSNE 1.0.4: openTSNE.kl_divergence.kl_divergence_exact(P, Y, dof=α) on the 3 points below
OPENTSNE_KL = {0.5: 0.014880368141709153, 1.0: 0.01647973791681947, 2.0: 0.15067901385672716}
P3 = np.array([[0, .3, .1], [.3, 0, .1], [.1, .1, 0]]) / 1.0
Y3 = np.array([[0.0, 0.0], [1.0, 0.5], [-2.0, 1.5]])


class _Positions(torch.nn.Module):
    def __init__(self, y):
        super().__init__()
        self.y = torch.nn.Parameter(torch.as_tensor(y))

    def forward(self, index):
        return self.y[index]


def _kl(kernel) -> float:
    """KL(P‖Q) as all_pairs_kl reports it (the layout's loss) for the 3 points (P in
    float32 there: 1e-6 relative)."""
    p = torch.as_tensor(P3 / P3.sum())
    r, c = torch.nonzero(p, as_tuple=True)
    models = torch.nn.ModuleDict({"layout": _Positions(Y3)})
    state = TrainState(models=models, dataset=None,
                       globals={"P": SparseRelations(r, c, p[r, c], (3, 3))},
                       device=torch.device("cpu"), generator=torch.Generator(),
                       rng=np.random.default_rng(0))
    loss = AllPairsKLLoss(kernel=kernel, repulsion="exact")
    loss.on_phase_start(state)
    return float(loss({"index": torch.arange(3)}, models, state).metrics["kl"])


@pytest.mark.parametrize("alpha", sorted(OPENTSNE_KL))
def test_heavy_tailed_is_opentsnes_dof(alpha):
    kernel = get_registry().build("transform", {"name": "heavy_tailed", "dof": alpha})
    assert isinstance(kernel, HeavyTailedTransform)
    assert _kl(kernel) == pytest.approx(OPENTSNE_KL[alpha], rel=1e-5)
    d2 = torch.tensor([0.0, 1.0, 4.0])
    assert torch.allclose(kernel.log_kernel(d2), -alpha * torch.log1p(d2 / alpha))
    check_block(HeavyTailedTransform)


def test_student_t_dof_is_another_kernel_but_at_one():
    assert _kl(StudentTTransform(dof=0.5)) == pytest.approx(0.0059835950903199, rel=1e-5)
    assert _kl(StudentTTransform(dof=1.0)) == pytest.approx(OPENTSNE_KL[1.0], rel=1e-5)
    # α = 1 is the Cauchy kernel: the closed forms run for it
    assert HeavyTailedTransform(dof=1.0).student_t_dof() == 1.0
    assert HeavyTailedTransform(dof=0.5).student_t_dof() is None


def test_a_layout_with_opentsnes_dof():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 8))[rng.integers(0, 4, 120)] * 5
         + rng.normal(size=(120, 8))).astype(np.float32)
    recipe = ParametricTSNE(seed=0, layout_epochs=3, init_epochs=1, phases=[
        {"name": "layout", "loss": {"kernel": {"name": "heavy_tailed", "dof": 0.5}}}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (3 epochs: the network is far from the layout)
        recipe.fit(x)
    layout = next(p for p in recipe.routine_.phases if p.name == "layout")
    assert layout.loss.kernel == HeavyTailedTransform(dof=0.5)
    assert np.isfinite(recipe.transform(x[:5])).all()

