"""Fisher-information blocks for IMNNs: simulations, summaries, the Fisher loss.

An information maximising neural network (Charnock, Lavaux & Wandelt 2018) is a summary
network ``s = f(d)`` trained so that the Gaussian Fisher information of its summaries at a
fiducial parameter ``θ_fid`` is as large as possible.  From ``n_s`` fiducial simulations
``d_i`` and the derivatives of ``n_d`` of them with respect to the ``p`` parameters:

    μ = mean_i s_i,   C = cov(s) (unbiased, 1/(n_s − 1)),
    ∂μ/∂θ = mean_i ∂s_i/∂θ = mean_i J_f(d_i) ∂d_i/∂θ          (chain rule: one jvp),
    F = (∂μ/∂θ)ᵀ C⁻¹ (∂μ/∂θ)                                     (p × p).

Batches (dicts of tensors) produced by :class:`SimulationSampler` and read by
:class:`FisherLoss` hold

* ``"fiducial"`` ``(n_s, *S)`` — simulations at ``θ_fid``, and either
* ``"derivative"`` ``(n_d, p, *S)`` — ``∂d/∂θ`` of the first ``n_d`` fiducial simulations, or
* ``"numerical_derivative"`` ``(n_d, 2, p, *S)`` plus ``"delta_theta"`` ``(p,)`` — seed-matched
  simulations at ``θ_fid − δθ_k/2`` (index 0) and ``θ_fid + δθ_k/2`` (index 1) along each
  parameter ``k``; then ``∂s/∂θ_k ≈ (s⁺ − s⁻)/δθ_k``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jvp, vmap

from .data import as_tensor, check_positive
from .errors import NumericalError, ValidationError
from .losses import Loss, LossOutput, get_model
from .samplers import Sampler
from .state import TrainState
from .validators import one_of, positive, positive_int

FIDUCIAL = "fiducial"
DERIVATIVE = "derivative"
NUMERICAL = "numerical_derivative"
DELTA_THETA = "delta_theta"

#: a covariance whose smallest / largest eigenvalue is below this is treated as singular:
#: float32 keeps ~7 digits, so beyond 1e-6 the inverse is dominated by rounding
SINGULAR_RCOND = 1e-6

DERIVATIVE_MODES = ("autograd", "numerical")


# ---------------------------------------------------------------------- regulariser constants

def regularisation_rate(lambda_reg: float, epsilon: float) -> float:
    """α of the adaptive coupling, α = −ln(ε(λ − 1) + ε²/(1 + ε)) / ε.

    Chosen (as in the reference implementation) so that r_Λ(Λ₂ = ε) ≈ λ − 1: the coupling is
    switched off smoothly once the covariance is within ε of the identity.  0.953 for
    λ = 10, ε = 0.1.
    """
    check_positive(lambda_reg, "lambda_reg")
    check_positive(epsilon, "epsilon")
    inner = epsilon * (lambda_reg - 1.0) + epsilon ** 2 / (1.0 + epsilon)
    if inner <= 0:
        raise ValidationError(
            f"`lambda_reg` = {lambda_reg} and `epsilon` = {epsilon} give ε(λ−1) + ε²/(1+ε) = "
            f"{inner:.3g} ≤ 0, so the coupling rate α is undefined; use lambda_reg > 1.")
    return -math.log(inner) / epsilon


# ---------------------------------------------------------------------- Fisher statistics

@attrs.frozen
class FisherStatistics:
    """Gaussian Fisher statistics of summaries (all tensors; differentiable when inputs are).

    ``mu`` (m,), ``C`` and ``invC`` (m, m), ``dmu_dtheta`` (m, p), ``F`` (p, p).
    """

    mu: torch.Tensor
    C: torch.Tensor
    invC: torch.Tensor
    dmu_dtheta: torch.Tensor
    F: torch.Tensor

    @property
    def log_det_F(self) -> torch.Tensor:
        return torch.linalg.slogdet(self.F)[1]

    def estimate(self, summaries: torch.Tensor, theta_fid: torch.Tensor) -> torch.Tensor:
        """Quasi-maximum-likelihood θ̂ = θ_fid + F⁻¹ (∂μ/∂θ)ᵀ C⁻¹ (s − μ); (n, m) -> (n, p)."""
        score = (summaries - self.mu) @ self.invC @ self.dmu_dtheta  # (n, p)
        return theta_fid + torch.linalg.solve(self.F, score.T).T

    def check(self, where: str) -> None:
        """Raise :class:`NumericalError` when C or F is singular (host sync; not in a step)."""
        C = self.C.detach().double().cpu()
        eig = torch.linalg.eigvalsh(C) if bool(torch.isfinite(C).all()) else None
        if eig is None or eig[-1] <= 0 or eig[0] <= SINGULAR_RCOND * eig[-1]:
            shown = "non-finite" if eig is None else f"eigenvalues {eig.tolist()}"
            raise NumericalError(
                f"The covariance of the summaries on {where} is singular ({shown}). The summaries "
                "do not vary independently across the fiducial simulations: check that the "
                "simulations are not constant or duplicated, that n_s is well above "
                "n_summaries, and that the network is not saturated (e.g. a bad initialisation).")
        F = self.F.detach().double().cpu()
        sign, logdet = torch.linalg.slogdet(F)
        if not bool(torch.isfinite(F).all()) or sign <= 0 or logdet < -60:
            raise NumericalError(
                f"The Fisher matrix on {where} is singular (det F = {float(sign * logdet.exp()):.3g})."
                " The summaries do not change with the parameters: check that the derivative "
                "simulations are not zero and that n_summaries ≥ number of parameters.")


def fisher_statistics(summaries: torch.Tensor, derivatives: torch.Tensor) -> FisherStatistics:
    """Statistics from summaries ``(n_s, m)`` and summary derivatives ``(n_d, p, m)``."""
    n_s = summaries.shape[0]
    mu = summaries.mean(0)
    centred = summaries - mu
    C = centred.T @ centred / (n_s - 1)
    invC = torch.linalg.inv_ex(C)[0]  # no raise: a singular C surfaces as non-finite metrics
    dmu_dtheta = derivatives.mean(0).T  # (m, p)
    F = dmu_dtheta.T @ invC @ dmu_dtheta
    return FisherStatistics(mu=mu, C=C, invC=invC, dmu_dtheta=dmu_dtheta, F=F)


def imnn_objective(stats: FisherStatistics, lambda_reg: float, alpha: float
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss −ln|det F| + r_Λ Λ₂ and its metrics.

    Λ₂ = ‖C − I‖_F + ‖C⁻¹ − I‖_F (Frobenius norms, not squared, as the reference code);
    r_Λ = λ Λ₂ / (Λ₂ + exp(−α Λ₂)); the gradient flows through r_Λ as well.
    """
    eye = torch.eye(stats.C.shape[0], dtype=stats.C.dtype, device=stats.C.device)
    lambda2 = torch.linalg.matrix_norm(stats.C - eye) + torch.linalg.matrix_norm(stats.invC - eye)
    r = lambda_reg * lambda2 / (lambda2 + torch.exp(-alpha * lambda2))
    log_det_F = stats.log_det_F
    value = -log_det_F + r * lambda2
    metrics = {
        "det_F": torch.linalg.det(stats.F).detach(),
        "log_det_F": log_det_F.detach(),
        "det_C": torch.linalg.det(stats.C).detach(),
        "det_invC": torch.linalg.det(stats.invC).detach(),
        "Lambda2": lambda2.detach(),
        "r": r.detach(),
    }
    return value, metrics


# ---------------------------------------------------------------------- summaries

def _activation_slope(module: torch.nn.Module, pre: torch.Tensor) -> torch.Tensor | None:
    """Derivative of an element-wise activation at ``pre``; None if not a known one."""
    # piecewise linear: the slope is constant almost everywhere, so no graph through it
    if isinstance(module, torch.nn.LeakyReLU):
        positive = (pre.detach() > 0).to(pre.dtype)
        return positive * (1.0 - module.negative_slope) + module.negative_slope
    if isinstance(module, torch.nn.ReLU):
        return (pre.detach() > 0).to(pre.dtype)
    if isinstance(module, torch.nn.Identity):
        return torch.ones_like(pre)
    # smooth: the slope depends on pre, and the gradient flows through it
    if isinstance(module, torch.nn.Tanh):
        return 1 - torch.tanh(pre) ** 2
    if isinstance(module, torch.nn.Sigmoid):
        s = torch.sigmoid(pre)
        return s * (1 - s)
    if isinstance(module, torch.nn.Softplus):  # linear above the threshold, as torch's
        scaled = pre * module.beta
        return torch.where(scaled > module.threshold, torch.ones_like(pre),
                           torch.sigmoid(scaled))
    if isinstance(module, torch.nn.ELU):
        return torch.where(pre > 0, torch.ones_like(pre), module.alpha * torch.exp(pre))
    if isinstance(module, torch.nn.SiLU):
        s = torch.sigmoid(pre)
        return s * (1 + pre * (1 - s))
    if isinstance(module, torch.nn.GELU) and module.approximate == "none":
        normal = torch.distributions.Normal(0.0, 1.0)
        return normal.cdf(pre) + pre * torch.exp(normal.log_prob(pre))
    return None


#: activations whose slope :func:`_activation_slope` knows (the MLP fast path)
_FAST_ACTIVATIONS = (torch.nn.LeakyReLU, torch.nn.ReLU, torch.nn.Identity, torch.nn.Tanh,
                     torch.nn.Sigmoid, torch.nn.Softplus, torch.nn.ELU, torch.nn.SiLU)


def _is_plain_mlp(model: torch.nn.Module) -> bool:
    return isinstance(model, torch.nn.Sequential) and all(
        isinstance(m, (torch.nn.Linear, *_FAST_ACTIVATIONS))
        or (isinstance(m, torch.nn.GELU) and m.approximate == "none") for m in model)


def _mlp_jvp(model: torch.nn.Sequential, x: torch.Tensor, dx: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-mode derivative of a Linear/activation stack written out: the primal
    ``h`` (n, d) goes through each layer, the p tangents ``t`` (n, p, d) through its linear
    part (no bias) scaled by the activation's slope at ``h``.  Same numbers as ``jvp``,
    without the per-call overhead of the functional transforms."""
    h, t = x, dx
    for module in model:
        if isinstance(module, torch.nn.Linear):
            h = torch.nn.functional.linear(h, module.weight, module.bias)
            t = t @ module.weight.T
        else:
            t = t * _activation_slope(module, h).unsqueeze(1)
            h = module(h)
    return h, t


def _jvp_summaries(model: torch.nn.Module, x: torch.Tensor, dx: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = f(x)`` (n, m) and ``∂s/∂θ = J_f(x) ∂x/∂θ`` (n, p, m), one primal pass.

    Forward-mode AD, vectorised over the p tangent directions (the primal is shared); plain
    Linear/activation stacks (the default MLP) take a written-out fast path.
    """
    if _is_plain_mlp(model) and x.ndim == 2:
        return _mlp_jvp(model, x, dx)
    return vmap(lambda tangent: jvp(model, (x,), (tangent,)), in_dims=1, out_dims=(None, 1),
                randomness="same")(dx)


@attrs.frozen
class _Piece:
    """Rows of one batch array whose summaries are computed together (one chunk)."""

    kind: str  # "jvp" (fiducial rows with derivatives), "plain" (fiducial rows), "numerical"
    rows: slice


def _plan(batch: dict[str, torch.Tensor], chunk_size: int | None) -> list[_Piece]:
    n_s = batch[FIDUCIAL].shape[0]
    pieces = []

    def split(kind: str, start: int, stop: int) -> None:
        step = chunk_size or max(stop - start, 1)
        pieces.extend(_Piece(kind, slice(a, min(a + step, stop))) for a in range(start, stop, step))

    if DERIVATIVE in batch:
        n_d = batch[DERIVATIVE].shape[0]
        split("jvp", 0, n_d)
        split("plain", n_d, n_s)
    else:
        split("plain", 0, n_s)
        split("numerical", 0, batch[NUMERICAL].shape[0])
    return pieces


def _piece_outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor], piece: _Piece
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(summaries of the piece's fiducial rows or None, summary derivatives or None)."""
    rows = piece.rows
    if piece.kind == "jvp":
        return _jvp_summaries(model, batch[FIDUCIAL][rows], batch[DERIVATIVE][rows])
    if piece.kind == "plain":
        return model(batch[FIDUCIAL][rows]), None
    sims = batch[NUMERICAL][rows]  # (c, 2, p, *S)
    c, _, p = sims.shape[:3]
    out = model(sims.reshape(c * 2 * p, *sims.shape[3:])).reshape(c, 2, p, -1)
    delta = batch[DELTA_THETA].to(out.dtype).reshape(1, p, 1)
    return None, (out[:, 1] - out[:, 0]) / delta


def network_summaries(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                      chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summaries ``(n_s, m)`` and their θ-derivatives ``(n_d, p, m)`` of a simulation batch,
    computed ``chunk_size`` simulations at a time (None: all at once)."""
    fid_parts, der_parts = [], []
    for piece in _plan(batch, chunk_size):
        s, ds = _piece_outputs(model, batch, piece)
        if s is not None:
            fid_parts.append(s)
        if ds is not None:
            der_parts.append(ds)
    return torch.cat(fid_parts), torch.cat(der_parts)


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

    F = (∂μ/∂θ)ᵀ C⁻¹ (∂μ/∂θ) from the summaries of model ``model`` (see the module docstring);
    Λ₂ = ‖C − I‖_F + ‖C⁻¹ − I‖_F; r_Λ = λ Λ₂ / (Λ₂ + exp(−α Λ₂)) with
    α = −ln(ε(λ − 1) + ε²/(1 + ε))/ε.  Metrics: det_F, log_det_F, det_C, det_invC, Lambda2, r.

    ``chunk_size`` (aggregated mode): summaries are computed in chunks without a graph, the
    gradient ∂loss/∂s is taken on the detached summaries and then back-propagated chunk by
    chunk (the network runs twice; memory holds one chunk's graph).  Same gradient as
    ``chunk_size=None`` up to float rounding.
    """

    name: ClassVar[str] = "fisher"
    model: str = "main"
    lambda_reg: float = attrs.field(default=10.0, validator=positive)
    epsilon: float = attrs.field(default=0.1, validator=positive)
    chunk_size: int | None = attrs.field(default=None, validator=optional(positive_int))
    alpha: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.alpha = regularisation_rate(self.lambda_reg, self.epsilon)

    def objective(self, summaries: torch.Tensor, derivatives: torch.Tensor
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics from summaries ``(n_s, m)`` and derivatives ``(n_d, p, m)``."""
        return imnn_objective(fisher_statistics(summaries, derivatives), self.lambda_reg,
                              self.alpha)

    def __call__(self, batch, models, state):
        model = get_model(models, self.model)
        if self.chunk_size is None or not torch.is_grad_enabled():
            value, metrics = self.objective(*network_summaries(model, batch, self.chunk_size))
            return LossOutput(value, metrics)
        return self._chunked(model, batch)

    def _chunked(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        with torch.no_grad():
            s, ds = network_summaries(model, batch, self.chunk_size)
        s.requires_grad_(True)
        ds.requires_grad_(True)
        value, metrics = self.objective(s, ds)
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


# ---------------------------------------------------------------------- sampler

def as_theta(value: Any) -> tuple[float, ...]:
    """Parameter values as a tuple of finite floats (``theta_fid``, ``delta_theta``)."""
    try:
        out = tuple(float(v) for v in (value if hasattr(value, "__iter__") else [value]))
    except (TypeError, ValueError):
        raise ValidationError(f"`theta_fid` must be a sequence of numbers, got {value!r}.") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ValidationError(f"`theta_fid` must be a non-empty sequence of finite numbers, "
                              f"got {value!r}.")
    return out


def _optional_theta(value: Any) -> tuple[float, ...] | None:
    return None if value is None else as_theta(value)


TRANSIENT = {"transient": True}


@attrs.define
class SimulationSampler(Sampler):
    """One batch per epoch: fiducial simulations and their θ-derivatives.

    Sources (exactly one):

    * ``simulator(generator, theta)``: ``batched=True`` — theta ``(n, p)`` → ``(n, *S)`` (fast
      path, one call per pass); ``batched=False`` — theta ``(p,)`` → ``(*S)`` (one call per
      simulation).  ``derivative_mode="autograd"`` gives ∂d/∂θ by forward-mode AD through θ
      (one pass per parameter, the generator state replayed so each pass sees the same random
      numbers); ``"numerical"`` simulates seed-matched at θ_fid ∓ δθ/2 (``delta_theta``).
      ``fresh=True`` draws new simulations every epoch; ``False`` draws once in ``setup``.
      ``seed`` gives the sampler its own generator (a fixed validation set drawn once).
    * arrays: ``fiducial`` ``(n_s, *S)`` with ``derivative`` ``(n_d, p, *S)`` (∂d/∂θ of the
      first n_d fiducial simulations), or ``numerical_derivative`` ``(n_d, 2, p, *S)`` with
      ``delta_theta``.

    ``flatten`` reshapes every simulation to a vector (for an MLP summary network).
    """

    name: ClassVar[str] = "simulations"
    theta_fid: tuple[float, ...] = attrs.field(converter=as_theta)
    simulator: Callable[..., torch.Tensor] | None = attrs.field(default=None, metadata=TRANSIENT)
    batched: bool = True
    derivative_mode: str = attrs.field(default="autograd", validator=one_of(*DERIVATIVE_MODES))
    fiducial: Any = attrs.field(default=None, metadata=TRANSIENT, repr=False)
    derivative: Any = attrs.field(default=None, metadata=TRANSIENT, repr=False)
    numerical_derivative: Any = attrs.field(default=None, metadata=TRANSIENT, repr=False)
    delta_theta: tuple[float, ...] | None = attrs.field(default=None, converter=_optional_theta)
    n_s: int = 1000
    n_d: int = 1000
    fresh: bool = True
    seed: int | None = None
    flatten: bool = False
    _fixed: dict[str, torch.Tensor] | None = attrs.field(init=False, default=None, repr=False,
                                                         eq=False)
    _n_draws: int = attrs.field(init=False, default=0, repr=False, eq=False)
    _generator: torch.Generator | None = attrs.field(init=False, default=None, repr=False,
                                                     eq=False)

    def __attrs_post_init__(self) -> None:
        p = self.n_params
        given = self.fiducial is not None
        if self.simulator is None and not given:
            raise ValidationError("SimulationSampler needs a `simulator` or `fiducial` arrays "
                                  "(with `derivative` or `numerical_derivative`).")
        if self.simulator is not None and given:
            raise ValidationError("Give either a `simulator` or `fiducial` arrays, not both.")
        if self.simulator is not None and not callable(self.simulator):
            raise ValidationError(f"`simulator` must be callable as simulator(generator, theta), "
                                  f"got {type(self.simulator).__name__}.")
        numerical = (self.numerical_derivative is not None if given
                     else self.derivative_mode == "numerical")
        if numerical:
            if self.delta_theta is None or len(self.delta_theta) != p:
                raise ValidationError(
                    f"Numerical derivatives need `delta_theta` with one step per parameter "
                    f"({p}), got {self.delta_theta!r}.")
            if any(d <= 0 for d in self.delta_theta):
                raise ValidationError(f"`delta_theta` must be positive, got {self.delta_theta}.")
        if given:
            if (self.derivative is None) == (self.numerical_derivative is None):
                raise ValidationError("With `fiducial` arrays give exactly one of `derivative` "
                                      "(n_d, p, ...) and `numerical_derivative` (n_d, 2, p, ...).")
            self._check_arrays()
        else:
            for name in ("n_s", "n_d"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                    raise ValidationError(f"`{name}` must be an integer ≥ 2, got {value!r}.")
            if self.n_d > self.n_s:
                raise ValidationError(f"`n_d` = {self.n_d} exceeds `n_s` = {self.n_s}: derivatives "
                                      "are taken of the first n_d fiducial simulations.")

    @property
    def n_params(self) -> int:
        return len(self.theta_fid)

    @property
    def numerical(self) -> bool:
        if self.fiducial is not None:
            return self.numerical_derivative is not None
        return self.derivative_mode == "numerical"

    # ------------------------------------------------------------------ fixed arrays

    def _check_arrays(self) -> None:
        p = self.n_params
        fid = as_tensor(self.fiducial, "fiducial", ndim=None)
        if fid.ndim < 2:
            raise ValidationError(f"`fiducial` must have shape (n_s, ...) with at least 2 "
                                  f"dimensions, got {tuple(fid.shape)}.")
        shape = tuple(fid.shape[1:])
        arrays = {FIDUCIAL: fid}
        if self.derivative is not None:
            der = as_tensor(self.derivative, "derivative", ndim=None)
            want, key = (p, *shape), DERIVATIVE
        else:
            der = as_tensor(self.numerical_derivative, "numerical_derivative", ndim=None)
            want, key = (2, p, *shape), NUMERICAL
        if der.ndim != len(want) + 1 or tuple(der.shape[1:]) != want:
            layout = "(n_d, p, ...)" if key == DERIVATIVE else "(n_d, 2, p, ...)"
            raise ValidationError(
                f"`{key}` must have shape {layout} = (n_d, {', '.join(map(str, want))}) for "
                f"{p} parameter(s) and simulations of shape {shape}, got {tuple(der.shape)}.")
        if key == DERIVATIVE and der.shape[0] > fid.shape[0]:
            raise ValidationError(
                f"`derivative` has {der.shape[0]} rows but `fiducial` only {fid.shape[0]}: "
                "derivative[i] is ∂d/∂θ of fiducial[i], so n_d ≤ n_s.")
        if fid.shape[0] < 2 or der.shape[0] < 1:
            raise ValidationError(f"Need at least 2 fiducial simulations and 1 derivative, got "
                                  f"{fid.shape[0]} and {der.shape[0]}.")
        arrays[key] = der
        if key == NUMERICAL:
            arrays[DELTA_THETA] = torch.tensor(self.delta_theta)
        self._fixed = self._flattened(arrays)

    def _flattened(self, arrays: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.flatten:
            return arrays
        lead = {FIDUCIAL: 1, DERIVATIVE: 2, NUMERICAL: 3}
        return {k: v.reshape(*v.shape[:lead[k]], -1) if k in lead else v
                for k, v in arrays.items()}

    @property
    def simulation_shape(self) -> tuple[int, ...] | None:
        """Shape of one simulation as given (before ``flatten``), when known."""
        if self.fiducial is not None:
            return tuple(as_tensor(self.fiducial, "fiducial", ndim=None).shape[1:])
        return None

    # ------------------------------------------------------------------ simulator

    def _call(self, generator: torch.Generator, theta: torch.Tensor) -> torch.Tensor:
        """Simulations at parameter rows ``theta`` (n, p) -> (n, *S)."""
        try:
            if self.batched:
                out = self.simulator(generator, theta)
            else:  # slow path: one call per simulation
                out = torch.stack([torch.as_tensor(self.simulator(generator, t)) for t in theta])
        except ValidationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user function; report it with context
            how = "theta of shape (n, p)" if self.batched else "theta of shape (p,)"
            raise ValidationError(
                f"`simulator(generator, theta)` failed when called with {how}: "
                f"{type(exc).__name__}: {exc}. With batched=False it is called once per "
                "simulation.") from exc
        if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != theta.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValidationError(
                f"`simulator` must return a tensor of shape (n, ...) with n = {theta.shape[0]} "
                f"rows of theta (batched={self.batched}), got {got}.")
        return out

    def _theta_rows(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.theta_fid, device=device).expand(n, -1).clone()

    def simulate(self, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        """Draw one set of simulations (and derivatives) with ``generator``."""
        start = generator.get_state()
        theta = self._theta_rows(self.n_d, device)
        batch: dict[str, torch.Tensor] = {}
        if self.numerical:
            delta = torch.tensor(self.delta_theta, device=device)
            sides = []
            for sign in (-0.5, 0.5):
                per_param = []
                for k in range(self.n_params):
                    generator.set_state(start)  # seed-matched with the fiducial rows
                    shifted = theta.clone()
                    shifted[:, k] += sign * delta[k]
                    per_param.append(self._call(generator, shifted))
                sides.append(torch.stack(per_param, 1))
            batch[NUMERICAL] = torch.stack(sides, 1).detach()  # (n_d, 2, p, *S)
            batch[DELTA_THETA] = delta
            generator.set_state(start)
            head = self._call(generator, theta).detach()
        else:
            tangents = []
            for k in range(self.n_params):
                generator.set_state(start)  # every pass replays the same random numbers
                direction = torch.zeros_like(theta)
                direction[:, k] = 1.0
                with fwAD.dual_level():
                    out = self._call(generator, fwAD.make_dual(theta, direction))
                    head, tangent = fwAD.unpack_dual(out)
                    if tangent is None:
                        raise ValidationError(
                            "The simulator's output does not depend on theta through torch "
                            "operations (forward-mode autograd found no derivative). Write it "
                            "with differentiable torch ops, or use derivative_mode='numerical' "
                            "with delta_theta.")
                    tangents.append(tangent.detach().clone())
                head = head.detach().clone()
            batch[DERIVATIVE] = torch.stack(tangents, 1)  # (n_d, p, *S)
        rest = self.n_s - self.n_d
        tail = [self._call(generator, self._theta_rows(rest, device)).detach()] if rest else []
        batch[FIDUCIAL] = torch.cat([head, *tail])
        # NaN / inf check: a host sync, so on an accelerator only for the first draw (later
        # non-finite values still stop training, as a non-finite loss at the epoch's end)
        if device.type == "cpu" or self._n_draws == 0:
            self._check_finite(batch)
        self._n_draws += 1
        return self._flattened(batch)

    @staticmethod
    def _check_finite(batch: dict[str, torch.Tensor]) -> None:
        for key, value in batch.items():
            if not bool(torch.isfinite(value).all()):
                raise ValidationError(
                    f"The simulator produced non-finite values (NaN or inf) in `{key}` "
                    f"({int((~torch.isfinite(value)).sum())} entries). Check the simulator at "
                    "theta_fid (and at theta_fid ± delta_theta/2 for numerical derivatives).")

    # ------------------------------------------------------------------ sampler API

    def setup(self, state: TrainState) -> None:
        if self.simulator is None:
            self._fixed = {k: v.to(state.device) for k, v in self._fixed.items()}
            return
        if self.seed is not None:
            self._generator = torch.Generator(device=state.device)
            self._generator.manual_seed(self.seed)
        if not self.fresh:
            self._fixed = self.simulate(self._generator or state.generator, state.device)

    def num_batches(self, state: TrainState) -> int:
        return 1

    def batches(self, state: TrainState) -> Iterator[dict[str, torch.Tensor]]:
        if self._fixed is not None and (self.simulator is None or not self.fresh):
            yield self._fixed
        elif self.simulator is not None and not self.fresh:
            self.setup(state)
            yield self._fixed
        else:
            yield self.simulate(self._generator or state.generator, state.device)


__all__ = [
    "FisherLoss", "FisherStatistics", "SimulationSampler", "as_theta", "fisher_statistics",
    "imnn_objective", "network_summaries", "regularisation_rate", "SINGULAR_RCOND",
    "FIDUCIAL", "DERIVATIVE", "NUMERICAL", "DELTA_THETA",
]
