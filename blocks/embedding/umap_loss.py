"""UMAP's edge cross-entropy with its gradient in closed form (one autograd node).

For kernels whose logit is z(d²) = c − b log max(d², floor) (UMAP's 1 / (1 + a d^{2b}):
c = −log a; t-SNE's Cauchy kernel: c = 0, b = 1), the loss of
:class:`~infoblocks.blocks.embedding.RelationLoss` on a batch,

    L = (1/B) [Σ_pos softplus(−z(‖y_s − y_t‖²)) + γ Σ_neg softplus(z(‖y_s − y_t‖²))],

has ∂L/∂d² = (1/B) sigmoid(−z) b / d² for an edge and −(γ/B) sigmoid(z) b / d² for a
negative (0 below the floor, where z is constant), and ∂L/∂y_s = 2 (y_s − y_t) ∂L/∂d² =
−∂L/∂y_t.  :class:`EdgeCrossEntropy` computes the value and these gradients in one pass and
scatters them into ∂L/∂y with ``index_add_``: the same numbers as autograd through the
dozen elementwise operations (float rounding), without their graph.  It is what the layout
phase (free coordinates) spends its time on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .kernels import SQ_DIST_FLOOR


def log_form(kernel: Any) -> tuple[float, float] | None:
    """(c, b) where ``kernel.logit(d²) = c − b log max(d², floor)``, else None (a plugin
    kernel without the method, or a form it does not have: the autograd path is used)."""
    form = getattr(kernel, "logit_log_form", None)
    return form() if callable(form) else None


def _terms(y: torch.Tensor, source: torch.Tensor, target: torch.Tensor, c: float, b: float,
           sign: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ softplus(sign · z), the differences (E, d), ∂/∂d² of each term (E,))."""
    diff = y.index_select(0, source) - y.index_select(0, target)
    sq = (diff * diff).sum(1)
    clamped = sq.clamp_min(SQ_DIST_FLOOR)
    z = c - b * torch.log(clamped)
    value = F.softplus(sign * z).sum()
    # d softplus(sign z) / d sq = sigmoid(sign z) · sign · (−b / sq), 0 where clamped
    slope = torch.sigmoid(sign * z) * (-sign * b) / clamped
    slope = torch.where(sq > SQ_DIST_FLOOR, slope, torch.zeros_like(slope))
    return value, diff, slope


class EdgeCrossEntropy(torch.autograd.Function):
    """``(y, pos_source, pos_target, neg_source, neg_target, c, b, gamma) ->
    (L, attraction, repulsion)`` (module docstring; attraction and repulsion are the two sums
    divided by B, not differentiable)."""

    @staticmethod
    def forward(ctx, y, pos_source, pos_target, neg_source, neg_target, c, b, gamma):
        size = pos_source.numel()
        attraction, diff_pos, slope_pos = _terms(y, pos_source, pos_target, c, b, -1.0)
        repulsion, diff_neg, slope_neg = _terms(y, neg_source, neg_target, c, b, 1.0)
        attraction, repulsion = attraction / size, repulsion / size
        ctx.save_for_backward(pos_source, pos_target, neg_source, neg_target, diff_pos,
                              slope_pos, diff_neg, slope_neg)
        ctx.scale = (2.0 / size, 2.0 * gamma / size)
        ctx.rows = y.shape[0]
        value = attraction + gamma * repulsion
        ctx.mark_non_differentiable(attraction, repulsion)  # the reported parts
        return value, attraction, repulsion

    @staticmethod
    def backward(ctx, grad, _grad_attraction, _grad_repulsion):
        (pos_source, pos_target, neg_source, neg_target, diff_pos, slope_pos, diff_neg,
         slope_neg) = ctx.saved_tensors
        scale_pos, scale_neg = ctx.scale
        grad_y = diff_pos.new_zeros(ctx.rows, diff_pos.shape[1])
        g_pos = diff_pos * (slope_pos * (scale_pos * grad))[:, None]
        g_neg = diff_neg * (slope_neg * (scale_neg * grad))[:, None]
        grad_y.index_add_(0, pos_source, g_pos).index_add_(0, pos_target, -g_pos)
        grad_y.index_add_(0, neg_source, g_neg).index_add_(0, neg_target, -g_neg)
        return grad_y, None, None, None, None, None, None, None


def edge_cross_entropy(y: torch.Tensor, batch: dict[str, torch.Tensor], c: float, b: float,
                       gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, attraction, repulsion) of a :class:`NegativeEdgeSampler` batch embedded as ``y``."""
    return EdgeCrossEntropy.apply(y, batch["pos_source"], batch["pos_target"],
                                  batch["neg_source"], batch["neg_target"], float(c), float(b),
                                  float(gamma))


__all__ = ["EdgeCrossEntropy", "edge_cross_entropy", "log_form"]
