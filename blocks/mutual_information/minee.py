"""MI-NEE: I = D(P_XY ‖ P_X'×P_Y') − D(P_X ‖ P_X') − D(P_Y ‖ P_Y') against i.i.d. draws from a
known reference, one critic per divergence.  Each divergence is a bound on data vs reference
scores, written with the same bound functions as the MI bounds (:mod:`.bounds`): the training
loss, validation and the final estimate all call ``bound(scores)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from ..errors import ContractError, NumericalError
from ..losses import Loss, LossOutput, get_model
from ..state import TrainState
from .bounds import _critic_slot, _rate, dv_bound, log_average_step
from .scores import CHUNK_PAIRS, BatchScores, scalar_output


@attrs.define
class MINEELoss(Loss):
    """MI-NEE: three DV divergences against i.i.d. reference draws, one critic each.

    Each D is estimated by D̂ = mean t(data) − logmeanexp t(reference) (:func:`dv_bound` of
    the data and reference scores) with critics ``critic`` (on [x, y]), ``critic_x`` (on x) and
    ``critic_y`` (on y).  The loss is −(D̂_xy + D̂_x + D̂_y) (each critic maximises its own
    bound), with MINE's log-domain moving average per term when ``ma_rate`` < 1 (kept on this
    block, reset at phase start).  Consumes ``x, y, x_reference, y_reference``; reports ``mi``,
    ``d_xy``, ``d_x``, ``d_y`` and ``d_sum`` = D̂_xy + D̂_x + D̂_y, the sum of the bounds the
    critics maximise (what MI-NEE's validation selects on: ``mi`` is highest where a marginal
    critic has collapsed, D̂_x < 0, and selecting on it keeps that critic).
    """

    name: ClassVar[str] = "minee_loss"
    whole_batch: ClassVar[bool] = True
    consumes: ClassVar[frozenset[str]] = frozenset({"x", "y", "x_reference", "y_reference"})
    reports: ClassVar[frozenset[str]] = frozenset({"mi", "d_xy", "d_x", "d_y", "d_sum"})
    critic: str = "main"
    critic_x: str = "critic_x"
    critic_y: str = "critic_y"
    ma_rate: float = attrs.field(default=1.0, validator=_rate)
    log_averages: dict[str, torch.Tensor] = attrs.field(init=False, factory=dict, eq=False,
                                                        repr=False)

    def required_models(self) -> frozenset[str]:
        return frozenset({self.critic, self.critic_x, self.critic_y})

    def on_phase_start(self, state: TrainState) -> None:
        self.log_averages = {}

    def checkpoint_state(self) -> dict:
        return {"log_averages": dict(self.log_averages)}

    def restore_state(self, saved: dict) -> None:
        self.log_averages = dict(saved.get("log_averages", {}))

    def _divergence(self, model: nn.Module, data: tuple[torch.Tensor, ...],
                    reference: tuple[torch.Tensor, ...], key: str, dist: Any = None,
                    slot: str = "", state: TrainState | None = None):
        b = len(data[0])
        rows = [torch.cat([d, r]) for d, r in zip(data, reference)]
        t = _one_score_per_row(model, model(*rows), len(rows[0]), slot, state)
        scores = BatchScores(t[:b], t[b:], dist=dist)  # whole-batch reductions when sharded
        estimate = dv_bound(scores)
        if self.ma_rate >= 1:
            return -estimate, estimate.detach()
        current = scores.log_mean_exp()
        log_ma = log_average_step(self.log_averages.get(key), current, self.ma_rate)
        if torch.is_grad_enabled():
            self.log_averages[key] = log_ma
        return -scores.mean_joint() + torch.exp(current - log_ma), estimate.detach()

    def __call__(self, batch, models, state):
        x, y = batch["x"], batch["y"]
        xr, yr = batch["x_reference"], batch["y_reference"]
        dist = state.dist
        loss_xy, d_xy = self._divergence(get_model(models, self.critic), (x, y), (xr, yr), "xy",
                                         dist, self.critic, state)
        loss_x, d_x = self._divergence(get_model(models, self.critic_x), (x,), (xr,), "x", dist,
                                       self.critic_x, state)
        loss_y, d_y = self._divergence(get_model(models, self.critic_y), (y,), (yr,), "y", dist,
                                       self.critic_y, state)
        mi = d_xy - d_x - d_y
        return LossOutput(loss_xy + loss_x + loss_y,
                          {"mi": mi, "d_xy": d_xy, "d_x": d_x, "d_y": d_y,
                           "d_sum": d_xy + d_x + d_y})


def _one_score_per_row(model: nn.Module, t: Any, n: int, slot: str,
                       state: TrainState | None) -> torch.Tensor:
    """``t``, a divergence critic's output on ``n`` rows, as (n,) scores ((n, 1) squeezed);
    else :class:`ContractError` naming the critic's model slot and block.  A marginal critic
    of width 2 (a plugin network whose ``out_dim`` defaults to 2: the default table's
    ``out_dim = 1`` does not reach a block named in its place) was a raw torch size mismatch
    blamed on the built-in loss."""
    if isinstance(t, torch.Tensor):
        t = scalar_output(t)
        if tuple(t.shape) == (n,):
            return t
    got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
    raise ContractError(
        f"The critic {_critic_slot(slot, state)} ({type(model).__name__}) returned {got} for "
        f"{n} rows, expected ({n},) or ({n}, 1): each MI-NEE critic gives one score per row. "
        f"A network with an `out_dim` field needs `out_dim = 1` in its table "
        f"([models.{slot}] name = ..., out_dim = 1): the default table's `out_dim = 1` is not "
        "a shortcut and does not reach a block named in its place (docs/plugins.md, MI-NEE).")


@attrs.define(frozen=True, eq=False)
class ReferenceScores:
    """Critic values on data (n,) and on reference draws (m,) for one MI-NEE divergence."""

    data: torch.Tensor
    reference: torch.Tensor

    def scores(self, data_rows: torch.Tensor | None = None,
               reference_rows: torch.Tensor | None = None) -> BatchScores:
        """As :class:`BatchScores` (float64); with index tensors ``(B, n)`` / ``(B, m)`` the
        rows are resampled (a bootstrap: every reduction gives ``(B,)``)."""
        data, ref = self.data.double().cpu(), self.reference.double().cpu()
        if data_rows is not None:
            data, ref = data[data_rows], ref[reference_rows]
        return BatchScores(data, ref)

    def divergence(self, bound: Any = None) -> float:
        """D̂ by ``bound`` (a bound block; default DV): mean t(data) − logmeanexp t(ref)."""
        scores = self.scores()
        return float(dv_bound(scores) if bound is None else bound.bound(scores))


@torch.no_grad()
def reference_scores(model: nn.Module, data: tuple[torch.Tensor, ...],
                     reference: tuple[torch.Tensor, ...],
                     chunk: int = CHUNK_PAIRS, dist: Any = None) -> ReferenceScores:
    """Evaluate a divergence critic on data rows and reference rows, in chunks.  Under
    torch.distributed (``dist`` active) each rank scores a contiguous block of the data rows
    and of the reference rows, and one all-reduce of the blocks (zeros elsewhere) gives every
    rank all the scores."""
    active = dist is not None and getattr(dist, "active", False)
    was_training = model.training
    model.eval()
    try:
        def run(arrays):
            n = len(arrays[0])
            rows = torch.arange(n, device=arrays[0].device)
            if active:
                rows = rows.tensor_split(dist.world_size)[dist.rank]
            parts = [scalar_output(model(*[a[rows[i:i + chunk]] for a in arrays]))
                     for i in range(0, len(rows), chunk)]
            scores = torch.cat(parts) if parts else arrays[0].new_zeros(0)
            if not active:
                return scores
            full = arrays[0].new_zeros(n)
            full[rows] = scores.to(full.dtype)
            return full
        on_data, on_ref = run(data), run(reference)
        if active:
            both = dist.sum(torch.cat([on_data, on_ref]))
            on_data, on_ref = both[:len(on_data)], both[len(on_data):]
    finally:
        model.train(was_training)
    if not (bool(torch.isfinite(on_data).all()) and bool(torch.isfinite(on_ref).all())):
        raise NumericalError("A MI-NEE critic returned non-finite values on the evaluation data; "
                             "lower the learning rate or check the inputs for extreme values.")
    return ReferenceScores(on_data.float(), on_ref.float())


__all__ = ["MINEELoss", "ReferenceScores", "reference_scores"]
