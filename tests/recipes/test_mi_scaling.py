"""MI recipes past one process and one fit: torchrun (pairs sharded, whole-batch reductions,
the final all-pairs estimate in row blocks across ranks), memory-mapped inputs read by rows,
checkpoint / resume through ``fit``, and ``warm_start``."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from infoblocks.blocks.data import LazyRows, intra_op_threads
from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes.mi import MINE, MINEE, InfoNCE
from infoblocks.plugins.testing import torchrun

SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import numpy as np
    from infoblocks.recipes.mi import MINE, MINEE, InfoNCE

    def data():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(600, 1))
        return x, 0.8 * x + 0.6 * rng.normal(size=(600, 1))   # rho = 0.8, I = 0.511 nats

    #: the example plugin's bound and negative sampler (tests/example_plugin) in every MI slot
    PLUGIN = dict(negatives="shifted", evaluation={"bound": "js"},
                  phases=[{"name": "train", "loss": "js", "validation": {"loss": "js"}}])

    def fit(cls, plugin=False):
        # SGD: Adam divides by sqrt(v) and turns the reduction-order rounding of the two runs
        # into full-size steps on near-zero gradient components (tests/blocks/test_distributed)
        options = dict(hidden_dims=(32, 32), epochs=12, batch_size=100, seed=3,
                       optimizer="sgd", learning_rate=0.3 if cls is MINE else 0.1)
        return cls(**options, **(PLUGIN if plugin else {})).fit(*data())

    if __name__ == "__main__":
        for cls, plugin in ((MINE, False), (InfoNCE, False), (MINEE, False), (MINE, True)):
            est = fit(cls, plugin)
            rank = est.routine_.dist.rank  # one file per rank: lines on a shared stdout mix
            name = "plugin" if plugin else cls.name
            with open(Path(sys.argv[1]) / f"{name}-{rank}.json", "w") as out:
                out.write(json.dumps({"recipe": name, "rank": rank,
                                      "world": est.routine_.dist.world_size,
                                      "estimate": est.estimate_nats_,
                                      "val_mi": [r["val_mi"] for r in est.history_
                                                 if "val_mi" in r]}))
''')


def test_two_processes_give_the_one_process_estimate(tmp_path):
    """A 2-process run (gloo) with the same total batch: the same held-out curve and final
    estimate as one process (the bounds reduce over the whole batch on every rank; MINE's
    moving average is the whole batch's; the final scores are computed in row blocks across
    the ranks), to 1e-3 relative (measured: ~1e-7) — MINE, InfoNCE (in-batch negatives) and
    MI-NEE (reference draws, three critics) — and a plugin's bound and negative sampler (the
    example plugin's `js` and `shifted`, in every MI slot): they are sharded and reduced
    through the same contracts, with no code of their own for it."""
    torchrun(SCRIPT, tmp_path, directory=tmp_path)
    runs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*-*.json"))]
    assert sorted((r["recipe"], r["rank"]) for r in runs) == [
        ("infonce", 0), ("infonce", 1), ("mine", 0), ("mine", 1), ("minee", 0), ("minee", 1),
        ("plugin", 0), ("plugin", 1)]
    assert all(r["world"] == 2 for r in runs)
    namespace = {"__name__": "mi_torchrun"}
    exec(SCRIPT, namespace)  # noqa: S102 - the same fits in one process
    for cls, name, plugin in ((MINE, "mine", False), (InfoNCE, "infonce", False),
                              (MINEE, "minee", False), (MINE, "plugin", True)):
        with intra_op_threads(1):
            single = namespace["fit"](cls, plugin)
        for run in (r for r in runs if r["recipe"] == name):
            # ranks agree with each other exactly (they share every reduction)
            np.testing.assert_allclose(run["estimate"], single.estimate_nats_, rtol=1e-3)
            np.testing.assert_allclose(run["val_mi"], [r["val_mi"] for r in single.history_
                                                       if "val_mi" in r], rtol=1e-3)
        assert 0.15 < single.estimate_nats_ < 0.6  # it learned (truth 0.511 nats)


class CountingDataset(torch.utils.data.Dataset):
    """A torch Dataset over a memory-mapped array that counts the rows it served."""

    def __init__(self, array):
        self.array, self.served = array, 0

    def __len__(self):
        return len(self.array)

    def __getitem__(self, i):
        self.served += 1
        return self.array[i]


def _gaussian_files(tmp_path, n):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (0.7 * x + 0.7 * rng.normal(size=(n, 2))).astype(np.float32) * 3.0 + 5.0
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return x, y


def test_mine_trains_on_a_memory_mapped_file_without_loading_it(tmp_path):
    """n = 40,000 memory-mapped rows: beside one chunked scan for the moments (the
    standardisation), training, validation and the final estimate read the rows they need (the
    held-out 2 %, its fixed validation pairs, the batches) — a fraction of the file — and the
    estimate is the in-memory fit's (the same standardisation, the same batches)."""
    n = 40_000
    x, y = _gaussian_files(tmp_path, n)
    # (the moments: the default rank map of lazy data is fitted on a 10,000-row sample)
    options = dict(hidden_dims=(16,), epochs=3, batches_per_epoch=5, test_fraction=0.02,
                   patience=None, seed=0, standardize=True)
    xs = LazyRows(np.load(tmp_path / "x.npy", mmap_mode="r"), "x")
    ys = LazyRows(np.load(tmp_path / "y.npy", mmap_mode="r"), "y")
    lazy = MINE(**options).fit(xs, ys)
    # measured: 12,600 rows of each beside the scan (2 x 1,300 batch rows + 800 held-out rows
    # + 8,000 fixed validation pairs + the 800 evaluation rows)
    assert 0 < xs.rows_read - n < 0.5 * n and 0 < ys.rows_read - n < 0.5 * n
    in_memory = MINE(**options).fit(x, y)
    np.testing.assert_allclose(lazy.estimate_nats_, in_memory.estimate_nats_, rtol=1e-4)
    # the scales are the data's (y was multiplied by 3): entropies and plots stay in its units
    np.testing.assert_allclose(lazy.y_scale_.numpy(), in_memory.y_scale_.numpy(), rtol=1e-3)
    # a torch Dataset is read row by row, also only where a batch needs it
    m = 6_000
    counted = CountingDataset(np.load(tmp_path / "x.npy", mmap_mode="r")[:m])
    MINE(**{**options, "epochs": 1}).fit(counted, np.load(tmp_path / "y.npy", mmap_mode="r")[:m])
    served_by_batches = counted.served - 2 * m  # minus the finite check and the moments scan
    assert 0 < served_by_batches < 0.5 * m


def test_a_one_dimensional_memory_mapped_x_is_one_feature(tmp_path):
    # user13 U13-24: in memory a 1-D x is one feature; memory-mapped (`infoblocks run --data
    # x1d.npy`) it was refused: "`x` must have 2 dimension(s), got 1"
    x, y = _gaussian_files(tmp_path, 300)
    np.save(tmp_path / "x1.npy", x[:, 0])
    options = dict(hidden_dims=(8,), epochs=2, batch_size=50, seed=0)
    lazy = MINE(**options).fit(np.load(tmp_path / "x1.npy", mmap_mode="r"), y)
    assert lazy.estimate_nats_ == pytest.approx(MINE(**options).fit(x[:, 0], y).estimate_nats_)


def test_fit_resumes_from_its_checkpoint(tmp_path):
    """``fit(checkpoint=DIR)`` then ``fit(resume=DIR)`` on a finished run: the same estimate;
    a resumed run continues from the checkpointed training state (moving average included)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 1))
    y = x + rng.normal(size=(400, 1))
    options = dict(hidden_dims=(16,), epochs=4, seed=1)
    full = MINE(**options).fit(x, y, checkpoint=tmp_path / "ckpt")
    assert (tmp_path / "ckpt").is_dir()
    again = MINE(**options).fit(x, y, resume=tmp_path / "ckpt")
    assert again.estimate_nats_ == full.estimate_nats_
    assert [r["epoch"] for r in again.history_] == [r["epoch"] for r in full.history_]


def test_warm_start_continues_the_critic_and_its_moving_average():
    """Two warm fits of 3 epochs = one fit of 6 at a constant rate (the optimizer's moments,
    the generator and MINE's moving average carry on); history epochs run on."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 1))
    y = x + rng.normal(size=(300, 1))
    options = dict(hidden_dims=(16,), test_fraction=0.0, patience=None, seed=2)
    once = MINE(epochs=6, **options).fit(x, y)
    warm = MINE(epochs=3, warm_start=True, **options).fit(x, y)
    first_average = warm.routine_.phases[0].loss.log_average.clone()
    warm.fit(x, y)
    assert [r["epoch"] for r in warm.history_] == list(range(6))
    assert warm.estimate_nats_ == pytest.approx(once.estimate_nats_, rel=1e-6)
    assert not torch.equal(warm.routine_.phases[0].loss.log_average, first_average)
    cold = MINE(epochs=3, **options).fit(x, y).fit(x, y)  # warm_start=False: afresh
    assert [r["epoch"] for r in cold.history_] == [0, 1, 2]
    with pytest.raises(ValidationError, match="same shape"):
        warm.fit(x[:200], y[:200])


def test_a_warm_fresh_sample_fit_draws_from_the_new_source():
    """fit(sampler=fn) twice with warm_start: the critic carries on, and the second fit's
    training draws come from the second source (the sampler rebuilt from its spec)."""
    calls = {"first": 0, "second": 0}

    def source(key):
        def draw(generator, n):
            calls[key] += 1
            x = torch.randn(n, 1, generator=generator)
            return x, x + torch.randn(n, 1, generator=generator)
        return draw

    mine = MINE(epochs=2, warm_start=True, hidden_dims=(8,), batch_size=50, seed=0)
    mine.fit(sampler=source("first"), n_eval=200)
    before = dict(calls)
    mine.fit(sampler=source("second"), n_eval=200)
    assert calls["first"] == before["first"]  # the old source is not drawn from again
    assert calls["second"] >= 2 + 1  # every epoch of the second fit, and its evaluation draw
    assert [r["epoch"] for r in mine.history_] == [0, 1, 2, 3]  # the critic carried on
