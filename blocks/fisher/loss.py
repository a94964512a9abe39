"""The IMNN loss: ``−ln|det F| + r_Λ Λ₂`` on a simulation batch, optionally aggregated.

Contract (checked before the first step, see :mod:`infoblocks.blocks.contracts`): the loss
consumes simulation batches — ``fiducial`` plus either ``derivative`` or
``numerical_derivative`` with ``delta_theta`` — reports :data:`FISHER_METRICS` (``det_F`` is
what the IMNN recipe's validation tracks, ``mode = "max"``), and uses the model ``model``.
:meth:`FisherLoss.statistics` is the evaluation protocol: the IMNN recipe computes ``F_``,
``C_``, ``mu_``, ``dmu_dtheta_`` (and so :meth:`~infoblocks.recipes.imnn.IMNN.estimate`) with
the block in its ``evaluation.statistics`` slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import attrs
from attrs.validators import optional
import torch

from ..losses import Loss, LossOutput, get_model
from ..validators import positive, positive_int
from .statistics import (FIDUCIAL, FISHER_METRICS, FisherStatistics, fisher_statistics,
                         imnn_objective, regularisation_rate)
from .summaries import _piece_outputs, _plan, network_summaries

class _ChunkedGradient(torch.autograd.Function):
    """Returns a precomputed loss value; its backward back-propagates ∂loss/∂s chunk by chunk
    into the network parameters, so that only one chunk's graph is alive at a time."""

    @staticmethod
    def forward(ctx, value, backward_fn, *params):  # noqa: D401 - torch API
        ctx.backward_fn = backward_fn
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):
        return (None, None, *ctx.backward_fn(grad_output))


# ---------------------------------------------------------------------- loss

@attrs.define
class FisherLoss(Loss):
    """IMNN loss on a simulation batch: ``−ln|det F| + r_Λ Λ₂``.

    F = (∂μ/∂θ)ᵀ C⁻¹ (∂μ/∂θ) from the summaries of model ``model`` (see :mod:`infoblocks.blocks.fisher`);
    Λ₂ = ‖C − I‖_F + ‖C⁻¹ − I‖_F; r_Λ = λ Λ₂ / (Λ₂ + exp(−α Λ₂)) with
    α = −ln(ε(λ − 1) + ε²/(1 + ε))/ε.  Metrics: det_F, log_det_F, det_C, det_invC, Lambda2, r.

    ``chunk_size`` (aggregated mode): summaries are computed in chunks without a graph, the
    gradient ∂loss/∂s is taken on the detached summaries and then back-propagated chunk by
    chunk (the network runs twice; memory holds one chunk's graph).  Same gradient as
    ``chunk_size=None`` up to float rounding.
    """

    name: ClassVar[str] = "fisher"
    whole_batch: ClassVar[bool] = True
    #: the derivative key is ``derivative`` or ``numerical_derivative`` + ``delta_theta``,
    #: whichever the sampler yields (checked when the first batch arrives)
    consumes: ClassVar[frozenset[str]] = frozenset({FIDUCIAL})
    reports: ClassVar[frozenset[str]] = FISHER_METRICS
    model: str = "main"
    lambda_reg: float = attrs.field(default=10.0, validator=positive)
    epsilon: float = attrs.field(default=0.1, validator=positive)
    chunk_size: int | None = attrs.field(default=None, validator=optional(positive_int))
    alpha: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.alpha = regularisation_rate(self.lambda_reg, self.epsilon)

    def objective(self, summaries: torch.Tensor, derivatives: torch.Tensor,
                  reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics from summaries ``(n_s, m)`` and derivatives ``(n_d, p, m)``
        (``reduce``: the differentiable sum over processes, see :func:`fisher_statistics`)."""
        return imnn_objective(fisher_statistics(summaries, derivatives, reduce),
                              self.lambda_reg, self.alpha)

    @torch.no_grad()
    def statistics(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
                   ) -> FisherStatistics:
        """μ, C, C⁻¹, ∂μ/∂θ and F (float64) of ``model``'s summaries of ``batch`` (the
        evaluation protocol: the IMNN recipe's ``F_`` and ``estimate`` come from here)."""
        was_training = model.training
        model.eval()
        try:
            s, ds = network_summaries(model, batch, self.chunk_size)
        finally:
            model.train(was_training)
        return fisher_statistics(s.double(), ds.double())

    def __call__(self, batch, models, state):
        """Under torch.distributed ``batch`` is this process's shard of the simulations (the
        sampler's ``shard``): the statistics are sums reduced over the processes before the
        loss (:func:`fisher_statistics`), so every process computes the loss of the whole set;
        the backward of the reduction sums the processes' identical upstream gradients, and
        the engine's average over processes gives the one-process gradient."""
        model = get_model(models, self.model)
        # (passed only when reducing, so that an objective(summaries, derivatives) override
        # written for one process keeps working there)
        reduce = (state.dist.differentiable_sum,) if state is not None and state.dist.active \
            else ()
        if self.chunk_size is None or not torch.is_grad_enabled():
            value, metrics = self.objective(*network_summaries(model, batch, self.chunk_size),
                                            *reduce)
            return LossOutput(value, metrics)
        return self._chunked(model, batch, *reduce)

    def _chunked(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LossOutput:
        with torch.no_grad():
            s, ds = network_summaries(model, batch, self.chunk_size)
        s.requires_grad_(True)
        ds.requires_grad_(True)
        value, metrics = self.objective(s, ds, *([reduce] if reduce is not None else []))
        grad_s, grad_ds = torch.autograd.grad(value, (s, ds))
        params = [p for p in model.parameters() if p.requires_grad]
        pieces = _plan(batch, self.chunk_size)

        def backward_fn(grad_output: torch.Tensor) -> list[torch.Tensor]:
            totals = [torch.zeros_like(p) for p in params]
            offset_s = offset_d = 0
            for piece in pieces:
                with torch.enable_grad():
                    out_s, out_ds = _piece_outputs(model, batch, piece)
                outputs, grads = [], []
                if out_s is not None:
                    outputs.append(out_s)
                    grads.append(grad_s[offset_s:offset_s + len(out_s)] * grad_output)
                    offset_s += len(out_s)
                if out_ds is not None:
                    outputs.append(out_ds)
                    grads.append(grad_ds[offset_d:offset_d + len(out_ds)] * grad_output)
                    offset_d += len(out_ds)
                parts = torch.autograd.grad(outputs, params, grads, allow_unused=True)
                for total, part in zip(totals, parts):
                    if part is not None:
                        total.add_(part)
            return totals

        out = _ChunkedGradient.apply(value.detach(), backward_fn, *params)
        return LossOutput(out, metrics)


def undeclared_reduction(loss: object) -> list[str]:
    """Names of the losses in ``loss`` (itself, or the parts of a ``compound``) that do not
    say how their value reduces under torchrun: no class of theirs below :class:`Loss` sets
    ``whole_batch``.  On SIMULATIONS batches the Fisher statistics are non-linear in the
    batch, so such a loss formed from the rank's shard trains another objective (det F 44.19
    on two ranks against 43.97 on one, author26-5); the IMNN recipe warns about it."""
    parts = getattr(loss, "losses", None)
    if isinstance(parts, (list, tuple)) and "whole_batch" in vars(type(loss)):
        return [name for part in parts for name in undeclared_reduction(part)]
    for cls in type(loss).__mro__:
        if cls is Loss or cls is object:
            break
        if "whole_batch" in vars(cls):
            return []
    return [getattr(loss, "name", type(loss).__name__)]


__all__ = ["FisherLoss", "undeclared_reduction"]
