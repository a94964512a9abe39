"""A PairSampler subclass whose own ``shard`` delegates to ``super().shard`` is checked like one
that inherits it (author12): a per-pair field it returns whole on every rank is refused,
naming the field; one that splits its field itself passes, and each rank's pairs keep their
own values, as in the one-process batch."""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.errors import ContractError
from infoblocks.blocks.mutual_information.samplers import PairSampler

B = 6


def _batch() -> dict[str, torch.Tensor]:
    x = torch.arange(B * 2.0).view(B, 2)
    return {"index": torch.arange(B), "x": x, "y": -x, "weight": torch.arange(1.0, B + 1)}


@attrs.define
class WeightedPairs(PairSampler):
    """Adds a per-pair ``weight`` and leaves the split to PairSampler.shard."""

    name: ClassVar[str] = "test_weighted_pairs"

    def shard(self, batch, rank, world_size):
        return super().shard(batch, rank, world_size)


@attrs.define
class SplitWeightedPairs(PairSampler):
    """Splits its ``weight`` itself, after the base's split of the pairs."""

    name: ClassVar[str] = "test_split_weighted_pairs"

    def shard(self, batch, rank, world_size):
        out = super().shard(batch, rank, world_size)
        out["weight"] = batch["weight"][rank::world_size]
        return out


class SplitFirst(PairSampler):  # (no attrs class of its own) splits before delegating
    name: ClassVar[str] = "test_split_first"

    def shard(self, batch, rank, world_size):
        batch = {**batch, "weight": batch["weight"][rank::world_size]}
        return super().shard(batch, rank, world_size)


@attrs.define
class Deeper(SplitWeightedPairs):
    """A subclass of a splitting sampler that overrides shard again (both wrapped)."""

    name: ClassVar[str] = "test_deeper"

    def shard(self, batch, rank, world_size):
        return {**super().shard(batch, rank, world_size), "deeper": torch.tensor(1)}


@attrs.define
class OwnShard(PairSampler):
    """A shard of its own that never reaches PairSampler.shard: trusted as it is."""

    name: ClassVar[str] = "test_own_shard"

    def shard(self, batch, rank, world_size):
        return {k: v[rank::world_size] if k in ("index", "x", "y") else v
                for k, v in batch.items()}


def test_a_delegating_shard_that_leaves_a_pair_field_whole_is_refused():
    with pytest.raises(ContractError, match=r"sampler 'test_weighted_pairs' yields `weight`, "
                                            r"sized like the batch's pairs.*Its own `shard` "
                                            r"calls PairSampler.shard \(super\(\).shard\) and "
                                            r"returns `weight` whole"):
        WeightedPairs().shard(_batch(), 0, 2)


@pytest.mark.parametrize("cls", [SplitWeightedPairs, SplitFirst, Deeper])
def test_a_shard_that_splits_its_own_field_passes_and_keeps_each_pair_whole(cls):
    whole = _batch()
    parts = [cls().shard(whole, rank, 2) for rank in (0, 1)]
    for rank, part in enumerate(parts):  # this rank's pairs, each with its own weight
        assert torch.equal(part["x"], whole["x"][rank::2])
        assert torch.equal(part["weight"], whole["weight"][rank::2])
    # together the ranks hold the one-process batch's pairs and weights, once each
    pairs = sorted((float(x[0]), float(w)) for part in parts
                   for x, w in zip(part["x"], part["weight"]))
    assert pairs == sorted((float(x[0]), float(w)) for x, w in zip(whole["x"], whole["weight"]))


def test_an_own_shard_and_a_single_process_are_not_checked():
    assert torch.equal(OwnShard().shard(_batch(), 1, 2)["weight"], _batch()["weight"])
    assert torch.equal(WeightedPairs().shard(_batch(), 0, 1)["weight"], _batch()["weight"])


def test_the_inherited_shard_still_refuses_an_unknown_pair_field():
    class Inherits(PairSampler):
        name: ClassVar[str] = "test_inherits"

    with pytest.raises(ContractError, match=r"yields `weight`.*Override `shard\(batch, rank, "
                                            r"world_size\)`"):
        Inherits().shard(_batch(), 0, 2)
