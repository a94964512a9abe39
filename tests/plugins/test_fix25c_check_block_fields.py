"""check_block and a loss's fields no built-in batch has (author25-2): it fills with class
indices only a field named as labels are; a triplet's positions (``anchor`` / ``positive`` /
``negative``) or a second view are not invented — ``batch=`` builds them from a built-in
batch — and a loss that fails on a field check_block filled is told so.  Before, every unknown
field was filled with cycling class labels: a = p = n and the loss blamed ("carries no
gradient ... is it detached?"), a 2-D view made 1-D and a raw RuntimeError from the plugin."""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.plugins.testing import NotExercisedWarning, check_block

SEEN: dict[str, torch.Tensor] = {}


@attrs.define(kw_only=True)
class TripletFields(Loss):
    """Triplets as positions in the batch (a plugin miner's), on one (B, B) distance table."""
    name: ClassVar[str] = "f25c_triplet_fields"
    reports: ClassVar[frozenset[str]] = frozenset()
    consumes: ClassVar[frozenset[str]] = frozenset({"data", "anchor", "positive", "negative"})
    model: str = "main"

    def __call__(self, batch, models, state):
        SEEN.update(anchor=batch["anchor"], positive=batch["positive"])
        e = models[self.model](batch["data"])
        d = torch.cdist(e, e)
        a, p, n = batch["anchor"], batch["positive"], batch["negative"]
        return LossOutput(torch.relu(d[a, p] - d[a, n] + 0.05).mean(), {})


@attrs.define(kw_only=True)
class TwoView(Loss):
    """Reads a second view of the rows (2-D, like data) under ``view``."""
    name: ClassVar[str] = "f25c_two_view"
    reports: ClassVar[frozenset[str]] = frozenset()
    consumes: ClassVar[frozenset[str]] = frozenset({"data", "view"})
    model: str = "main"

    def __call__(self, batch, models, state):
        z = models[self.model](torch.cat([batch["data"], batch["view"]]))
        return LossOutput(z.pow(2).mean(), {})


def _triplets(b):
    n = len(b["data"])
    k = torch.arange(n)
    return {**b, "anchor": k, "positive": (k + 1) % n, "negative": (k + n // 2) % n}


def _not_exercised(*args, **kwargs) -> list[str]:
    SEEN.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_block(*args, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, NotExercisedWarning)]


def test_position_fields_are_not_faked_as_labels():
    said = _not_exercised(TripletFields)  # before: AssertionError "carries no gradient"
    assert SEEN == {}  # not called on made-up positions
    assert len(said) == 1 and "reads `anchor`, `negative`, `positive`, which no built-in " \
        "batch holds" in said[0] and "batch=lambda b: {**b, 'anchor': ...}" in said[0]


def test_a_second_view_is_not_faked_as_labels():
    said = _not_exercised(TwoView)  # before: RuntimeError from torch.cat in the loss
    assert len(said) == 1 and "reads `view`" in said[0]


def test_batch_builds_the_fields_and_the_loss_is_run():
    assert _not_exercised(TripletFields, batch=_triplets) == []
    n = len(SEEN["anchor"])
    assert n == 40 and SEEN["positive"].tolist() == [(k + 1) % n for k in range(n)]
    assert _not_exercised(TwoView, batch=lambda b: {**b, "view": b["data"].flip(0)}) == []


def test_a_broken_loss_is_still_found_with_batch():
    @attrs.define(kw_only=True)
    class Detached(TripletFields):
        name: ClassVar[str] = "f25c_detached_triplets"

        def __call__(self, batch, models, state):
            return LossOutput(super().__call__(batch, models, state).value.detach(), {})

    with pytest.raises(AssertionError, match=r"f25c_detached_triplets.*carries no gradient"):
        check_block(Detached, batch=_triplets)
    with pytest.raises(AssertionError, match=r"batch= must return the batch the loss is called "
                       r"on, a dict .* got list for the first 'items' batch"):
        check_block(TripletFields, batch=lambda b: [b])


def test_a_failure_on_a_filled_label_field_names_it():
    @attrs.define(kw_only=True)
    class OneHotTargets(Loss):
        """Reads `targets` as (n, C) one-hot rows: the 1-D class indices filled do not fit."""
        name: ClassVar[str] = "f25c_one_hot_targets"
        reports: ClassVar[frozenset[str]] = frozenset()
        consumes: ClassVar[frozenset[str]] = frozenset({"data", "targets"})
        model: str = "main"

        def __call__(self, batch, models, state):
            z = models[self.model](batch["data"])
            return LossOutput((z * batch["targets"][:, :2]).sum(), {})

    with pytest.raises(AssertionError, match=r"f25c_one_hot_targets.*raised IndexError.*"
                       r"`targets` \(40,\).*check_block filled `targets` itself, with class "
                       r"indices 0 … 2 cycling over the items"):
        check_block(OneHotTargets)
    # told what the field holds, it runs
    assert _not_exercised(OneHotTargets, labels=lambda n: torch.eye(3)[torch.arange(n) % 3]) == []
