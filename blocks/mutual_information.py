"""Blocks of the neural mutual-information estimators (MINE, MI-NEE, InfoNCE, NWJ, SMILE).

* samplers — :class:`MarginalSampler` (joint batch + product-of-marginals index pairs (J, K))
  and :class:`ReferenceSampler` (joint batch + i.i.d. draws from a known reference P_X'×P_Y');
* critics — :class:`JointCritic` t(x, y) = MLP([x, y]) and :class:`SeparableCritic`
  t(x, y) = h(x)ᵀg(y), both Model blocks whose modules take ``(x, y)`` and also offer
  ``pairwise(x, y) -> (n, m)`` for in-batch (all-pairs) negatives;
* losses — :class:`DVLoss`, :class:`MINELoss`, :class:`NWJLoss`, :class:`InfoNCELoss`,
  :class:`SMILELoss`, :class:`MINEELoss`; each records the bound it estimates as metric ``mi``;
* the deterministic final estimator — :func:`pair_scores` evaluates the critic on the joint
  pairs and on all (or evenly spaced "shifted") off-diagonal pairs, in chunks, and
  :class:`PairScores` turns them into a bound and a bootstrap interval.

Batch keys: ``x``, ``y`` (joint rows), ``x_marginal``, ``y_marginal`` (product-of-marginals
rows, from :class:`MarginalSampler`) or ``x_reference``, ``y_reference`` (reference draws).
Every ``exp`` of a critic value is taken inside a logsumexp, so a drifting critic offset
(the DV bound is invariant to t → t + c) cannot overflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import torch
from torch import nn

from .errors import NumericalError, ValidationError
from .losses import Loss, LossOutput, get_model
from .models import ACTIVATIONS, MLP, Model
from .samplers import Sampler
from .state import TrainState
from .validators import one_of, positive, positive_int

#: pairs evaluated per critic call by the final estimator (bounds memory: 2^18 rows at a time)
CHUNK_PAIRS = 262_144
#: above this many off-diagonal pairs the final estimator uses evenly spaced shifted pairs
MAX_PAIRS = 4_000_000
#: bounds the final estimator knows
BOUNDS = ("dv", "nwj", "infonce", "smile")
NEGATIVES = ("pairs", "all_pairs")


# ====================================================================== validators


def _rate(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValidationError(
            f"`{attribute.name}` must be in (0, 1] (the weight of the newest batch in the moving "
            f"average; 1 = no averaging), got {value!r}.")


# ====================================================================== samplers


def _pool(state: TrainState, index_key: str | None, n_items: int) -> torch.Tensor:
    if index_key is None:
        return torch.arange(n_items, device=state.device)
    return torch.as_tensor(state.lookup(index_key), device=state.device).long()


def _draw(n: int, size: int, replacement: bool, generator: torch.Generator,
          device: torch.device) -> torch.Tensor:
    """``size`` positions in ``range(n)``: uniform with replacement, or slices of random
    permutations (each position once per permutation) without."""
    if replacement:
        return torch.randint(n, (size,), generator=generator, device=device)
    reps = -(-size // n)
    return torch.cat([torch.randperm(n, generator=generator, device=device)
                      for _ in range(reps)])[:size]


def _fixed_generator(state: TrainState, seed: int) -> torch.Generator:
    generator = torch.Generator(device=state.device)
    generator.manual_seed(seed)
    return generator


@attrs.define
class _JointBatchSampler(Sampler):
    """Shared by the MI samplers: joint batches of ``batch_size`` items of a pool (all items, or
    the global index tensor ``index_key``), ``batches_per_epoch`` of them (default: one pass),
    optionally ``fixed`` (drawn once from ``fixed_seed``).  Subclasses add their negatives in
    :meth:`_generate`."""

    batch_size: int | None = attrs.field(default=100, validator=optional(positive_int))
    batches_per_epoch: int | None = attrs.field(default=None, validator=optional(positive_int))
    replacement: bool = False
    index_key: str | None = None
    x_key: str = "x"
    y_key: str = "y"
    fixed: bool = False
    fixed_seed: int = 0
    _cache: list[dict[str, torch.Tensor]] | None = attrs.field(init=False, default=None,
                                                               repr=False, eq=False)

    def _sizes(self, state: TrainState) -> tuple[torch.Tensor, int, int]:
        if state.dataset is None:
            raise ValidationError(f"{type(self).__name__} needs a dataset with arrays "
                                  f"{self.x_key!r} and {self.y_key!r}.")
        pool = _pool(state, self.index_key, state.dataset.n_items)
        n = int(pool.numel())
        return pool, n, (n if self.batch_size is None else self.batch_size)

    def setup(self, state):
        pool, n, size = self._sizes(state)
        self._prepare(state, pool, n)
        if size > n and not self.replacement:
            raise ValidationError(
                f"`batch_size` = {size} exceeds the {n} items available when sampling without "
                "replacement; lower batch_size or set replacement=True.")
        self._cache = None
        if self.fixed:
            self._cache = list(self._generate(state, _fixed_generator(state, self.fixed_seed)))

    def _prepare(self, state: TrainState, pool: torch.Tensor, n: int) -> None:
        """Subclass checks and fitting before the first batch."""

    def num_batches(self, state):
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        _, n, size = self._sizes(state)
        return max(1, n // size)

    def batches(self, state):
        if self._cache is not None:
            yield from self._cache
            return
        yield from self._generate(state, state.generator)

    def _generate(self, state: TrainState, generator: torch.Generator):
        raise NotImplementedError


@attrs.define
class MarginalSampler(_JointBatchSampler):
    """Joint batches plus product-of-marginals pairs drawn by resampling indices.

    Each batch: ``x``, ``y`` at joint indices I (b,) and ``x_marginal = x[J]``,
    ``y_marginal = y[K]`` (also side by side as ``x_all``, ``y_all`` (b + n', d)) with n' = round(marginal_factor · b) index pairs (J, K), J ≠ K, so
    that (x_J, y_K) ~ P_X × P_Y.  ``replacement=False`` draws I, J, K as slices of random
    permutations of the pool (each item at most once per slice), ``True`` uniformly.
    ``batch_size=None`` is the whole pool (one batch).  ``index_key`` names a global index
    tensor (e.g. the training split).  ``fixed=True`` draws the batches once, from
    ``fixed_seed``, and yields the same ones every epoch (a stable validation set).
    """

    name: ClassVar[str] = "marginal_pairs"
    marginal_factor: float = attrs.field(default=1.0, validator=positive)

    def _prepare(self, state, pool, n):
        if n < 2:
            raise ValidationError(f"MarginalSampler needs at least 2 items to pair, the pool has {n}.")

    def _generate(self, state: TrainState, generator: torch.Generator):
        pool, n, size = self._sizes(state)
        count = self.num_batches(state)
        n_marg = max(1, round(self.marginal_factor * size))
        dev = state.device
        # one draw for the whole epoch, then slices: few kernel launches per step
        joint = _draw(n, count * size, self.replacement, generator, dev).view(count, size)
        first = _draw(n, count * n_marg, self.replacement, generator, dev)
        second = _draw(n, count * n_marg, self.replacement, generator, dev)
        # a coincident pair (J = K) is a joint sample: move K to a uniformly chosen other item
        offset = torch.randint(1, n, second.shape, generator=generator, device=dev)
        second = torch.where(second == first, (first + offset) % n, second)
        joint = pool[joint]
        x, y = state.dataset[self.x_key], state.dataset[self.y_key]
        # gather the whole epoch at once, joint rows then marginal rows of each batch side by
        # side: a batch is a view, and ``x_all`` / ``y_all`` feed the critic in one call
        rows_x = torch.cat([joint, pool[first].view(count, n_marg)], 1)
        rows_y = torch.cat([joint, pool[second].view(count, n_marg)], 1)
        x_all, y_all = x[rows_x], y[rows_y]
        for b in range(count):
            yield {"index": joint[b], "x": x_all[b, :size], "y": y_all[b, :size],
                   "x_marginal": x_all[b, size:], "y_marginal": y_all[b, size:],
                   "x_all": x_all[b], "y_all": y_all[b]}


class ReferenceDistribution:
    """A known reference P_X' (fitted to data): ``"uniform"`` on the data's bounding box
    (enlarged by ``margin`` of its width on each side), ``"gaussian"`` with the data's mean and
    covariance, or a user callable ``fn(n, generator) -> (n, d)`` array (entropy unknown)."""

    def __init__(self, kind: str | Callable, data: torch.Tensor, margin: float = 0.0,
                 entropy: float | None = None) -> None:
        self.kind, self.dim = kind, data.shape[1]
        self._entropy = entropy
        if kind == "uniform":
            lo, hi = data.min(0).values, data.max(0).values
            width = (hi - lo).clamp_min(torch.finfo(data.dtype).eps)
            self.low, self.width = lo - margin * width, width * (1 + 2 * margin)
        elif kind == "gaussian":
            self.mean = data.mean(0)
            centred = data - self.mean
            cov = centred.T @ centred / max(len(data) - 1, 1)
            cov = cov + 1e-6 * torch.eye(self.dim, device=data.device, dtype=data.dtype)
            try:
                self.chol = torch.linalg.cholesky(cov.double()).to(data.dtype)
            except RuntimeError:
                raise ValidationError("The Gaussian reference needs a non-singular covariance; "
                                      "a column is (nearly) a linear combination of others. "
                                      "Drop it or use reference='uniform'.") from None
        elif not callable(kind):
            raise ValidationError(f"`reference` must be 'uniform', 'gaussian' or a callable "
                                  f"fn(n, generator) -> (n, d) array, got {kind!r}.")

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """``(n, d)`` i.i.d. draws."""
        if self.kind == "uniform":
            u = torch.rand(n, self.dim, generator=generator, device=device)
            return self.low + u * self.width
        if self.kind == "gaussian":
            z = torch.randn(n, self.dim, generator=generator, device=device)
            return self.mean + z @ self.chol.T
        out = torch.as_tensor(self.kind(n, generator), dtype=torch.float32, device=device)
        if out.shape != (n, self.dim) or not bool(torch.isfinite(out).all()):
            raise ValidationError(
                f"The reference callable must return a finite ({n}, {self.dim}) array, got "
                f"shape {tuple(out.shape)}.")
        return out

    def entropy(self) -> float | None:
        """Differential entropy of the reference in nats (None when unknown)."""
        if self.kind == "uniform":
            return float(torch.log(self.width.double()).sum())
        if self.kind == "gaussian":
            logdet = 2 * torch.log(torch.diagonal(self.chol).double()).sum()
            return float(0.5 * (self.dim * math.log(2 * math.pi * math.e) + logdet))
        return self._entropy


@attrs.define
class ReferenceSampler(_JointBatchSampler):
    """Joint batches plus i.i.d. reference draws ``x_reference ~ P_X'``, ``y_reference ~ P_Y'``
    (independent, so that (x', y') ~ P_X' × P_Y'); no resampling of the data.

    ``reference`` is ``"uniform"`` (bounding box of the pool, widened by ``margin``),
    ``"gaussian"`` (mean and covariance of the pool, per variable) or a callable
    ``fn(n, generator) -> (x_ref, y_ref)``.  A batch holds b joint rows and
    round(reference_factor · b) reference rows.  After :meth:`setup`, :attr:`reference_x` /
    :attr:`reference_y` are the fitted :class:`ReferenceDistribution` objects.
    """

    name: ClassVar[str] = "reference"
    reference: Any = attrs.field(default="gaussian")
    reference_factor: float = attrs.field(default=1.0, validator=positive)
    margin: float = 0.0
    reference_x: ReferenceDistribution | None = attrs.field(init=False, default=None, repr=False,
                                                            eq=False)
    reference_y: ReferenceDistribution | None = attrs.field(init=False, default=None, repr=False,
                                                            eq=False)

    @reference.validator
    def _check_reference(self, attribute, value):
        if not (value in ("uniform", "gaussian") or callable(value)):
            raise ValidationError(f"`reference` must be 'uniform', 'gaussian' or a callable "
                                  f"fn(n, generator) -> (x_ref, y_ref), got {value!r}.")

    def _prepare(self, state, pool, n):
        if self.reference_x is None:
            self.fit_reference(state.dataset[self.x_key][pool], state.dataset[self.y_key][pool])

    def fit_reference(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Fit the reference distributions to ``x`` (n, d_x) and ``y`` (n, d_y)."""
        if callable(self.reference):
            fn = self.reference
            self.reference_x = ReferenceDistribution(lambda n, g: fn(n, g)[0], x)
            self.reference_y = ReferenceDistribution(lambda n, g: fn(n, g)[1], y)
            self.reference_x.dim, self.reference_y.dim = x.shape[1], y.shape[1]
        else:
            self.reference_x = ReferenceDistribution(self.reference, x, self.margin)
            self.reference_y = ReferenceDistribution(self.reference, y, self.margin)

    def draw(self, n: int, generator: torch.Generator, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` reference pairs ``(x', y')``, each ``(n, d)``."""
        if callable(self.reference):
            xr, yr = self.reference(n, generator)
            xr = torch.as_tensor(xr, dtype=torch.float32, device=device)
            yr = torch.as_tensor(yr, dtype=torch.float32, device=device)
            dx, dy = self.reference_x.dim, self.reference_y.dim
            if xr.shape != (n, dx) or yr.shape != (n, dy) or not (
                    bool(torch.isfinite(xr).all()) and bool(torch.isfinite(yr).all())):
                raise ValidationError(
                    f"The reference callable must return finite arrays of shapes ({n}, {dx}) and "
                    f"({n}, {dy}); got {tuple(xr.shape)} and {tuple(yr.shape)}.")
            return xr, yr
        return (self.reference_x.sample(n, generator, device),
                self.reference_y.sample(n, generator, device))

    def _generate(self, state, generator):
        pool, n, size = self._sizes(state)
        count = self.num_batches(state)
        n_ref = max(1, round(self.reference_factor * size))
        joint = pool[_draw(n, count * size, self.replacement, generator, state.device)]
        joint = joint.view(count, size)
        xr, yr = self.draw(count * n_ref, generator, state.device)
        x, y = state.dataset[self.x_key][joint], state.dataset[self.y_key][joint]
        for b in range(count):
            part = slice(b * n_ref, (b + 1) * n_ref)
            yield {"index": joint[b], "x": x[b], "y": y[b],
                   "x_reference": xr[part], "y_reference": yr[part]}


# ====================================================================== critics


def _init_normal(module: nn.Module, std: float | None) -> None:
    """Weights ~ N(0, std²), biases 0 (the MINE notebook's initialisation); None keeps torch's."""
    if std is None:
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)


class JointCriticNet(nn.Module):
    """t(x, y) = net([x, y]):  ``(n, d_x), (n, d_y) -> (n,)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, y], -1)).squeeze(-1)

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """All pairs ``(n, d_x), (m, d_y) -> (n, m)`` with entry (i, j) = t(x_i, y_j)."""
        n, m = len(x), len(y)
        xx = x[:, None, :].expand(n, m, x.shape[1])
        yy = y[None, :, :].expand(n, m, y.shape[1])
        return self.net(torch.cat([xx, yy], -1).reshape(n * m, -1)).view(n, m)


class SeparableCriticNet(nn.Module):
    """t(x, y) = h(x)ᵀ g(y) / temperature:  ``(n, d_x), (n, d_y) -> (n,)``."""

    def __init__(self, h: nn.Module, g: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.h, self.g, self.temperature = h, g, temperature

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.h(x) / self.temperature, self.g(y)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hx, gy = self.embed(x, y)
        return (hx * gy).sum(-1)

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hx, gy = self.embed(x, y)
        return hx @ gy.T


def _activation(instance, attribute, value) -> None:
    if value not in ACTIVATIONS:
        raise ValidationError(f"`activation` = {value!r} is not a known activation; use one of "
                              f"{sorted(ACTIVATIONS)}.")


def _optional_std(instance, attribute, value) -> None:
    if value is not None:
        positive(instance, attribute, value)


@attrs.define
class JointCritic(Model):
    """Joint ("concat") critic t(x, y) = MLP([x, y]) with a scalar output.

    ``(n, x_dim), (n, y_dim) -> (n,)``; the module also has ``pairwise(x, y) -> (n, m)``.
    ``init_std`` draws weights from N(0, init_std²) with zero biases (None: torch default).
    """

    name: ClassVar[str] = "joint_critic"
    x_dim: int = attrs.field(validator=positive_int)
    y_dim: int = attrs.field(validator=positive_int)
    hidden_dims: tuple[int, ...] = attrs.field(default=(100, 100), converter=tuple)
    activation: str = attrs.field(default="elu", validator=_activation)
    init_std: float | None = attrs.field(default=None, validator=_optional_std)

    def build(self) -> nn.Module:
        net = MLP(in_dim=self.x_dim + self.y_dim, out_dim=1, hidden_dims=self.hidden_dims,
                  activation=self.activation).build()
        _init_normal(net, self.init_std)
        return JointCriticNet(net)


@attrs.define
class SeparableCritic(Model):
    """Separable critic t(x, y) = h(x)ᵀ g(y) / temperature with two MLPs to ``embed_dim``.

    ``(n, x_dim), (n, y_dim) -> (n,)``; all pairs of a batch cost one ``(n, e) @ (e, m)``.
    """

    name: ClassVar[str] = "separable_critic"
    x_dim: int = attrs.field(validator=positive_int)
    y_dim: int = attrs.field(validator=positive_int)
    embed_dim: int = attrs.field(default=32, validator=positive_int)
    hidden_dims: tuple[int, ...] = attrs.field(default=(100, 100), converter=tuple)
    activation: str = attrs.field(default="elu", validator=_activation)
    temperature: float = attrs.field(default=1.0, validator=positive)
    init_std: float | None = attrs.field(default=None, validator=_optional_std)

    def build(self) -> nn.Module:
        h = MLP(in_dim=self.x_dim, out_dim=self.embed_dim, hidden_dims=self.hidden_dims,
                activation=self.activation).build()
        g = MLP(in_dim=self.y_dim, out_dim=self.embed_dim, hidden_dims=self.hidden_dims,
                activation=self.activation).build()
        _init_normal(h, self.init_std)
        _init_normal(g, self.init_std)
        return SeparableCriticNet(h, g, self.temperature)


# ====================================================================== bound arithmetic


def log_mean_exp(t: torch.Tensor) -> torch.Tensor:
    """log mean e^t over all elements, computed as logsumexp − log count (never overflows)."""
    return torch.logsumexp(t.reshape(-1), 0) - math.log(t.numel())


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The b(b−1) off-diagonal entries of a ``(b, b)`` matrix, flattened."""
    b = matrix.shape[0]
    return matrix.flatten()[1:].view(b - 1, b + 1)[:, :-1].reshape(-1)


def _critic_pairwise(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if hasattr(critic, "pairwise"):
        return critic.pairwise(x, y)
    n, m = len(x), len(y)
    xx = x[:, None, :].expand(n, m, x.shape[1]).reshape(n * m, -1)
    yy = y[None, :, :].expand(n, m, y.shape[1]).reshape(n * m, -1)
    return critic(xx, yy).reshape(n, m)


def _scalar_output(t: torch.Tensor) -> torch.Tensor:
    return t.squeeze(-1) if t.ndim == 2 and t.shape[-1] == 1 else t


@attrs.define
class _PairLoss(Loss):
    """Shared part of the bounds on P_XY vs P_X × P_Y: critic scores of joint and marginal pairs.

    ``negatives="pairs"`` uses the sampler's (x_marginal, y_marginal) rows; ``"all_pairs"``
    uses the b(b−1) off-diagonal pairs of the joint batch (b×b critic evaluations).
    """

    critic: str = "critic"
    negatives: str = attrs.field(default="pairs", validator=one_of(*NEGATIVES))

    def scores(self, batch: dict[str, torch.Tensor], models: nn.ModuleDict
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(joint (b,), marginal (m,), pairwise (b, b) or None)``."""
        critic = get_model(models, self.critic)
        x, y = batch["x"], batch["y"]
        if self.negatives == "all_pairs" or "x_marginal" not in batch:
            matrix = _critic_pairwise(critic, x, y)
            return torch.diagonal(matrix), _off_diagonal(matrix), matrix
        b = len(x)
        if "x_all" in batch:  # joint and marginal rows already side by side (MarginalSampler)
            t = _scalar_output(critic(batch["x_all"], batch["y_all"]))
        else:
            t = _scalar_output(critic(torch.cat([x, batch["x_marginal"]]),
                                      torch.cat([y, batch["y_marginal"]])))
        return t[:b], t[b:], None


@attrs.define
class DVLoss(_PairLoss):
    """Donsker–Varadhan bound, minimised as its negative.

    I ≥ E_P[t] − log E_{P_X×P_Y}[e^t];  L = −(mean t(joint) − logmeanexp t(marginal)).
    Batch ``x (b, d_x)``, ``y (b, d_y)`` (+ marginal rows) -> scalar; metric ``mi``.
    """

    name: ClassVar[str] = "dv"
    bound: ClassVar[str] = "dv"

    def __call__(self, batch, models, state):
        joint, marginal, _ = self.scores(batch, models)
        mi = joint.mean() - log_mean_exp(marginal)
        return LossOutput(-mi, {"mi": mi.detach()})


@attrs.define
class MINELoss(_PairLoss):
    """DV bound with MINE's bias-corrected gradient, the moving average kept in the log domain.

    With a_j = logmeanexp t(marginal) of batch j, the moving average of E[e^t] is tracked as
    log m̄_j = logaddexp(log(1 − ma_rate) + log m̄_{j−1}, log(ma_rate) + a_j), log m̄_0 = a_0.
    **Convention:** ``ma_rate`` weights the *newest* batch (the notebook's β = 1 − ma_rate
    weights the old average).  Loss L_j = −mean t(joint) + exp(a_j − log m̄_j) with m̄ held
    constant: its gradient is −∇E_P[t] + ∇E_Q[e^t] / m̄_j, never an ``exp`` of a raw critic
    value.  Metric ``mi`` is the plain DV value of the batch.  The average lives in
    ``state.scratch[scratch_key]`` (reset per phase) and is not updated without grad (validation).
    """

    name: ClassVar[str] = "mine_loss"
    bound: ClassVar[str] = "dv"
    ma_rate: float = attrs.field(default=0.01, validator=_rate)
    scratch_key: str = "mine_log_moving_average"

    def __call__(self, batch, models, state):
        joint, marginal, _ = self.scores(batch, models)
        current = log_mean_exp(marginal)
        log_ma = _update_log_average(state, self.scratch_key, current, self.ma_rate)
        mean_joint = joint.mean()
        mi = mean_joint - current
        value = torch.exp(current - log_ma) - mean_joint
        return LossOutput(value, {"mi": mi.detach()})


def _update_log_average(state: TrainState, key: str, current: torch.Tensor,
                        rate: float) -> torch.Tensor:
    """log of the moving average of e^{current}; stored detached in ``state.scratch``."""
    current = current.detach()
    previous = state.scratch.get(key)
    if previous is None or rate >= 1:
        updated = current
    else:
        updated = torch.logaddexp(previous + math.log1p(-rate), current + math.log(rate))
    if torch.is_grad_enabled():
        state.scratch[key] = updated
    return updated


@attrs.define
class NWJLoss(_PairLoss):
    """Nguyen–Wainwright–Jordan (f-divergence) bound, minimised as its negative.

    I ≥ E_P[t] − e^{−1} E_{P_X×P_Y}[e^t];  the optimal critic is 1 + log p/(p_X p_Y).
    Unbiased mini-batch gradients, higher variance than DV.  Metric ``mi``.
    """

    name: ClassVar[str] = "nwj_loss"
    bound: ClassVar[str] = "nwj"

    def __call__(self, batch, models, state):
        joint, marginal, _ = self.scores(batch, models)
        mi = joint.mean() - torch.exp(log_mean_exp(marginal) - 1.0)
        return LossOutput(-mi, {"mi": mi.detach()})


@attrs.define
class InfoNCELoss(_PairLoss):
    """InfoNCE (contrastive) bound on all pairs of the batch, minimised as its negative.

    I ≥ mean_i [t_ii − log( (1/b) Σ_j e^{t_ij} )]  over a ``(b, b)`` score matrix.  The bound
    can never exceed **log b**: with b = 100 no estimate passes 4.6 nats, whatever the truth.
    Low variance, large bias when I approaches log b; use a batch with log b ≫ I.
    """

    name: ClassVar[str] = "infonce_loss"
    bound: ClassVar[str] = "infonce"
    negatives: str = attrs.field(default="all_pairs", validator=one_of("all_pairs",))

    def __call__(self, batch, models, state):
        matrix = _critic_pairwise(get_model(models, self.critic), batch["x"], batch["y"])
        b = matrix.shape[0]
        mi = (torch.diagonal(matrix) - torch.logsumexp(matrix, 1)).mean() + math.log(b)
        return LossOutput(-mi, {"mi": mi.detach(), "log_batch_cap": torch.tensor(math.log(b))})


@attrs.define
class SMILELoss(_PairLoss):
    """SMILE: DV value with e^t clipped to [e^{−τ}, e^{τ}] in the partition term, trained with
    the Jensen–Shannon (f-GAN) gradient.

    value = mean t(joint) − log mean e^{clip(t(marginal), −τ, τ)};  the returned loss is
    −JS + stop_gradient(JS − value) with JS = −mean softplus(−t(joint)) − mean softplus(t(marg)),
    so its gradient is the JS one (whose optimal critic is log p/(p_X p_Y)) and its value the
    clipped DV estimate.  ``clip`` = τ; large τ approaches DV, small τ lowers the variance.
    """

    name: ClassVar[str] = "smile_loss"
    bound: ClassVar[str] = "smile"
    clip: float = attrs.field(default=5.0, validator=positive)

    def __call__(self, batch, models, state):
        joint, marginal, _ = self.scores(batch, models)
        mi = joint.mean() - log_mean_exp(marginal.clamp(-self.clip, self.clip))
        js = -nn.functional.softplus(-joint).mean() - nn.functional.softplus(marginal).mean()
        value = -js - (mi - js).detach()
        return LossOutput(value, {"mi": mi.detach(), "js": js.detach()})


@attrs.define
class MINEELoss(Loss):
    """MI-NEE: three DV divergences against i.i.d. reference draws, one critic each.

    I = D(P_XY ‖ P_X'×P_Y') − D(P_X ‖ P_X') − D(P_Y ‖ P_Y'), each D estimated by
    D̂ = mean t(data) − logmeanexp t(reference) with critics ``critic`` (on [x, y]),
    ``critic_x`` (on x) and ``critic_y`` (on y).  The loss is −(D̂_xy + D̂_x + D̂_y) (each
    critic maximises its own bound), with MINE's log-domain moving average per term when
    ``ma_rate`` < 1.  Batch keys ``x, y, x_reference, y_reference``; metrics ``mi``, ``d_xy``,
    ``d_x``, ``d_y``.
    """

    name: ClassVar[str] = "minee_loss"
    bound: ClassVar[str] = "dv"
    critic: str = "critic"
    critic_x: str = "critic_x"
    critic_y: str = "critic_y"
    ma_rate: float = attrs.field(default=1.0, validator=_rate)

    def _divergence(self, model: nn.Module, data: tuple[torch.Tensor, ...],
                    reference: tuple[torch.Tensor, ...], state: TrainState, key: str):
        b = len(data[0])
        t = _scalar_output(model(*[torch.cat([d, r]) for d, r in zip(data, reference)]))
        on_data, on_ref = t[:b], t[b:]
        current = log_mean_exp(on_ref)
        estimate = on_data.mean() - current
        if self.ma_rate >= 1:
            return -estimate, estimate.detach()
        log_ma = _update_log_average(state, key, current, self.ma_rate)
        return -on_data.mean() + torch.exp(current - log_ma), estimate.detach()

    def __call__(self, batch, models, state):
        x, y = batch["x"], batch["y"]
        xr, yr = batch["x_reference"], batch["y_reference"]
        loss_xy, d_xy = self._divergence(get_model(models, self.critic), (x, y), (xr, yr),
                                         state, "minee_log_ma_xy")
        loss_x, d_x = self._divergence(get_model(models, self.critic_x), (x,), (xr,), state,
                                       "minee_log_ma_x")
        loss_y, d_y = self._divergence(get_model(models, self.critic_y), (y,), (yr,), state,
                                       "minee_log_ma_y")
        mi = d_xy - d_x - d_y
        return LossOutput(loss_xy + loss_x + loss_y,
                          {"mi": mi, "d_xy": d_xy, "d_x": d_x, "d_y": d_y})


# ====================================================================== final estimator


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
    (K, n) = t(x_i, y_{(i + shifts_k) mod n}) — all n(n−1) off-diagonal pairs when K = n − 1."""

    joint: torch.Tensor
    marginal: torch.Tensor
    shifts: torch.Tensor

    @property
    def n(self) -> int:
        return self.joint.numel()

    def bound(self, kind: str = "dv", clip: float = 5.0) -> float:
        """The bound in nats: ``dv`` mean t_ii − log mean_{i≠j} e^{t_ij}; ``smile`` the same
        with t_ij clipped to [−clip, clip]; ``nwj`` mean t_ii − e^{−1} mean e^{t_ij};
        ``infonce`` mean_i [t_ii − log mean_{j ∈ {i} ∪ pairs(i)} e^{t_ij}]."""
        weights = torch.ones(1, self.n, dtype=torch.float64, device=self.joint.device)
        return float(self._weighted(kind, clip, weights)[0])

    def bootstrap(self, kind: str = "dv", clip: float = 5.0, level: float = 0.95,
                  n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
        """Percentile bootstrap interval over the evaluation items (resampled with replacement;
        the critic is held fixed, so this is the sampling uncertainty of the evaluation set)."""
        if not 0 < level < 1:
            raise ValidationError(f"`ci` must be a level in (0, 1), e.g. 0.95, got {level!r}.")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        counts = torch.multinomial(torch.full((self.n,), 1.0 / self.n), self.n * n_boot,
                                   replacement=True, generator=generator).view(n_boot, self.n)
        weights = torch.zeros(n_boot, self.n, dtype=torch.float64)
        weights.scatter_add_(1, counts, torch.ones_like(counts, dtype=torch.float64))
        values = self._weighted(kind, clip, weights.to(self.joint.device))
        alpha = (1 - level) / 2
        lo, hi = torch.quantile(values, torch.tensor([alpha, 1 - alpha], dtype=values.dtype))
        return float(lo), float(hi)

    def _pair_sum(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``(B, n)``: S_bi = Σ_k w_b[(i + s_k) mod n] · values[k, i].  All pairs: one
        ``(B, n) @ (n, n)`` product; shifted pairs: one rolled product per shift."""
        n = self.n
        if len(self.shifts) == n - 1:
            dense = values.new_zeros(n, n)
            rows = torch.arange(n, device=values.device)
            cols = (rows[None, :] + self.shifts.to(values.device)[:, None]) % n
            dense[rows.expand_as(cols), cols] = values
            return weights @ dense.T
        out = weights.new_zeros(weights.shape)
        for k, s in enumerate(self.shifts.tolist()):
            out += weights.roll(-s, 1) * values[k]
        return out

    def _weighted(self, kind: str, clip: float, weights: torch.Tensor) -> torch.Tensor:
        """The bound for each row of item weights ``(B, n)`` (ones: the plain estimate)."""
        if kind not in BOUNDS:
            raise ValidationError(f"Unknown bound {kind!r}; use one of {list(BOUNDS)}.")
        joint = self.joint.double()
        marginal = self.marginal.double()
        if kind == "smile":
            marginal = marginal.clamp(-clip, clip)
        shift = float(torch.maximum(marginal.max(), joint.max()))  # exp never overflows
        expm = torch.exp(marginal - shift)
        mean_joint = (weights * joint).sum(1) / weights.sum(1)
        # row i: Σ over its evaluated pairs j of w_j e^{t_ij}, and Σ w_j
        row = self._pair_sum(weights, expm)
        if len(self.shifts) == self.n - 1:  # every off-diagonal pair
            row_w = weights.sum(1, keepdim=True) - weights
        else:
            row_w = self._pair_sum(weights, torch.ones_like(expm))
        if kind == "infonce":
            row = row + weights * torch.exp(joint - shift)
            log_mean_row = torch.log(row / (row_w + weights)) + shift
            return (weights * (joint - log_mean_row)).sum(1) / weights.sum(1)
        num, den = (weights * row).sum(1), (weights * row_w).sum(1)
        log_mean = torch.log(num / den) + shift
        if kind == "nwj":
            return mean_joint - torch.exp(log_mean - 1.0)
        return mean_joint - log_mean


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
            paired = lambda rows, cols: _scalar_output(critic(x[rows], y[cols]))  # noqa: E731
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


@attrs.define(frozen=True, eq=False)
class ReferenceScores:
    """Critic values on data (n,) and on reference draws (m,) for one MI-NEE divergence."""

    data: torch.Tensor
    reference: torch.Tensor

    def divergence(self) -> float:
        """D̂ = mean t(data) − logmeanexp t(reference), nats."""
        return float(self.data.double().mean() - log_mean_exp(self.reference.double()))


@torch.no_grad()
def reference_scores(model: nn.Module, data: tuple[torch.Tensor, ...],
                     reference: tuple[torch.Tensor, ...],
                     chunk: int = CHUNK_PAIRS) -> ReferenceScores:
    """Evaluate a divergence critic on data rows and reference rows, in chunks."""
    was_training = model.training
    model.eval()
    try:
        def run(arrays):
            n = len(arrays[0])
            return torch.cat([_scalar_output(model(*[a[i:i + chunk] for a in arrays]))
                              for i in range(0, n, chunk)])
        on_data, on_ref = run(data), run(reference)
    finally:
        model.train(was_training)
    if not (bool(torch.isfinite(on_data).all()) and bool(torch.isfinite(on_ref).all())):
        raise NumericalError("A MI-NEE critic returned non-finite values on the evaluation data; "
                             "lower the learning rate or check the inputs for extreme values.")
    return ReferenceScores(on_data.float(), on_ref.float())


__all__ = [
    "MarginalSampler", "ReferenceSampler", "ReferenceDistribution", "JointCritic",
    "SeparableCritic", "JointCriticNet", "SeparableCriticNet", "DVLoss", "MINELoss", "NWJLoss",
    "InfoNCELoss", "SMILELoss", "MINEELoss", "PairScores", "ReferenceScores", "pair_scores",
    "reference_scores", "shifts_for", "log_mean_exp", "BOUNDS", "MAX_PAIRS", "CHUNK_PAIRS",
]
