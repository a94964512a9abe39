"""check_block runs a supervised loss — one that reads ``labels`` — on item batches of a
dataset that holds labels (author22-8: "check_block has no labels": such a loss was never
called, only a NotExercisedWarning said so); ``labels=`` sets them."""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.plugins.testing import CHECK_CLASSES, NotExercisedWarning, check_block

SEEN: dict[str, torch.Tensor] = {}


@attrs.define
class LabelCrossEntropy(Loss):
    """Cross-entropy of the encoder's output (its 2 columns as class scores) against
    ``batch["labels"]``."""

    name: ClassVar[str] = "fix23a_label_cross_entropy"
    consumes: ClassVar[frozenset[str]] = frozenset({"data", "labels"})
    model: str = "main"
    classes: int = 2

    def __call__(self, batch, models, state):
        SEEN["labels"] = batch["labels"]
        scores = models[self.model](batch["data"])[:, :self.classes]
        value = torch.nn.functional.cross_entropy(scores, batch["labels"].long() % self.classes)
        return LossOutput(value, {})


def run_quietly(*args, **kwargs):
    SEEN.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_block(*args, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, NotExercisedWarning)]


def test_a_loss_reading_labels_is_called_on_items_with_labels():
    # before: NotExercisedWarning "no built-in state gives its batch fields ['data', 'labels']"
    assert run_quietly(LabelCrossEntropy) == []
    labels = SEEN["labels"]
    assert labels.ndim == 1 and len(labels) > 1
    assert set(labels.tolist()) <= set(range(CHECK_CLASSES)) and len(set(labels.tolist())) > 1


def test_labels_can_be_given():
    assert run_quietly(LabelCrossEntropy, labels=2) == []
    assert set(SEEN["labels"].tolist()) == {0, 1}
    assert run_quietly(LabelCrossEntropy, labels=lambda n: np.full(n, 7)) == []
    assert set(SEEN["labels"].tolist()) == {7}


def test_a_wrong_labels_function_is_said():
    with pytest.raises(AssertionError, match=r"labels\(40\) must return an array of 40 rows "
                                             r"\(one per item\), got shape \(3,\)"):
        check_block(LabelCrossEntropy, labels=lambda n: np.zeros(3))


def test_a_broken_supervised_loss_now_fails_the_check():
    @attrs.define
    class Detached(LabelCrossEntropy):
        name: ClassVar[str] = "fix23a_detached_labels"

        def __call__(self, batch, models, state):
            out = super().__call__(batch, models, state)
            return LossOutput(out.value.detach(), {})

    with pytest.raises(AssertionError, match=r"fix23a_detached_labels.*carries no gradient"):
        check_block(Detached)


def test_the_built_in_encoded_mi_is_run_with_labels():
    # before: not run, "no built-in state gives its batch fields ['data', 'labels']"
    from infoblocks.plugins.registry import get_registry

    loss = get_registry().get("loss", "encoded_mi")
    assert run_quietly(loss, {"bound": {"name": "infonce_loss", "critic": "critic"}}) == []
