"""Gaussian Fisher statistics of summaries and the IMNN objective.

From ``n_s`` fiducial summaries ``s_i`` and the θ-derivatives of ``n_d`` of them:

    μ = mean_i s_i,   C = cov(s) (unbiased, 1/(n_s − 1)),
    ∂μ/∂θ = mean_i ∂s_i/∂θ,   F = (∂μ/∂θ)ᵀ C⁻¹ (∂μ/∂θ)  (p × p).

The batch keys of simulation batches are named here (``FIDUCIAL`` ...), see
:mod:`infoblocks.blocks.fisher`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import torch

from ..data import check_positive
from ..errors import NumericalError, ValidationError

#: batch key: simulations at θ_fid, (n_s, *S)
FIDUCIAL = "fiducial"
#: batch key: ∂d/∂θ of the first n_d fiducial simulations, (n_d, p, *S)
DERIVATIVE = "derivative"
#: batch key: seed-matched simulations at θ_fid ∓ δθ_k/2, (n_d, 2, p, *S)
NUMERICAL = "numerical_derivative"
#: batch key: the finite-difference steps δθ, (p,)
DELTA_THETA = "delta_theta"

#: the metrics the Fisher loss reports (``det_F`` is what IMNN validation tracks)
FISHER_METRICS = frozenset({"det_F", "log_det_F", "det_C", "det_invC", "Lambda2", "r"})

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


def fisher_statistics(summaries: torch.Tensor, derivatives: torch.Tensor,
                      reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> FisherStatistics:
    """Statistics from summaries ``(n_s, m)`` and summary derivatives ``(n_d, p, m)``.

    ``reduce`` (under torch.distributed, ``state.dist.differentiable_sum``): each process
    holds a shard of the simulations; the counts, sums Σs and Σ∂s/∂θ and then the centred
    sum Σ(s − μ)(s − μ)ᵀ are summed over the processes (two all-reduces, autograd flowing back)
    before they are combined, so F is the Fisher matrix of the whole set — two passes, as in
    one process, rather than Σssᵀ − nμμᵀ, which loses digits when |μ| ≫ σ."""
    if reduce is None:
        n_s = summaries.shape[0]
        mu = summaries.mean(0)
        centred = summaries - mu
        C = centred.T @ centred / (n_s - 1)
        dmu_dtheta = derivatives.mean(0).T  # (m, p)
    else:
        m, p = summaries.shape[1], derivatives.shape[1]
        counts = summaries.new_tensor([summaries.shape[0], derivatives.shape[0]])
        sums = reduce(torch.cat([counts, summaries.sum(0), derivatives.sum(0).reshape(-1)]))
        n_s, n_d = sums[0], sums[1]
        mu = sums[2:2 + m] / n_s
        dmu_dtheta = (sums[2 + m:] / n_d).reshape(p, m).T  # (m, p)
        centred = summaries - mu
        C = reduce(centred.T @ centred) / (n_s - 1)
    invC = torch.linalg.inv_ex(C)[0]  # no raise: a singular C surfaces as non-finite metrics
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


# ---------------------------------------------------------------------- parameter vectors

def as_theta(value: Any, name: str = "theta_fid") -> tuple[float, ...]:
    """Parameter values as a tuple of finite floats (``theta_fid``, ``delta_theta``).

    A tuple of finite floats is returned as it is (so that ``sklearn.base.clone``, which
    checks that the constructor keeps its arguments, works on the recipes that use it)."""
    if isinstance(value, tuple) and value and all(type(v) is float and math.isfinite(v)
                                                  for v in value):
        return value
    try:
        out = tuple(float(v) for v in (value if hasattr(value, "__iter__") else [value]))
    except (TypeError, ValueError):
        raise ValidationError(f"`{name}` must be a sequence of numbers, got {value!r}.") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ValidationError(f"`{name}` must be a non-empty sequence of finite numbers, "
                              f"got {value!r}.")
    return out


def optional_theta(value: Any) -> tuple[float, ...] | None:
    """:func:`as_theta`, or None."""
    return None if value is None else as_theta(value)


__all__ = ["FIDUCIAL", "DERIVATIVE", "NUMERICAL", "DELTA_THETA", "FISHER_METRICS",
           "SINGULAR_RCOND", "DERIVATIVE_MODES", "FisherStatistics", "fisher_statistics",
           "imnn_objective", "regularisation_rate", "as_theta", "optional_theta"]
