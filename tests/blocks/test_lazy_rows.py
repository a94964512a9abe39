"""Data larger than memory: memory-mapped arrays and torch Datasets stay on disk and batches
read only their rows; the training result equals the in-memory one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.data import Dataset, LazyRows, as_rows, intra_op_threads, is_lazy
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.models import MLP


@pytest.fixture
def mapped(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(600, 4)) * [3, 2, 1, .5]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return x, np.load(tmp_path / "x.npy", mmap_mode="r")


class Rows(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.as_tensor(self.x[i])


def test_memory_mapped_and_torch_datasets_are_lazy_and_read_only_what_is_asked(mapped):
    x, mm = mapped
    for source in (mm, Rows(x)):
        assert is_lazy(source)
        rows = as_rows(source, "x")
        assert isinstance(rows, LazyRows) and rows.shape == (600, 4) and rows.rows_read == 0
        got = rows[torch.tensor([5, 0, 599])]
        np.testing.assert_array_equal(got.numpy(), x[[5, 0, 599]])
        assert rows.rows_read == 3
        mean, std = rows.moments()
        np.testing.assert_allclose(mean, x.mean(0), atol=1e-5)
        np.testing.assert_allclose(std, x.std(0), rtol=1e-5)
    assert not is_lazy(x) and isinstance(as_rows(x, "x"), torch.Tensor)


def test_bad_lazy_inputs_are_named(tmp_path, mapped, monkeypatch):
    import infoblocks.blocks.data as data

    monkeypatch.setattr(data, "LAZY_CHUNK_ROWS", 64)  # the bad value is in the 2nd chunk
    x, _ = mapped
    x = x.copy()
    x[100, 2] = np.nan
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(ValidationError, match=r"`x` contains non-finite.*\(100, 2\)"):
        as_rows(np.load(tmp_path / "bad.npy", mmap_mode="r"), "x")
    np.save(tmp_path / "flat.npy", x[:, 0])
    with pytest.raises(ValidationError, match=r"`x` must have 2 dimension.*reshape\(-1, 1\)"):
        as_rows(np.load(tmp_path / "flat.npy", mmap_mode="r"), "x")
    with pytest.raises(ValidationError, match="`x` is empty"):
        as_rows(Rows(np.zeros((0, 3))), "x")

    class Words(Rows):
        def __getitem__(self, i):
            return "seven"
    with pytest.raises(ValidationError, match="not a row of numbers"):
        as_rows(Words(x), "x")

    class Ragged(Rows):  # user13 U13-17: was torch's raw "stack expects each tensor to be
        def __getitem__(self, i):  # equal size, but got [4] at entry 0 and [3] at entry 5"
            return torch.as_tensor(self.x[i][:3 if i == 5 else 4])
    with pytest.raises(ValidationError, match=r"`x`: item 5 of the Dataset has shape \(3,\)"):
        as_rows(Ragged(x), "x").take(np.arange(8))


def _routine(data, pca=False) -> Routine:
    phase = TrainingPhase(name="fit", epochs=3, loss="position", learning_rate=1e-2,
                          sampler={"name": "items", "batch_size": 50, "batches_per_epoch": 2})
    model = MLP(in_dim=4, out_dim=2, hidden_dims=(8,), pca_dims=3 if pca else None)
    return Routine(dataset=data, phases=[phase], seed=1, models={"main": model})


def test_training_on_a_memory_mapped_file_reads_only_the_batches_and_matches_memory(mapped):
    x, mm = mapped
    target = np.tanh(x[:, :2]).astype(np.float32)
    with intra_op_threads(1):
        memory = _routine({"data": x, "positions": target}, pca=True).train()
        lazy_data = Dataset(data=mm, positions=target)
        disk = _routine(lazy_data, pca=True).train()
    for key, value in memory.models.state_dict().items():
        assert torch.allclose(value, disk.models.state_dict()[key], atol=1e-6), key
    # 3 epochs x 2 batches x 50 rows, plus the PCA front end's one pass over the 600 rows
    assert lazy_data["data"].rows_read == 3 * 2 * 50 + 600
