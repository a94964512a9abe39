"""ParametricUMAP / ParametricTSNE run options: data read from disk by rows, checkpoints that a
killed fit resumes from, warm starts."""

import numpy as np
import pytest
import torch

from infoblocks.blocks import resume as resume_module
from infoblocks.blocks.data import LazyRows
from infoblocks.blocks.embedding_quality import trustworthiness
from infoblocks.blocks.errors import ValidationError
from infoblocks.plugins.registry import get_registry
from infoblocks.recipes.tsne import ParametricTSNE
from infoblocks.recipes.umap import ParametricUMAP

SMALL = dict(epochs=6, init_epochs=2, batches_per_epoch=4, layout_epochs=1, seed=3)


@pytest.fixture(scope="module")
def digits():
    return get_registry().build("dataset", "digits").load()["data"][:600].astype(np.float32)


def test_memory_mapped_data_is_read_by_rows_and_fits_as_in_memory(digits, tmp_path):
    np.save(tmp_path / "x.npy", digits)
    on_disk = np.load(tmp_path / "x.npy", mmap_mode="r")
    lazy = ParametricUMAP(**SMALL).fit(on_disk)
    data = lazy.routine_.dataset["data"]
    assert isinstance(data, LazyRows)  # never converted to an in-memory tensor
    memory = ParametricUMAP(**SMALL).fit(digits)
    # the same rows in the same order: the same fit, bit for bit on the CPU
    np.testing.assert_array_equal(lazy.embedding_, memory.embedding_)
    np.testing.assert_array_equal(lazy.transform(on_disk[:50]), memory.transform(digits[:50]))
    # saved: the training rows copied to a .npy a chunk at a time, loaded memory-mapped again
    lazy.save(tmp_path / "m")
    loaded = ParametricUMAP.load(tmp_path / "m")
    assert isinstance(loaded._reference[0], LazyRows)
    assert np.load(tmp_path / "m" / "reference_rows.npy", mmap_mode="r").shape == digits.shape
    np.testing.assert_array_equal(loaded.transform(on_disk[:50]), lazy.transform(on_disk[:50]))
    (tmp_path / "m" / "reference_rows.npy").write_bytes(b"damaged")
    with pytest.raises(ValidationError, match="cannot be read.*Save the model again"):
        ParametricUMAP.load(tmp_path / "m")


def test_a_torch_dataset_of_rows_fits_tsne(digits):
    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(digits)

        def __getitem__(self, i):
            return torch.from_numpy(digits[i])

    options = dict(epochs=2, layout_epochs=2, init_epochs=1, batch_size=200, seed=0)
    lazy = ParametricTSNE(**options).fit(Rows())
    np.testing.assert_array_equal(lazy.embedding_, ParametricTSNE(**options).fit(digits).embedding_)


def test_a_killed_fit_resumes_from_its_checkpoint_to_the_same_result(digits, tmp_path,
                                                                     monkeypatch):
    whole = ParametricUMAP(**SMALL).fit(digits)
    writes, real = [], resume_module.write_checkpoint

    def killed_after_five(directory, payload):  # the process dies after the 5th checkpoint
        real(directory, payload)
        writes.append(payload["phase"])
        if len(writes) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(resume_module, "write_checkpoint", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        ParametricUMAP(**SMALL).fit(digits, checkpoint=tmp_path / "ckpt")
    monkeypatch.setattr(resume_module, "write_checkpoint", real)
    assert "main" in writes  # killed inside the main phase
    resumed = ParametricUMAP(**SMALL).fit(digits, resume=tmp_path / "ckpt")
    np.testing.assert_array_equal(resumed.embedding_, whole.embedding_)
    assert [r["epoch"] for r in resumed.history_] == [r["epoch"] for r in whole.history_]


def test_warm_start_on_other_data_lays_it_out_afresh_from_the_fitted_network(digits):
    # other data of the same shape: its own graph and layout (the first data's layout would be
    # stale: its rows are other points), every phase run, the network from its fitted weights
    model = ParametricUMAP(**SMALL, warm_start=True).fit(digits[:300])
    layout = model.embedding_.copy()
    weights = {k: v.clone() for k, v in model.routine_.models["main"].state_dict().items()}
    # no network phase in the second fit, so the network is left as it was fitted
    model.set_params(init_epochs=0, epochs=0, layout_epochs=40)
    model.fit(digits[300:600])
    assert [r["phase"] for r in model.history_] == ["layout"] * 40
    for key, value in model.routine_.models["main"].state_dict().items():
        torch.testing.assert_close(value, weights[key])
    assert not np.allclose(model.embedding_, layout)
    # the new layout is the map of the new data (a fresh fit's quality, not the old rows')
    # (measured 0.982; a 1-epoch layout of the new data 0.914, the first data's layout 0.510)
    assert trustworthiness(digits[300:600], model.embedding_, k=10) > 0.95


@pytest.mark.parametrize("cls", [ParametricUMAP, ParametricTSNE])
def test_warm_start_after_load_continues_the_loaded_network(digits, tmp_path, cls):
    # author10 A10-5: warm_start on a loaded model crashed with a raw TypeError (a loaded
    # routine keeps no training data); it now lays the data out afresh from the loaded network
    options = dict(layout_epochs=20, init_epochs=20, transform_epochs=0, seed=0)
    cls(**options).fit(digits[:300]).save(tmp_path / "m")
    model = cls.load(tmp_path / "m")
    weights = {k: v.clone() for k, v in model.routine_.models["main"].state_dict().items()}
    model.set_params(warm_start=True, init_epochs=0, epochs=0)
    model.fit(digits[:300])  # no phase trains the network: it stays the loaded one
    for key, value in model.routine_.models["main"].state_dict().items():
        torch.testing.assert_close(value, weights[key])
    assert trustworthiness(digits[:300], model.embedding_, k=10) > 0.9
    again = cls.load(tmp_path / "m").set_params(warm_start=True)
    with pytest.raises(ValidationError, match="fitted on 64 features; `X` has 10"):
        again.fit(digits[:300, :10])


def test_tsne_warm_start_continues_the_network_regression_onto_its_layout(digits):
    # the t-SNE defaults train the network only in `init` (its regression onto the layout):
    # a warm start on the same data continues that phase (it did nothing when the last
    # phase, the batch KL, has 0 epochs)
    model = ParametricTSNE(layout_epochs=3, init_epochs=2, warm_start=True, seed=0)
    model.fit(digits[:400])
    first = model.transform(digits[:400], refine=False)
    model.fit(digits[:400])
    assert [r["phase"] for r in model.history_].count("init") == 4
    assert [r["phase"] for r in model.history_].count("layout") == 3
    assert not np.allclose(first, model.transform(digits[:400], refine=False))
    stuck = ParametricTSNE(layout_epochs=3, init_epochs=0, warm_start=True).fit(digits[:400])
    with pytest.raises(ValidationError, match="no phase trains the network"):
        stuck.fit(digits[:400])


def test_warm_start_continues_the_main_phase(digits):
    model = ParametricUMAP(**SMALL, warm_start=True).fit(digits)
    first = model.transform(digits, refine=False)
    model.fit(digits)
    main = [r["epoch"] for r in model.history_ if r["phase"] == "main"]
    assert main == list(range(2 * SMALL["epochs"]))  # epochs numbered on, init not repeated
    assert [r["phase"] for r in model.history_].count("init") == SMALL["init_epochs"]
    assert not np.array_equal(first, model.transform(digits, refine=False))
    model.fit(digits[:500])  # other rows: a new graph and layout from the network (author29-5)
    assert model.embedding_.shape[0] == 500
    with pytest.raises(ValidationError, match="fitted on 64 features; `X` has 32"):
        model.fit(digits[:500, :32])
