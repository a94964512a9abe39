"""Model blocks: configurations that ``build() -> torch.nn.Module``.

A model block is plain data (so a routine can be saved as JSON and rebuilt); any user
``torch.nn.Module`` can be used in its place where a recipe takes a model.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import nn

from .base import Block, not_implemented
from .data import LazyRows
from .errors import ValidationError
from .numerics import pca_axes

#: rows a PCA front end reads from data that stays on disk (LazyRows) to fit its axes
PCA_SAMPLE_ROWS = 65_536

#: activations accepted by name
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU, "softplus": nn.Softplus,
    "identity": nn.Identity,
}


class Model(Block):
    """Base of model builders."""

    kind: ClassVar[str] = "model"

    def build(self) -> nn.Module:
        raise not_implemented(self, "build")


def _positive_dim(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"`{attribute.name}` must be a positive integer, got {value!r}.")


def _hidden(instance, attribute, value) -> None:
    for h in value:
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise ValidationError(f"`hidden_dims` must hold positive integers, got {list(value)}.")


def _activation_name(instance, attribute, value) -> None:
    if value is not None and value not in ACTIVATIONS:
        raise ValidationError(
            f"`{attribute.name}` = {value!r} is not a known activation; use one of "
            f"{sorted(ACTIVATIONS)}."
        )


def training_rows(state, key: str, who: str, fix: str = "") -> torch.Tensor:
    """The dataset array ``key`` that a fixed front end (PCA axes, a standardisation) is
    fitted on: in memory as it is, from disk (:class:`LazyRows`) a subsample of
    :data:`PCA_SAMPLE_ROWS` rows (bounded memory).  ``who`` and ``fix`` word the error when
    the routine has no such array."""
    if state.dataset is None or key not in state.dataset:
        raise ValidationError(f"{who} is fitted on the dataset array {key!r}, which this "
                              f"routine does not have; name the network's input 'data' {fix}"
                              .rstrip() + ".")
    x = state.dataset[key]
    return x.sample(PCA_SAMPLE_ROWS) if isinstance(x, LazyRows) else x


class PCAProjection(nn.Module):
    """Fixed projection ``(n, in_dim) -> (n, dims)`` on the leading principal axes of the
    training data: x ↦ (x − mean) V.  Not trained; ``on_phase_start(state)`` fits it once from
    ``state.dataset[key]`` (at the start of the first phase that trains the model), and the
    mean and axes are saved with the weights."""

    def __init__(self, in_dim: int, dims: int, key: str = "data") -> None:
        super().__init__()
        self.key = key
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("axes", torch.eye(in_dim, dims))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.axes

    @torch.no_grad()
    def on_phase_start(self, state) -> None:
        if bool(self.fitted):
            return
        x = training_rows(state, self.key, "`pca_dims`: the PCA front end",
                          "or drop pca_dims").to(self.mean)
        mean, axes = pca_axes(x, self.axes.shape[1])
        self.mean.copy_(mean)
        self.axes.copy_(axes)
        self.fitted.fill_(True)


class _Projected(nn.Sequential):
    """``projection`` then a network; ``on_phase_start`` reaches the projection."""

    def on_phase_start(self, state) -> None:
        self[0].on_phase_start(state)


@attrs.define
class MLP(Model):
    """Fully connected network ``(n, in_dim) -> (n, out_dim)``.

    Linear layers of widths ``hidden_dims`` with ``activation`` between them; the last layer
    is linear unless ``output_activation`` is given.  ``pca_dims`` = k puts a fixed projection
    on the k leading principal axes of the training data in front (:class:`PCAProjection`,
    fitted when training starts): a cheaper first layer for wide inputs (784 -> 100).
    """

    name: ClassVar[str] = "mlp"
    in_dim: int = attrs.field(validator=_positive_dim)
    out_dim: int = attrs.field(validator=_positive_dim)
    hidden_dims: tuple[int, ...] = attrs.field(default=(100, 100, 100), converter=tuple,
                                              validator=_hidden)
    activation: str = attrs.field(default="relu", validator=_activation_name)
    output_activation: str | None = attrs.field(default=None, validator=_activation_name)
    dropout: float = 0.0
    #: BatchNorm1d after each hidden layer (per-rank statistics under torchrun: a warning)
    batch_norm: bool = False
    pca_dims: int | None = attrs.field(default=None)

    @pca_dims.validator
    def _check_pca_dims(self, attribute, value) -> None:
        if value is not None:
            _positive_dim(self, attribute, value)
            if value > self.in_dim:
                raise ValidationError(f"`pca_dims` = {value} exceeds `in_dim` = {self.in_dim}.")

    def build(self) -> nn.Module:
        layers: list[nn.Module] = []
        first = self.in_dim if self.pca_dims is None else self.pca_dims
        widths = [first, *self.hidden_dims]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers.append(nn.Linear(w_in, w_out))
            if self.batch_norm:
                layers.append(nn.BatchNorm1d(w_out))
            layers.append(ACTIVATIONS[self.activation]())
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
        layers.append(nn.Linear(widths[-1], self.out_dim))
        if self.output_activation is not None:
            layers.append(ACTIVATIONS[self.output_activation]())
        if self.pca_dims is not None:
            return _Projected(PCAProjection(self.in_dim, self.pca_dims), nn.Sequential(*layers))
        return nn.Sequential(*layers)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["ACTIVATIONS", "Model", "MLP", "PCAProjection", "count_parameters"]
