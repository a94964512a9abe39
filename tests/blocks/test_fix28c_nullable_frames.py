"""author29-10: pandas' nullable dtypes (`Float64`, `Int64`, `boolean`, what
`convert_dtypes()` and `read_csv(dtype_backend="numpy_nullable")` give) were refused as
"`X` must hold numbers, got dtype object"; pd.NA and a text column were not named."""

import numpy as np
import pytest
import torch

from infoblocks.blocks.data import as_tensor
from infoblocks.blocks.errors import ValidationError

pd = pytest.importorskip("pandas")


def test_nullable_numeric_frame_is_taken_as_its_numbers():
    x = np.arange(15, dtype=np.float64).reshape(5, 3) / 4
    t = as_tensor(pd.DataFrame(x).astype("Float64"), "X")
    assert t.dtype == torch.float32 and torch.equal(t, torch.from_numpy(x).float())
    ints = as_tensor(pd.DataFrame({"a": [1, 2], "b": [3, 4]}).astype("Int64"), "X", dtype=None)
    assert ints.dtype == torch.int64 and ints.tolist() == [[1, 3], [2, 4]]
    assert as_tensor(pd.Series([1.5, 2.5], dtype="Float64"), "y", ndim=1).tolist() == [1.5, 2.5]
    mixed = pd.DataFrame({"a": pd.array([1, 2], dtype="Int64"), "b": [0.5, 0.25],
                          "c": pd.array([True, False], dtype="boolean")})
    assert as_tensor(mixed, "X").tolist() == [[1.0, 0.5, 1.0], [2.0, 0.25, 0.0]]


def test_missing_value_is_a_nan_error_naming_its_row_and_column():
    frame = pd.DataFrame(np.ones((4, 3)), columns=["p0", "p1", "p2"]).astype("Float64")
    frame.iloc[2, 1] = pd.NA
    with pytest.raises(ValidationError, match=r"1 non-finite value\(s\) \(NaN or inf\), the "
                                              r"first at index \(2, 1\) \(row 2, column 'p1'; a "
                                              r"missing value, pd.NA or None, counts as NaN\)"):
        as_tensor(frame, "X")
    ints = pd.DataFrame({"a": pd.array([1, None], dtype="Int64")})
    assert np.isnan(as_tensor(ints, "X", finite=False)[1, 0].item())


def test_a_column_that_is_not_numbers_is_named():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "c": [3.0, 4.0]})
    with pytest.raises(ValidationError, match=r"`X` must hold numbers: column 'b' \(position "
                                              r"1\) has dtype .*, e.g. 'x'\. Encode such a "
                                              r"column as numbers"):
        as_tensor(frame, "X")


@pytest.mark.filterwarnings("ignore:.*cannot reach the layout")
def test_umap_fits_a_nullable_frame_as_the_same_numbers():
    from infoblocks.recipes import ParametricUMAP

    x = np.random.default_rng(0).normal(size=(60, 4))
    quick = dict(n_neighbors=5, layout_epochs=2, init_epochs=1, epochs=1, transform_epochs=2)
    frame = ParametricUMAP(**quick).fit(pd.DataFrame(x).astype("Float64"))
    plain = ParametricUMAP(**quick).fit(x)
    np.testing.assert_array_equal(frame.embedding_, plain.embedding_)
