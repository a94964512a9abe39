"""Critic scores and the reductions every MI bound is written in.

A bound (see :mod:`.bounds`) is a function of the critic's values on *joint* pairs
(x_i, y_i) and on *negative* pairs (x_i, y_j), i ≠ j.  It never touches the tensors directly:
it calls the reductions of a scores object, so that **one definition** of a bound serves

* training and validation — :class:`BatchScores`: the scores of one batch (negatives either
  the sampler's explicit pairs or all off-diagonal pairs of the batch), float32, with grad;
* the final estimate — :class:`PairScores`: all n(n − 1) off-diagonal pairs of the evaluation
  set (or evenly spaced shifted pairs), float64, without grad;
* the bootstrap — :meth:`PairScores.weighted`: the same reductions with item weights
  ``(B, n)``, one bound value per row.

The reductions (all return a scalar, or ``(B,)`` with weights):

``mean_joint(fn=None)``        mean_i fn(t_ii)
``mean_negatives(fn=None)``    mean over negative pairs of fn(t_ij)
``log_mean_exp(clip=None)``    log mean over negative pairs of e^{t_ij} (t clipped to [−clip, clip])
``row_log_mean_exp()``         per item i: log mean_{j ∈ {i} ∪ negatives(i)} e^{t_ij}
                               (needs row-structured negatives: in-batch or all pairs)
``mean_items(values)``         mean over items of a per-item tensor ``(n,)`` / ``(B, n)``
``joint``                      the joint scores t_ii ``(n,)``

Every ``exp`` is taken after subtracting a maximum (or inside a logsumexp): a drifting critic
offset cannot overflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from ..errors import NumericalError, ValidationError

#: pairs evaluated per critic call by the final estimator (bounds memory: 2^18 rows at a time)
CHUNK_PAIRS = 262_144
#: above this many off-diagonal pairs the final estimator uses evenly spaced shifted pairs
MAX_PAIRS = 4_000_000

Fn = Callable[[torch.Tensor], torch.Tensor] | None


def log_mean_exp(t: torch.Tensor) -> torch.Tensor:
    """log mean e^t over all elements, computed as logsumexp − log count (never overflows)."""
    return torch.logsumexp(t.reshape(-1), 0) - math.log(t.numel())


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The b(b−1) off-diagonal entries of a ``(b, b)`` matrix, flattened."""
    b = matrix.shape[0]
    return matrix.flatten()[1:].view(b - 1, b + 1)[:, :-1].reshape(-1)


def _rows_error() -> ValidationError:
    return ValidationError(
        "This bound needs row-structured negatives (every item paired with the other items of "
        "its batch), but the batch holds explicit negative pairs (x_marginal, y_marginal). Use "
        "an in-batch negative sampler (negatives = \"all_pairs\").")


class BatchScores:
    """Critic scores of one batch: ``joint`` (..., b) and flat ``negatives`` (..., m); with
    ``matrix`` (b, b) (in-batch negatives) the rows are known too.  Reductions run over the
    last axis, so leading axes (a bootstrap over resampled rows) give one value each."""

    def __init__(self, joint: torch.Tensor, negatives: torch.Tensor,
                 matrix: torch.Tensor | None = None) -> None:
        self.joint, self.negatives, self.matrix = joint, negatives, matrix
        self._lme: torch.Tensor | None = None

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> BatchScores:
        """In-batch negatives: entry (i, j) of ``matrix`` is t(x_i, y_j)."""
        return cls(torch.diagonal(matrix), off_diagonal(matrix), matrix)

    def mean_joint(self, fn: Fn = None) -> torch.Tensor:
        return (self.joint if fn is None else fn(self.joint)).mean(-1)

    def mean_negatives(self, fn: Fn = None) -> torch.Tensor:
        return (self.negatives if fn is None else fn(self.negatives)).mean(-1)

    def log_mean_exp(self, clip: float | None = None) -> torch.Tensor:
        if clip is None and self._lme is not None:  # a bound and its objective share it
            return self._lme
        t = self.negatives if clip is None else self.negatives.clamp(-clip, clip)
        value = torch.logsumexp(t, -1) - math.log(t.shape[-1])
        if clip is None:
            self._lme = value
        return value

    def row_log_mean_exp(self) -> torch.Tensor:
        if self.matrix is None:
            raise _rows_error()
        return torch.logsumexp(self.matrix, 1) - math.log(self.matrix.shape[1])

    def mean_items(self, values: torch.Tensor) -> torch.Tensor:
        return values.mean(-1)


def shifts_for(n: int, max_pairs: int = MAX_PAIRS) -> torch.Tensor:
    """Column offsets s_k: pair (i, (i + s_k) mod n).  All n − 1 offsets (every off-diagonal
    pair once) when n(n − 1) ≤ max_pairs, else max(1, max_pairs // n) evenly spaced ones."""
    if n < 2:
        raise ValidationError(f"The all-pairs estimate needs at least 2 samples, got {n}.")
    if n * (n - 1) <= max_pairs:
        return torch.arange(1, n)
    count = max(1, min(n - 1, max_pairs // n))
    return torch.unique(torch.linspace(1, n - 1, count).round().long())


@attrs.define(frozen=True, eq=False)
class PairScores:
    """Critic values on an evaluation set: ``joint`` (n,) = t(x_i, y_i) and ``marginal``
    (K, n) = t(x_i, y_{(i + shifts_k) mod n}) — all n(n−1) off-diagonal pairs when K = n − 1.

    ``weights`` (B, n) (see :meth:`weighted`) weighs item i by w_i and pair (i, j) by
    w_i w_j: every reduction then returns ``(B,)``.  Computed in float64."""

    joint: torch.Tensor
    marginal: torch.Tensor
    shifts: torch.Tensor
    weights: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.joint.numel()

    def weighted(self, weights: torch.Tensor) -> PairScores:
        """The same scores with item weights ``(B, n)`` (a bootstrap: resampling counts)."""
        return attrs.evolve(self, weights=weights.to(self.joint.device, torch.float64))

    # ------------------------------------------------------------------ reductions

    def _w(self) -> torch.Tensor:
        if self.weights is not None:
            return self.weights
        return torch.ones(1, self.n, dtype=torch.float64, device=self.joint.device)

    def _out(self, value: torch.Tensor) -> torch.Tensor:
        return value[0] if self.weights is None else value

    def _all_pairs(self) -> bool:
        return len(self.shifts) == self.n - 1

    def _pair_sum(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``(B, n)``: S_bi = Σ_k w_b[(i + s_k) mod n] · values[k, i].  All pairs: one
        ``(B, n) @ (n, n)`` product; shifted pairs: one rolled product per shift."""
        n = self.n
        if self._all_pairs():
            dense = values.new_zeros(n, n)
            rows = torch.arange(n, device=values.device)
            cols = (rows[None, :] + self.shifts.to(values.device)[:, None]) % n
            dense[rows.expand_as(cols), cols] = values
            return weights @ dense.T
        out = weights.new_zeros(weights.shape)
        for k, s in enumerate(self.shifts.tolist()):
            out += weights.roll(-s, 1) * values[k]
        return out

    def _row_weights(self, w: torch.Tensor) -> torch.Tensor:
        """``(B, n)``: Σ of w_j over the evaluated partners j of item i."""
        if self._all_pairs():
            return w.sum(1, keepdim=True) - w
        return self._pair_sum(w, torch.ones_like(self.marginal, dtype=torch.float64))

    def mean_joint(self, fn: Fn = None) -> torch.Tensor:
        w = self._w()
        joint = self.joint.double()
        values = joint if fn is None else fn(joint)
        return self._out((w * values).sum(1) / w.sum(1))

    def mean_negatives(self, fn: Fn = None) -> torch.Tensor:
        w = self._w()
        marginal = self.marginal.double()
        values = marginal if fn is None else fn(marginal)
        num = (w * self._pair_sum(w, values)).sum(1)
        return self._out(num / (w * self._row_weights(w)).sum(1))

    def log_mean_exp(self, clip: float | None = None) -> torch.Tensor:
        w = self._w()
        marginal = self.marginal.double()
        if clip is not None:
            marginal = marginal.clamp(-clip, clip)
        shift = float(marginal.max())  # exp never overflows
        num = (w * self._pair_sum(w, torch.exp(marginal - shift))).sum(1)
        den = (w * self._row_weights(w)).sum(1)
        return self._out(torch.log(num / den) + shift)

    def row_log_mean_exp(self) -> torch.Tensor:
        w = self._w()
        joint, marginal = self.joint.double(), self.marginal.double()
        shift = float(torch.maximum(marginal.max(), joint.max()))
        row = self._pair_sum(w, torch.exp(marginal - shift)) + w * torch.exp(joint - shift)
        return self._out(torch.log(row / (self._row_weights(w) + w)) + shift)

    def mean_items(self, values: torch.Tensor) -> torch.Tensor:
        w = self._w()
        return self._out((w * values).sum(-1) / w.sum(1))

    # ------------------------------------------------------------------ bounds

    def bound(self, bound: Any = "dv", **options: Any) -> float:
        """The value of ``bound`` in nats: a bound block (anything with ``bound(scores)``) or
        the name of a built-in bound function (``dv``, ``nwj``, ``infonce``, ``smile``;
        ``options`` such as ``clip`` are passed to it)."""
        return float(_evaluate(bound, self, options))

    def bootstrap(self, bound: Any = "dv", level: float = 0.95, n_boot: int = 200,
                  seed: int = 0, **options: Any) -> tuple[float, float]:
        """Percentile bootstrap interval over the evaluation items (resampled with replacement;
        the critic is held fixed, so this is the sampling uncertainty of the evaluation set)."""
        if isinstance(level, bool) or not 0 < level < 1:
            raise ValidationError(f"`ci` must be a level in (0, 1), e.g. 0.95, got {level!r}.")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        counts = torch.multinomial(torch.full((self.n,), 1.0 / self.n), self.n * n_boot,
                                   replacement=True, generator=generator).view(n_boot, self.n)
        weights = torch.zeros(n_boot, self.n, dtype=torch.float64)
        weights.scatter_add_(1, counts, torch.ones_like(counts, dtype=torch.float64))
        values = _evaluate(bound, self.weighted(weights), options).reshape(-1)
        return quantile_interval(values, level)


def quantile_interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values``."""
    alpha = (1 - level) / 2
    values = values.double().cpu()
    lo, hi = torch.quantile(values, torch.tensor([alpha, 1 - alpha], dtype=values.dtype))
    return float(lo), float(hi)


def _evaluate(bound: Any, scores: Any, options: dict[str, Any]) -> torch.Tensor:
    if isinstance(bound, str):
        from .bounds import BOUND_FUNCTIONS

        if bound not in BOUND_FUNCTIONS:
            raise ValidationError(f"Unknown bound {bound!r}; use one of "
                                  f"{sorted(BOUND_FUNCTIONS)} or a bound block.")
        return BOUND_FUNCTIONS[bound](scores, **options)
    if not callable(getattr(bound, "bound", None)):
        raise ValidationError(f"{bound!r} is not a bound: it has no bound(scores) method.")
    return bound.bound(scores)


def scalar_output(t: torch.Tensor) -> torch.Tensor:
    return t.squeeze(-1) if t.ndim == 2 and t.shape[-1] == 1 else t


def critic_pairwise(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(n, m)`` scores t(x_i, y_j): the critic's ``pairwise`` when it has one."""
    if hasattr(critic, "pairwise"):
        return critic.pairwise(x, y)
    n, m = len(x), len(y)
    xx = x[:, None, :].expand(n, m, x.shape[1]).reshape(n * m, -1)
    yy = y[None, :, :].expand(n, m, y.shape[1]).reshape(n * m, -1)
    return scalar_output(critic(xx, yy)).reshape(n, m)


@torch.no_grad()
def pair_scores(critic: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                max_pairs: int = MAX_PAIRS, chunk_pairs: int = CHUNK_PAIRS) -> PairScores:
    """Evaluate ``critic`` on the n joint pairs and on off-diagonal pairs of ``x`` (n, d_x),
    ``y`` (n, d_y), at most ``chunk_pairs`` at a time (never an n×n block for large n).

    Deterministic: all n(n − 1) pairs when they are at most ``max_pairs``, else evenly spaced
    shifted pairs (i, i + s_k mod n).  Raises :class:`NumericalError` on a non-finite output.
    """
    n = len(x)
    shifts = shifts_for(n, max_pairs).to(x.device)
    was_training = critic.training
    critic.eval()
    try:
        embed = getattr(critic, "embed", None)
        if embed is not None:
            hx, gy = embed(x, y)
            paired = lambda rows, cols: (hx[rows] * gy[cols]).sum(-1)  # noqa: E731
        else:
            paired = lambda rows, cols: scalar_output(critic(x[rows], y[cols]))  # noqa: E731
        rows_all = torch.arange(n, device=x.device)
        joint = torch.cat([paired(rows_all[i:i + chunk_pairs], rows_all[i:i + chunk_pairs])
                           for i in range(0, n, chunk_pairs)])
        per_chunk = max(1, chunk_pairs // n)
        parts = []
        for k in range(0, len(shifts), per_chunk):
            s = shifts[k:k + per_chunk]
            if n > chunk_pairs:  # one shift is larger than a chunk: split the rows too
                for i in range(0, n, chunk_pairs):
                    rows = rows_all[i:i + chunk_pairs]
                    parts.append(paired(rows, (rows + s[0]) % n))
                continue
            rows = rows_all.repeat(len(s))
            cols = (rows_all[None, :] + s[:, None]).reshape(-1) % n
            parts.append(paired(rows, cols))
        marginal = torch.cat(parts).view(len(shifts), n)
    finally:
        critic.train(was_training)
    if not (bool(torch.isfinite(joint).all()) and bool(torch.isfinite(marginal).all())):
        raise NumericalError("The critic returned non-finite values on the evaluation data; "
                             "lower the learning rate or check the inputs for extreme values.")
    return PairScores(joint=joint.float(), marginal=marginal.float(), shifts=shifts)


__all__ = ["BatchScores", "PairScores", "pair_scores", "shifts_for", "log_mean_exp",
           "off_diagonal", "critic_pairwise", "scalar_output", "quantile_interval",
           "CHUNK_PAIRS", "MAX_PAIRS"]
