import numpy as np
import pytest
import torch

from infoblocks.blocks.data import Dataset, as_tensor, check_positive, check_same_length
from infoblocks.blocks.errors import InfoblocksError, ValidationError


def test_as_tensor_converts_and_keeps_values():
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    t = as_tensor(x, "x")
    assert t.dtype == torch.float32 and t.shape == (3, 2)
    assert t[2, 1] == 5.0


@pytest.mark.parametrize("bad, fragment", [
    (np.array([[1.0, np.nan]]), "non-finite"),
    (np.array([[np.inf, 1.0]]), "at index (0, 0)"),
    (np.zeros((0, 3)), "is empty"),
    (np.array(["a", "b"]), "must hold numbers"),
    (None, "is None"),
])
def test_as_tensor_rejects_bad_values_naming_the_argument(bad, fragment):
    with pytest.raises(ValidationError, match="`data_A`") as info:
        as_tensor(bad, "data_A", ndim=None)
    assert fragment in str(info.value)


def test_one_dimensional_input_gets_a_reshape_hint():
    with pytest.raises(ValidationError, match=r"reshape\(-1, 1\)"):
        as_tensor(np.ones(5), "x", ndim=2)


def test_three_dimensional_input_gets_the_flattening_reshape():
    # user13 U13-17: digits.images (n, 8, 8) was "must have 2 dimension(s), got 3", no reshape
    with pytest.raises(ValidationError, match=r"`X`.*got 3 .*`X.reshape\(len\(X\), -1\)`"):
        as_tensor(np.ones((5, 8, 8)), "X", ndim=2)


def test_sparse_and_masked_inputs_say_how_to_convert():
    # user13 U13-22: scipy sparse was "must hold numbers, got dtype object", torch sparse a raw
    # NotImplementedError, a masked array's masked values (a -999 sentinel) used as data
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.arange(12.0).reshape(4, 3)
    with pytest.raises(ValidationError, match=r"`X` is a scipy sparse matrix.*X.toarray\(\)"):
        as_tensor(sparse.csr_matrix(dense), "X")
    with pytest.raises(ValidationError, match=r"`X` is a sparse torch tensor.*X.to_dense\(\)"):
        as_tensor(torch.tensor(dense).to_sparse(), "X")
    with pytest.raises(ValidationError, match="`X` is a masked array with 1 masked entries"):
        as_tensor(np.ma.masked_equal(dense, 4.0), "X")
    assert as_tensor(np.ma.masked_array(dense), "X").shape == (4, 3)  # nothing masked: fine


def test_mismatched_lengths_name_both_arrays():
    with pytest.raises(ValidationError, match="`x` has 3, `y` has 4"):
        check_same_length(x=np.ones((3, 1)), y=np.ones((4, 1)))


def test_errors_are_one_family_and_builtin_compatible():
    with pytest.raises(ValueError):
        check_positive(-1, "epochs")
    assert issubclass(ValidationError, InfoblocksError)


def test_dataset_shares_item_axis_and_takes_rows():
    ds = Dataset(x=np.ones((4, 2)), y=np.arange(4))
    assert ds.n_items == 4
    rows = ds.take(torch.tensor([1, 3]))
    assert rows["y"].tolist() == [1, 3]
    with pytest.raises(ValidationError, match="no array named 'z'"):
        ds["z"]
    assert "x" in ds and "z" not in ds
    with pytest.raises(ValidationError, match="Mismatched"):
        Dataset(x=np.ones((4, 2)), y=np.ones(3))


def test_a_column_whose_variation_float32_rounds_away_is_refused():
    # user13 U13-16: A + 1e8 gave DII its initial weights, MINE ~0 nats and UMAP "constant
    # data", silently; float32 keeps ~7 digits, so N(0, 1) around 1e8 rounds to steps of 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    with pytest.raises(ValidationError, match=r"`X` column 1 has mean 1e\+08 and "
                                              r"standard deviation .*Subtract the column means"):
        as_tensor(x + [0.0, 1e8, 0.0], "X")
    as_tensor(x + 1e3, "X")  # rounding 6e-5 of the spread: fine
    days = (np.arange(200) * 86400 + 1.7e9).reshape(-1, 1)  # Unix timestamps, a day apart
    as_tensor(days, "t")
    as_tensor(np.full((5, 2), 1e8), "X")  # constant columns: other checks' business
