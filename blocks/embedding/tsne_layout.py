"""t-SNE's KL(P‖Q) over the whole data set at every step: the loss of a non-parametric layout.

For an embedding of ALL n items (free coordinates, :class:`~.layout.FreePositions`, or a
network on the whole data), P the global joint probabilities (sparse, symmetric, summing to 1)
and a kernel w_ij = w(d²_ij), d²_ij = ‖y_i − y_j‖², q_ij = w_ij / Z, Z = Σ_{k≠l} w_kl:

    L = −α Σ_{ij} P_ij log w_ij + log Z,
    ∂L/∂y_i = 4 α Σ_j P_ij (−(log w)'(d²_ij)) (y_i − y_j) − (4 / Z) Σ_j −w'(d²_ij) (y_i − y_j)

(' = d/d(d²); α: early exaggeration; the loss minimises L / α, see :class:`AllPairsKLLoss`):
each pair's d²_ij moves y_i by 2 (y_i − y_j) and appears twice (ij and ji, P symmetric), so
the attraction −α Σ P_ij ∂ log w_ij / ∂y_i is 4 α Σ_j P_ij (−(log w)') (y_i − y_j) and
∂ log Z / ∂y_i = (1/Z) Σ_{k≠l} w'_kl ∂d²_kl/∂y_i = (4/Z) Σ_j w'_ij (y_i − y_j).  For t-SNE's
Cauchy kernel w = 1 / (1 + d²): −(log w)' = w, −w' = w², the familiar

    ∂L/∂y_i = 4 α Σ_j P_ij w_ij (y_i − y_j) − (4 / Z) Σ_j w_ij² (y_i − y_j),

computed in closed form; any other kernel (Student-t with ν ≠ 1, a plugin's) from its
``log_kernel`` and the slope of log_kernel by autograd, elementwise (the kernel protocol;
closed form where the kernel states ``student_t_dof``;
:func:`~.tsne_repulsion.log_kernel_slope`): w = exp(log_kernel), −w' = −w · log_kernel'.
The attraction runs over P's non-zero entries, the repulsion over all pairs — exact in chunks
of rows for small n, interpolated on an FFT grid above (FIt-SNE; :mod:`.tsne_repulsion`; the
grid holds the kernel's values at the node offsets, so any kernel runs there too).  The
gradient is computed in the forward pass (one autograd node, no n × n graph).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import torch

from ..errors import ValidationError
from ..losses import Loss, LossOutput, get_model
from ..relations import RelationData
from ..state import TrainState
from ..validators import non_negative_int, one_of, positive, positive_int
from ..base import block_field
from .kernels import check_kernel
from .training import _kernel_has, _whole_batch
from .tsne_loss import check_joint_probabilities
from .tsne_repulsion import (BOX_WIDTH, MIN_BOXES, NODES_PER_BOX, exact_repulsion, fft_repulsion,
                             log_kernel_slope, student_t_dof)

#: at most this many items: the exact all-pairs repulsion (``repulsion="auto"``); above, the
#: FFT interpolation, whose cost follows the map's span, not n.  Measured on one CPU thread,
#: maps of span ~95 (docs/umap.md): exact / FFT 2.2 / 13.2 ms at 1,000 items, 8.8 / 14.7 at
#: 2,000, 16.1 / 12.8 at 2,500, 84 / 13 at 5,000
EXACT_REPULSION_MAX_ITEMS = 2_000


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


def _attraction(y: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, crow: torch.Tensor,
                p: torch.Tensor, kernel=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (n, d), cross): A_i = Σ_j P_ij (−(log w)'(d²_ij)) (y_i − y_j) and cross =
    −Σ P_ij log w_ij over P's entries, sorted by row (``crow``: their CSR row pointers);
    ``kernel`` None: Cauchy, −(log w)' = w (closed form), else an embedding kernel.
    Coordinates are gathered as rows of yᵀ (contiguous vectors: the distance is a sum of d
    rows, not a reduction over a width-d axis) and the sum runs as one sparse (CSR) product
    with [1, y]: 7 ms per step on MNIST-5k's 630,000 entries where gathers of (nnz, 2) and an
    index_add took 12 (one thread)."""
    columns = y.T.contiguous()  # (d, n)
    diff = columns.index_select(1, rows).sub_(columns.index_select(1, cols))  # (d, nnz)
    d2 = diff.mul_(diff).sum(0)
    if kernel is None:
        weights = p * d2.add(1.0).reciprocal_()
        cross = (p * torch.log1p(d2)).sum()
    else:
        log_w, slope = log_kernel_slope(kernel, d2)
        weights = p * slope.neg_()
        cross = -(p * log_w).sum()
    with warnings.catch_warnings():  # torch's note that sparse CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(crow, cols, weights, (y.shape[0], y.shape[0]),
                                         check_invariants=False)
        sums = matrix @ torch.cat([torch.ones_like(y[:, :1]), y], dim=1)  # (n, 1 + d)
    return y * sums[:, :1] - sums[:, 1:], cross


class _AllPairsKL(torch.autograd.Function):
    """(y, rows, cols, crow, p, α, repulsion, kernel) -> (cross + log Z / α, cross, log Z),
    the gradient of the first from the module's formula (divided by α); y holds the items in
    order, P's entries are sorted by row; ``repulsion(y) -> (R, Z)`` of the same ``kernel``
    (None: Cauchy's closed form)."""

    @staticmethod
    def forward(ctx, y, rows, cols, crow, p, alpha: float, repulsion, kernel):
        with torch.no_grad():
            attraction, cross = _attraction(y, rows, cols, crow, p, kernel)
            force, z = repulsion(y.detach())
            grad = attraction.mul_(4.0).sub_(force, alpha=4.0 / (alpha * float(z)))
            log_z = torch.log(z).to(y.dtype)
            value = cross + log_z / alpha
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(cross, log_z)
        return value, cross, log_z

    @staticmethod
    def backward(ctx, grad_value, grad_cross, grad_log_z):
        (grad,) = ctx.saved_tensors
        return grad * grad_value, None, None, None, None, None, None, None


@attrs.define
class AllPairsKLLoss(Loss):
    """t-SNE's KL(P‖Q) of the embedding of every item, repulsion over all pairs (module
    docstring): the full gradient of (FIt-SNE / openTSNE's) non-parametric t-SNE.

    Contract: consumes ``batch[input]`` and ``index`` — a batch of the whole data set (an item
    sampler with ``batch_size`` unset; in a distributed run the ranks' shards of it, summed
    as for ``kl``); needs the global ``relation`` (joint probabilities
    summing to 1, e.g. ``P``); embeds 2-D for ``repulsion="fft"``; reports ``kl``.
    ``repulsion``: ``"exact"`` (chunks of rows, O(n²)), ``"fft"`` (grid interpolation, O(n)),
    ``"auto"`` (exact up to ``exact_max_items`` items).  The FFT grid: boxes of
    ``box_width`` (at least ``min_boxes`` per axis), ``nodes_per_box`` nodes per axis each.
    The value is n × (−Σ_{i≠j} p_ij log w_ij + log Z / α), Z = Σ_{i≠j} w_ij, α the
    exaggeration while it lasts (the exaggerated objective divided by α; ``exaggeration``),
    × n with ``scale="items"`` (the default); ``kl`` reports KL(P‖Q) itself.
    """

    name: ClassVar[str] = "all_pairs_kl"
    whole_batch: ClassVar[bool] = True
    reports: ClassVar[frozenset[str]] = frozenset({"kl"})
    model: str = "layout"
    #: the model's input: ``index`` for free coordinates, a dataset array for a network
    input: str = "index"
    relation: str = "P"
    #: the embedding kernel: t-SNE's Cauchy kernel (``student_t``, ν = 1) runs the closed-form
    #: gradient; any other kernel (Student-t with ν ≠ 1, a plugin's: the kernel protocol's
    #: ``log_kernel``) the same gradient from log_kernel and its slope by autograd,
    #: elementwise — with the exact or FFT repulsion alike (module docstring)
    kernel: Any = block_field("transform", default="student_t",
                              validator=lambda s, a, v: _kernel_has(v, "log_kernel",
                                                                    "all_pairs_kl"))
    #: α: the attraction × α for the first ``exaggeration_epochs`` epochs of a phase (or,
    #: where set, its first ``exaggeration_steps`` steps, which win; all steps when both are
    #: None), t-SNE's early exaggeration.  The exaggerated objective is divided
    #: by α — value cross + log Z / α, gradient 4 (att − R / (α Z)) — so the step keeps the
    #: scale of the plain loss's (openTSNE's learning rate N/α) and one optimizer, its
    #: momentum and gains, runs through the switch to α = 1
    exaggeration: float = attrs.field(default=1.0, validator=positive)
    #: epochs counted whatever the phase's sampler yields per epoch (the switch is set at the
    #: phase's start from its batches per epoch): t-SNE's recipe sets it from
    #: ``layout_exaggeration_epochs``.  (Counted in steps, its 10 epochs of 10 batches were 100
    #: steps whatever the sampler: a layout sampler of 1 batch per epoch ran all 30 epochs
    #: exaggerated, digits trust@15 0.944 and KL 3.31 instead of 0.989 / 0.78, author28-1)
    exaggeration_epochs: int | None = attrs.field(default=None,
                                                  validator=optional(non_negative_int))
    exaggeration_steps: int | None = attrs.field(default=None, validator=optional(non_negative_int))
    repulsion: str = attrs.field(default="auto", validator=one_of("auto", "exact", "fft"))
    exact_max_items: int = attrs.field(default=EXACT_REPULSION_MAX_ITEMS, validator=positive_int)
    nodes_per_box: int = attrs.field(default=NODES_PER_BOX, validator=positive_int)
    min_boxes: int = attrs.field(default=MIN_BOXES, validator=positive_int)
    box_width: float = attrs.field(default=BOX_WIDTH, validator=positive)
    #: "items": the value (and gradient) × n, so that a point's gradient does not shrink with
    #: the data set and one learning rate fits every n (openTSNE's N/α is 1/(4α) here: its
    #: gradient omits the factor 4); "none": the KL objective itself
    scale: str = attrs.field(default="items", validator=one_of("items", "none"))
    _p: Any = attrs.field(init=False, default=None, repr=False, eq=False)
    _spectra: dict = attrs.field(init=False, factory=dict, repr=False, eq=False)
    _steps: int = attrs.field(init=False, default=0, repr=False, eq=False)
    #: the step at which α drops to 1 in the running phase (None: never), set at its start
    _switch: int | None = attrs.field(init=False, default=None, repr=False, eq=False)
    _started: bool = attrs.field(init=False, default=False, repr=False, eq=False)

    def required_fields(self):
        return frozenset({self.input, "index"})

    def required_globals(self):
        return frozenset({self.relation})

    def on_phase_start(self, state: TrainState) -> None:
        check_kernel(self.kernel)
        self._p = None
        self._spectra = {}
        self._steps = 0
        self._switch, self._started = self._switch_step(state), True
        self._entries(state)
        # t-SNE's P contract (≥ 0, sums to 1, symmetric): author28-2
        check_joint_probabilities(state.lookup(self.relation), state, self.relation, self.name)

    def _switch_step(self, state: TrainState) -> int | None:
        """The phase's step at which the exaggeration ends: ``exaggeration_steps``, else
        ``exaggeration_epochs`` × the phase's batches per epoch; None: never.  A user's
        exaggeration that outlasts the phase is a warning (the map never leaves it)."""
        per_epoch = state.total_steps // state.n_epochs if state.n_epochs > 0 else 0
        if self.exaggeration_steps is not None:
            switch = self.exaggeration_steps
            if self.exaggeration != 1.0 and 0 < state.total_steps <= switch:
                warnings.warn(
                    f"Phase {state.phase!r}: all_pairs_kl's `exaggeration_steps` = {switch} is "
                    f"not below the phase's {state.total_steps} steps ({state.n_epochs} epochs "
                    f"of {per_epoch} batches): the layout never leaves the exaggeration "
                    f"(α = {self.exaggeration:g} throughout; the map stays compressed and its KL "
                    "high). Set `exaggeration_epochs` (epochs, whatever the sampler's batches "
                    "per epoch; t-SNE's `layout_exaggeration_epochs`) in place of "
                    "`exaggeration_steps`, or fewer steps.", UserWarning, stacklevel=2)
            return switch
        if self.exaggeration_epochs is None:
            return None
        if self.exaggeration != 1.0 and 0 < state.n_epochs <= self.exaggeration_epochs:
            # (equal: no epoch is left without it either — t-SNE's layout_epochs = 5 with
            # layout_exaggeration_epochs = 10, capped to 5 by the recipe, ran all exaggerated)
            verb = "exceeds" if state.n_epochs < self.exaggeration_epochs else "equals"
            warnings.warn(
                f"Phase {state.phase!r}: all_pairs_kl's `exaggeration_epochs` = "
                f"{self.exaggeration_epochs} {verb} the phase's {state.n_epochs} epochs: the "
                f"layout never leaves the exaggeration (α = {self.exaggeration:g} throughout). "
                "Set fewer exaggeration epochs than the phase's epochs (t-SNE: 10 of 30).",
                UserWarning, stacklevel=2)
        return self.exaggeration_epochs * per_epoch

    def checkpoint_state(self) -> dict[str, Any]:
        return {"steps": self._steps}

    def restore_state(self, saved: dict[str, Any]) -> None:
        self._steps = int(saved.get("steps", 0))

    def current_exaggeration(self) -> float:
        """α at the next step (1 once the phase's ``exaggeration_epochs`` — or
        ``exaggeration_steps`` steps — have run)."""
        switch = self._switch if self._started else self.exaggeration_steps
        if switch is not None and self._steps >= switch:
            return 1.0
        return float(self.exaggeration)

    def _entries(self, state: TrainState) -> tuple[torch.Tensor, ...]:
        """(rows, cols, CSR row pointers, values, entropy of P, n) of P's off-diagonal
        entries sorted by row, on the training device, once per phase."""
        if self._p is None:
            p = state.lookup(self.relation)
            _check(isinstance(p, RelationData),
                   f"AllPairsKLLoss: global {self.relation!r} is a {type(p).__name__}, not a "
                   "relation; point `relation` at the joint probabilities (e.g. 'P').")
            p = p.to_sparse()
            keep = p.rows != p.cols  # the diagonal is not a pair
            rows, cols = p.rows[keep].long(), p.cols[keep].long()
            values = p.values[keep].float()
            order = torch.argsort(rows, stable=True)  # by row: the CSR of the attraction
            rows, cols, values = rows[order], cols[order], values[order]
            values = values / values.sum().clamp_min(1e-30)
            entropy = -(values * torch.log(values.clamp_min(1e-30))).sum()
            n = p.shape[0]
            crow = torch.zeros(n + 1, dtype=torch.long)
            crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
            dev = state.device
            self._p = (rows.to(dev), cols.to(dev), crow.to(dev), values.to(dev),
                       entropy.to(dev), n)
        return self._p

    def _repulsion(self, n: int, dims: int, kernel):
        """(R, Z) of ``kernel`` (None: Cauchy) by the method for n items in ``dims``."""
        method = self.repulsion
        if method == "auto":
            method = "exact" if n <= self.exact_max_items or dims != 2 else "fft"
        if method == "exact":
            if kernel is None:
                return exact_repulsion
            return lambda y: exact_repulsion(y, kernel=kernel)
        _check(dims == 2, f"AllPairsKLLoss: repulsion='fft' interpolates 2-D embeddings, this "
                          f"one has {dims} dimensions; use repulsion='exact' (or 'auto').")
        return lambda y: fft_repulsion(y, self.nodes_per_box, self.min_boxes, self.box_width,
                                       cache=self._spectra, kernel=kernel)

    def __call__(self, batch, models, state):
        rows, cols, crow, values, entropy, n = self._entries(state)
        y = get_model(models, self.model)(batch[self.input])
        index = batch["index"].to(y.device).long()
        if state.dist.active:  # each rank embedded its shard: the loss is the whole batch's
            index, y = _whole_batch(index, y, state)
        _check(index.numel() == n,
               f"AllPairsKLLoss needs every item in each batch (its repulsion runs over all "
               f"pairs): the batch holds {index.numel()} of {n} items. Use an item sampler "
               "without batch_size (the whole data set).")
        if not torch.equal(index, torch.arange(n, device=y.device)):  # items in another order
            y = torch.zeros_like(y).index_copy(0, index, y)  # row i embeds item i
        if torch.is_grad_enabled():  # a training step (not an evaluation)
            alpha = self.current_exaggeration()
            self._steps += 1
        else:
            alpha = self.current_exaggeration()
        kernel = None if student_t_dof(self.kernel) == 1.0 else self.kernel  # None: Cauchy
        value, cross, log_z = _AllPairsKL.apply(y, rows, cols, crow, values.to(y.dtype), alpha,
                                               self._repulsion(n, y.shape[1], kernel), kernel)
        kl = (cross + log_z - entropy).detach()
        return LossOutput(value * n if self.scale == "items" else value, {"kl": kl})


__all__ = ["AllPairsKLLoss", "EXACT_REPULSION_MAX_ITEMS"]
