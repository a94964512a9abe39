"""DII runs that go on: warm starts (a second fit continues), runs resumed from their
checkpoint, rows read lazily from a memory-mapped file or a torch Dataset, the per-epoch DII
conventions and forward greedy selection (issues 12 and 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.imbalance import DIILoss
from infoblocks.blocks.resume import read_checkpoint
from infoblocks.recipes.dii import DII, demo_data

#: mini-batches with Adam: the optimizer's moments and the batch stream must both continue
MINI = dict(batches_per_epoch=4, k_init=3, k_final=3, optimizer="adam", learning_rate=0.02)


@pytest.fixture(scope="module")
def data():
    return demo_data(200)


# ----------------------------------------------------------------------------- warm start


def test_two_warm_fits_of_e_epochs_equal_one_fit_of_2e(data):
    # constant learning rate and k: nothing restarts with the second fit, so the runs agree
    # bit for bit (Adam's moments and step count carried over, the batch stream continued)
    whole = DII(epochs=20, **MINI).fit(*data)
    warm = DII(epochs=10, warm_start=True, **MINI).fit(*data)
    first = warm.weights_.copy()
    warm.fit(*data)
    assert not np.allclose(first, warm.weights_, rtol=1e-2)  # the second fit moved on
    np.testing.assert_array_equal(warm.weights_, whole.weights_)
    np.testing.assert_array_equal(warm.dii_history_, whole.dii_history_)
    np.testing.assert_array_equal(warm.weights_history_, whole.weights_history_)
    assert [r["epoch"] for r in warm.routine_.history.rows] == list(range(20))


def test_without_warm_start_a_second_fit_starts_afresh(data):
    model = DII(epochs=5, **MINI).fit(*data)
    first = model.weights_history_.copy()
    model.fit(*data)
    np.testing.assert_array_equal(model.weights_history_, first)


def test_warm_start_needs_data_with_the_fitted_features(data):
    model = DII(epochs=2, warm_start=True, **MINI).fit(*data)
    with pytest.raises(ValidationError, match="warm_start continues the weights fitted on "
                                              "`data_A` of shape"):
        model.fit(data[0][:, :4], data[1])


# ----------------------------------------------------------------------------- resume


def test_an_interrupted_fit_resumes_from_its_checkpoint_as_if_never_stopped(tmp_path, data,
                                                                              monkeypatch):
    options = dict(MINI, epochs=8, k_init=5, k_final=2, lr_schedule="cos")
    whole = DII(**options).fit(*data)
    calls, call = [0], DIILoss.__call__

    def dies_in_the_fourth_epoch(self, batch, models, state):
        calls[0] += 1
        if calls[0] == 1 + 3 * 4 + 2:  # the initial DII, 3 epochs of 4 batches, then 2 more
            raise RuntimeError("node lost")
        return call(self, batch, models, state)

    monkeypatch.setattr(DIILoss, "__call__", dies_in_the_fourth_epoch)
    with pytest.raises(RuntimeError, match="node lost"):
        DII(**options).fit(*data, checkpoint=tmp_path / "ckpt")
    monkeypatch.setattr(DIILoss, "__call__", call)
    saved = read_checkpoint(tmp_path / "ckpt")
    assert (saved["epoch"], saved["complete"]) == (2, False)
    again = DII(**options).fit(*data, resume=tmp_path / "ckpt")
    np.testing.assert_array_equal(again.weights_, whole.weights_)
    assert again.weights_.dtype == whole.weights_.dtype  # (author10: float64 after a resume)
    np.testing.assert_array_equal(again.dii_history_, whole.dii_history_)
    # the weights of the epochs before the restart were not kept: NaN rows, the rest equal
    assert np.isnan(again.weights_history_[1:4]).all()
    np.testing.assert_array_equal(again.weights_history_[[0, *range(4, 9)]],
                                  whole.weights_history_[[0, *range(4, 9)]])


# ----------------------------------------------------------------------------- lazy rows


def test_rows_from_a_memory_mapped_file_or_a_torch_dataset_train_the_same_weights(tmp_path,
                                                                                   data):
    data_a, data_b = (x.astype(np.float32) for x in data)
    np.save(tmp_path / "a.npy", data_a)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(data_b)

        def __getitem__(self, i):
            return torch.from_numpy(data_b[i])

    in_memory = DII(epochs=6, **MINI).fit(data_a, data_b)
    lazy = DII(epochs=6, **MINI).fit(mapped, Rows())
    np.testing.assert_array_equal(lazy.weights_, in_memory.weights_)
    # one chunked scan for the data's unit, then per step only the batch's 50 rows (a
    # mini-batch is its own columns): 4 steps × 6 epochs, and the initial DII's batch
    assert lazy.routine_.dataset["data_A"].rows_read == 200 + 6 * 4 * 50 + 50
    assert lazy.final_dii()[0] == pytest.approx(in_memory.final_dii()[0], rel=1e-6)


# ----------------------------------------------------------------------------- history


def test_the_per_epoch_dii_is_the_epoch_mean_or_the_last_mini_batch(data, monkeypatch):
    values, call = [], DIILoss.__call__

    def recording(self, batch, models, state):
        out = call(self, batch, models, state)
        values.append(float(out.metrics["dii"]))
        return out

    monkeypatch.setattr(DIILoss, "__call__", recording)
    mean = DII(epochs=5, **MINI).fit(*data)
    per_batch = np.array(values[1:]).reshape(5, 4)  # after the initial DII
    values.clear()
    last = DII(epochs=5, dii_per_epoch="last_batch", **MINI).fit(*data)
    np.testing.assert_allclose(mean.dii_history_[1:], per_batch.mean(1), rtol=1e-6)
    np.testing.assert_allclose(last.dii_history_[1:], per_batch[:, -1], rtol=1e-6)
    assert mean.dii_history_[0] == last.dii_history_[0]
    assert np.abs(per_batch[:, -1] - per_batch.mean(1)).max() > 1e-3  # they differ here
    with pytest.raises(ValidationError, match="dii_per_epoch"):
        DII(dii_per_epoch="last")


# ----------------------------------------------------------------------------- selection


def test_forward_selection_adds_the_features_in_the_order_of_their_scales():
    # B = [10, 3, 1, 30, 7.3] ⊙ A: the ×30 feature first, then ×10, ×7.3, ×3, ×1
    data_a, data_b = demo_data(150)
    model = DII(epochs=40, optimizer="adam", learning_rate=0.05).fit(data_a, data_b)
    forward = model.select_features("forward", n_features_max=4)
    assert [e["n_features"] for e in forward] == [4, 3, 2, 1]
    assert [e["features"] for e in forward[::-1]] == [[3], [0, 3], [0, 3, 4], [0, 1, 3, 4]]
    dii = [e["dii"] for e in forward]
    assert dii == sorted(dii)  # each added feature lowers the DII
    assert model.selection_ is forward
    with pytest.raises(ValidationError, match="n_features_max"):
        model.select_features("forward", n_features_max=6)
    with pytest.raises(ValidationError, match="'backward', 'forward' or 'l1'"):
        model.select_features("sideways")


def test_run_passes_the_checkpoint_options_to_fit(tmp_path, data):
    # what `infoblocks run ... --resume` does: a finished run's checkpoint is complete, so
    # resuming it trains nothing more and returns the same weights
    options = dict(MINI, epochs=3)
    first = DII(**options).run(list(data), tmp_path / "out", checkpoint=tmp_path / "ckpt")
    assert read_checkpoint(tmp_path / "ckpt")["complete"]
    again = DII(**options).run(list(data), tmp_path / "again", checkpoint=tmp_path / "ckpt",
                               resume=True)
    assert again["weights"] == first["weights"]
