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

from ..losses import HandGradients
from .kernels import SQ_DIST_FLOOR


def log_form(kernel: Any) -> tuple[float, float] | None:
    """(c, b) where ``kernel.logit(d²) = c − b log max(d², floor)``, else None (a plugin
    kernel without the method, or a form it does not have: the autograd path is used)."""
    form = getattr(kernel, "logit_log_form", None)
    return form() if callable(form) else None


def _points(y: torch.Tensor) -> torch.Tensor:
    """``y`` (n, d) as the tensor whose rows the terms gather: for a 2-D embedding of float32 /
    float64 its complex view (n,), one element per point, so a pair's gather, difference and
    scatter are single-element operations (2.5x faster on CPU than the same on rows of two;
    the same numbers), else ``y`` itself (also on devices other than CPU and CUDA, whose
    complex kernels are incomplete)."""
    if (y.ndim == 2 and y.shape[1] == 2 and y.dtype in (torch.float32, torch.float64)
            and y.device.type in ("cpu", "cuda")
            and y.stride() == (2, 1) and y.storage_offset() % 2 == 0):
        return torch.view_as_complex(y)
    return y


def _row_sq(diff: torch.Tensor) -> torch.Tensor:
    """‖row‖² of ``diff`` (E, d), or |diff|² of complex differences (E,) (:func:`_points`): a
    product per column for a narrow embedding (a reduction over a last dimension of 2 costs
    twice the two products on CPU)."""
    if diff.is_complex():
        re, im = diff.real, diff.imag
        return re * re + im * im
    if diff.shape[1] > 4:
        return (diff * diff).sum(1)
    sq = diff[:, 0] * diff[:, 0]
    for j in range(1, diff.shape[1]):
        sq = sq + diff[:, j] * diff[:, j]
    return sq


def _terms(y: torch.Tensor, source: torch.Tensor, target: torch.Tensor, c: float, b: float,
           sign: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ softplus(sign · z), the differences (E, d) — (E,) complex for :func:`_points`' view
    — and ∂/∂d² of each term (E,)); ``y`` as :func:`_points` returns it."""
    diff = y.index_select(0, source) - y.index_select(0, target)
    sq = _row_sq(diff)
    clamped = sq.clamp_min(SQ_DIST_FLOOR)
    signed_z = torch.log(clamped).mul_(-sign * b).add_(sign * c)  # sign · (c − b log d²)
    value = F.softplus(signed_z).sum()
    # d softplus(sign z) / d sq = sigmoid(sign z) · sign · (−b / sq), 0 where clamped
    slope = torch.sigmoid(signed_z).mul_(-sign * b).div_(clamped)
    slope.masked_fill_(sq <= SQ_DIST_FLOOR, 0.0)
    return value, diff, slope


def _edge_terms(y, pos_source, pos_target, neg_source, neg_target, c, b, gamma):
    """(L, attraction, repulsion, the scatter's pairs: (source, target, diff, ∂L/∂d² × 2))."""
    size = pos_source.numel()
    y = _points(y)
    attraction, diff_pos, slope_pos = _terms(y, pos_source, pos_target, c, b, -1.0)
    repulsion, diff_neg, slope_neg = _terms(y, neg_source, neg_target, c, b, 1.0)
    attraction, repulsion = attraction / size, repulsion / size
    pairs = ((pos_source, pos_target, diff_pos, slope_pos * (2.0 / size)),
             (neg_source, neg_target, diff_neg, slope_neg * (2.0 * gamma / size)))
    return attraction + gamma * repulsion, attraction, repulsion, pairs


class EdgeCrossEntropy(torch.autograd.Function):
    """``(y, pos_source, pos_target, neg_source, neg_target, c, b, gamma) ->
    (L, attraction, repulsion)`` (module docstring; attraction and repulsion are the two sums
    divided by B, not differentiable)."""

    @staticmethod
    def forward(ctx, y, pos_source, pos_target, neg_source, neg_target, c, b, gamma):
        value, attraction, repulsion, pairs = _edge_terms(
            y, pos_source, pos_target, neg_source, neg_target, c, b, gamma)
        ctx.save_for_backward(*pairs[0], *pairs[1])
        ctx.shape = y.shape
        ctx.mark_non_differentiable(attraction, repulsion)  # the reported parts
        return value, attraction, repulsion

    @staticmethod
    def backward(ctx, grad, _grad_attraction, _grad_repulsion):
        saved = ctx.saved_tensors
        pairs = ((*saved[:3], saved[3] * grad), (*saved[4:7], saved[7] * grad))
        return _scatter(ctx.shape, *pairs), None, None, None, None, None, None, None


def _scatter(shape: torch.Size, *pairs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """∂L/∂y (``shape`` = y's (rows, d)) from pairs ``(source, target, diff, ∂L/∂d² × 2)``:
    ±diff × slope added at the sources and targets (``index_add_`` of a negated copy: with
    ``alpha = -1`` it leaves the fast kernel, 10x slower); complex differences
    (:func:`_points`) are added as complex numbers and returned as their (rows, 2) view."""
    diff = pairs[0][2]
    if diff.is_complex():
        grad_y = diff.new_zeros(shape[0])
    else:
        grad_y = diff.new_zeros(shape[0], diff.shape[1])
    for source, target, diff, slope in pairs:
        g = diff * (slope if diff.is_complex() else slope[:, None])
        grad_y.index_add_(0, source, g).index_add_(0, target, g.neg_())
    return torch.view_as_real(grad_y) if grad_y.is_complex() else grad_y


def edge_cross_entropy(y: torch.Tensor, batch: dict[str, torch.Tensor], c: float, b: float,
                       gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, attraction, repulsion) of a :class:`NegativeEdgeSampler` batch embedded as ``y``."""
    return EdgeCrossEntropy.apply(y, batch["pos_source"], batch["pos_target"],
                                  batch["neg_source"], batch["neg_target"], float(c), float(b),
                                  float(gamma))


def table_edge_cross_entropy(table: torch.Tensor, batch: dict[str, torch.Tensor], c: float,
                             b: float, gamma: float) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor, torch.Tensor | None]:
    """:func:`edge_cross_entropy` of a batch embedded by a lookup table (``y = table[items]``,
    free coordinates) and ∂L/∂table: (L, attraction, repulsion, gradient or None).

    The pairs index ``table`` through ``items`` directly, so no (m, d) embedding of the batch
    is gathered and no gradient of it scattered back; with grad mode on and ``table``
    trainable the gradient is computed with the value and L hands it to ``table`` on
    ``backward()`` (:class:`HandGradients`) — or the engine assigns it without a backward."""
    items = batch["items"]
    pos_source, pos_target, neg_source, neg_target = (
        items.index_select(0, batch[key])
        for key in ("pos_source", "pos_target", "neg_source", "neg_target"))
    if not (torch.is_grad_enabled() and table.requires_grad):
        value, attraction, repulsion = EdgeCrossEntropy.apply(
            table, pos_source, pos_target, neg_source, neg_target, float(c), float(b),
            float(gamma))
        return value, attraction, repulsion, None
    with torch.no_grad():
        value, attraction, repulsion, pairs = _edge_terms(
            table, pos_source, pos_target, neg_source, neg_target, c, b, gamma)
        grad = _scatter(table.shape, *pairs)
    return _EdgeHandGradients.apply(value, [grad], table), attraction, repulsion, grad


class _EdgeHandGradients(HandGradients):
    second_order_error = ("The UMAP edge loss of free coordinates carries hand-computed "
                          "gradients: a gradient of its gradient (create_graph=True) needs "
                          "autograd's path; set `fused = false` on the loss.")


__all__ = ["EdgeCrossEntropy", "edge_cross_entropy", "log_form", "table_edge_cross_entropy"]
