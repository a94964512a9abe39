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
import weakref
from typing import Any

import torch

from ..base import BUILTIN, _provider, block_origin
from ..errors import PluginError, ValidationError
from ..relations import DenseRelations, RelationData, positions_within

#: t-SNE's P contract, checked at a KL loss's phase start (:func:`check_joint_probabilities`):
#: |Σ P − 1| above this is refused (the built-in ``normalize`` leaves ~1e-7)
P_SUM_TOLERANCE = 1e-3
#: max |P − Pᵀ| above this fraction of the largest entry is refused (the built-in
#: ``symmetrize`` gives P = Pᵀ exactly; a conditional P without it: ~0.5 and more)
P_SYMMETRY_TOLERANCE = 1e-3
#: an entry below −this × the largest is negative (not rounding)
P_NEGATIVE_TOLERANCE = 1e-6
#: id -> weak reference of the values tensors of the P that passed the check (a later phase
#: reading the same P does not check it again)
_CHECKED_P: dict[int, weakref.ref] = {}


def _asymmetry(p: RelationData) -> float:
    """max |P − Pᵀ| of a relation in float64: dense a block of rows at a time; sparse by one
    sort of the entries' unordered pairs, P_ij counted + and P_ji − (duplicates summed)."""
    if isinstance(p, DenseRelations):
        values, worst = p.values, 0.0
        step = max(1, 4_194_304 // max(values.shape[0], 1))
        for s in range(0, values.shape[0], step):
            block = values[s:s + step].double() - values[:, s:s + step].T.double()
            worst = max(worst, float(block.abs().max())) if block.numel() else worst
        return worst
    sparse = p.to_sparse()
    rows, cols = sparse.rows.long(), sparse.cols.long()
    low, high = torch.minimum(rows, cols), torch.maximum(rows, cols)
    values = sparse.values.double()
    # P_ij counted +, P_ji −; a diagonal entry is its own transpose
    signed = torch.where(rows < cols, values, torch.where(rows > cols, -values, 0.0))
    pairs, slot = torch.unique(low * sparse.shape[0] + high, return_inverse=True)
    diff = torch.zeros(pairs.numel(), dtype=torch.float64, device=signed.device)
    diff.index_add_(0, slot, signed)
    return float(diff.abs().max()) if diff.numel() else 0.0


def check_joint_probabilities(p: Any, state: Any, relation: str, loss: str) -> None:
    """t-SNE's P contract on the global ``relation`` that ``loss`` reads, at its phase start:
    entries ≥ 0, summing to 1 (:data:`P_SUM_TOLERANCE`), symmetric
    (:data:`P_SYMMETRY_TOLERANCE` of the largest entry).  Refused naming ``globals.<relation>``,
    the block that made it (its last transform, from ``state.global_blocks``) and the fix: a
    :class:`PluginError` where a block of that global is not infoblocks' own, else a
    :class:`ValidationError`.  Without ``symmetrize`` (docs/plugins.md's own example list
    ``["my_entropic_affinity", "normalize"]``) the layout ran on the conditional P, silently:
    digits trust@15 0.917 instead of 0.989; a P of negative entries or summing to ~300 from a
    plugin's affinity 0.88 / 0.72 (author28-2).  Once per P (a later phase reading the same
    value does not check it again); O(nnz log nnz) for the k-NN form, a pass for a dense P."""
    if not isinstance(p, RelationData):
        return
    values = getattr(p, "values", None)
    seen = _CHECKED_P.get(id(values))
    if seen is not None and seen() is values:
        return
    flat = (p.values if isinstance(p, DenseRelations) else p.to_sparse().values).double()
    if not flat.numel():
        return
    largest = float(flat.abs().max())
    total = float(flat.sum())
    negative = flat < -P_NEGATIVE_TOLERANCE * largest
    problems, fixes = [], []
    if bool(negative.any()):
        problems.append(f"has {int(negative.sum())} negative entries (the lowest "
                        f"{float(flat.min()):.3g}; probabilities are ≥ 0)")
        fixes.append("fix the transform that makes negative values (or take it out)")
    if abs(total - 1.0) > P_SUM_TOLERANCE:
        problems.append(f"sums to {total:.6g}, not 1")
        fixes.append('end the list with "normalize"')
    asymmetry = _asymmetry(p)
    if asymmetry > P_SYMMETRY_TOLERANCE * largest:
        problems.append(f"is not symmetric: max |P − Pᵀ| = {asymmetry:.3g}, "
                        f"{asymmetry / largest:.2g} of its largest entry (a conditional "
                        "P_j|i, not a joint P)")
        fixes.append('add { name = "symmetrize", subtract_product = false } (t-SNE\'s '
                     '(P + Pᵀ)/2) before "normalize"')
    if not problems:
        if isinstance(values, torch.Tensor):
            key = id(values)
            _CHECKED_P[key] = weakref.ref(values, lambda _, key=key: _CHECKED_P.pop(key, None))
        return
    blocks = list((getattr(state, "global_blocks", None) or {}).get(relation, []))
    foreign = [b for b in blocks if block_origin(b) != BUILTIN]
    made = ""
    if blocks:
        last = blocks[-1]
        # a plugin's block earlier in the list is named too (its affinity before "normalize")
        earlier = ", ".join(f"{b.kind} {b.name!r}{_provider(b)}" for b in foreign
                            if b is not last)
        made = (f", made by its {'last transform' if len(blocks) > 1 else last.kind} "
                f"{last.name!r}{_provider(last)}" + (f" after {earlier}" if earlier else "")
                + ",")
    raise (PluginError if foreign else ValidationError)(
        f"phase {getattr(state, 'phase', '')!r}: loss {loss!r} reads `globals.{relation}` as "
        f"t-SNE's joint probabilities P (≥ 0, summing to 1, symmetric), but this P{made} "
        f"{'; '.join(problems)}. The KL(P‖Q) gradient assumes that form: another P trains a "
        "map that does not minimise the reported KL"
        + (" (a conditional P, without symmetrize: digits trust@15 0.917 instead of 0.989)"
           if asymmetry > P_SYMMETRY_TOLERANCE * largest else "")
        + f". In `globals.{relation}.transforms`: {'; '.join(fixes)} — "
        "t-SNE's default list is [\"perplexity_rescale\", { name = \"symmetrize\", "
        "subtract_product = false }, \"normalize\"].")


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


__all__ = ["batch_edges", "batch_rows", "row_index", "student_t_kl", "check_joint_probabilities"]
