"""Blocks of the InfoMax recipe: an encoder x̃ -> y trained to raise a lower bound on I(X̃; Y).

The MI of x̃ and a *deterministic* code y = f(x̃) is unbounded: any bound on it saturates
(InfoNCE at log b) or grows without limit (DV), and the code drifts.  These blocks make the
objective well posed with the same critics, negative samplers and bounds as the estimators:

* :class:`InfoMaxLoss` (``infomax``) — encodes the batch with model ``encoder``, puts the
  code through a Gaussian channel z = w(f(x̃ + ε_in)) + ε_out (``input_noise``, ``output_noise``;
  w = ``whitening`` of the batch) and evaluates any MI bound block (``bound``: ``infonce_loss``,
  ``mine_loss``, ``dv``, ``js_divergence``, a plugin's bound) on pairs (z, u) where u is the
  critic's view of the item: the clean code (``critic_input = "code"``) or the input
  (``"data"``).  With ``nested`` the bound is averaged over the code's prefixes y_{1:k},
  k = 1..d, so the leading components carry the most information (as PCA's do);
* :class:`GaussianChannelCritic` (``gaussian_channel_critic``) — t(z, u) = −‖z − u‖² / (2τ),
  one learnt scale τ: for a code sent through the Gaussian channel it is log p(z | x̃) up to a
  constant, the optimal InfoNCE critic, so no critic network has to be learnt;
* :class:`JSDivergenceBound` (``js_divergence``) — Deep InfoMax's Jensen–Shannon objective
  −E_P softplus(−t) − E_{P_X×P_Y} softplus(t), reported as the DV value of the same scores.
* penalties for :class:`InfoMaxLoss`'s ``penalties`` slot (loss blocks given the batch plus
  the clean code under :data:`CODE_KEY`): :class:`LinearReconstructionLoss`
  (``linear_reconstruction``, the share of x̃'s variance a linear map of the code leaves) and
  :class:`ParameterL2Loss` (``parameter_l2``, an L2 penalty on named parameters) and
  :class:`MarginalMatchingLoss` (``marginal_matching``, the squared 1-D Wasserstein-2 distance
  of each code component's batch marginal to a target: a bounded code kept off saturation).

Bounds written with the scores protocol (:mod:`.scores`) work unchanged; see ``docs/infomax.md``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from ..base import _provider, block_field
from ..errors import ContractError, ValidationError
from ..losses import Loss, LossOutput, get_model
from ..models import ACTIVATIONS, MLP, Model, training_rows
from ..numerics import pca_axes
from ..state import TrainState
from ..validators import non_negative, non_negative_int, one_of, positive, positive_int
from .bounds import MIBound, dv_bound, js_value
from .scores import BatchScores, check_bound_value, critic_pairwise, scalar_output

#: ridge added to the batch covariance before its Cholesky factor (codes are O(1) after the
#: encoder's bounded output; 1e-4 keeps a nearly collinear batch invertible in float32)
WHITENING_RIDGE = 1e-4
#: whitening modes of :class:`InfoMaxLoss`
WHITENING = ("none", "standardize", "cholesky")
#: the batch key under which :class:`InfoMaxLoss` hands its clean code to its ``penalties``
CODE_KEY = "code"
#: the targets of :class:`MarginalMatchingLoss`: U(−1, 1) (a tanh code's range), N(0, 1), and
#: U(−1, 1)'s tails only ("uniform_tails": a code further out than uniform costs, a more central
#: one does not)
MARGINAL_TARGETS = ("uniform", "gaussian", "uniform_tails")


# ====================================================================== the critic


class GaussianChannelNet(nn.Module):
    """t(z, u) = c − ‖z − u‖² / (2τ), τ = exp(log_tau) learnt:  ``(n, d), (n, d) -> (n,)``.

    ``pairwise(z, u) -> (n, m)`` for in-batch negatives; ``prefix_pairwise(z, u) -> (d, n, m)``
    the scores of every prefix of the coordinates (the nested bound), one scale per prefix.
    ``offset``: a learnt constant c per prefix (else c = 0), for bounds whose value changes
    when every score moves by a constant (NWJ: its optimal critic is 1 + log p(z|u)/p(z))."""

    def __init__(self, dim: int, init_scale: float, from_data: bool = False,
                 offset: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.log_tau = nn.Parameter(torch.full((dim,), math.log(init_scale)))
        self.offset = nn.Parameter(torch.zeros(dim)) if offset else None
        #: False until :meth:`fit_scale` has set τ from the channel (``from_data``)
        self.register_buffer("fitted", torch.tensor(not from_data))

    @torch.no_grad()
    def fit_scale(self, z: torch.Tensor, u: torch.Tensor) -> None:
        """τ_k = the channel's noise variance per coordinate of the prefix 1..k, measured on
        the joint pairs (z, u) (the maximum-likelihood scale of a Gaussian channel); with an
        offset, c_k = 1 − log mean e^{t_k} over the off-diagonal pairs (NWJ's best constant
        for those scores: its value then starts at the DV value)."""
        per_coord = (z - u).pow(2).mean(0).double()  # (d,)
        k = torch.arange(1, len(per_coord) + 1, dtype=per_coord.dtype, device=per_coord.device)
        tau = (per_coord.cumsum(0) / k).clamp_min(1e-8)
        self.log_tau.copy_(tau.log().to(self.log_tau))
        if self.offset is not None:
            self.offset.zero_()
            m = min(len(z), 512)
            scores = self.prefix_pairwise(z[:m], u[:m]).double()  # (d, m, m)
            off = ~torch.eye(m, dtype=torch.bool, device=scores.device)
            negatives = scores[:, off] if m > 1 else scores.reshape(len(scores), -1)
            log_mean = torch.logsumexp(negatives, 1) - math.log(negatives.shape[1])
            self.offset.copy_((1.0 - log_mean).to(self.offset))
        self.fitted.fill_(True)

    def _offset(self, k: int | slice = -1) -> Any:
        return 0.0 if self.offset is None else self.offset[k]

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._offset() - (z - u).pow(2).sum(-1) / (2 * self.log_tau[-1].exp())

    def pairwise(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        d2 = (z.pow(2).sum(-1)[:, None] + u.pow(2).sum(-1)[None, :] - 2 * z @ u.T).clamp_min(0)
        return self._offset() - d2 / (2 * self.log_tau[-1].exp())

    def prefix_pairwise(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        squares = (z[None, :, :] - u[:, None, :]).pow(2).permute(2, 1, 0)  # (d, n, m)
        scores = -squares.cumsum(0) / (2 * self.log_tau.exp()[:, None, None])
        return scores if self.offset is None else scores + self.offset[:, None, None]


@attrs.define
class GaussianChannelCritic(Model):
    """The Gaussian-channel critic t(z, u) = c − ‖z − u‖² / (2τ) (one learnt scale τ, and with
    ``offset`` one learnt constant c, per prefix; else c = 0).

    ``(n, x_dim), (n, y_dim) -> (n,)`` with ``x_dim == y_dim`` (the code and the clean code);
    ``init_scale`` is τ at the start (InfoMax sets it to the channel's noise variance)."""

    name: ClassVar[str] = "gaussian_channel_critic"
    x_dim: int = attrs.field(validator=positive_int)
    y_dim: int = attrs.field(validator=positive_int)
    init_scale: float = attrs.field(default=0.1, validator=positive)
    #: True: τ is set from the first training batch's channel (its measured noise variance)
    init_from_data: bool = False
    #: a learnt constant c (started, with ``init_from_data``, at NWJ's best constant): needed
    #: by a bound that is not shift-invariant (``MIBound.shift_invariant``)
    offset: bool = False

    def __attrs_post_init__(self) -> None:
        if self.x_dim != self.y_dim:
            raise ValidationError(
                f"gaussian_channel_critic compares a code with a code: x_dim ({self.x_dim}) must "
                f"equal y_dim ({self.y_dim}); with critic_input = 'data' use joint_critic or "
                "separable_critic.")

    def build(self) -> nn.Module:
        return GaussianChannelNet(self.x_dim, self.init_scale, self.init_from_data, self.offset)


# ====================================================================== the Linsker encoder


class LinearResidualNet(nn.Module):
    """y = a(L x + r(x)): a linear path L started at the whitened PCA projection of the
    training data (each component's std = ``gain``), plus a residual network r whose last
    layer starts at ``residual_init`` × its default initialisation (near zero), then the output
    activation a.  ``on_phase_start(state)`` fits L once from ``state.dataset[key]`` (the flag
    is saved with the weights, so a resumed or warm-started fit keeps the trained L)."""

    def __init__(self, in_dim: int, out_dim: int, residual: nn.Module, output: nn.Module,
                 gain: float, key: str, linear_path: str = "full", whiten: bool = True,
                 linear_lr: float = 1.0) -> None:
        super().__init__()
        self.linear_path = linear_path
        self.whiten = whiten
        #: the linear path's step relative to the rest (1: plain; else L = L₀ + m·Δ, Δ from 0)
        self.linear_lr = linear_lr
        if linear_path == "full":
            self.linear = nn.Linear(in_dim, out_dim)
        else:  # "mix": L = M P, P the fixed whitened PCA projection, M (d, d) trained from gain·I
            self.linear = nn.Linear(out_dim, out_dim)
            self.register_buffer("projection", torch.zeros(out_dim, in_dim))
            self.register_buffer("offset", torch.zeros(out_dim))
        if linear_lr != 1.0:  # the start as buffers, the trained offset from zero
            self.register_buffer("start_weight", self.linear.weight.detach().clone())
            self.register_buffer("start_bias", self.linear.bias.detach().clone())
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.bias.zero_()
            if linear_lr == 0:
                self.linear.requires_grad_(False)
        self.residual = residual
        self.output = output
        self.gain = gain
        self.key = key
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear_lr == 1.0:
            return self.linear(x)
        m = self.linear_lr
        return nn.functional.linear(x, self.start_weight + m * self.linear.weight,
                                    self.start_bias + m * self.linear.bias)

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """L x + r(x): the code before the output activation."""
        if self.linear_path == "full":
            return self._linear(x) + self.residual(x)
        return self._linear(x @ self.projection.T + self.offset) + self.residual(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.preactivation(x))

    @torch.no_grad()
    def on_phase_start(self, state) -> None:
        if bool(self.fitted):
            return
        x = training_rows(state, self.key, "the linear path of `linear_residual_mlp`",
                          f"(key = {self.key!r})")
        d = min(self.linear.out_features, x.shape[1])
        mean, axes = pca_axes(x, d)
        proj = (x.double() - mean) @ axes
        std = proj.std(0).clamp_min(1e-12)
        if not self.whiten:  # every component divided by the first's std: variances kept
            std = std[:1].expand_as(std)
        weight = (axes / std).T  # (d, in_dim): whitened PCA, unit std
        bias = -(mean @ axes) / std
        if self.linear_lr != 1.0:  # the start is the buffers (the projection's rows, or gain·I)
            start_w, start_b = self.start_weight, self.start_bias
        else:
            start_w, start_b = self.linear.weight, self.linear.bias
        if self.linear_path == "full":
            start_w[:d].copy_((weight * self.gain).to(start_w))
            start_b[:d].copy_((bias * self.gain).to(start_b))
        else:
            self.projection.zero_()
            self.projection[:d].copy_(weight.to(self.projection))
            self.offset.zero_()
            self.offset[:d].copy_(bias.to(self.offset))
            start_w.copy_(self.gain * torch.eye(len(start_w)))
            start_b.zero_()
        self.fitted.fill_(True)


@attrs.define
class LinearResidualMLP(Model):
    """The InfoMax encoder that starts at Linsker's linear InfoMax code (PCA):
    ``(n, in_dim) -> (n, out_dim)``, y = a(L x + r(x)).

    L (trained) starts at the whitened projection on the ``out_dim`` leading principal axes of
    the dataset array ``key`` (component std ``gain``); r is an MLP (``hidden_dims``,
    ``activation``) whose last layer starts ``residual_init`` × its usual scale, so the code
    starts at PCA and the bound moves it only where it gains; a = ``output_activation``."""

    name: ClassVar[str] = "linear_residual_mlp"
    in_dim: int = attrs.field(validator=positive_int)
    out_dim: int = attrs.field(validator=positive_int)
    hidden_dims: tuple[int, ...] = attrs.field(default=(64, 64), converter=tuple)
    activation: str = attrs.field(default="elu", validator=one_of(*ACTIVATIONS))
    output_activation: str = attrs.field(default="tanh", validator=one_of(*ACTIVATIONS))
    gain: float = attrs.field(default=0.5, validator=positive)
    residual_init: float = attrs.field(default=0.01, validator=non_negative)
    #: "full": L (out_dim, in_dim) is trained from the whitened PCA projection; "mix": the
    #: projection P is kept fixed and L = M P with M (out_dim, out_dim) trained from gain·I, so
    #: the optimizer's steps are relative to the start (on 64 pixels a full L's weights are
    #: ~0.02 and one epoch of Adam at 3e-3 moves each by ~0.03: the start is gone)
    linear_path: str = attrs.field(default="full", validator=one_of("full", "mix"))
    #: True: every PCA component starts with std ``gain``; False: the first does, the others
    #: keep their variance ratios (PCA's own scaling)
    whiten: bool = True
    #: the linear path's learning-rate multiplier m (a trust region around the PCA start):
    #: L = L₀ + m·Δ with L₀ the start (kept) and Δ trained from 0, so Adam moves L m times as
    #: far per step as the residual's weights; 0 keeps L at the PCA start (only r is trained)
    linear_lr: float = attrs.field(default=1.0, validator=non_negative)
    key: str = "x"

    def build(self) -> nn.Module:
        residual = MLP(in_dim=self.in_dim, out_dim=self.out_dim, hidden_dims=self.hidden_dims,
                       activation=self.activation).build()
        with torch.no_grad():
            residual[-1].weight.mul_(self.residual_init)
            residual[-1].bias.mul_(self.residual_init)
        return LinearResidualNet(self.in_dim, self.out_dim, residual,
                                 ACTIVATIONS[self.output_activation](), self.gain, self.key,
                                 self.linear_path, self.whiten, self.linear_lr)


# ====================================================================== the JSD bound


@attrs.define
class JSDivergenceBound(MIBound):
    """Deep InfoMax's Jensen–Shannon objective; its reported bound is the DV value.

    Trained on JS = −mean softplus(−t(joint)) − mean softplus(t(negatives)) (bounded scores
    gradients: the stable choice of Hjelm et al.); ``mi`` = mean t(joint) − log mean e^{t(neg)}
    of the same scores, so validation and early stopping track a true lower bound.  Reports
    ``mi`` and ``js``."""

    name: ClassVar[str] = "js_divergence"
    whole_batch: ClassVar[bool] = True
    shift_invariant: ClassVar[bool] = True  # (the reported bound is DV's)
    reports: ClassVar[frozenset[str]] = frozenset({"mi", "js"})

    def bound(self, scores):
        return dv_bound(scores)

    def objective(self, scores, mi, state):
        js = js_value(scores)
        return -js, {"js": js.detach()}


# ====================================================================== the InfoMax loss


#: bound objectives written with the scores' reductions only, so they take the nested bound's
#: prefixes stacked on a leading axis (one all-reduce per reduction under torch.distributed)
_STACKED_OBJECTIVES = (MIBound.objective, JSDivergenceBound.objective)


def _pair(result: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A bound objective's result as (value, extra metrics)."""
    return result if isinstance(result, tuple) else (result, {})


def _whitener(codes: torch.Tensor, mode: str) -> Any:
    """z -> the ``mode`` whitening of z with the batch statistics of ``codes`` (b, d)."""
    if mode == "none":
        return lambda z: z
    mean = codes.mean(0)
    centred = codes - mean
    if mode == "standardize":
        std = centred.pow(2).mean(0).add(WHITENING_RIDGE).sqrt()
        return lambda z: (z - mean) / std
    cov = centred.T @ centred / max(len(codes) - 1, 1)
    factor = torch.linalg.cholesky(cov + WHITENING_RIDGE * torch.eye(len(cov), device=cov.device,
                                                                    dtype=cov.dtype))
    return lambda z: torch.linalg.solve_triangular(factor, (z - mean).T, upper=False).T


#: keys of a sharded batch that describe the split, not rows of the batch
_SHARD_KEYS = frozenset({"y_columns", "columns", "shard", "x_all", "y_all"})


@attrs.define(frozen=True)
class _Shard:
    """This process's rows of a batch that every rank drew alike (torch.distributed): rows
    ``rank::world_size`` of the ``size`` rows of the whole batch, as the samplers' ``shard``
    splits them.  :meth:`gather` puts the whole batch back together on every rank: each rank
    writes its rows into zeros and the ranks' tensors are summed (x + 0 is exact, so the
    whole batch is bitwise the one-process batch), through a differentiable all-reduce when
    gradients flow through it (:meth:`Distributed.differentiable_sum`)."""

    dist: Any
    size: int

    def keep(self, whole: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor of the whole batch ``(size, ...)``."""
        return whole[self.dist.rank::self.dist.world_size]

    def gather(self, local: torch.Tensor, differentiable: bool = True) -> torch.Tensor:
        """``(size, ...)``: every rank's rows in their place of the whole batch."""
        slots = torch.arange(self.dist.rank, self.size, self.dist.world_size,
                             device=local.device)
        padded = local.new_zeros((self.size, *local.shape[1:])).index_copy(0, slots, local)
        return self.dist.differentiable_sum(padded) if differentiable \
            else self.dist.sum(padded)


def _shards(batch: dict[str, torch.Tensor], x_key: str, state: Any, explicit: bool
            ) -> tuple[_Shard | None, _Shard | None]:
    """(joint rows, explicit negative rows) of this rank under torch.distributed; (None, None)
    in one process.  The whole batch's size comes from the in-batch sampler's shard
    (``y_columns``: every column of the batch) without communication; otherwise from one
    all-reduce of the ranks' counts (a host read per step)."""
    dist = getattr(state, "dist", None)
    if dist is None or not dist.active:
        return None, None
    local = (len(batch[x_key]), len(batch["x_marginal"]) if explicit else 0)
    if not explicit and "y_columns" in batch and "columns" in batch:
        sizes = (len(batch["y_columns"]), 0)
    else:
        counts = torch.tensor(local, device=batch[x_key].device)
        sizes = tuple(int(n) for n in dist.sum(counts).tolist())
    for what, n, total in (("joint pairs", local[0], sizes[0]),
                           ("negative pairs", local[1], sizes[1])):
        if n != len(range(dist.rank, total, dist.world_size)):
            raise ValidationError(
                f"infomax under torchrun: rank {dist.rank} of {dist.world_size} holds {n} "
                f"{what} of a batch of {total}, not its rows rank::world_size "
                f"({len(range(dist.rank, total, dist.world_size))}); the sampler's "
                "shard(batch, rank, world_size) must keep every world_size-th row, as the "
                "built-in samplers do.")
    return _Shard(dist, sizes[0]), (_Shard(dist, sizes[1]) if explicit else None)


def _whole_batch(batch: dict[str, torch.Tensor], x_key: str, whole_x: torch.Tensor,
                 shard: _Shard | None, marginal: _Shard | None) -> dict[str, torch.Tensor]:
    """The one-process batch (what a penalty is given): this rank's ``batch`` with every
    per-row tensor gathered from the ranks (no gradient: inputs), the split's keys dropped."""
    if shard is None:
        return dict(batch)
    n = len(batch[x_key])
    whole: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        if key in _SHARD_KEYS:
            continue
        if key == x_key:
            whole[key] = whole_x
        elif key in ("x_marginal", "y_marginal") and marginal is not None:
            whole[key] = marginal.gather(value, differentiable=False)
        elif isinstance(value, torch.Tensor) and value.ndim and len(value) == n:
            whole[key] = shard.gather(value, differentiable=False)
        else:
            whole[key] = value
    if "x_all" in batch and "x_marginal" in whole:  # joint rows, then the negatives
        whole["x_all"] = torch.cat([whole[x_key], whole["x_marginal"]])
        whole["y_all"] = torch.cat([whole.get("y", whole[x_key]), whole["y_marginal"]])
    return whole


class _ShardScores(BatchScores):
    """The scores of this rank's rows of the batch (torch.distributed) against every column,
    with leading axes (one per prefix of the nested bound): the base class's reductions, each
    the whole batch's in one differentiable all-reduce for all the leading entries."""

    def prefix(self, k: int) -> _ShardScores:
        """The scores of leading entry ``k`` (one prefix)."""
        scores = _ShardScores(self.joint[k], self.negatives[k],
                              None if self.matrix is None else self.matrix[k], self.dist)
        scores.columns = self.columns
        return scores

    @classmethod
    def of_rows(cls, matrix: torch.Tensor, shard: _Shard) -> _ShardScores:
        """In-batch negatives: ``matrix`` (..., n_rank, b) holds this rank's rows against all
        b columns; row i's joint pair is column ``rank + i · world_size``."""
        n = matrix.shape[-2]
        rows = torch.arange(n, device=matrix.device)
        columns = torch.arange(shard.dist.rank, shard.size, shard.dist.world_size,
                               device=matrix.device)
        mask = torch.ones(matrix.shape[-2:], dtype=torch.bool, device=matrix.device)
        mask[rows, columns] = False
        scores = cls(matrix[..., rows, columns], matrix[..., mask], matrix, shard.dist)
        scores.columns = columns  # row_mean_negatives leaves each row's joint column out
        return scores


@attrs.define
class InfoMaxLoss(Loss):
    """−(MI bound) of an encoder and a critic, through a bounded Gaussian channel.

    For the batch rows x̃ (``batch[x_key]``): clean codes c = f(x̃), channel codes
    z = w(f(x̃ + ε_in)) + ε_out with ε_in ~ N(0, input_noise²), ε_out ~ N(0, output_noise²) and w
    the ``whitening`` fitted to c (``"cholesky"``: cov = I, ``"standardize"``: unit variance per
    component, ``"none"``).  The critic sees (z, u), u = w(c) (``critic_input = "code"``) or
    x̃ (``"data"``); ``bound`` (an :class:`MIBound` block, its ``critic`` = this loss's
    ``critic``) gives the value and the training objective.  Negatives: in-batch, or the
    sampler's explicit pairs (``x_marginal`` encoded as z, ``y_marginal`` as u).

    ``nested``: the objective is the mean over the prefixes k = 1..d of the bound on
    (z_{1:k}, u_{1:k}) (the other coordinates zeroed; the Gaussian critic has a fast path);
    the reported ``mi`` is the bound of the whole code.  ``decorrelation`` adds that weight
    times the mean squared off-diagonal correlation of c.  Validation (no grad) draws the
    noise from a generator seeded with ``noise_seed`` on every call, so the held-out bound is
    comparable from epoch to epoch.  Reports ``mi`` (nats), ``nested_mi`` and the bound's own
    metrics.

    Under torch.distributed each rank encodes its shard of the batch (rows ``rank::world``,
    clean and noisy, the input noise being its rows of the whole batch's draw from the shared
    generator) and one differentiable all-reduce gathers the codes: the whitening, the output
    noise, the critic's scale, the decorrelation and saturation terms and the ``penalties``
    (given the whole batch) are the one process's, computed alike on every rank; the critic
    scores the rank's rows against every column (the pairwise work is split) and the bound's
    reductions sum over the ranks (:class:`_ShardScores`, the nested bound's prefixes stacked),
    so the loss is the whole batch's on every rank and the engine's gradient average is the
    one-process gradient.
    """

    name: ClassVar[str] = "infomax"
    whole_batch: ClassVar[bool] = True
    reports: ClassVar[frozenset[str]] = frozenset({"mi", "nested_mi", "js", "log_batch_cap",
                                                   "reconstruction", "l2", "marginal_w2"})
    bound: Any = block_field("loss", default="infonce_loss")
    #: loss blocks added to the objective (``linear_reconstruction``, ``marginal_matching``,
    #: a plugin's): each is called with the batch plus the clean code under :data:`CODE_KEY`;
    #: their metrics are kept
    penalties: list[Any] = block_field("loss", many=True, factory=list)
    encoder: str = "encoder"
    critic: str = "critic"
    critic_input: str = attrs.field(default="code", validator=one_of("code", "data"))
    whitening: str = attrs.field(default="cholesky", validator=one_of(*WHITENING))
    input_noise: float = attrs.field(default=0.0, validator=non_negative)
    output_noise: float = attrs.field(default=0.3, validator=non_negative)
    nested: bool = True
    decorrelation: float = attrs.field(default=0.0, validator=non_negative)
    saturation: float = attrs.field(default=0.0, validator=non_negative)
    saturation_bound: float = attrs.field(default=1.0, validator=positive)
    x_key: str = "x"
    noise_seed: int = attrs.field(default=0, validator=non_negative_int)
    #: whether the critic still waits for its scale from the channel: read from the critic's
    #: ``fitted`` buffer at the phase's first training step (after a resume has put it back),
    #: then kept here, so a step does not read a device flag back to the host
    _scale_pending: bool | None = attrs.field(init=False, default=None, repr=False, eq=False)
    #: whether this phase's first batch was checked for a `y` other than `x` (author25-3)
    _y_checked: bool = attrs.field(init=False, default=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.bound, MIBound):
            raise ValidationError(
                f"infomax: `bound` must be an MI bound block (infonce_loss, mine_loss, dv, "
                f"js_divergence, or a plugin's MIBound), got {type(self.bound).__name__}.")
        if self.bound.critic != self.critic:  # one critic: the bound scores with this loss's
            self.bound = attrs.evolve(self.bound, critic=self.critic)

    def required_fields(self):
        return frozenset({self.x_key})

    def required_models(self):
        return frozenset({self.encoder, self.critic}).union(
            *(p.required_models() for p in self.penalties))

    def on_phase_start(self, state):
        self.bound.on_phase_start(state)
        for penalty in self.penalties:
            penalty.on_phase_start(state)
        self._scale_pending = None
        self._y_checked = False

    def checkpoint_state(self):
        return self.bound.checkpoint_state()

    def restore_state(self, saved):
        self.bound.restore_state(saved)

    # ------------------------------------------------------------------ the channel

    def _noise(self, like: torch.Tensor, std: float, generator: torch.Generator | None,
               shard: _Shard | None = None) -> torch.Tensor:
        """std × N(0, 1) noise shaped like ``like``; under torch.distributed (``shard``) the
        whole batch's noise is drawn (the same draw on every rank, as in one process) and this
        rank's rows are kept."""
        shape = like.shape if shard is None else (shard.size, *like.shape[1:])
        noise = std * torch.randn(shape, generator=generator, device=like.device,
                                  dtype=like.dtype)
        return noise if shard is None else shard.keep(noise)

    def _generator(self, state: TrainState) -> torch.Generator:
        if torch.is_grad_enabled():
            return state.generator
        fixed = torch.Generator(device=state.device)  # validation: the same noise every call
        return fixed.manual_seed(self.noise_seed)

    def encode(self, x: torch.Tensor, encoder: nn.Module, whiten: Any,
               generator: torch.Generator) -> torch.Tensor:
        """Channel codes z = w(f(x + ε_in)) + ε_out of rows ``x`` (n, D) -> (n, d) (one
        process: ``x`` is the whole batch)."""
        return self._transmit(self._noisy_code(x, encoder, generator, None), whiten, generator)

    def _noisy_code(self, x: torch.Tensor, encoder: nn.Module, generator: torch.Generator,
                    shard: _Shard | None) -> torch.Tensor:
        """f(x + ε_in) of this process's rows ``x`` (ε_in: their rows of the batch's noise)."""
        return encoder(x + self._noise(x, self.input_noise, generator, shard)
                       if self.input_noise else x)

    def _transmit(self, coded: torch.Tensor, whiten: Any, generator: torch.Generator
                  ) -> torch.Tensor:
        """w(f(x̃ + ε_in)) + ε_out of the whole batch's noisy codes ``coded``."""
        z = whiten(coded)
        return z + self._noise(z, self.output_noise, generator) if self.output_noise else z

    def _whole_codes(self, x: torch.Tensor, encoder: nn.Module, generator: torch.Generator,
                     shard: _Shard | None, noisy: bool
                     ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """(pre-activation (``saturation`` > 0, else None), clean code c, noisy code
        f(x̃ + ε_in) (``noisy``, else None)) of the whole batch, each (b, d).  Under
        torch.distributed each rank encodes its rows and one differentiable all-reduce puts
        the batch together (:class:`_Shard`), so every statistic of the channel below is the
        whole batch's, as in one process."""
        if self.saturation > 0:
            pre, output = _split_output(encoder)
            first = pre(x)
        else:
            output, first = None, encoder(x)
        coded = self._noisy_code(x, encoder, generator, shard) if noisy else None
        if shard is not None:
            d = first.shape[1]
            packed = first if coded is None else torch.cat([first, coded], 1)
            packed = shard.gather(packed)
            first, coded = packed[:, :d], (None if coded is None else packed[:, d:])
        if output is None:
            return None, first, coded
        return first, output(first), coded

    # ------------------------------------------------------------------ the loss

    def _check_offset(self, critic: Any) -> None:
        """A bound whose value moves with a constant added to the scores, with a Gaussian
        critic that has no constant: the reported bound sits below the truth by that
        constant's error (author7: NWJ reported −0.28 nats where JSD reported +1.64)."""
        if isinstance(critic, GaussianChannelNet) and critic.offset is None and \
                not getattr(self.bound, "shift_invariant", True):
            warnings.warn(
                f"infomax: the bound {getattr(self.bound, 'name', self.bound)!r} is not "
                "shift-invariant (`shift_invariant = False`) but the critic "
                "gaussian_channel_critic has no learnt constant, so the reported bound is "
                "lowered by it; set `critic_offset = true` (or the critic's `offset = true`).",
                UserWarning, stacklevel=2)

    def _check_y(self, batch: dict[str, Any], state: TrainState) -> None:
        """The phase's first batch: a sampler's `y` that is not its `x` (a second augmented
        view, SimCLR pairs) is refused — the critic scores each code against the code of the
        same x, so that `y` would be dropped with no word (author25-3: codes bit-identical
        with it zeroed)."""
        self._y_checked = True
        x, y = batch[self.x_key], batch.get("y")
        if self.x_key == "y" or not isinstance(y, torch.Tensor) or y is x or (
                y.shape == x.shape and torch.equal(y, x)):
            return
        raise ContractError(
            f"Phase {state.phase!r}: the loss 'infomax' reads the batch's `{self.x_key}` only "
            f"(I(x; code) through its channel: the critic scores each row's noisy code against "
            f"that same row), but the sampler in phases.{state.phase}.sampler "
            f"yields a `y` that is not `{self.x_key}` (a second view of the rows?), which "
            "would be ignored. Use a sampler whose `y` is the x it reads (InfoMax's "
            "`negatives` samplers with y_key = x_key, the default), and draw augmentations "
            "into `x`; a two-view objective, I(f(view 1); f(view 2)), belongs in a `routine` "
            "recipe with a loss that encodes both views (docs/plugins.md, \"Per-batch "
            "augmentation\").")

    def __call__(self, batch, models, state):
        if not self._y_checked:
            self._check_y(batch, state)
        encoder = get_model(models, self.encoder)
        generator = self._generator(state)
        explicit = "x_marginal" in batch and not self.bound.rows
        shard, marginal_shard = _shards(batch, self.x_key, state, explicit)
        x = batch[self.x_key]
        noisy = bool(self.input_noise or self.output_noise) or self.whitening != "none"
        before, clean, coded = self._whole_codes(x, encoder, generator, shard, noisy)
        whole_x = x if shard is None or not (self.critic_input == "data" or self.penalties) \
            else shard.gather(x, differentiable=False)
        whiten = _whitener(clean, self.whitening)
        u = whiten(clean) if self.critic_input == "code" else whole_x
        z = self._transmit(coded, whiten, generator) if noisy else clean
        critic = get_model(models, self.critic)
        if torch.is_grad_enabled() and self._scale_pending is not False:
            if self._scale_pending is None:
                self._scale_pending = not bool(getattr(critic, "fitted", True))
                self._check_offset(critic)
            if self._scale_pending:
                critic.fit_scale(z.detach(), u.detach())  # τ from the channel's measured noise
                self._scale_pending = False
        pairs = {"x": z, "y": u}
        if explicit:
            pairs["x_marginal"], pairs["y_marginal"] = self._marginal_pairs(
                batch, encoder, whiten, generator, marginal_shard)
        metrics: dict[str, torch.Tensor] = {}
        nested = self.nested and z.shape[1] > 1
        if shard is not None:  # this rank's rows of the scores, reduced over the ranks
            out, mi = self._sharded_bound(pairs, models, state, metrics, shard, marginal_shard,
                                          nested)
        elif nested:
            scores = self.bound.scores(pairs, models)
            mi = self._checked_bound(scores, state)
            prefix = self._prefix_bounds(pairs, models, state)
            out = self._objective(prefix, pairs, models, state, metrics)
            metrics["nested_mi"] = prefix.mean().detach()
        else:
            scores = self.bound.scores(pairs, models)
            mi = self._checked_bound(scores, state)
            out = self._call_objective(scores, mi, state, metrics)
            metrics["nested_mi"] = mi.detach()
        if self.decorrelation > 0:
            out = out + self.decorrelation * _off_diagonal_correlation(clean)
        if self.saturation > 0:
            excess = before.pow(2).mean(0) - self.saturation_bound ** 2
            out = out + self.saturation * torch.relu(excess).sum()
        if self.penalties:
            with_code = {**_whole_batch(batch, self.x_key, whole_x, shard, marginal_shard),
                         CODE_KEY: clean}
            for k, penalty in enumerate(self.penalties):
                part = penalty(with_code, models, state)
                if not isinstance(part.value, torch.Tensor) or part.value.ndim:
                    self._refuse_penalty(k, part.value, state)
                out = out + part.value
                metrics.update(part.metrics)
        return LossOutput(out, {"mi": mi.detach(), **metrics})

    def _marginal_pairs(self, batch, encoder, whiten, generator, shard
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The explicit negatives of the whole batch: ``x_marginal`` as channel codes,
        ``y_marginal`` as the critic's u (its clean code, or the rows for a data critic)."""
        xm, ym = batch["x_marginal"], batch["y_marginal"]
        coded = self._noisy_code(xm, encoder, generator, shard)
        clean = encoder(ym) if self.critic_input == "code" else None
        if shard is not None:
            d = coded.shape[1]
            packed = shard.gather(coded if clean is None else torch.cat([coded, clean], 1))
            coded, clean = packed[:, :d], (None if clean is None else packed[:, d:])
            ym = ym if clean is not None else shard.gather(ym, differentiable=False)
        return self._transmit(coded, whiten, generator), (whiten(clean) if clean is not None
                                                          else ym)

    def _sharded_bound(self, pairs, models, state, metrics, shard: _Shard,
                       marginal: _Shard | None, nested: bool
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective, mi) under torch.distributed: the critic scores this rank's rows (its
        joint pairs against every column, or its explicit negatives) — the pairwise work is
        split, not repeated — and the bound's reductions sum over the ranks
        (:class:`_ShardScores`), all prefixes of the nested bound in one all-reduce each."""
        z, u = shard.keep(pairs["x"]), pairs["y"]
        negatives = None
        if marginal is not None:  # explicit negatives: the rank's joint and negative pairs
            u = shard.keep(u)
            negatives = (marginal.keep(pairs["x_marginal"]), marginal.keep(pairs["y_marginal"]))
        scores = self._rank_scores(z, u, negatives, models, shard, nested)
        if not nested:
            mi = self._checked_bound(scores, state)
            metrics["nested_mi"] = mi.detach()
            return self._call_objective(scores, mi, state, metrics), mi
        prefix = self.bound.bound(scores)
        d = z.shape[1]
        if prefix.shape != (d,):
            raise ContractError(
                f"infomax under torchrun: the bound {type(self.bound).__name__} gave shape "
                f"{tuple(prefix.shape)} for the {d} prefixes of the nested bound (expected "
                f"({d},); loss {getattr(self.bound, 'name', type(self.bound).__name__)!r}"
                f"{_provider(self.bound)} in `{self._slot(state)}.bound`): write its "
                "bound(scores) with the scores' reductions only, which run over the last axis "
                "(docs/plugins.md, the bound protocol), or set nested = false.")
        metrics["nested_mi"] = prefix.mean().detach()
        mi = prefix[-1]  # the whole code's bound (the last prefix is every coordinate)
        if type(self.bound).objective in _STACKED_OBJECTIVES:  # one value per prefix at once
            value, extra = _pair(self.bound.objective(scores, prefix, state))
            metrics.update({k: v[-1] if v.ndim else v for k, v in extra.items()})
            return value.mean(), mi
        values = []
        for k in range(d):  # the bound's own objective per prefix; a stateful one, last only
            if k < d - 1 and hasattr(self.bound, "log_average"):
                values.append(-prefix[k])
            else:
                values.append(self._call_objective(scores.prefix(k), prefix[k], state, metrics))
        return torch.stack(values).mean(), mi

    def _rank_scores(self, z, u, negatives, models, shard: _Shard, nested: bool
                     ) -> _ShardScores:
        """This rank's critic scores: rows ``z`` (its channel codes) against all columns ``u``
        (or its joint pairs (z, u) and its explicit ``negatives`` pairs); with ``nested``,
        stacked over the prefixes z_{1:k} (d, ...) as in one process (the other coordinates
        zeroed)."""
        critic = get_model(models, self.critic)
        d = z.shape[1]
        code_u = self.critic_input == "code"
        if negatives is None and not nested:
            return _ShardScores.of_rows(critic_pairwise(critic, z, u), shard)
        if negatives is None and hasattr(critic, "prefix_pairwise") and code_u:
            return _ShardScores.of_rows(critic.prefix_pairwise(z, u), shard)
        masks = torch.tril(torch.ones(d, d, device=z.device, dtype=z.dtype))
        masks = masks if nested else masks[-1:]
        parts = []
        for mask in masks:
            zk, uk = z * mask, (u * mask if code_u else u)
            if negatives is None:
                parts.append(critic_pairwise(critic, zk, uk))
                continue
            zm = negatives[0] * mask
            um = negatives[1] * mask if code_u else negatives[1]
            parts.append(scalar_output(critic(torch.cat([zk, zm]), torch.cat([uk, um]))))
        if negatives is None:
            return _ShardScores.of_rows(torch.stack(parts), shard)
        t = torch.stack(parts) if nested else parts[0]
        n = len(z)
        return _ShardScores(t[..., :n], t[..., n:], None, shard.dist)

    def _call_objective(self, scores: Any, mi: torch.Tensor, state: TrainState,
                        metrics: dict[str, torch.Tensor]) -> torch.Tensor:
        result = self.bound.objective(scores, mi, state)
        value, extra = result if isinstance(result, tuple) else (result, {})
        metrics.update(extra)
        return value

    def _prefix_scores(self, pairs: dict[str, torch.Tensor], models: nn.ModuleDict
                       ) -> list[BatchScores]:
        """The scores of every prefix z_{1:k} (and u_{1:k} for a code critic), k = 1..d."""
        critic = get_model(models, self.critic)
        z, u = pairs["x"], pairs["y"]
        d = z.shape[1]
        explicit = "x_marginal" in pairs
        if not explicit and hasattr(critic, "prefix_pairwise") and self.critic_input == "code":
            return [BatchScores.from_matrix(m) for m in critic.prefix_pairwise(z, u)]
        masks = torch.tril(torch.ones(d, d, device=z.device, dtype=z.dtype))  # row k: 1..k+1
        out = []
        for k in range(d):
            mask = masks[k]
            code_u = self.critic_input == "code"
            zk, uk = z * mask, (u * mask if code_u else u)
            if explicit:
                zm = pairs["x_marginal"] * mask
                um = pairs["y_marginal"] * mask if code_u else pairs["y_marginal"]
                t = scalar_output(critic(torch.cat([zk, zm]), torch.cat([uk, um])))
                out.append(BatchScores(t[:len(zk)], t[len(zk):]))
            else:
                out.append(BatchScores.from_matrix(critic_pairwise(critic, zk, uk)))
        return out

    def _prefix_bounds(self, pairs, models, state) -> torch.Tensor:
        self._prefix_cache = self._prefix_scores(pairs, models)
        return torch.stack([self._checked_bound(s, state) for s in self._prefix_cache])

    def _slot(self, state: TrainState) -> str:
        """``phases.<phase>.loss`` (``.validation.loss`` without gradients): this loss's path."""
        phase = getattr(state, "phase", None) or "train"
        return f"phases.{phase}.{'' if torch.is_grad_enabled() else 'validation.'}loss"

    def _checked_bound(self, scores: Any, state: TrainState) -> torch.Tensor:
        """``bound(scores)``, one value: a bound of another shape is a :class:`ContractError`
        naming the bound, its plugin and its TOML path (author27-C: a (3,) value was reported
        as the built-in ``infomax`` loss's)."""
        value = self.bound.bound(scores)
        if not isinstance(value, torch.Tensor) or value.ndim:
            check_bound_value(self.bound, value, (), f"`{self._slot(state)}.bound`")
        return value

    def _refuse_penalty(self, k: int, value: Any, state: TrainState) -> None:
        """A penalty whose value is not one number: a :class:`ContractError` naming it, its
        plugin and its TOML path, where the engine named the ``infomax`` loss (author27-C)."""
        penalty = self.penalties[k]
        got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) \
            else type(value).__name__
        raise ContractError(
            f"Phase {state.phase!r}: penalty {getattr(penalty, 'name', type(penalty).__name__)!r}"
            f"{_provider(penalty)} in `{self._slot(state)}.penalties[{k}]` returned a value "
            f"(LossOutput.value) that is {got}; a penalty's value is a scalar (a 0-d tensor) "
            "added to the infomax objective: reduce it over the batch (e.g. `.mean()`; the "
            f"clean code is `batch[{CODE_KEY!r}]`, (b, d)).")

    def _objective(self, prefix: torch.Tensor, pairs, models, state, metrics) -> torch.Tensor:
        # the bound's own objective (MINE's corrected gradient, JS) of each prefix, averaged;
        # a bound with state (MINE's moving average) sees the whole code only, last
        scores = self._prefix_cache
        values = []
        for k, s in enumerate(scores):
            if k < len(scores) - 1 and hasattr(self.bound, "log_average"):
                values.append(-prefix[k])
            else:
                values.append(self._call_objective(s, prefix[k], state, metrics))
        self._prefix_cache = None
        return torch.stack(values).mean()


def _penalty_code(loss: Any, batch: dict[str, Any], models: Any, state: Any,
                  why: str) -> torch.Tensor:
    """The code a penalty block scores: ``batch[loss.code_key]`` where the ``infomax`` loss
    handed it the whole batch's clean code, else model ``loss.encoder`` of
    ``batch[loss.x_key]`` — refused under torchrun (``why``: what a shard would get wrong)."""
    code = batch.get(loss.code_key)
    if code is not None:
        return code
    if getattr(getattr(state, "dist", None), "active", False):
        raise ValidationError(
            f"{loss.name} as a phase's own loss does not run under torchrun: {why}, not the "
            "whole batch's. Use it in the `penalties` of the `infomax` loss (which hands it the "
            "whole batch and its code), or run in one process.")
    return get_model(models, loss.encoder)(batch[loss.x_key])


@attrs.define
class LinearReconstructionLoss(Loss):
    """``weight`` × the fraction of the batch's variance of x̃ that a linear map of the code
    does not reconstruct: min_D ‖x̃_c − c_c D‖² / ‖x̃_c‖² (centred; D in closed form by ridge
    least squares on the batch, ``ridge`` relative to the code's mean variance).

    A linear-reconstruction prior for InfoMax: with Gaussian data and channel noise the
    max-MI linear code and the best linear reconstruction span the same (PCA) subspace
    (Linsker), so this term keeps a code's linear content unless the bound pays for leaving
    it.  The code is ``batch[code_key]`` when the caller put it there (the ``infomax`` loss's
    ``penalties`` do), else model ``encoder`` of ``batch[x_key]``.  Reports
    ``reconstruction`` (the fraction, 0..1)."""

    name: ClassVar[str] = "linear_reconstruction"
    reports: ClassVar[frozenset[str]] = frozenset({"reconstruction"})
    weight: float = attrs.field(default=1.0, validator=non_negative)
    encoder: str = "encoder"
    x_key: str = "x"
    code_key: str = CODE_KEY
    ridge: float = attrs.field(default=1e-3, validator=non_negative)
    #: "fraction": the unexplained fraction itself; "log": its logarithm (relative gains
    #: count the same at any level: a code that already reconstructs 99.9 % is still pulled
    #: towards 99.99 %)
    scale: str = attrs.field(default="fraction", validator=one_of("fraction", "log"))

    def required_fields(self):
        return frozenset({self.x_key})

    def required_models(self):
        return frozenset({self.encoder})

    def __call__(self, batch, models, state):
        x = batch[self.x_key]
        code = _penalty_code(self, batch, models, state, "its least squares would be fitted "
                                                         "to each rank's shard")
        fraction = unexplained_fraction(code, x, self.ridge)
        value = fraction if self.scale == "fraction" else fraction.clamp_min(1e-12).log()
        return LossOutput(self.weight * value, {"reconstruction": fraction.detach()})


@attrs.define
class MarginalMatchingLoss(Loss):
    """``weight`` × the mean over the code's components of the squared 1-D Wasserstein-2
    distance between the batch's marginal of the component and ``target`` (``"uniform"``:
    U(−1, 1), ``"gaussian"``: N(0, 1); ``"uniform_tails"``: only the mass further out than
    U(−1, 1)'s), exact by sorting (:func:`marginal_distance`).

    A marginal prior for InfoMax: through an amplitude-limited noisy channel the max-MI code is
    discrete, so the bound alone drives a tanh code into its flat ends (rows at |y| ≈ 1 that
    differ only in the sign); matching each component to U(−1, 1) keeps the code spread over
    the range (geninf25: 0 % of rows at |y| > 0.95 on lat2, where the defaults saturate 14.7 %
    on seed 0; docs/infomax.md).  The code is the clean code ``batch[code_key]`` when the caller
    put it there (the ``infomax`` loss's ``penalties`` do: after the output activation, before
    whitening and channel noise), else model ``encoder`` of ``batch[x_key]``.  Reports
    ``marginal_w2`` (the distance, before ``weight``)."""

    name: ClassVar[str] = "marginal_matching"
    reports: ClassVar[frozenset[str]] = frozenset({"marginal_w2"})
    weight: float = attrs.field(default=1.0, validator=non_negative)
    target: str = attrs.field(default="uniform", validator=one_of(*MARGINAL_TARGETS))
    encoder: str = "encoder"
    x_key: str = "x"
    code_key: str = CODE_KEY

    def required_fields(self):
        return frozenset({self.x_key})

    def required_models(self):
        return frozenset({self.encoder})

    def __call__(self, batch, models, state):
        code = _penalty_code(self, batch, models, state, "its sorted marginals would be each "
                                                         "rank's shard's")
        distance = marginal_distance(code, self.target)
        return LossOutput(self.weight * distance, {"marginal_w2": distance.detach()})


@attrs.define
class ParameterL2Loss(Loss):
    """``weight`` × Σ p² over the parameters of model ``model`` whose names start with
    ``prefix`` (``"residual"``: the residual MLP of ``linear_residual_mlp``, so a non-linear
    part of the code must pay for its weights; ``""``: every parameter).  Reports ``l2``."""

    name: ClassVar[str] = "parameter_l2"
    reports: ClassVar[frozenset[str]] = frozenset({"l2"})
    weight: float = attrs.field(default=1e-3, validator=non_negative)
    model: str = "encoder"
    prefix: str = "residual"

    def required_fields(self):
        return frozenset()

    def required_models(self):
        return frozenset({self.model})

    def __call__(self, batch, models, state):
        module = get_model(models, self.model)
        squares = [p.pow(2).sum() for name, p in module.named_parameters()
                   if name.startswith(self.prefix) and p.requires_grad]
        if not squares:
            raise ValidationError(
                f"parameter_l2: model {self.model!r} has no trained parameter named "
                f"{self.prefix!r}...; its parameters: "
                f"{sorted({n.split('.')[0] for n, _ in module.named_parameters()})}.")
        total = torch.stack(squares).sum()
        return LossOutput(self.weight * total, {"l2": total.detach()})


def unexplained_fraction(code: torch.Tensor, x: torch.Tensor, ridge: float = 1e-3
                         ) -> torch.Tensor:
    """‖x_c − c_c D‖² / ‖x_c‖² with D the ridge least-squares map from the centred code
    ``code`` (b, d) to the centred ``x`` (b, D); differentiable in both."""
    c = code - code.mean(0)
    xc = x - x.mean(0)
    gram = c.T @ c
    eye = torch.eye(len(gram), device=gram.device, dtype=gram.dtype)
    scale = torch.diagonal(gram).mean().detach().clamp_min(1e-12)
    decoder = torch.linalg.solve(gram + ridge * scale * eye, c.T @ xc)
    return (xc - c @ decoder).pow(2).sum() / xc.pow(2).sum().clamp_min(1e-12)


def marginal_distance(codes: torch.Tensor, target: str = "uniform") -> torch.Tensor:
    """Mean over the components of ``codes`` (b, d) of the squared Wasserstein-2 distance
    between the batch's empirical marginal and ``target`` ("uniform": U(−1, 1); "gaussian":
    N(0, 1)): mean_i (c_(i) − q_i)² with c_(i) the sorted code and q_i the target's quantile at
    (2i − 1) / (2b); differentiable (the gradient moves each value towards its quantile).
    ``"uniform_tails"``: one-sided, only the part of the gap that lies further out than
    U(−1, 1)'s quantile, mean_i relu(sign(q_i)(c_(i) − q_i))² — more mass at the ends than a
    uniform code costs, a code more central than uniform (clusters, a peaked marginal) does
    not (geninf25)."""
    if target not in MARGINAL_TARGETS:
        raise ValidationError(f"marginal_distance: `target` must be one of "
                              f"{list(MARGINAL_TARGETS)}, got {target!r}.")
    b = codes.shape[0]
    p = (torch.arange(1, b + 1, device=codes.device, dtype=codes.dtype) - 0.5) / b
    q = math.sqrt(2) * torch.erfinv(2 * p - 1) if target == "gaussian" else 2 * p - 1
    gap = codes.sort(0).values - q[:, None]
    if target == "uniform_tails":  # outward only: beyond the uniform's quantile
        gap = torch.relu(gap * torch.sign(q)[:, None])
    return gap.pow(2).mean()


def _split_output(encoder: nn.Module) -> tuple[Any, nn.Module]:
    """(pre-activation map, output activation) of an encoder whose last step is a bounded
    activation: :class:`LinearResidualNet` or an ``nn.Sequential`` (the ``mlp`` model)."""
    if isinstance(encoder, LinearResidualNet):
        return encoder.preactivation, encoder.output
    if isinstance(encoder, nn.Sequential) and len(encoder) > 1 \
            and not isinstance(encoder[-1], nn.Linear) and not list(encoder[-1].parameters()):
        return encoder[:-1], encoder[-1]
    raise ValidationError(
        f"infomax: `saturation` > 0 needs an encoder that ends in its output activation (the "
        f"`mlp` or `linear_residual_mlp` model with `output_activation` set); got "
        f"{type(encoder).__name__}. Set saturation = 0 for this encoder.")


def _off_diagonal_correlation(codes: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal entry of the correlation matrix of ``codes`` (b, d)."""
    d = codes.shape[1]
    if d < 2:
        return codes.new_zeros(())
    centred = codes - codes.mean(0)
    normed = centred / centred.pow(2).sum(0).add(1e-8).sqrt()
    corr = normed.T @ normed
    return (corr - torch.diag(torch.diagonal(corr))).pow(2).sum() / (d * (d - 1))


__all__ = ["InfoMaxLoss", "GaussianChannelCritic", "LinearResidualMLP", "LinearResidualNet",
           "GaussianChannelNet", "JSDivergenceBound", "LinearReconstructionLoss", "ParameterL2Loss",
           "MarginalMatchingLoss", "marginal_distance", "unexplained_fraction", "WHITENING",
           "CODE_KEY", "MARGINAL_TARGETS"]
