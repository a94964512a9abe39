"""Critics of the MI estimators: model blocks whose modules take ``(x, y)``.

* :class:`JointCritic` (``joint_critic``) t(x, y) = MLP([x, y]);
* :class:`SeparableCritic` (``separable_critic``) t(x, y) = h(x)ᵀ g(y) / temperature;
* :class:`LinearCritic` (``linear_critic``) t(x, y) = xᵀ W y + aᵀx + bᵀy + c — the linear
  discriminator on the features (x, y, x ⊗ y): it sees linear dependence only.

Both modules map ``(n, x_dim), (n, y_dim) -> (n,)`` and also offer ``pairwise(x, y) ->
(n, m)`` (all pairs, for in-batch negatives); the separable one exposes ``embed(x, y)`` so the
final estimator scores all pairs with one matrix product per chunk.  A critic of a plugin needs
only ``forward(x, y) -> (n,)``; ``pairwise`` is emulated when missing.  The recipes fill
``x_dim`` / ``y_dim`` from the data.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import nn

from ..base import not_implemented
from ..errors import ValidationError
from ..models import ACTIVATIONS, MLP, Model
from ..validators import positive, positive_int
from .fast_mlp import (FORWARD_BLOCK_ROWS, MLPPlan, blocked_forward, hand_parameters,
                       mlp_plan, plan_forward, plan_usable)


def _init_normal(module: nn.Module, std: float | None) -> None:
    """Weights ~ N(0, std²), biases 0 (the MINE notebook's initialisation); None keeps torch's."""
    if std is None:
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)


class _PlainMLPRunner(nn.Module):
    """Runs its MLP submodules through :func:`~.fast_mlp.plan_forward` when they are plain
    (Linear and activation layers): the modules' own ops without their ``__call__``, the same
    values and gradients (to float rounding where the first layer is narrow, see
    :data:`~.fast_mlp.NARROW_INPUT`); ``fast=False``, or anything else, calls the module.  The
    parameters and ``state_dict`` are the submodules' either way.  Without a graph (grad mode
    off) and with more than :data:`~.fast_mlp.FORWARD_BLOCK_ROWS` rows on the CPU — validation,
    the final estimate — in row blocks (:func:`~.fast_mlp.blocked_forward`: the same values,
    faster)."""

    def __init__(self, fast: bool = True) -> None:
        super().__init__()
        self.fast = fast
        self._plans: dict[str, tuple[nn.Module, tuple, MLPPlan | None]] = {}

    def _run(self, name: str, z: torch.Tensor) -> torch.Tensor:
        net = self._modules[name]
        plan = self._plan_of(name, net) if self.fast else None
        if not plan_usable(plan):
            return net(z)
        if len(z) > FORWARD_BLOCK_ROWS and z.dim() == 2 and z.device.type == "cpu" \
                and not torch.is_grad_enabled():
            return blocked_forward(plan, z)  # many rows, no graph: in the core's cache
        return plan_forward(plan, z)

    def _plan_of(self, name: str, net: nn.Module) -> MLPPlan | None:
        """The plan of ``net``, read again when ``net`` or one of its layers was replaced."""
        layers = tuple(net._modules.values())
        cached = self._plans.get(name)
        if cached is None or cached[0] is not net or cached[1] != layers:
            cached = self._plans[name] = (net, layers, mlp_plan(net))
        return cached[2]


class JointCriticNet(_PlainMLPRunner):
    """t(x, y) = net([x, y]):  ``(n, d_x), (n, d_y) -> (n,)``; a plain MLP ``net`` runs
    without ``Module.__call__`` (see :class:`_PlainMLPRunner`)."""

    def __init__(self, net: nn.Module, fast: bool = True) -> None:
        super().__init__(fast)
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._run("net", torch.cat([x, y], -1)).squeeze(-1)

    def hand_plan(self, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[MLPPlan, list[torch.Tensor | None]] | None:
        """``(plan, parameters)`` of ``net`` when ``forward(x, y)``'s gradients may be computed
        by hand (:func:`~.fast_mlp.hand_forward` / :func:`~.fast_mlp.hand_backward`): on the
        CPU (the bounds read their scalars on the host), a plain MLP with no hooks or active
        dropout, every parameter trained and of the inputs' dtype, and inputs that need no
        gradient themselves; else None (use autograd)."""
        if not self.fast or x.requires_grad or y.requires_grad or x.dim() != 2 \
                or y.dim() != 2 or x.device.type != "cpu":
            return None
        plan = self._plan_of("net", self.net)
        if not plan_usable(plan):
            return None
        params = hand_parameters(plan)
        for p in params:
            if p is not None and (not p.requires_grad or p.dtype != x.dtype
                                  or p.dtype != y.dtype or p.device.type != "cpu"):
                return None
        return plan, params

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """All pairs ``(n, d_x), (m, d_y) -> (n, m)`` with entry (i, j) = t(x_i, y_j)."""
        n, m = len(x), len(y)
        xx = x[:, None, :].expand(n, m, x.shape[1])
        yy = y[None, :, :].expand(n, m, y.shape[1])
        return self._run("net", torch.cat([xx, yy], -1).reshape(n * m, -1)).view(n, m)


class _InnerProductCritic(nn.Module):
    """A critic t(x, y) = h(x)ᵀ g(y) given by ``embed(x, y) -> (h(x), g(y))``: the paired
    scores are row-wise inner products and all pairs are one matrix product."""

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise not_implemented(self, "embed")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hx, gy = self.embed(x, y)
        return (hx * gy).sum(-1)

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hx, gy = self.embed(x, y)
        return hx @ gy.T


class SeparableCriticNet(_InnerProductCritic, _PlainMLPRunner):
    """t(x, y) = h(x)ᵀ g(y) / temperature:  ``(n, d_x), (n, d_y) -> (n,)``."""

    def __init__(self, h: nn.Module, g: nn.Module, temperature: float = 1.0,
                 fast: bool = True) -> None:
        _PlainMLPRunner.__init__(self, fast)
        self.h, self.g, self.temperature = h, g, temperature

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run("h", x) / self.temperature, self._run("g", y)


class LinearCriticNet(_InnerProductCritic):
    """t(x, y) = xᵀ W y + aᵀx + bᵀy + c:  ``(n, d_x), (n, d_y) -> (n,)``; ``embed`` gives
    h(x) = [W ᵀx, aᵀx + c, 1] and g(y) = [y, 1, bᵀy], so all pairs are one matrix product."""

    def __init__(self, x_dim: int, y_dim: int, init_std: float | None = None) -> None:
        super().__init__()
        # a small random W breaks no symmetry here (the bound is concave in W), but starts the
        # gradient off zero; the linear terms start at zero
        std = 0.01 if init_std is None else init_std
        self.weight = nn.Parameter(torch.randn(x_dim, y_dim) * std)
        self.x_weight = nn.Parameter(torch.zeros(x_dim))
        self.y_weight = nn.Parameter(torch.zeros(y_dim))
        self.bias = nn.Parameter(torch.zeros(()))

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ones_x, ones_y = x.new_ones(len(x), 1), y.new_ones(len(y), 1)
        hx = torch.cat([x @ self.weight, (x @ self.x_weight + self.bias)[:, None], ones_x], 1)
        gy = torch.cat([y, ones_y, (y @ self.y_weight)[:, None]], 1)
        return hx, gy


def _activation(instance, attribute, value) -> None:
    if value not in ACTIVATIONS:
        raise ValidationError(f"`activation` = {value!r} is not a known activation; use one of "
                              f"{sorted(ACTIVATIONS)}.")


def _dropout(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValidationError(f"`dropout` must be a probability in [0, 1), got {value!r}.")


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
    #: dropout after each hidden layer while training (off in validation and evaluation)
    dropout: float = attrs.field(default=0.0, validator=_dropout)

    def build(self) -> nn.Module:
        net = MLP(in_dim=self.x_dim + self.y_dim, out_dim=1, hidden_dims=self.hidden_dims,
                  activation=self.activation, dropout=self.dropout).build()
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


@attrs.define
class LinearCritic(Model):
    """Linear critic t(x, y) = xᵀ W y + aᵀx + bᵀy + c (the linear discriminator on the
    features x, y and x ⊗ y).

    ``(n, x_dim), (n, y_dim) -> (n,)``.  It can only see *linear* dependence: on a Gaussian
    with correlation ρ its DV bound is max_w [wρ + ½ ln(1 − w²)] (0.26 nats at ρ = 0.8, truth
    0.51), and on y = x² (uncorrelated, fully dependent) it is ≈ 0.  A joint MLP without hidden
    layers would be linear in [x, y] and could not see any dependence (its DV bound is ≤ 0)."""

    name: ClassVar[str] = "linear_critic"
    x_dim: int = attrs.field(validator=positive_int)
    y_dim: int = attrs.field(validator=positive_int)
    init_std: float | None = attrs.field(default=None, validator=_optional_std)

    def build(self) -> nn.Module:
        return LinearCriticNet(self.x_dim, self.y_dim, self.init_std)


__all__ = ["JointCritic", "SeparableCritic", "LinearCritic", "JointCriticNet",
           "SeparableCriticNet", "LinearCriticNet"]
