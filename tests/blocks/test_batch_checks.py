"""The first batch of a phase names the sampler that breaks its contract: positions that do not
index into the batch's items, and (under torchrun) batches that differ between the ranks or a
shard that is the same on every rank."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from infoblocks.blocks.contracts import check_yields
from infoblocks.blocks.distributed import Distributed
from infoblocks.blocks.embedding import ITEM_EDGES
from infoblocks.blocks.errors import ContractError
from infoblocks.plugins.testing import torchrun


def edge_batch(n_items: int = 6) -> dict[str, torch.Tensor]:
    return {"items": torch.arange(n_items), "pos_source": torch.tensor([0, 1, 2]),
            "pos_target": torch.tensor([3, 4, 5]), "neg_source": torch.tensor([0, 1, 2]),
            "neg_target": torch.tensor([5, 4, 3])}


def phase_and_state(world_size: int = 1):
    sampler = SimpleNamespace(kind="sampler", name="my_edges", batch_type=ITEM_EDGES,
                              batch_fields=lambda state: ITEM_EDGES.fields)
    return (SimpleNamespace(name="main", sampler=sampler),
            SimpleNamespace(dist=Distributed(rank=0, world_size=world_size)))


def test_edge_positions_that_leave_the_items_name_the_sampler():
    phase, state = phase_and_state()
    check_yields(phase, edge_batch(), state)  # in range: nothing to say
    with pytest.raises(ContractError, match=r"sampler 'my_edges'.*`pos_target` positions "
                                            r"3\.\.5, but `items` has 4 entries"):
        check_yields(phase, {**edge_batch(), "items": torch.arange(4)}, state)
    phase, state = phase_and_state(world_size=2)  # a shard that kept part of the items
    with pytest.raises(ContractError, match="must renumber the positions into its own"):
        check_yields(phase, {**edge_batch(), "items": torch.arange(4)}, state)


def test_a_shard_without_the_losss_shard_fields_names_sampler_and_field():
    # author12 A12-2: a plugin rows/cols sampler whose shard left out rows_total trained DII on
    # the shards as batches of their own (w3 -12 % against one process), with no message
    from infoblocks.blocks.contracts import check_shard
    from infoblocks.blocks.imbalance import DIILoss

    phase, state = phase_and_state(world_size=2)
    phase.loss = DIILoss()
    whole = {"rows": torch.arange(8), "cols": torch.arange(8)}
    part = {"rows": torch.arange(0, 8, 2), "cols": torch.arange(8)}
    with pytest.raises(ContractError, match=r"sampler 'my_edges'.*returns no rows_total, which "
                                            r"loss 'dii' needs in a shard"):
        check_shard(phase, whole, part, state)


SCRIPT = """
import json, sys
from types import SimpleNamespace
import torch
import torch.distributed as dist
from infoblocks.blocks.contracts import check_shard
from infoblocks.blocks.distributed import Distributed
from infoblocks.blocks.errors import ContractError

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
state = SimpleNamespace(dist=Distributed(rank=rank, world_size=world))
phase = SimpleNamespace(name="train", sampler=SimpleNamespace(kind="sampler", name="my_pairs"))
torch.manual_seed(0)  # every rank draws the same batch
whole = {"x": torch.randn(8, 3), "y_columns": torch.randn(8, 3), "rows_total": torch.tensor(8),
         "weight": torch.tensor([1.0, float("nan")] * 4)}  # NaN on every rank: the same batch
results = {}
own = {**whole, "x": whole["x"][rank::world]}
mine = {**whole, "x": whole["x"] + rank}  # a batch drawn with a generator of one's own
for label, drawn, part in [("own rows", whole, own), ("whole batch", whole, whole),
                           ("other draws", mine, {**mine, "x": mine["x"][rank::world]}),
                           ("drawn as its part", {**own, "shard": torch.tensor([rank, world])},
                            own),
                           ("empty part", whole, {**whole, "x": whole["x"][:1 - rank]})]:
    try:
        check_shard(phase, drawn, part, state)
        results[label] = "ok"
    except ContractError as exc:
        results[label] = str(exc)
with open(f"{sys.argv[1]}/rank{rank}.json", "w") as f:
    json.dump(results, f)
dist.destroy_process_group()
"""


def test_other_draws_on_the_ranks_or_the_same_shard_everywhere_are_refused(tmp_path):
    torchrun(SCRIPT, tmp_path, directory=tmp_path)
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert results["own rows"] == "ok"  # rows split, columns whole: the MI samplers' shard
        message = results["whole batch"]
        assert "sampler 'my_pairs'" in message and "all 2 ranks the same part" in message
        assert "trains each row 2 times" in message
        assert "drew different batches on the 2 ranks (x differ" in results["other draws"]
        assert "draw with `state.generator`" in results["other draws"]
        assert results["drawn as its part"] == "ok"  # the MI samplers' own shards: not compared
        # author12 A12-8: a batch of fewer rows than ranks aborted in gloo ("collective
        # mismatch"): both ranks now raise, naming batch_size
        assert "rank(s) [1] of 2 get no rows of x" in results["empty part"]
        assert "Raise `batch_size` to at least 2" in results["empty part"]


COLUMNS_SCRIPT = """
import sys
from typing import ClassVar
import attrs
import numpy as np
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.mutual_information.samplers import InBatchSampler
from infoblocks.plugins import hookimpl
from infoblocks.plugins.manager import get_plugin_manager
from infoblocks.recipes.mi import InfoNCE


@attrs.define(kw_only=True)
class OwnRowsOnly(InBatchSampler):  # a shard that keeps its rows and forgets the columns
    name: ClassVar[str] = "own_rows_only"

    def shard(self, batch, rank, world_size):
        out = super().shard(batch, rank, world_size)
        return {k: v for k, v in out.items() if k not in ("y_columns", "columns")}


class _Plugin:
    @hookimpl
    def register_samplers(self):
        return [OwnRowsOnly]


get_plugin_manager().register(_Plugin(), "test_own_rows_only")
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 1))
try:
    InfoNCE(epochs=1, hidden_dims=(8,), batch_size=32, negatives="own_rows_only").fit(
        x, x + rng.normal(size=(200, 1)))
    message = "ran"
except ValidationError as exc:
    message = str(exc)
open(f"{sys.argv[1]}/rank{InfoNCE.__name__}.txt", "w").write(message)
"""


def test_a_loss_refusing_a_shard_names_the_sampler_that_cut_it(tmp_path):
    # author5 A5-3: the in-batch bound's error named the bound and suggested all_pairs; the
    # first sharded batch's error now names the sampler and what its shard must keep
    torchrun(COLUMNS_SCRIPT, tmp_path, directory=tmp_path)
    message = (tmp_path / "rankInfoNCE.txt").read_text()
    assert "shard from sampler 'own_rows_only'" in message
    assert "`y_columns` = every y of the batch" in message


WHOLE_BATCH_SCRIPT = """
import sys
from typing import ClassVar
import attrs
import numpy as np
from infoblocks.blocks.errors import ContractError
from infoblocks.blocks.mutual_information import MIBound
from infoblocks.plugins import hookimpl
from infoblocks.plugins.manager import get_plugin_manager
from infoblocks.plugins.registry import recipe_from_dict


@attrs.define
class RankLocal(MIBound):  # reads the rank's joint scores directly: a per-rank value
    name: ClassVar[str] = "rank_local"

    def bound(self, scores):
        return scores.joint.mean() - scores.log_mean_exp()


@attrs.define
class RankLocalDeclared(RankLocal):  # ... that says it is the whole batch's
    name: ClassVar[str] = "rank_local_declared"
    whole_batch: ClassVar[bool] = True


class _Plugin:
    @hookimpl
    def register_losses(self):
        return [RankLocal, RankLocalDeclared]


get_plugin_manager().register(_Plugin(), "test_whole_batch")
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 1))
y = x + rng.normal(size=(200, 1))
lines = []
for loss in ("dv", "rank_local", "rank_local_declared"):
    recipe = recipe_from_dict({"recipe": "mine", "epochs": 1, "hidden_dims": [8],
                               "batch_size": 32, "test_fraction": 0.0,
                               "phases": [{"name": "train", "loss": loss}]})
    try:
        recipe.fit(x, y)
        lines.append(f"{loss}: ran")
    except ContractError as exc:
        lines.append(f"{loss}: {exc}")
open(f"{sys.argv[1]}/whole_batch.txt", "w").write("\\n".join(lines))
"""


def test_a_loss_declaring_whole_batch_must_agree_on_every_rank(tmp_path):
    torchrun(WHOLE_BATCH_SCRIPT, tmp_path, directory=tmp_path)
    results = dict(line.split(": ", 1) for line in
                   (tmp_path / "whole_batch.txt").read_text().splitlines())
    assert results["dv"] == "ran"  # a built-in bound reduces over the ranks: the same value
    assert results["rank_local"] == "ran"  # undeclared: a per-rank value may be meant
    message = results["rank_local_declared"]
    assert "loss 'rank_local_declared' declares `whole_batch`" in message
    assert "first-step values differ" in message and "differentiable_sum" in message


FISHER_SCRIPT = """
import sys
from typing import ClassVar
import attrs
from infoblocks.blocks.errors import ContractError
from infoblocks.blocks.fisher import FisherLoss
from infoblocks.blocks.fisher.loss import fisher_statistics, imnn_objective
from infoblocks.plugins import hookimpl
from infoblocks.plugins.manager import get_plugin_manager
from infoblocks.recipes.imnn import IMNN, gaussian_simulations


@attrs.define
class ShardFisher(FisherLoss):  # takes `reduce` but forms F from the rank's shard alone
    name: ClassVar[str] = "shard_fisher"

    def objective(self, summaries, derivatives, reduce=None):
        return imnn_objective(fisher_statistics(summaries, derivatives), self.lambda_reg,
                              self.alpha)


class _Plugin:
    @hookimpl
    def register_losses(self):
        return [ShardFisher]


get_plugin_manager().register(_Plugin(), "test_shard_fisher")
fid, der = gaussian_simulations(200, seed=0)
try:
    IMNN(theta_fid=[0.0, 1.0], hidden_dims=(8,), epochs=1, seed=0,
         phases=[{"name": "fit", "loss": "shard_fisher"}]).fit(fid, der)
    message = "ran"
except ContractError as exc:
    message = str(exc)
open(f"{sys.argv[1]}/fisher.txt", "w").write(message)
"""


def test_a_fisher_loss_formed_from_the_ranks_shard_is_refused(tmp_path):
    # the case docs/plugins.md had called undetectable: det F 37.9 against 39.5 on two ranks
    torchrun(FISHER_SCRIPT, tmp_path, directory=tmp_path)
    message = (tmp_path / "fisher.txt").read_text()
    assert "loss 'shard_fisher' declares `whole_batch`" in message, message
