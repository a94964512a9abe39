"""Arrays in the dtypes users bring (big-endian data from FITS / HDF5 files, unsigned
counts, long double, time spans) and scalars reach the checks of ``as_tensor`` instead of
torch's conversion errors (baduser19 F3, F8)."""

import numpy as np
import pytest
import torch

from infoblocks.blocks import Routine
from infoblocks.blocks.data import as_tensor
from infoblocks.blocks.errors import ValidationError
from infoblocks.plugins import get_registry

BASE = np.arange(12, dtype=np.float64).reshape(6, 2) / 4


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i4", "<u2", "<u4", "<u8", np.longdouble])
def test_arrays_torch_cannot_convert_are_converted_to_their_values(dtype):
    # torch.from_numpy refuses non-native byte order and long double, and has no abs()
    # for uint16-64 (the precision check): each raised a torch error before
    x = (BASE * 4).astype(dtype)
    assert torch.equal(as_tensor(x, "X"), torch.from_numpy((BASE * 4).astype(np.float32)))


def test_big_endian_values_keep_their_precision_check():
    x = (BASE + 1e9).astype(">f8")  # the column varies by 0.5 around 1e9: lost in float32
    with pytest.raises(ValidationError, match="Subtract the column means"):
        as_tensor(x, "X")


def test_time_spans_are_refused_with_the_conversion():
    with pytest.raises(ValidationError, match=r"X / np.timedelta64\(1, 's'\)"):
        as_tensor(np.zeros((3, 2), dtype="timedelta64[s]"), "X")


def test_a_numpy_scalar_stays_a_scalar():
    # np.ascontiguousarray made a 0-d array 1-d: `3.0` passed as one item of one feature
    assert as_tensor(np.float64(3.0), "x", ndim=None).ndim == 0
    with pytest.raises(ValidationError, match="must have 2 dimension.*got 0"):
        as_tensor(3.0, "X")


@pytest.fixture(scope="module")
def routine():
    mlp = get_registry().build("model", {"name": "mlp", "in_dim": 4, "out_dim": 2,
                                         "hidden_dims": [8]})
    return Routine(dataset={"data": np.zeros((5, 4))}, models={"main": mlp}, phases=[], seed=0)


def test_apply_refuses_a_row_without_its_item_axis(routine):
    # (4,) was one sample to torch: apply returned (2,), not one row per item
    with pytest.raises(ValidationError, match=r"1-D \(shape \(4,\)\).*reshape\(1, -1\)"):
        routine.apply(np.ones(4))
    assert routine.apply(np.ones((1, 4))).shape == (1, 2)


def test_apply_refuses_a_scalar(routine):
    with pytest.raises(ValidationError, match="leading item axis, got a scalar"):
        routine.apply(3.0)  # was torch's "mat1 and mat2 shapes cannot be multiplied"


def test_the_reshape_hint_of_rows_on_disk_names_the_argument(tmp_path):
    from infoblocks.blocks.data import as_rows

    np.save(tmp_path / "y.npy", np.zeros((5, 2, 2)))
    with pytest.raises(ValidationError, match=r"save `y.reshape\(len\(y\), -1\)`"):
        as_rows(np.load(tmp_path / "y.npy", mmap_mode="r"), "y")  # said `x.reshape` for y
    np.save(tmp_path / "y.npy", np.zeros(5))
    with pytest.raises(ValidationError, match=r"save it as `y.reshape\(-1, 1\)`"):
        as_rows(np.load(tmp_path / "y.npy", mmap_mode="r"), "y")


def test_routine_recipe_transform_names_its_argument_x():
    from infoblocks.recipes import RoutineRecipe

    a = np.random.default_rng(0).normal(size=(20, 4))
    phase = {"name": "fit", "epochs": 0, "sampler": {"name": "items", "batch_size": 10},
             "loss": "position"}  # (no training: the transform's checks are the point)
    recipe = RoutineRecipe(models={"main": {"name": "mlp", "out_dim": 2}}, phases=[phase],
                           arrays=["data", "positions"]).fit(a, a[:, :2])
    with pytest.raises(ValidationError, match="`X` contains 1 non-finite"):  # said `x`
        recipe.transform(np.where(a == a[3, 1], np.nan, a))
    with pytest.raises(ValidationError, match=r"`X` is 1-D \(shape \(4,\)\)"):
        recipe.transform(a[0])


def test_samples_without_features_are_named_as_such(tmp_path):
    from infoblocks.blocks.data import as_rows

    # an (n, 0) array was "empty ...; pass at least one sample" though it had n samples
    with pytest.raises(ValidationError, match=r"`X` has no features .*each of its 12 samples "
                                              "needs at least one column"):
        as_tensor(np.zeros((12, 0)), "X")
    np.save(tmp_path / "x.npy", np.zeros((12, 0)))
    with pytest.raises(ValidationError, match="`X` has no features"):  # was accepted
        as_rows(np.load(tmp_path / "x.npy", mmap_mode="r"), "X")
    with pytest.raises(ValidationError, match=r"`X` is empty .*pass at least one sample"):
        as_tensor(np.zeros((0, 3)), "X")
