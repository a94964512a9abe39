"""DII under torchrun (gloo, 2 processes on this CPU): each rank takes every other row of the
batch against all its columns, and the learnt weights equal the one-process run with the same
total batch (issue 12) — with unequal shards and with a λ averaged over all rows; the final
DII's rows are split over the ranks and reduced."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from infoblocks.blocks.data import intra_op_threads
from infoblocks.plugins.testing import torchrun

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import torch
    from infoblocks.recipes.dii import DII

    # 303 points: mini-batches of 101 rows (shards of 51 and 50 rows) and a full batch of 303
    CONFIGS = {
        "mini_batches": dict(batches_per_epoch=3, k_init=5, k_final=2, lr_schedule="cos"),
        "full_batch_global_lambda": dict(point_adapt_lambda=False, k_init=3, k_final=3),
        "rows_subsample": dict(num_points_rows=151, k_init=2, k_final=2),
    }

    def data():
        rng = np.random.default_rng(0)
        a = rng.normal(size=(303, 4))
        return a, a * np.array([5.0, 1.0, 0.3, 2.0]) + 0.1 * rng.normal(size=(303, 4))

    def fit(name):
        # SGD: Adam divides by sqrt(v) and turns reduction-order rounding of near-zero
        # gradient components into full-size steps
        return DII(epochs=25, optimizer="sgd", learning_rate=0.05, **CONFIGS[name]).fit(*data())

    if __name__ == "__main__":
        torch.set_num_threads(1)
        out = {}
        for name in CONFIGS:
            model = fit(name)
            out[name] = {"weights": model.weights_.tolist(),
                         "dii": model.dii_history_.tolist(),
                         "final": model.final_dii(compute_error=True),
                         "world": model.routine_.dist.world_size}
        if model.routine_.dist.rank == 0:
            print(json.dumps(out))
''')


def _namespace():
    namespace = {"__name__": "infoblocks_test_dii_distributed"}
    exec(SCRIPT, namespace)  # noqa: S102 - the same fits in both runs
    return namespace


def test_two_processes_learn_the_weights_of_one_process_with_the_same_total_batch(tmp_path):
    proc = torchrun(SCRIPT, directory=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 reports
    both = json.loads(lines[0])
    namespace = _namespace()
    with intra_op_threads(1):
        for name in namespace["CONFIGS"]:
            single = namespace["fit"](name)
            assert both[name]["world"] == 2
            # training moved the weights far from their start (0.1): the check is not vacuous
            assert np.ptp(single.weights_) > 0.05
            np.testing.assert_allclose(both[name]["weights"], single.weights_, rtol=1e-4,
                                       err_msg=name)
            # the epoch DII is the whole batch's (ranks' values averaged), not one shard's
            np.testing.assert_allclose(both[name]["dii"], single.dii_history_, rtol=1e-4,
                                       err_msg=name)
            # the final DII's rows split over the ranks, reduced: the one-process value
            np.testing.assert_allclose(both[name]["final"], single.final_dii(compute_error=True),
                                       rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("rows, world", [(10, 2), (7, 2), (7, 3)])
def test_shards_cover_the_rows_once_against_all_columns(rows, world):
    import torch

    from infoblocks.blocks.imbalance import RowsColumnsSampler

    sampler = RowsColumnsSampler()
    batch = {"rows": torch.arange(rows), "cols": torch.arange(rows)}
    shards = [sampler.shard(batch, r, world) for r in range(world)]
    assert sorted(torch.cat([s["rows"] for s in shards]).tolist()) == list(range(rows))
    for s in shards:  # all the columns, this shard's rows first: (i, i) is a point and itself
        assert s["rows_total"] == rows
        assert sorted(s["cols"].tolist()) == list(range(rows))
        assert torch.equal(s["cols"][:s["rows"].numel()], s["rows"])
