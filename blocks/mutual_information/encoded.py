"""An MI bound between a model's output and a field of any batch: ``encoded_mi``.

The MI family's bounds score the batch fields ``x`` and ``y`` of their own samplers. This
loss brings a bound into another family's phase: it encodes ``batch[input]`` with ``model``
and lets its ``bound`` block score the pairs (code_i, ``batch[target]``_i) against in-batch
negatives (code_i with every other item's target). In a ``compound`` beside UMAP's
``relation`` loss it gives an encoder an MI term towards a label (or any array the dataset
holds); beside IMNN's ``fisher`` loss, an MI term on the summaries.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import torch

from ..base import block_field
from ..errors import ContractError, ValidationError
from ..losses import Loss, LossOutput, get_model
from ..validators import positive_int


@attrs.define
class EncodedMILoss(Loss):
    """−bound(model(batch[input]), batch[target]), the bound over in-batch negatives.

    ``bound``: an MI bound block (``infonce_loss`` by default; its ``critic`` names the critic
    model, ``x_dim`` = the model's output width, ``y_dim`` = the target's); ``classes``: the
    target holds class indices, scored one-hot with this many classes; ``items``: the batch
    key of item ids — a batch that names an item more than once (UMAP's edge batches embed
    sources, targets and negatives) counts each item once, since a repeated item would be its
    own negative.  Reports ``mi`` (the bound on the batch).  One process only: under torchrun
    the in-batch negatives would be the rank's rows alone."""

    name: ClassVar[str] = "encoded_mi"
    reports: ClassVar[frozenset[str]] = frozenset({"mi"})
    target: str = "labels"
    model: str = "main"
    input: str = "data"
    bound: Any = block_field("loss", default="infonce_loss")
    classes: int | None = attrs.field(default=None, validator=optional(positive_int))
    items: str | None = "items"

    def required_fields(self):
        return frozenset({self.input, self.target})

    def required_models(self):
        return frozenset({self.model}) | self.bound.required_models()

    def on_phase_start(self, state):
        if getattr(self.bound, "critic", None) == self.model:
            raise ContractError(
                f"encoded_mi: its bound {self.bound.name!r} scores pairs with the critic "
                f"{self.model!r}, the encoder itself, which cannot score (code, target) pairs; "
                "give the bound a critic model of its own: bound = { name = \"infonce_loss\", "
                "critic = \"critic\" } with [models.critic] a critic (e.g. name = "
                "\"separable_critic\").")
        self.bound.on_phase_start(state)

    def _first_of_each_item(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.items is None or self.items not in batch:
            return None
        ids = batch[self.items]
        unique, inverse = torch.unique(ids, return_inverse=True)
        if len(unique) == len(ids):
            return None
        position = torch.arange(len(ids), device=ids.device)
        first = torch.full((len(unique),), len(ids), dtype=position.dtype, device=ids.device)
        return first.scatter_reduce(0, inverse, position, reduce="amin")

    def __call__(self, batch, models, state):
        if state is not None and state.dist.active:
            raise ValidationError(
                "encoded_mi scores in-batch negatives within one process; under torchrun each "
                "rank would see only its shard's items. Run this routine in one process.")
        x, target = batch[self.input], batch[self.target]
        if len(x) != len(target):
            raise ValidationError(
                f"encoded_mi: batch[{self.input!r}] has {len(x)} rows but batch[{self.target!r}] "
                f"{len(target)}; the sampler must give both per item (a dataset array gathered "
                "at the batch's items).")
        keep = self._first_of_each_item(batch)
        if keep is not None:
            x, target = x.index_select(0, keep), target.index_select(0, keep)
        code = get_model(models, self.model)(x)
        if self.classes is not None:
            labels = target.long().reshape(-1)
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.classes):
                raise ValidationError(
                    f"encoded_mi: `classes` = {self.classes} but batch[{self.target!r}] holds "
                    f"labels {int(labels.min())}..{int(labels.max())}.")
            target = torch.nn.functional.one_hot(labels, self.classes)
        target = target.to(code.dtype).reshape(len(code), -1)
        out = self.bound({"x": code, "y": target}, models, state)
        return LossOutput(out.value, {"mi": out.metrics["mi"]})


__all__ = ["EncodedMILoss"]
