"""A PairSampler subclass whose own ``shard`` delegates to ``super().shard`` is checked like one
that inherits it (author12): a per-pair field it returns whole on every rank is refused,
naming the field; one that splits its field itself passes, and each rank's pairs keep their
own values, as in the one-process batch."""

from __future__ import annotations

import json
from typing import ClassVar

import attrs
import numpy as np
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


SCRIPT = '''
import json, sys
from pathlib import Path
from typing import ClassVar

import attrs
import numpy as np
import torch

from infoblocks.blocks.mutual_information import MIBound
from infoblocks.blocks.mutual_information.samplers import PairSampler
from infoblocks.blocks.contracts import MARGINAL_PAIRS
from infoblocks.plugins import hookimpl
from infoblocks.plugins.manager import InfoblocksPlugins, reset_plugin_manager
from infoblocks.recipes.mi import MINE


@attrs.define
class WeightedShifted(PairSampler):
    """Joint pairs, shifted negatives and a per-pair `weight` (x's first column)."""
    name: ClassVar[str] = "test_weighted_shifted"
    batch_type: ClassVar = MARGINAL_PAIRS
    split: bool = True

    def batch_fields(self, state):
        return MARGINAL_PAIRS.fields | {"index", "weight"}

    def generate(self, state, generator):
        joint = self.joint_indices(state, generator)
        x, y = state.dataset[self.x_key][joint], state.dataset[self.y_key][joint]
        for k in range(joint.shape[0]):
            yield {"index": joint[k], "x": x[k], "y": y[k], "x_marginal": x[k],
                   "y_marginal": torch.roll(y[k], 1, 0), "weight": x[k][:, 0].clone()}

    def shard(self, batch, rank, world_size):
        out = super().shard(batch, rank, world_size)
        if self.split:
            out["weight"] = batch["weight"][rank::world_size]
        return out


@attrs.define
class AlignedDV(MIBound):
    """DV, refusing a batch whose `weight` is not its own pairs' (x's first column)."""
    name: ClassVar[str] = "test_aligned_dv"

    def bound(self, scores):
        return scores.mean_joint() - scores.log_mean_exp()

    def __call__(self, batch, models, state):
        if "weight" in batch and not torch.equal(batch["weight"], batch["x"][:, 0]):
            raise ValueError("the weights are not this shard's pairs'")
        return super().__call__(batch, models, state)


class Plugin:
    @hookimpl
    def register_samplers(self):
        return [WeightedShifted]

    @hookimpl
    def register_losses(self):
        return [AlignedDV]


def fit(split):
    manager = InfoblocksPlugins(strict=True).load()
    manager.register(Plugin(), "test_weighted")
    reset_plugin_manager(manager)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1))
    y = 0.8 * x + 0.6 * rng.normal(size=(400, 1))
    return MINE(hidden_dims=(16,), epochs=3, batch_size=100, seed=3, optimizer="sgd",
                learning_rate=0.3, negatives={"name": "test_weighted_shifted", "split": split},
                phases=[{"name": "train", "loss": "test_aligned_dv"}]).fit(x, y)


if __name__ == "__main__":
    import torch.distributed as dist
    fitted = fit(True)
    out = {"estimate": fitted.estimate_nats_, "world": fitted.routine_.dist.world_size}
    try:
        fit(False)
    except Exception as exc:  # the whole weight beside the rank's pairs
        out["refused"] = f"{type(exc).__name__}: {exc}"
    rank = dist.get_rank() if dist.is_initialized() else 0
    (Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(out))
'''


def test_under_torchrun_a_split_field_gives_the_one_process_estimate(tmp_path):
    """2 processes (gloo): the sampler that splits its `weight` trains to the one-process
    estimate with every pair's weight its own (a loss checks it on each shard); the one that
    leaves it whole is refused by name before a step."""
    from infoblocks.blocks.data import intra_op_threads
    from infoblocks.plugins.manager import get_plugin_manager, reset_plugin_manager
    from infoblocks.plugins.testing import torchrun

    torchrun(SCRIPT, tmp_path, directory=tmp_path)
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    previous = get_plugin_manager()
    namespace = {"__name__": "weighted_torchrun"}
    try:
        exec(SCRIPT, namespace)  # noqa: S102 - the same fit in one process
        with intra_op_threads(1):
            single = namespace["fit"](True).estimate_nats_
    finally:
        reset_plugin_manager(previous)
    for run in runs:
        assert run["world"] == 2
        np.testing.assert_allclose(run["estimate"], single, rtol=1e-3)
        assert "sampler 'test_weighted_shifted' yields `weight`" in run["refused"]
        assert "returns `weight` whole" in run["refused"]
