"""t-SNE's batch KL with its gradient in closed form (the fast path of :class:`KLLoss`).

For the Student-t kernel w = (1 + d²/ν)^{−c}, c = (ν + 1)/2, the batch loss
L = −α Σ_e p_e log w_e + log Z, Z = Σ_{k≠l} w_kl (p on the batch's edges e, summing to 1) has
∂L/∂d²_ij = c (α p_ij − q_ij) / (ν + d²_ij) with q = w / Z, so the gradient of the embedding is

    ∂L/∂y_i = 2 Σ_{e: i∈e} c α p_e / (ν + d²_e) · (y_i − y_other)  −  4 Σ_j M_ij (y_i − y_j),
    M_ij = c q_ij / (ν + d²_ij)   (M = w² / Z for ν = 1).

One pass builds d² from a matrix product, w, Z and M (one B × B array kept for backward);
the attraction runs on the sparse edges only.  Autograd through the same formulas keeps about
ten B × B arrays and runs several times slower (measured in docs/umap.md); the value and the
gradient agree with it to float rounding (tests/recipes/test_tsne_loss.py).
"""

from __future__ import annotations

import math

import torch

from ..relations import positions_within


def batch_edges(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int,
                index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The entries of a sparse (n × n) P whose both ends lie in ``index`` ``(B,)``, as positions
    in ``index`` and values renormalised to sum 1: ``(src, dst, p)``; O(nnz) gathers."""
    r, c = positions_within(rows, cols, n, index)
    inside = ((r >= 0) & (c >= 0) & (r != c)).nonzero().squeeze(1)
    p = values.index_select(0, inside)
    return r.index_select(0, inside), c.index_select(0, inside), p / p.sum().clamp_min(1e-12)


def row_index(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A sparse (n × n) P sorted by row: ``(indptr (n + 1,), cols, values)`` (CSR), so that a
    batch reads only its own rows (:func:`batch_rows`)."""
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=n)
    indptr = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, cols.index_select(0, order), values.index_select(0, order)


def batch_rows(indptr: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
               index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`batch_edges` from the CSR of :func:`row_index`: O(B × row length) instead of
    O(nnz) (a batch of 1,000 of 5,000 items reads a fifth of P)."""
    size = index.numel()
    dev = index.device
    slot = torch.full((indptr.numel() - 1,), -1, dtype=torch.long, device=dev)
    slot[index] = torch.arange(size, device=dev)
    starts = indptr.index_select(0, index)
    counts = indptr.index_select(0, index + 1) - starts
    src = torch.repeat_interleave(torch.arange(size, device=dev), counts)
    first = torch.cumsum(counts, 0) - counts  # where each row starts in the gathered entries
    entries = torch.arange(src.numel(), device=dev) + (starts - first).index_select(0, src)
    dst = slot.index_select(0, cols.index_select(0, entries))
    inside = ((dst >= 0) & (dst != src)).nonzero().squeeze(1)
    p = values.index_select(0, entries.index_select(0, inside))
    return src.index_select(0, inside), dst.index_select(0, inside), p / p.sum().clamp_min(1e-12)


class _StudentKL(torch.autograd.Function):
    """(y, src, dst, p, α, ν) -> L = −α Σ_e p_e log w_e + log Σ_{k≠l} w_kl (see the module)."""

    @staticmethod
    def forward(ctx, y, src, dst, p, alpha: float, dof: float):
        c = 0.5 * (dof + 1.0)
        norms = (y * y).sum(1)
        d2 = torch.addmm(norms[:, None] + norms[None, :], y, y.T, alpha=-2.0).clamp_min_(0.0)
        if dof == 1.0:
            w = d2.add_(1.0).reciprocal_()  # d2 is not needed any more: w in its place
        else:
            base = d2.div_(dof).add_(1.0)  # 1 + d²/ν
            w = base.pow(-c)
        w.fill_diagonal_(0.0)
        z = w.sum(dtype=torch.float64)
        if dof == 1.0:  # M = c q / (ν + d²) = q w for ν = 1
            m = w.mul_(w).div_(z.to(w.dtype))
        else:  # c w / (Z ν (1 + d²/ν))
            m = w.div_(base).mul_(c / dof).div_(z.to(w.dtype))  # no host sync on Z
        diff = y.index_select(0, src) - y.index_select(0, dst)
        e2 = diff.pow(2).sum(1)
        log_w = -c * torch.log1p(e2 / dof)
        cross = -(p * log_w).sum()
        value = alpha * cross + torch.log(z).to(y.dtype)
        ctx.save_for_backward(y, src, dst, p, m, diff, e2)
        ctx.alpha, ctx.dof = alpha, dof
        return value, cross.detach()

    @staticmethod
    def backward(ctx, grad_value, grad_cross):
        y, src, dst, p, m, diff, e2 = ctx.saved_tensors
        alpha, dof = ctx.alpha, ctx.dof
        c = 0.5 * (dof + 1.0)
        # repulsion: −4 Σ_j M_ij (y_i − y_j) = −4 (y · rowsum(M) − M y)
        grad = (m @ y).sub_(y * m.sum(1, keepdim=True)).mul_(4.0)
        # attraction on the edges: 2 c α p_e / (ν + d²_e) (y_src − y_dst), to src (+) and dst (−)
        force = diff * (2.0 * c * alpha * p / (dof + e2))[:, None]
        grad.index_add_(0, src, force).index_add_(0, dst, -force)
        return grad * grad_value, None, None, None, None, None


def student_t_kl(y: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, p: torch.Tensor,
                 exaggeration: float = 1.0, dof: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, cross) of the batch embedding ``y`` ``(B, d)`` with P's batch edges ``src``,
    ``dst`` (positions in ``y``) and values ``p`` (summing to 1): loss = α cross + log Z,
    cross = −Σ_e p_e log w_e (detached), Student-t kernel of ``dof`` ν."""
    if not math.isfinite(exaggeration) or not math.isfinite(dof):
        raise ValueError("exaggeration and dof must be finite")
    return _StudentKL.apply(y, src, dst, p.to(y.dtype), float(exaggeration), float(dof))


__all__ = ["batch_edges", "batch_rows", "row_index", "student_t_kl"]
