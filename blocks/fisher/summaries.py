"""Summaries of a simulation batch and their θ-derivatives.

``s = f(d)`` for the fiducial simulations and ``∂s/∂θ = J_f(d) ∂d/∂θ`` for the derivative
rows (forward-mode AD, one primal pass vectorised over the p tangents; a written-out fast path
for plain Linear/activation stacks, a leading ``Flatten`` included), or
``(f(d⁺) − f(d⁻))/δθ`` for seed-matched numerical derivatives; all of it optionally
``chunk_size`` simulations at a time.
"""

from __future__ import annotations

import warnings

import attrs
import torch
from torch.func import jvp, vmap

from ..errors import ContractError
from .sampler import JIT_SCRIPT_DEPRECATION
from .statistics import DELTA_THETA, DERIVATIVE, FIDUCIAL, NUMERICAL

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


def _is_flatten(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Flatten) and module.start_dim == 1 \
        and module.end_dim == -1


def _is_plain_mlp(model: torch.nn.Module) -> bool:
    """A Sequential of Linear layers and known activations (optionally a leading Flatten)."""
    if not isinstance(model, torch.nn.Sequential) or len(model) == 0:
        return False
    layers = list(model)[1:] if _is_flatten(model[0]) else list(model)
    return all(isinstance(m, (torch.nn.Linear, *_FAST_ACTIVATIONS))
               or (isinstance(m, torch.nn.GELU) and m.approximate == "none") for m in layers)


def _mlp_jvp(model: torch.nn.Sequential, x: torch.Tensor, dx: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-mode derivative of a Linear/activation stack written out: the primal
    ``h`` (n, d) goes through each layer, the p tangents ``t`` (n, p, d) through its linear
    part (no bias) scaled by the activation's slope at ``h``.  Same numbers as ``jvp``,
    without the per-call overhead of the functional transforms."""
    h, t = x, dx
    for module in model:
        if isinstance(module, torch.nn.Flatten):  # (n, *S) -> (n, D); tangents (n, p, D)
            h, t = h.flatten(1), t.flatten(2)
        elif isinstance(module, torch.nn.Linear):
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
    if _is_plain_mlp(model) and (x.ndim == 2 or _is_flatten(model[0])):
        return _mlp_jvp(model, x, dx)
    with warnings.catch_warnings():
        # torch.func.jvp scripts torch's decompositions on first use and warns that
        # torch.jit.script is deprecated: torch's concern, not the network's (under
        # -W error::DeprecationWarning the first fit of a process with a custom network died
        # of it, author26-7; the simulator's forward AD filters the same, sampler.py)
        warnings.filterwarnings("ignore", JIT_SCRIPT_DEPRECATION, DeprecationWarning)
        return vmap(lambda tangent: jvp(model, (x,), (tangent,)), in_dims=1,
                    out_dims=(None, 1), randomness="same")(dx)


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
    elif NUMERICAL not in batch or DELTA_THETA not in batch:
        raise ContractError(
            f"A simulation batch needs `{FIDUCIAL}` and either `{DERIVATIVE}` (n_d, p, ...) or "
            f"`{NUMERICAL}` (n_d, 2, p, ...) with `{DELTA_THETA}`; this one has "
            f"{sorted(batch)}. Use a sampler that yields simulation batches (\"simulations\").")
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



__all__ = ["network_summaries"]
