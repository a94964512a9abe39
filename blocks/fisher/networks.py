"""Summary networks for IMNNs: the default model block and its whitening step.

:class:`SummaryMLP` (registered as model ``"summary_mlp"``) builds a :class:`SummaryNetwork`:
``Flatten`` then a Linear/activation stack, ``(n, *S) -> (n, out_dim)``.  Its declared
data-dependent initialisation, :meth:`SummaryNetwork.on_phase_start`, maps the output to zero
mean and identity covariance on a sample of fiducial simulations (the global
:data:`FIDUCIAL_SAMPLE` that the IMNN recipe provides), once: then Λ₂ ≈ 0 at the start and
training spends no iterations fixing the scale of the summaries.  The phase finds the step by
walking ``module.modules()``, so it also runs when a user wraps the network.

Any model block (or ``torch.nn.Module``) mapping ``(n, *S)`` to ``(n, n_summaries)`` can take
its place; one that wants the same start calls :func:`whiten_output_layer` from its own
``on_phase_start(state)`` with ``state.globals[FIDUCIAL_SAMPLE]``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import nn

from ..errors import ValidationError
from ..models import MLP, Model, _activation_name, _hidden, _positive_dim

#: the global holding fiducial simulations for data-dependent initialisation (the IMNN
#: recipe stores the fiducial rows of its first training draw there, before training)
FIDUCIAL_SAMPLE = "fiducial_sample"


@torch.no_grad()
def whiten_output_layer(model: nn.Module, fiducial: torch.Tensor,
                        last: nn.Linear | None = None) -> bool:
    """Rescale the output layer ``last`` (default: the last child of a Sequential, when it is
    a ``Linear`` with bias) so that ``model``'s output has zero mean and identity covariance
    on ``fiducial`` (W ← L⁻¹W, b ← L⁻¹(b − μ) with C = LLᵀ).  Returns whether it applied."""
    if last is None:
        last = list(model.children())[-1] if isinstance(model, nn.Sequential) else None
    if not isinstance(last, nn.Linear) or last.bias is None:
        return False
    was_training = model.training
    model.eval()
    s = model(fiducial.to(last.weight.device)).double()
    model.train(was_training)
    mu = s.mean(0)
    C = torch.cov(s.T).reshape(s.shape[1], s.shape[1])
    L, info = torch.linalg.cholesky_ex(C)
    if int(info) != 0:
        return False
    eye = torch.eye(len(mu), dtype=torch.float64, device=mu.device)
    L_inv = torch.linalg.solve_triangular(L, eye, upper=False)
    last.weight.copy_((L_inv @ last.weight.double()).to(last.weight.dtype))
    last.bias.copy_((L_inv @ (last.bias.double() - mu)).to(last.bias.dtype))
    return True


class SummaryNetwork(nn.Sequential):
    """A Sequential summary network with a declared whitening step (see the module
    docstring).  ``whitened`` is a buffer: saved with the weights, so a loaded or re-fitted
    network is not whitened again."""

    def __init__(self, *layers: nn.Module, whiten: bool = True,
                 sample_key: str = FIDUCIAL_SAMPLE) -> None:
        super().__init__(*layers)
        self.whiten = whiten
        self.sample_key = sample_key
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))

    def on_phase_start(self, state) -> None:
        if not self.whiten or bool(self.whitened):
            return
        sample = state.globals.get(self.sample_key)
        if sample is None:
            raise ValidationError(
                f"The summary network whitens its output on the global {self.sample_key!r} "
                f"(fiducial simulations), which this routine does not have (it has "
                f"{sorted(state.globals)}). The IMNN recipe provides it; elsewhere set "
                "whiten=false.")
        whiten_output_layer(self, sample)
        self.whitened.fill_(True)


@attrs.define
class SummaryMLP(Model):
    """IMNN summary network ``(n, *S) -> (n, out_dim)``: ``Flatten``, then Linear layers of
    widths ``hidden_dims`` with ``activation`` between them and a linear output; ``whiten``
    starts it from whitened summaries (C = I on the fiducial sample, see the module
    docstring).  ``in_dim`` = the number of values of one simulation and ``out_dim`` =
    ``n_summaries`` are filled by the IMNN recipe."""

    name: ClassVar[str] = "summary_mlp"
    in_dim: int = attrs.field(validator=_positive_dim)
    out_dim: int = attrs.field(validator=_positive_dim)
    hidden_dims: tuple[int, ...] = attrs.field(default=(128, 128, 128), converter=tuple,
                                              validator=_hidden)
    activation: str = attrs.field(default="leaky_relu", validator=_activation_name)
    whiten: bool = True

    def build(self) -> SummaryNetwork:
        stack = MLP(in_dim=self.in_dim, out_dim=self.out_dim, hidden_dims=self.hidden_dims,
                    activation=self.activation).build()
        return SummaryNetwork(nn.Flatten(), *stack, whiten=self.whiten)


__all__ = ["FIDUCIAL_SAMPLE", "SummaryMLP", "SummaryNetwork", "whiten_output_layer"]
