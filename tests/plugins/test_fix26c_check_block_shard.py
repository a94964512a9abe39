"""check_block and a sampler's shard / source (author26-8, author26-13).

author26-8: check_block never called a sampler's `shard`; a ROWS_COLS shard without
`rows_total` (which the `dii` loss needs) and one giving every rank the whole batch passed it,
and every `--nproc 2` run refused them at the first step.  author26-13: a `with_source`
sampler that needs a simulator and refuses arrays with infoblocks' ValidationError failed
check_block; now it is given a small simulator, and skipped with a NotExercisedWarning if it
still refuses."""
import warnings
from typing import ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.contracts import ROWS_COLS, SIMULATIONS
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.samplers import Sampler
from infoblocks.plugins.testing import NotExercisedWarning, check_block


@attrs.define
class _Rows(Sampler):
    """A ROWS_COLS sampler: all rows against all columns, with a correct shard."""
    name: ClassVar[str] = "t26c_rows"
    batch_type: ClassVar = ROWS_COLS

    def setup(self, state):
        pass

    def num_batches(self, state):
        return 1

    def batches(self, state):
        idx = torch.randperm(state.dataset.n_items, generator=state.generator)
        yield {"rows": idx, "cols": idx}

    def shard(self, batch, rank, world_size):
        rows = batch["rows"][rank::world_size]
        rest = torch.cat([batch["rows"][i::world_size] for i in range(world_size) if i != rank])
        return {"rows": rows, "cols": torch.cat([rows, rest]),
                "rows_total": torch.tensor(batch["rows"].shape[0])}


@attrs.define
class _RowsNoTotal(_Rows):
    name: ClassVar[str] = "t26c_rows_no_total"

    def shard(self, batch, rank, world_size):
        part = _Rows.shard(self, batch, rank, world_size)
        del part["rows_total"]
        return part


@attrs.define
class _RowsWhole(_Rows):
    name: ClassVar[str] = "t26c_rows_whole"

    def shard(self, batch, rank, world_size):
        return {**batch, "rows_total": torch.tensor(batch["rows"].shape[0])}


def test_a_correct_shard_passes_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_block(_Rows)


def test_check_block_flags_a_shard_without_rows_total():
    with pytest.raises(AssertionError, match=r"t26c_rows_no_total.*returns no `rows_total`, "
                       r"which loss 'dii' needs in a shard"):
        check_block(_RowsNoTotal)


def test_check_block_flags_a_shard_that_gives_every_rank_the_whole_batch():
    with pytest.raises(AssertionError, match="gives both of 2 ranks the same part"):
        check_block(_RowsWhole)


def test_builtin_samplers_still_pass():
    from infoblocks.blocks.fisher import SimulationSampler
    from infoblocks.blocks.imbalance.training import RowsColumnsSampler
    from infoblocks.blocks.samplers import ItemSampler

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cls in (RowsColumnsSampler, ItemSampler):
            check_block(cls)
        check_block(SimulationSampler, {"theta_fid": [0.0, 1.0]})


@attrs.define
class _SimulatorOnly(Sampler):
    """A with_source sampler that needs fit(simulator=fn) and refuses arrays."""
    name: ClassVar[str] = "t26c_simulator_only"
    batch_type: ClassVar = SIMULATIONS
    _sim: object = attrs.field(init=False, default=None)

    def with_source(self, simulator=None, fiducial=None, derivative=None,
                    numerical_derivative=None):
        if simulator is None:
            raise ValidationError("t26c_simulator_only needs fit(simulator=fn)")
        new = attrs.evolve(self)
        new._sim = simulator
        return new

    def setup(self, state):
        pass

    def num_batches(self, state):
        return 1

    def batches(self, state):
        th = torch.tensor([[0.0, 1.0]]).expand(20, 2)
        yield {"fiducial": self._sim(state.generator, th), "derivative": torch.zeros(20, 2, 4)}


@attrs.define
class _RefusesAll(_SimulatorOnly):
    name: ClassVar[str] = "t26c_refuses_all"

    def with_source(self, simulator=None, fiducial=None, derivative=None,
                    numerical_derivative=None):
        raise ValidationError("t26c_refuses_all draws from a file of its own")


@attrs.define
class _BadFiducial(_SimulatorOnly):  # exercised: a wrong batch still fails
    name: ClassVar[str] = "t26c_bad_fiducial"

    def batches(self, state):
        yield {"fiducial": torch.full((20, 4), float("nan")), "derivative": torch.zeros(20, 2, 4)}


def test_check_block_runs_a_simulator_only_sampler_with_a_simulator():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_block(_SimulatorOnly)
    with pytest.raises(AssertionError, match="`fiducial` holds non-finite values"):
        check_block(_BadFiducial)


def test_check_block_skips_a_sampler_refusing_every_source_with_a_warning():
    with pytest.warns(NotExercisedWarning, match=r"t26c_refuses_all.*with_source\(simulator=\.\.\.\) "
                      r"raised ValidationError: t26c_refuses_all draws from a file"):
        check_block(_RefusesAll)
