"""A full distance matrix as ``knn``: ``fit(X, knn=D)`` with D (n, n) and
``transform(X_new, knn=D_new)`` with D_new (m, n) (umap-learn's ``metric="precomputed"``; before,
only the pair (indices, distances) was taken and the docs showed a two-line conversion).  Each
row's k nearest entries are taken, the diagonal left out and ties by index as the built-in
search does, so ``cdist(X, X)`` on integer-valued data gives the default fit bit for bit
(docs/umap.md, "A k-NN graph of your own")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.spatial.distance import cdist

from infoblocks.blocks.distances import Euclidean
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.neighbors import exact_knn, precomputed_neighbors, query_knn
from infoblocks.recipes.tsne import ParametricTSNE
from infoblocks.recipes.umap import ParametricUMAP

UMAP_SHORT = dict(layout_epochs=5, init_epochs=2, epochs=2, hidden_dims=(8,), seed=0)
TSNE_SHORT = dict(layout_epochs=3, layout_exaggeration_epochs=1, init_epochs=2,
                  hidden_dims=(8,), perplexity=5, seed=0)  # k = 15

_rng = np.random.default_rng(0)
# integer-valued (many equal distances): float32 differences, their squares and sums are exact,
# so cdist's float64 distances are the built-in search's to a unit of float64 rounding (its own
# root), and the ties test the order
X = np.round(4 * np.concatenate([_rng.normal(size=(100, 10)),
                                 _rng.normal(size=(100, 10)) + 5])).astype(np.float32)
NEW = X[:5] + 1
D = cdist(X, X)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the init's reach on a 2-epoch fit)
        return fn(*args, **kwargs)


def pair_from(d: np.ndarray, k: int, fit: bool):
    """(indices, distances) of each row's k nearest entries, by hand (the diagonal out)."""
    d = d.copy()
    if fit:
        np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


def test_a_distance_matrix_gives_the_built_in_search_with_its_ties():
    idx, dist = precomputed_neighbors(D, 15, n_rows=len(X))
    ref_idx, ref_dist = exact_knn(torch.from_numpy(X), 15, Euclidean())
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist, ref_dist, rtol=1e-15, atol=0)
    new_idx, new_dist = precomputed_neighbors(cdist(NEW, X), 15, n_rows=5, n_reference=len(X))
    ref_idx, ref_dist = query_knn(torch.from_numpy(NEW), torch.from_numpy(X), 15, Euclidean())
    assert torch.equal(new_idx, ref_idx) and torch.equal(new_dist.float(), ref_dist)
    # the diagonal is not read, not symmetric is fine, and the caller's D is left alone
    skewed = D + np.triu(np.full_like(D, 0.25), 1)
    skewed[np.arange(len(X)), np.arange(len(X))] = 7.0
    before = skewed.copy()
    idx, dist = precomputed_neighbors(skewed, 15, n_rows=len(X))
    by_hand = pair_from(skewed, 15, fit=True)
    assert np.array_equal(idx.numpy(), by_hand[0]) and np.array_equal(dist.numpy(), by_hand[1])
    assert np.array_equal(skewed, before)


@pytest.mark.parametrize("cls, short", [(ParametricUMAP, UMAP_SHORT),
                                        (ParametricTSNE, TSNE_SHORT)])
def test_fit_and_transform_with_a_distance_matrix_equal_the_pair_and_the_default(cls, short):
    matrix = quiet(cls(**short).fit, X, knn=D)
    pair = quiet(cls(**short).fit, X, knn=pair_from(D, 30, fit=True))
    default = quiet(cls(**short).fit, X)
    assert np.array_equal(matrix.embedding_, pair.embedding_)
    assert np.array_equal(matrix.embedding_, default.embedding_)  # metric="euclidean"
    d_new = cdist(NEW, X)
    placed = matrix.transform(NEW, knn=d_new)
    np.testing.assert_array_equal(placed, pair.transform(NEW, knn=pair_from(d_new, 20, False)))
    np.testing.assert_array_equal(placed, default.transform(NEW))


BAD = [
    ("not square", lambda: D[:, :30], r"`knn` is an array of shape \(200, 30\), not one of the "
     r"forms it takes for X's 200 rows: a pair \(indices, distances\), each \(n, k\).*or a "
     r"square \(n, n\) distance matrix.*metric=\"precomputed\".*here D would be \(200, 200\)"),
    ("other rows", lambda: D[:150, :150], r"shape \(150, 150\).*X's 200 rows"),
    ("negative", lambda: -D, r"`knn` distance matrix entries must be finite and non-negative; "
     r"D\[0, 1\] = -\d.*1 − s"),
    ("nan", lambda: np.where(D > 30, np.nan, D), r"finite and non-negative; D\[\d+, \d+\] = nan"),
    ("inf", lambda: np.where(D > 30, np.inf, D), r"D\[\d+, \d+\] = inf.*the largest distance"),
    ("bool", lambda: D > 3, r"distance matrix must hold real numbers, got torch.bool"),
    ("sparse", lambda: csr_matrix(D), r"`knn` is a sparse matrix \(csr_matrix \(200, 200\)\).*"
     r"`D.toarray\(\)`.*or each row's neighbours as a pair"),
    ("objects", lambda: np.array([[object()] * 200] * 200),
     r"could not be read as a distance matrix \(.*\)\. Pass a pair"),
    ("3-D", lambda: D[None], r"`knn` must be a pair \(indices, distances\).*or a square "
     r"\(n, n\) distance matrix.*got an array of shape \(1, 200, 200\)"),
]


@pytest.mark.parametrize("make, message", [pytest.param(m, r, id=name) for name, m, r in BAD])
def test_a_bad_distance_matrix_is_refused_naming_knn_and_the_fix(make, message):
    with pytest.raises(ValidationError, match=message):
        ParametricUMAP(**UMAP_SHORT).fit(X, knn=make())


def test_transform_names_the_new_rows_shape():
    umap = quiet(ParametricUMAP(**UMAP_SHORT).fit, X, knn=D)
    with pytest.raises(ValidationError, match=r"shape \(5, 5\), not one of the forms it takes "
                                              r"for the 5 new rows.*an \(m, 200\) distance "
                                              r"matrix.*here D would be \(5, 200\)"):
        umap.transform(NEW, knn=cdist(NEW, NEW))
    with pytest.raises(ValidationError, match=r"D\[0, 3\] = -1"):
        d_new = cdist(NEW, X)
        d_new[0, 3] = -1
        umap.transform(NEW, knn=d_new)
