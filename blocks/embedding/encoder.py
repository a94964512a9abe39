"""The embedding network: an MLP behind a fixed input standardisation, so that the unit of the
data does not change what the network learns."""

from __future__ import annotations

from typing import ClassVar

import attrs
from attrs.validators import optional
import torch
from torch import nn

from ..errors import ValidationError
from ..models import MLP, Model, _activation_name, _hidden, _positive_dim, training_rows
from ..numerics import pca_axes


class StandardizedInput(nn.Module):
    """``(n, in_dim) -> (n, dims)``: x ↦ (x − mean) V / s, fitted once on the training data.

    V: the ``dims`` leading principal axes (the identity without ``pca_dims``); s: the root
    mean square of the centred (projected) entries, one number, so the geometry of the data is
    kept and X, X / 16 and 1000 · X reach the network as the same numbers.  Not trained;
    ``on_phase_start(state)`` fits it from ``state.dataset[key]`` (a sample of rows read from
    disk) at the start of the first phase that trains the model; saved with the weights."""

    def __init__(self, in_dim: int, dims: int | None, key: str = "data") -> None:
        super().__init__()
        self.key, self.project = key, dims is not None
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("axes", torch.eye(in_dim, dims) if self.project else torch.empty(0))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x - self.mean
        return (z @ self.axes if self.project else z) / self.scale

    @torch.no_grad()
    def on_phase_start(self, state) -> None:
        if bool(self.fitted):
            return
        x = training_rows(state, self.key, "standardized_mlp's input standardisation"
                          ).to(self.mean)
        if self.project:
            mean, axes = pca_axes(x, self.axes.shape[1])
            self.axes.copy_(axes)
        else:
            mean = x.mean(0)
        self.mean.copy_(mean)
        z = self.forward(x) * self.scale  # centred (projected), unscaled
        rms = z.double().pow(2).mean().sqrt()
        self.scale.fill_(float(rms) if float(rms) > 0 else 1.0)  # constant data: as given
        self.fitted.fill_(True)


class _Standardized(nn.Sequential):
    """``standardize`` then a network; ``on_phase_start`` reaches the standardisation.

    ``front_end`` (fixed, no parameters) and ``network`` (trained) are exposed so that a loss
    can embed cached front-end outputs: ``network(front_end(x))`` is the model."""

    def on_phase_start(self, state) -> None:
        self[0].on_phase_start(state)

    @property
    def front_end(self) -> StandardizedInput:
        return self[0]

    @property
    def network(self) -> nn.Module:
        return self[1]


@attrs.define
class StandardizedMLP(Model):
    """MLP ``(n, in_dim) -> (n, out_dim)`` on standardised inputs (:class:`StandardizedInput`).

    The data are centred, optionally projected on their ``pca_dims`` leading principal axes
    (a cheaper first layer for wide inputs: 784 -> 64), and divided by one scale (the RMS of
    the entries), all fitted once on the training data; then linear layers of widths
    ``hidden_dims`` with ``activation`` between them, the last layer linear.  The embedding of
    X therefore does not depend on X's unit (X, X / 16 and 1000 · X give the same network
    inputs up to rounding); a plain :class:`~infoblocks.blocks.models.MLP` sees raw numbers.
    """

    name: ClassVar[str] = "standardized_mlp"
    in_dim: int = attrs.field(validator=_positive_dim)
    out_dim: int = attrs.field(validator=_positive_dim)
    hidden_dims: tuple[int, ...] = attrs.field(default=(100, 100, 100), converter=tuple,
                                              validator=_hidden)
    activation: str = attrs.field(default="relu", validator=_activation_name)
    pca_dims: int | None = attrs.field(default=None, validator=optional(_positive_dim))

    @pca_dims.validator
    def _check_pca_dims(self, attribute, value) -> None:
        if value is not None and value > self.in_dim:
            raise ValidationError(f"`pca_dims` = {value} exceeds `in_dim` = {self.in_dim}.")

    def build(self) -> nn.Module:
        first = self.in_dim if self.pca_dims is None else self.pca_dims
        network = MLP(in_dim=first, out_dim=self.out_dim, hidden_dims=self.hidden_dims,
                      activation=self.activation).build()
        return _Standardized(StandardizedInput(self.in_dim, self.pca_dims), network)


__all__ = ["StandardizedInput", "StandardizedMLP"]
