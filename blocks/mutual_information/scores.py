"""Critic scores and the reductions every MI bound is written in.

A bound (see :mod:`.bounds`) is a function of the critic's values on *joint* pairs
(x_i, y_i) and on *negative* pairs (x_i, y_j), i ≠ j.  It never touches the tensors directly:
it calls the reductions of a scores object, so that **one definition** of a bound serves

* training and validation — :class:`BatchScores`: the scores of one batch (negatives either
  the sampler's explicit pairs or all off-diagonal pairs of the batch), float32, with grad;
* the final estimate — :class:`PairScores`: all n(n − 1) off-diagonal pairs of the evaluation
  set (or evenly spaced shifted pairs), float64, without grad;
* the interval — :meth:`PairScores.weighted`: the same reductions with item weights
  ``(B, n)``, one bound value per row; :meth:`PairScores.interval` uses 0/1 weights (half-size
  subsamples drawn without replacement, see :func:`centred_interval`).

The reductions (all return a scalar, or ``(B,)`` with weights):

``mean_joint(fn=None)``        mean_i fn(t_ii)
``mean_negatives(fn=None)``    mean over negative pairs of fn(t_ij)
``log_mean_exp(clip=None)``    log mean over negative pairs of e^{t_ij} (t clipped to [−clip, clip])
``row_log_mean_exp()``         per item i: log mean_{j ∈ {i} ∪ negatives(i)} e^{t_ij}
                               (needs row-structured negatives: in-batch or all pairs)
``mean_items(values)``         mean over items of a per-item tensor ``(n,)`` / ``(B, n)``
``joint``                      the joint scores t_ii ``(n,)``

Every ``exp`` is taken after subtracting a maximum (or inside a logsumexp): a drifting critic
offset cannot overflow.  The all-pairs reductions subtract the maximum *of each row* (one item's
partners), so a critic whose scores span thousands of nats (a separable critic at high MI)
cannot underflow a row to log 0 either; a weighted row whose kept partners all lie far below
that maximum is recomputed by an exact logsumexp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from ..errors import ContractError, NumericalError, ValidationError

#: pairs evaluated per critic call by the final estimator (bounds memory: 2^18 rows at a time)
CHUNK_PAIRS = 262_144
#: above this many off-diagonal pairs the final estimator uses evenly spaced shifted pairs
MAX_PAIRS = 4_000_000
#: ... for a critic without ``embed`` (a pair costs a network call, not a dot product): on
#: benchmark-mi's three tasks (draws 0-2) and numpy's dense and 1-D draws (13 trained critics,
#: 2,500 evaluation items each) 5·10⁵ pairs stayed within 0.005 nats of the 4·10⁶-pair value
#: (mean 0.002), as 10⁶ did (0.006, mean 0.002), in half the time (1.1-1.5 s instead of
#: 2.3-2.9 s of a 5-15 s fit at load 3.5); 2.5·10⁵ moved it by up to 0.013 (docs/mi.md)
NETWORK_MAX_PAIRS = 500_000
#: a shifted row sum below this lost its digits to exp's underflow: recomputed exactly
_TINY = 1e-290

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
        "This bound needs row-structured negatives (`rows = True`: every item paired with the "
        "other items of its batch), but its scores hold joint pairs and separate negatives with "
        "no rows (explicit negative pairs x_marginal / y_marginal, or MI-NEE's reference draws). "
        "Give the bound in-batch negatives (an in-batch sampler: negatives = \"all_pairs\"), or "
        "use a bound without `rows` (\"dv\", \"nwj_loss\" ...) where the negatives are "
        "explicit pairs or reference draws (MI-NEE).")


class BatchScores:
    """Critic scores of one batch: ``joint`` (..., b) and flat ``negatives`` (..., m); with
    ``matrix`` (b, c) (in-batch negatives: row i holds t(x_i, y_j) for the c columns of the
    batch, its joint pair at column ``columns[i]``) the rows are known too.  Reductions run over
    the last axis, so leading axes (a bootstrap over resampled rows) give one value each.

    Under torch.distributed (``dist`` active: each rank holds a shard of the batch) every
    reduction is the one of the *whole* batch: local sums are summed over the ranks through
    :meth:`~infoblocks.blocks.distributed.Distributed.differentiable_sum`, so a bound has the
    same value on every rank as in one process and its gradient, averaged by the engine, is the
    one-process gradient (leading axes too: one all-reduce per reduction for all of them)."""

    def __init__(self, joint: torch.Tensor, negatives: torch.Tensor,
                 matrix: torch.Tensor | None = None, dist: Any = None) -> None:
        self.joint, self.negatives, self.matrix = joint, negatives, matrix
        self.columns: torch.Tensor | None = None  # (from_matrix: each row's joint column)
        self.dist = dist if dist is not None and getattr(dist, "active", False) else None
        self._lme: torch.Tensor | None = None
        self._mean_joint: torch.Tensor | None = None

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor, columns: torch.Tensor | None = None,
                    dist: Any = None) -> BatchScores:
        """In-batch negatives: entry (i, j) of ``matrix`` is t(x_i, y_j); the joint pair of row
        i is column ``columns[i]`` (default: the diagonal of a square matrix)."""
        if columns is None:
            return cls(torch.diagonal(matrix), off_diagonal(matrix), matrix, dist)
        rows = torch.arange(len(matrix), device=matrix.device)
        mask = torch.ones_like(matrix, dtype=torch.bool)
        mask[rows, columns] = False
        scores = cls(matrix[rows, columns], matrix[mask], matrix, dist)
        scores.columns = columns  # the joint column of each row
        return scores

    def _global_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over the last axis, over every rank's values when distributed (every leading
        entry and the count in one all-reduce)."""
        if self.dist is None:
            return values.mean(-1)
        count = values.new_tensor([float(values.shape[-1])])
        total = self.dist.differentiable_sum(torch.cat([values.sum(-1).reshape(-1), count]))
        return (total[:-1] / total[-1]).view(values.shape[:-1])

    def mean_joint(self, fn: Fn = None) -> torch.Tensor:
        if fn is not None:
            return self._global_mean(fn(self.joint))
        if self._mean_joint is None:  # a bound and its objective share it
            self._mean_joint = self._global_mean(self.joint)
        return self._mean_joint

    def mean_negatives(self, fn: Fn = None) -> torch.Tensor:
        return self._global_mean(self.negatives if fn is None else fn(self.negatives))

    def log_mean_exp(self, clip: float | None = None) -> torch.Tensor:
        if clip is None and self._lme is not None:  # a bound and its objective share it
            return self._lme
        t = self.negatives if clip is None else self.negatives.clamp(-clip, clip)
        if self.dist is None:
            value = torch.logsumexp(t, -1) - math.log(t.shape[-1])
        else:  # every rank's logsumexps (one per leading entry) and count, in one sum
            world, rank = self.dist.world_size, self.dist.rank
            lse = torch.logsumexp(t, -1).reshape(1, -1)
            slots = torch.tensor([rank], device=t.device)
            local = t.new_zeros((world, lse.shape[1])).index_copy(0, slots, lse)
            gathered = self.dist.differentiable_sum(
                torch.cat([local.reshape(-1), t.new_tensor([float(t.shape[-1])])]))
            value = (torch.logsumexp(gathered[:-1].view(world, -1), 0)
                     - torch.log(gathered[-1])).view(t.shape[:-1])
        if clip is None:
            self._lme = value
        return value

    def row_log_mean_exp(self) -> torch.Tensor:
        if self.matrix is None:
            raise _rows_error()
        return torch.logsumexp(self.matrix, -1) - math.log(self.matrix.shape[-1])

    def row_mean_negatives(self, fn: Fn = None) -> torch.Tensor:
        """Per item (row), the mean of fn(t) over its negatives — the row's other columns
        (in-batch negatives, ``rows = True``): ``(b,)``, for bounds whose per-item baseline
        depends on the item's own negatives (Poole et al.'s interpolated α bound); average it
        with :meth:`mean_items`.  Each rank holds every column of its rows, so no reduction
        over ranks is needed here."""
        if self.matrix is None:
            raise _rows_error()
        values = self.matrix if fn is None else fn(self.matrix)
        b, c = values.shape[-2:]  # leading axes (InfoMax's stacked prefixes) broadcast
        joint = self._joint_columns(b, values.device)
        mask = torch.ones((b, c), dtype=torch.bool, device=values.device)
        mask[torch.arange(b, device=values.device), joint] = False
        return values.masked_fill(~mask, 0).sum(-1) / max(c - 1, 1)

    def _joint_columns(self, b: int, device: torch.device) -> torch.Tensor:
        if self.columns is not None:
            return self.columns.to(device)
        return torch.arange(b, device=device)

    def mean_items(self, values: torch.Tensor) -> torch.Tensor:
        return self._global_mean(values)


def default_max_pairs(critic: nn.Module) -> int:
    """The final estimator's pair budget for ``critic``: :data:`MAX_PAIRS` when it has
    ``embed`` (all pairs are one matrix product), else :data:`NETWORK_MAX_PAIRS`."""
    return MAX_PAIRS if callable(getattr(critic, "embed", None)) else NETWORK_MAX_PAIRS


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
        """The same scores with item weights ``(B, n)`` (0/1: a subsample of the items)."""
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
            _add_shifted(out, weights, s, values[k])
        return out

    def _row_weights(self, w: torch.Tensor) -> torch.Tensor:
        """``(B, n)``: Σ of w_j over the evaluated partners j of item i."""
        if self._all_pairs():
            return w.sum(1, keepdim=True) - w
        out = w.new_zeros(w.shape)
        for s in self.shifts.tolist():
            _add_shifted(out, w, s)
        return out

    def _partners(self) -> torch.Tensor:
        """``(K, n)``: the partner j = (i + s_k) mod n of item i under shift k."""
        rows = torch.arange(self.n, device=self.joint.device)
        return (rows[None, :] + self.shifts.to(rows.device)[:, None]) % self.n

    def _log_row_sums(self, w: torch.Tensor, values: torch.Tensor,
                      extra: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, n)``: log(Σ_k w_b[(i + s_k) mod n] e^{values[k, i]} [+ w_bi e^{extra_i}]),
        −inf for an empty sum.  Each row is shifted by its own maximum (one dense product);
        rows of kept weight whose shifted sum underflowed are recomputed by a logsumexp."""
        shift = values.max(0).values
        if extra is not None:
            shift = torch.maximum(shift, extra)
        sums = self._pair_sum(w, torch.exp(values - shift))
        if extra is not None:
            sums = sums + w * torch.exp(extra - shift)
        out = torch.log(sums) + shift
        lost = (w > 0) & ~(sums > _TINY)
        if bool(lost.any()):
            b, i = lost.nonzero(as_tuple=True)
            log_w = torch.log(w)
            terms = log_w[b[None, :], self._partners()[:, i]] + values[:, i]  # (K, F)
            if extra is not None:
                terms = torch.cat([terms, (log_w[b, i] + extra[i])[None]])
            out[b, i] = torch.logsumexp(terms, 0)
        return out

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
        rows = self._log_row_sums(w, marginal)
        num = torch.logsumexp(torch.log(w) + rows, 1)
        den = (w * self._row_weights(w)).sum(1)
        return self._out(num - torch.log(den))

    def row_log_mean_exp(self) -> torch.Tensor:
        w = self._w()
        joint, marginal = self.joint.double(), self.marginal.double()
        rows = self._log_row_sums(w, marginal, extra=joint)
        value = rows - torch.log(self._row_weights(w) + w)
        return self._out(torch.where(w > 0, value, 0.0))  # a dropped item's row is unused

    def row_mean_negatives(self, fn: Fn = None) -> torch.Tensor:
        """Per item, the (pair-weighted) mean of fn(t) over its evaluated partners (its
        negatives): ``(B, n)``, 0 for a dropped item or one without partners."""
        w = self._w()
        marginal = self.marginal.double()
        values = marginal if fn is None else fn(marginal)
        den = self._row_weights(w)
        value = self._pair_sum(w, values) / den.clamp_min(_TINY)
        return self._out(torch.where((w > 0) & (den > 0), value, 0.0))

    def mean_items(self, values: torch.Tensor) -> torch.Tensor:
        w = self._w()
        weighted = torch.where(w > 0, w * values, 0.0)  # a dropped item never makes a NaN
        return self._out(weighted.sum(-1) / w.sum(1))

    # ------------------------------------------------------------------ bounds

    def bound(self, bound: Any = "dv", **options: Any) -> float:
        """The value of ``bound`` in nats: a bound block (anything with ``bound(scores)``) or
        the name of a built-in bound function (``dv``, ``nwj``, ``infonce``, ``smile``;
        ``options`` such as ``clip`` are passed to it)."""
        return float(_evaluate(bound, self, options))

    def interval(self, bound: Any = "dv", level: float = 0.95, n_subsamples: int = 200,
                 seed: int = 0, **options: Any) -> tuple[float, float]:
        """Interval at ``level`` for the bound's value on these scores (the critic held fixed:
        the sampling uncertainty of the evaluation set).

        Half-sampling: ``n_subsamples`` subsets of m = ⌊n/2⌋ items drawn *without
        replacement*, the bound evaluated on the pairs inside each subset (so every subset is
        a set of distinct items, as the estimator expects: no duplicated row becomes a
        high-scoring negative, the flaw of resampling items with replacement).  The spread
        of the subset values around their mean, scaled by √(m / (n − m)) (= 1 for even n: the
        variance of a mean over half the items, drawn without replacement, equals the
        variance of the full-sample mean), is placed around the estimate — see
        :func:`centred_interval`.  Fewer than 4 items: no interval, ``(nan, nan)``."""
        _check_level(level)
        n = self.n
        estimate = float(_evaluate(bound, self, options))
        if n < 4:
            return math.nan, math.nan
        m = n // 2
        generator = torch.Generator(device="cpu").manual_seed(seed)
        keep = torch.rand(n_subsamples, n, generator=generator).argsort(1)[:, :m]
        weights = torch.zeros(n_subsamples, n, dtype=torch.float64)
        weights.scatter_(1, keep, 1.0)
        values = _evaluate(bound, self.weighted(weights), options).reshape(-1)
        return centred_interval(values, estimate, level, scale=math.sqrt(m / (n - m)))


def _add_shifted(out: torch.Tensor, w: torch.Tensor, s: int,
                 values: torch.Tensor | None = None) -> None:
    """In place: out[:, i] += w[:, (i + s) mod n] (· values[i]) — a roll without a copy."""
    n = w.shape[1]
    head, tail = w[:, s:], w[:, :s]
    if values is None:
        out[:, :n - s] += head
        out[:, n - s:] += tail
    else:
        out[:, :n - s] += head * values[:n - s]
        out[:, n - s:] += tail * values[n - s:]


def _check_level(level: Any) -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValidationError(f"`ci` must be a level in (0, 1), e.g. 0.95, got {level!r}.")


def centred_interval(values: torch.Tensor, estimate: float, level: float,
                     scale: float = 1.0) -> tuple[float, float]:
    """The central ``level`` interval of the subsample ``values`` around their own mean,
    scaled by ``scale`` and placed at ``estimate``: [θ̂ + s·q_{α/2}, θ̂ + s·q_{1−α/2}] of
    the deviations d_b = θ_b − mean θ.

    Centring on the subsamples' mean (not on θ̂, as plain m-out-of-n subsampling does) keeps
    only their *spread*: a bound's value on m items differs systematically from its value on n
    (InfoNCE is capped at log m), and that shift is no sampling error.  The interval contains
    the estimate by construction (an end that would exclude it is moved to it)."""
    values = values.double().cpu()
    if not bool(torch.isfinite(values).all()):
        raise NumericalError("A subsample of the evaluation scores gave a non-finite bound; "
                             "the critic's scores are too extreme for an interval.")
    alpha = (1 - level) / 2
    deviations = (values - values.mean()) * scale
    lo, hi = torch.quantile(deviations, torch.tensor([alpha, 1 - alpha], dtype=values.dtype))
    return min(estimate + float(lo), estimate), max(estimate + float(hi), estimate)


def quantile_interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values``."""
    _check_level(level)
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
    value = bound.bound(scores)
    weights = getattr(scores, "weights", None)
    check_bound_value(bound, value, () if weights is None else (len(weights),),
                      "the final estimate" if weights is None else "the interval's subsamples")
    return value


def check_bound_value(bound: Any, value: Any, expected: tuple[int, ...], where: str) -> None:
    """Raise :class:`ContractError` naming the bound when ``bound(scores)`` is not one value
    (``expected`` = (): a scalar; (B,): one per weighted subsample) — a value per item ended in
    torch's "grad can be implicitly created only for scalar outputs" (author11 A11-5)."""
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
    if shape == expected:
        return
    from ..base import _provider

    name = getattr(bound, "name", type(bound).__name__)
    got = f"a tensor of shape {shape}" if shape is not None else type(value).__name__
    want = "a scalar (0-d tensor)" if not expected else f"shape {expected}"
    raise ContractError(
        f"loss {name!r}{_provider(bound)}: `bound(scores)` returned {got} in {where}, where "
        f"an MI bound returns {want}: reduce the per-item values over the items "
        "(`scores.mean_items(values)`, or `mean_joint` / `log_mean_exp`), over the last axis "
        "only (docs/plugins.md, the bound protocol).")


def scalar_output(t: torch.Tensor) -> torch.Tensor:
    return t.squeeze(-1) if t.ndim == 2 and t.shape[-1] == 1 else t


def critic_output(critic: nn.Module, t: Any, expected: tuple[int, ...], call: str,
                  where: str | Callable[[], str] = "") -> torch.Tensor:
    """``t`` (a critic's output, (n, 1) squeezed) if it has the ``expected`` shape, else
    :class:`ContractError` naming the critic (``where``: its model slot) and its contract:
    scores of shape (n, n) for n pairs ran into torch's backward error (author11 A11-5)."""
    if isinstance(t, torch.Tensor):
        t = scalar_output(t)
        if tuple(t.shape) == expected:
            return t
    got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
    where = where() if callable(where) else where  # (named only when it fails: no per-step
    slot = f"{where} " if where else ""          # registry lookup for the message)
    raise ContractError(
        f"The critic {slot}({type(critic).__name__}) returned {got} from `{call}`, expected "
        f"{expected}: an MI critic's forward(x, y) returns one score per pair (row), shape "
        "(n,) (or (n, 1)), and its `pairwise(x, y)`, if any, (n, m) (docs/plugins.md, the MI "
        "critic contract).")


def critic_pairwise(critic: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    where: str | Callable[[], str] = "") -> torch.Tensor:
    """``(n, m)`` scores t(x_i, y_j): the critic's ``pairwise`` when it has one (``where``:
    the critic's model slot, named in a shape error)."""
    n, m = len(x), len(y)
    if hasattr(critic, "pairwise"):
        return critic_output(critic, critic.pairwise(x, y), (n, m), "pairwise(x, y)", where)
    xx = x[:, None, :].expand(n, m, x.shape[1]).reshape(n * m, -1)
    yy = y[None, :, :].expand(n, m, y.shape[1]).reshape(n * m, -1)
    return critic_output(critic, critic(xx, yy), (n * m,), "forward(x, y)",
                         where).reshape(n, m)


@torch.no_grad()
def pair_scores(critic: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                max_pairs: int = MAX_PAIRS, chunk_pairs: int = CHUNK_PAIRS,
                dist: Any = None) -> PairScores:
    """Evaluate ``critic`` on the n joint pairs and on off-diagonal pairs of ``x`` (n, d_x),
    ``y`` (n, d_y), at most ``chunk_pairs`` at a time (never an n×n block for large n).

    Deterministic: all n(n − 1) pairs when they are at most ``max_pairs``, else evenly spaced
    shifted pairs (i, i + s_k mod n).  Under torch.distributed (``dist`` active) each rank
    scores a contiguous block of the items (rows) with every shift and the blocks are summed
    over the ranks (the others' entries are zeros), so every rank holds all the scores.
    Raises :class:`NumericalError` on a non-finite output.
    """
    n = len(x)
    shifts = shifts_for(n, max_pairs).to(x.device)
    rows_all = torch.arange(n, device=x.device)
    active = dist is not None and getattr(dist, "active", False)
    items = rows_all.tensor_split(dist.world_size)[dist.rank] if active else rows_all
    was_training = critic.training
    critic.eval()
    try:
        embed = getattr(critic, "embed", None)
        if embed is not None:
            hx, gy = embed(x, y)
            paired = lambda rows, cols: (hx[rows] * gy[cols]).sum(-1)  # noqa: E731
        else:
            paired = lambda rows, cols: critic_output(  # noqa: E731
                critic, critic(x[rows], y[cols]), (len(rows),), "forward(x, y)")
        m = len(items)
        joint = torch.cat([paired(items[i:i + chunk_pairs], items[i:i + chunk_pairs])
                           for i in range(0, m, chunk_pairs)] or [x.new_zeros(0)])
        per_chunk = max(1, chunk_pairs // max(m, 1))
        parts = [x.new_zeros(0)]
        for k in range(0, len(shifts), per_chunk):
            s = shifts[k:k + per_chunk]
            if m > chunk_pairs:  # one shift is larger than a chunk: split the rows too
                for i in range(0, m, chunk_pairs):
                    rows = items[i:i + chunk_pairs]
                    parts.append(paired(rows, (rows + s[0]) % n))
                continue
            rows = items.repeat(len(s))
            cols = (items[None, :] + s[:, None]).reshape(-1) % n
            parts.append(paired(rows, cols))
        marginal = torch.cat(parts).view(len(shifts), m)
    finally:
        critic.train(was_training)
    if active:  # every rank's block in place, zeros elsewhere: one sum gives all scores
        full = x.new_zeros(len(shifts) + 1, n)
        full[0, items], full[1:, items] = joint.to(full.dtype), marginal.to(full.dtype)
        full = dist.sum(full)
        joint, marginal = full[0], full[1:]
    if not (bool(torch.isfinite(joint).all()) and bool(torch.isfinite(marginal).all())):
        raise NumericalError("The critic returned non-finite values on the evaluation data; "
                             "lower the learning rate or check the inputs for extreme values.")
    return PairScores(joint=joint.float(), marginal=marginal.float(), shifts=shifts)


__all__ = ["BatchScores", "PairScores", "pair_scores", "shifts_for", "log_mean_exp",
           "off_diagonal", "critic_pairwise", "critic_output", "check_bound_value",
           "scalar_output", "quantile_interval",
           "centred_interval",
           "CHUNK_PAIRS", "MAX_PAIRS", "NETWORK_MAX_PAIRS", "default_max_pairs"]
