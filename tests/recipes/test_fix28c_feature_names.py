"""author29-17: a DataFrame's columns are checked by name at transform, as scikit-learn does.

Before, `transform` of a DataFrame with its columns in another order than at fit was embedded
silently, column by position (digits, held-out 10-NN 0.939 -> 0.451), and no
`feature_names_in_` was kept.  The frame here is a stand-in with `columns` (what scikit-learn
reads too), so that the check runs without pandas; the pandas test is skipped without it."""

import warnings

import numpy as np
import pytest

from infoblocks.blocks.data import check_feature_names, feature_names
from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import InfoMax, ParametricUMAP

QUICK_UMAP = dict(n_neighbors=5, layout_epochs=2, init_epochs=1, epochs=1, transform_epochs=2)
COLUMNS = ["a", "b", "c", "d", "e"]
pytestmark = pytest.mark.filterwarnings("ignore:.*cannot reach the layout")


class Frame:
    """A DataFrame as scikit-learn sees one: values and `columns`."""

    def __init__(self, values, columns):
        self.values, self.columns = np.asarray(values), list(columns)

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def __len__(self):
        return len(self.values)

    def __getitem__(self, names):  # frame[list of names]: those columns, in that order
        return Frame(self.values[:, [self.columns.index(n) for n in names]], names)


def _data(n=60, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 5))


def test_feature_names_as_scikit_learn_keeps_them():
    x = _data()
    assert list(feature_names(Frame(x, COLUMNS))) == COLUMNS
    assert feature_names(x) is None and feature_names(Frame(x, range(5))) is None
    with pytest.raises(ValidationError, match=r"mix strings with other types \(\['int', 'str'\]\).*"
                                              r"X.columns = X.columns.astype\(str\)"):
        feature_names(Frame(x, ["a", 1, 2, 3, 4]))


def test_check_feature_names_names_the_first_mismatch():
    x = _data()
    check_feature_names(COLUMNS, Frame(x, COLUMNS), "R")  # the same: nothing
    with pytest.raises(ValidationError, match=r"`X`'s columns are in another order than at fit:"
                                              r" column 0 is 'e', at fit 'a'.*"
                                              r"X\[model.feature_names_in_\]"):
        check_feature_names(COLUMNS, Frame(x, COLUMNS[::-1]), "R")
    with pytest.raises(ValidationError, match=r"not seen at fit: \['z'\]; missing: \['c'\]\): "
                                              r"column 2 is 'z', at fit 'c'"):
        check_feature_names(COLUMNS, Frame(x, ["a", "b", "z", "d", "e"]), "R")
    with pytest.raises(ValidationError, match=r"missing: \['e'\]\): column 4 is absent"):
        check_feature_names(COLUMNS, Frame(x[:, :4], COLUMNS[:4]), "R")
    with pytest.warns(UserWarning, match=r"`X` does not have valid feature names, but R was "
                                         r"fitted with feature names \('a', 'b', 'c', \.\.\.\)"):
        check_feature_names(COLUMNS, x, "R")
    with pytest.warns(UserWarning, match="`X` has feature names, but R was fitted without"):
        check_feature_names(None, Frame(x, COLUMNS), "R")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_feature_names(None, x, "R")  # neither has names: nothing


def test_umap_keeps_feature_names_and_refuses_reordered_columns(tmp_path):
    x = _data()
    umap = ParametricUMAP(**QUICK_UMAP).fit(Frame(x, COLUMNS))
    assert list(umap.feature_names_in_) == COLUMNS
    same = umap.transform(Frame(x[:10], COLUMNS), refine=False)
    reordered = Frame(x[:10], COLUMNS)[COLUMNS[::-1]]
    with pytest.raises(ValidationError, match="column 0 is 'e', at fit 'a'"):
        umap.transform(reordered, refine=False)
    # the fix the message gives: the columns of the fit, in its order
    fixed = umap.transform(reordered[list(umap.feature_names_in_)], refine=False)
    np.testing.assert_array_equal(fixed, same)
    with pytest.warns(UserWarning, match="fitted with feature names"):
        np.testing.assert_array_equal(umap.transform(x[:10], refine=False), same)
    loaded = ParametricUMAP.load(umap.save(tmp_path / "m"))
    assert list(loaded.feature_names_in_) == COLUMNS
    with pytest.raises(ValidationError, match="another order than at fit"):
        loaded.transform(reordered, refine=False)
    # a warm fit continues the network, which reads the columns by position
    umap.set_params(warm_start=True)
    with pytest.raises(ValidationError, match="another order than at fit"):
        umap.fit(reordered)
    # fitted on an array: no names, none kept
    assert ParametricUMAP(**QUICK_UMAP).fit(x).feature_names_in_ is None


def test_infomax_keeps_feature_names_and_refuses_reordered_columns(tmp_path):
    x = _data(80)
    model = InfoMax(n_components=2, epochs=1, batch_size=32, seed=0).fit(Frame(x, COLUMNS))
    assert list(model.feature_names_in_) == COLUMNS
    with pytest.raises(ValidationError, match="column 0 is 'e', at fit 'a'"):
        model.transform(Frame(x, COLUMNS)[COLUMNS[::-1]])
    loaded = InfoMax.load(model.save(tmp_path / "m"))
    assert list(loaded.feature_names_in_) == COLUMNS
    with pytest.raises(ValidationError, match="not seen at fit: \\['z'\\]"):
        loaded.transform(Frame(x, ["a", "b", "c", "d", "z"]))


def test_pandas_dataframe_in_another_column_order_is_refused():
    pd = pytest.importorskip("pandas")
    x = _data()
    df = pd.DataFrame(x, columns=COLUMNS)
    umap = ParametricUMAP(**QUICK_UMAP).fit(df)
    assert list(umap.feature_names_in_) == COLUMNS
    with pytest.raises(ValidationError, match="column 0 is 'e', at fit 'a'"):
        umap.transform(df[COLUMNS[::-1]], refine=False)
    np.testing.assert_array_equal(umap.transform(df[COLUMNS[::-1]][umap.feature_names_in_],
                                                 refine=False),
                                  umap.transform(df, refine=False))
