"""The learnable feature weights of the DII (the ``weights`` model slot).

Feature-weight model protocol: the built module exposes ``weights`` (n_params,), the
learnt parameter (saved and loaded), and ``feature_weights()`` (D,), the weight of every
feature with gradient (groups expanded) — what the loss hands to the distance of space A.
What the DII recipe reports as ``weights_`` (and records per epoch) is
:func:`recorded_weights`: |feature_weights()| where it has one entry per entry of
``weights`` (a reparametrised w = exp θ reports exp θ, not θ), else (groups) |weights|.
A constraint after the optimizer step (rescaling, proximal l1) is the module's
``after_optimizer_step(lr=, state=)``, which the phase calls.  For ``select_features`` the
model block must also accept ``params_init`` and ``l1_strength``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import attrs
import numpy as np
import torch
from torch import nn

from ..callbacks import Callback
from ..data import DEFAULT_DTYPE
from ..errors import NumericalError, ValidationError
from ..models import Model
from ..state import TrainState
from ..validators import non_negative, positive_int

#: default initial weight of every feature (DADApy's default params_init)
WEIGHT_INIT = 0.1

def weights_unit(weights: torch.Tensor | None) -> float:
    """The power of two nearest rms(weights) / :data:`WEIGHT_INIT` (1.0 for the default
    weights, all-zero or non-finite ones).  The DII depends on the weights only up to a common
    factor, so the recipe folds this into the unit of A's distance: initial weights of 1e-8
    then train as the default 0.1 do (exactly, by a power of two) instead of sinking the
    distances under the λ floor."""
    if weights is None or weights.numel() == 0:
        return 1.0
    rms = weights.detach().to(torch.float64).square().mean().sqrt().item()
    if not math.isfinite(rms) or rms <= 0:
        return 1.0
    return float(2.0 ** round(math.log2(rms / WEIGHT_INIT)))


class FeatureWeightsModule(nn.Module):
    """Learnable weights ``w`` (n_params,) expanded to the D features by ``groups``.

    ``forward(x) = x ⊙ w_expanded``.  After each optimizer step the weights are rescaled to
    their initial norm; with ``l1_strength`` a soft threshold lr × strength is applied between
    two rescalings (proximal l1, as DADApy does).
    """

    def __init__(self, init: torch.Tensor, groups: tuple[int, ...] | None, l1_strength: float):
        super().__init__()
        self.weights = nn.Parameter(init.clone())
        self.register_buffer("norm_init", init.norm())
        repeats = torch.tensor(groups if groups is not None else [1] * init.numel())
        self.register_buffer("feature_index", torch.repeat_interleave(
            torch.arange(init.numel()), repeats))
        self.l1_strength = float(l1_strength)
        self.grouped = groups is not None

    def feature_weights(self) -> torch.Tensor:
        """Weights per feature (D,), with gradient."""
        return self.weights[self.feature_index] if self.grouped else self.weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.feature_weights()

    @torch.no_grad()
    def after_optimizer_step(self, lr: float, state: TrainState | None = None) -> None:
        w = self.weights
        w.mul_(self.norm_init / w.norm())
        if self.l1_strength > 0:
            threshold = lr * self.l1_strength
            w.copy_(torch.sign(w) * (w.abs() - threshold).clamp_min(0.0))
            w.mul_(self.norm_init / w.norm())  # all zero -> NaN, reported after the epoch


def _groups(instance, attribute, value) -> None:
    if value is None:
        return
    if not value or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1
                        for g in value):
        raise ValidationError(f"`groups` must hold positive integers, got {list(value)}.")
    if sum(value) != instance.n_features:
        raise ValidationError(
            f"`groups` {list(value)} covers {sum(value)} features but the data has "
            f"{instance.n_features}; the group sizes must add up to the number of features."
        )


def _params_init(instance, attribute, value) -> None:
    if value is None:
        return
    n_params = instance.n_features if instance.groups is None else len(instance.groups)
    if len(value) != n_params:
        raise ValidationError(
            f"`params_init` has {len(value)} entries but {n_params} weights are learned "
            "(one per feature, or one per group when `groups` is set)."
        )
    if not all(math.isfinite(v) for v in value) or not any(v != 0 for v in value):
        raise ValidationError(
            f"`params_init` must be finite and not all zero, got {list(value)}."
        )


@attrs.define
class FeatureWeights(Model):
    """One learnable weight per feature (or per group of features): ``(n, D) -> (n, D)``.

    ``params_init`` defaults to 0.1 for every weight; ``groups`` = sizes of consecutive groups
    of features sharing one weight; ``l1_strength`` is applied as a proximal soft threshold.
    """

    name: ClassVar[str] = "feature_weights"
    n_features: int = attrs.field(validator=positive_int)
    groups: tuple[int, ...] | None = attrs.field(
        default=None, converter=lambda g: None if g is None else tuple(int(v) for v in g),
        validator=_groups)
    params_init: tuple[float, ...] | None = attrs.field(
        default=None, converter=lambda p: None if p is None else tuple(float(v) for v in p),
        validator=_params_init)
    l1_strength: float = attrs.field(default=0.0, validator=non_negative)

    @property
    def n_params(self) -> int:
        return self.n_features if self.groups is None else len(self.groups)

    def initial_weights(self) -> torch.Tensor:
        if self.params_init is None:
            return torch.full((self.n_params,), WEIGHT_INIT, dtype=DEFAULT_DTYPE)
        return torch.tensor(self.params_init, dtype=DEFAULT_DTYPE)

    def build(self) -> FeatureWeightsModule:
        return FeatureWeightsModule(self.initial_weights(), self.groups, self.l1_strength)


def recorded_weights(module: nn.Module) -> torch.Tensor:
    """The weights a DII reports (``weights_``, ``weights_history_``), detached and flat
    (n_params,): |``feature_weights()``| where it has the shape of the module's ``weights``
    — every model without groups; for the built-in it is ``weights`` itself —, else
    |``weights``| (one per group).  A plugin model whose parameter is not the weight
    (w = exp θ) so reports its weights, not |θ| (author26-11: the informative features had
    the *smallest* |θ|)."""
    weights = module.weights
    with torch.no_grad():
        features = module.feature_weights()
    if isinstance(features, torch.Tensor) and features.shape == weights.shape:
        return features.detach().abs().reshape(-1)  # (a learnt map's matrix: flattened)
    return weights.detach().abs().reshape(-1)


class FeatureWeightsHistory(Callback):
    """Records :func:`recorded_weights` at the start and after every epoch.

    One host transfer per epoch.  ``rows`` is a list of (n_params,) numpy arrays.
    """

    def __init__(self, model: str = "weights") -> None:
        self.model = model
        self.rows: list[np.ndarray] = []

    def _record(self, state: TrainState) -> None:
        self.rows.append(recorded_weights(state.models[self.model]).cpu().numpy().copy())

    def on_phase_start(self, state, phase):
        self._record(state)

    def on_epoch_end(self, state, metrics):
        self._record(state)


# ----------------------------------------------------------------------------- sampler



def check_weights_finite(weights: torch.Tensor, hint: Callable[[], str]) -> None:
    """Raise a :class:`NumericalError` with ``hint()`` when the weights are NaN or all zero."""
    if not bool(torch.isfinite(weights).all()) or not bool((weights != 0).any()):
        raise NumericalError(hint())
