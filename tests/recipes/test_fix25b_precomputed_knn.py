"""A k-NN graph given as data: ``fit(X, knn=(indices, distances))`` and
``transform(X_new, knn=...)`` for parametric UMAP and t-SNE (umap-learn's ``precomputed_knn``;
author23-4: before, only a routine with a plugin relation could do it, and then ``transform``
had no neighbours to place new rows by).  The graph the built-in search computes gives the
default fit bit for bit; bad graphs are refused naming ``knn`` and the fix; a graph of another
distance reaches that distance's quality (docs/umap.md, "A k-NN graph of your own")."""

from __future__ import annotations

import functools
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import infoblocks.recipes
from infoblocks.blocks.distances import Euclidean
from infoblocks.blocks.embedding_quality import trustworthiness
from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.neighbors import exact_knn, query_knn
from infoblocks.plugins.registry import get_registry
from infoblocks.recipes.tsne import ParametricTSNE
from infoblocks.recipes.umap import ParametricUMAP

UMAP_SHORT = dict(layout_epochs=5, init_epochs=2, epochs=2, hidden_dims=(8,), seed=0)
TSNE_SHORT = dict(layout_epochs=3, layout_exaggeration_epochs=1, init_epochs=2,
                  hidden_dims=(8,), perplexity=5, seed=0)  # k = 15


def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(100, 10)),
                           rng.normal(size=(100, 10)) + 5]).astype(np.float32)


X = data()
NEW = X[:5] + 0.1


def graph(k: int = 30):
    """The graph the built-in search computes (float64 distances, self excluded)."""
    return exact_knn(torch.from_numpy(X), k, Euclidean())


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the init's reach on a 2-epoch fit)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("cls, short", [(ParametricUMAP, UMAP_SHORT),
                                        (ParametricTSNE, TSNE_SHORT)])
def test_the_built_in_graph_given_as_data_gives_the_default_fit_bit_for_bit(cls, short):
    default = quiet(cls(**short).fit, X)
    idx, dist = graph()
    given = quiet(cls(**short).fit, X, knn=(idx.numpy(), dist.numpy()))
    assert np.array_equal(given.embedding_, default.embedding_)
    # umap-learn's convention: each row counts itself first (distance 0)
    rows = np.arange(len(X))[:, None]
    with_self = (np.concatenate([rows, idx.numpy()], 1),
                 np.concatenate([np.zeros((len(X), 1)), dist.numpy()], 1))
    assert np.array_equal(quiet(cls(**short).fit, X, knn=with_self).embedding_,
                          default.embedding_)
    # new rows: their nearest training rows given, the placement of the built-in search
    new_idx, new_dist = query_knn(torch.from_numpy(NEW), torch.from_numpy(X), 20, Euclidean())
    np.testing.assert_array_equal(given.transform(NEW, knn=(new_idx, new_dist)),
                                  default.transform(NEW))


def test_transform_after_a_fit_on_a_given_graph_needs_the_new_rows_neighbours():
    idx, dist = graph()
    umap = quiet(ParametricUMAP(**UMAP_SHORT).fit, X, knn=(idx, dist))
    with pytest.warns(UserWarning, match=r"fitted on a k-NN graph given as data .* network's "
                                         r"points, not placed .* transform\(X_new, knn="):
        network = umap.transform(NEW)
    np.testing.assert_array_equal(network, umap.transform(NEW, refine=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        umap.transform(NEW, refine=False)  # asked for: no warning


BAD_FITS = [
    ("pair", lambda i, d: i, r"`knn` is an array of shape \(200, 30\).*a pair \(indices, "
     r"distances\).*or a square \(n, n\) distance matrix"),  # (fix26a: a matrix is taken too)
    ("rows", lambda i, d: (i[:150], d[:150]), r"`knn` has 150 rows but `X` has 200: give every row of X"),
    ("shapes", lambda i, d: (i, d[:, :5]), r"indices \(200, 30\) and distances \(200, 5\)"),
    ("float indices", lambda i, d: (i.float(), d), r"indices must be integers"),
    ("range", lambda i, d: (i + 200, d), r"row numbers of X's rows, in \[0, 200\); got"),
    ("negative", lambda i, d: (i, -d), r"finite and non-negative.*1 − s"),
    ("nan", lambda i, d: (i, d.masked_fill(d > 3, float("nan"))), r"finite and non-negative"),
    ("twice", lambda i, d: (torch.cat([i[:, :1], i[:, :-1]], 1), d),
     r"row 0 names a neighbour twice"),
    ("too few", lambda i, d: (i[:, :10], d[:, :10]),
     r"holds 10 neighbours per row, but n_neighbors = 15 needs 15: pass at least 15 per row, "
     r"or lower n_neighbors"),
]


@pytest.mark.parametrize("make, message", [pytest.param(m, r, id=name)
                                           for name, m, r in BAD_FITS])
def test_a_bad_graph_is_refused_naming_knn_and_the_fix(make, message):
    idx, dist = graph()
    with pytest.raises(ValidationError, match=message):
        ParametricUMAP(**UMAP_SHORT).fit(X, knn=make(idx, dist))


def test_tsne_says_which_perplexity_the_graph_is_short_for():
    idx, dist = graph()
    with pytest.raises(ValidationError, match=r"holds 30 neighbours per row, but perplexity = "
                                              r"30 \(k = ⌈3 × perplexity⌉ = 90\) needs 90.*"
                                              r"lower perplexity"):
        ParametricTSNE().fit(X, knn=(idx, dist))
    rows = np.arange(len(X))[:, None]  # 31 columns, the first each row itself: 30 neighbours
    with pytest.raises(ValidationError, match=r"holds 30 neighbours per row \(after each row's "
                                              r"own index is dropped\).* = 31\) needs 31"):
        ParametricTSNE(perplexity=10.2).fit(X, knn=(np.concatenate([rows, idx], 1),
                                                  np.concatenate([0 * rows, dist], 1)))


def test_transform_refuses_bad_neighbours_of_new_rows():
    umap = quiet(ParametricUMAP(**UMAP_SHORT).fit, X, knn=graph())
    new_idx, new_dist = query_knn(torch.from_numpy(NEW), torch.from_numpy(X), 20, Euclidean())
    with pytest.raises(ValidationError, match=r"holds 4 neighbours per row, but the placement "
                                              r".* k = 15 .* refine=False"):
        umap.transform(NEW, knn=(new_idx[:, :4], new_dist[:, :4]))
    with pytest.raises(ValidationError, match=r"the 200 training rows, in \[0, 200\).*not into "
                                              r"the new rows"):
        umap.transform(NEW, knn=(new_idx + 200, new_dist))
    with pytest.raises(ValidationError, match=r"`knn` has 4 rows but `X` has 5 new rows: give every new "
                                              r"row its nearest training rows"):
        umap.transform(NEW, knn=(new_idx[:4], new_dist[:4]))


def test_a_relation_of_ones_own_with_knn_is_a_config_error():
    recipe = ParametricUMAP(**UMAP_SHORT, globals={"graph": {"relation": {"name": "pdist"}}})
    with pytest.raises(ConfigError, match=r"globals.graph.relation is 'pdist', not the built-in "
                                          r"k-NN search .* Drop `knn`"):
        recipe.fit(X, knn=graph())


def test_the_full_form_says_the_graph_was_given_and_save_load_keeps_it(tmp_path):
    idx, dist = graph()
    umap = quiet(ParametricUMAP(**UMAP_SHORT).fit, X, knn=(idx, dist))
    full = umap.to_dict(full=True)
    assert full["globals"]["graph"]["input"] == "knn"
    assert full["globals"]["graph"]["relation"] == {"name": "precomputed_knn", "n_neighbors": 15}
    again = ParametricUMAP.from_dict(full)
    with pytest.raises(ValidationError, match=r"reads a k-NN graph given as data .* "
                                              r"fit\(X, knn=\(indices, distances\)\)"):
        again.fit(X)
    assert np.array_equal(quiet(again.fit, X, knn=(idx, dist)).embedding_, umap.embedding_)
    umap.save(tmp_path / "model")
    loaded = ParametricUMAP.load(tmp_path / "model")
    new_idx, new_dist = query_knn(torch.from_numpy(NEW), torch.from_numpy(X), 15, Euclidean())
    np.testing.assert_allclose(loaded.transform(NEW, knn=(new_idx, new_dist)),
                               umap.transform(NEW, knn=(new_idx, new_dist)), atol=1e-5)
    with pytest.warns(UserWarning, match=r"fitted on a k-NN graph given as data"):
        loaded.transform(NEW)


def test_a_warm_start_on_the_same_graph_continues_and_on_another_refits():
    idx, dist = graph()
    umap = quiet(ParametricUMAP(**UMAP_SHORT, warm_start=True).fit, X, knn=(idx, dist))
    first = umap.routine_
    quiet(umap.fit, X, knn=(idx, dist))
    assert umap.routine_ is first  # the same data and graph: the main phase continues
    quiet(umap.fit, X)  # the graph searched now: a new routine
    assert umap.routine_ is not first and umap.routine_.constants == {}


def test_the_docs_example_runs(monkeypatch):
    page = (Path(__file__).resolve().parents[2] / "docs" / "umap.md").read_text()
    section = page[page.index("### A k-NN graph of your own"):]
    code = textwrap.dedent(re.search(r"```python\n(.*?)```", section, flags=re.S).group(1))
    monkeypatch.setattr(infoblocks.recipes, "ParametricUMAP",
                        functools.partial(ParametricUMAP, **UMAP_SHORT), raising=False)
    namespace: dict = {}
    quiet(exec, compile(code, "docs/umap.md", "exec"), namespace)
    assert namespace["Y_new"].shape == (5, 2) and np.isfinite(namespace["Y_new"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("cls", [ParametricUMAP, ParametricTSNE])
def test_a_cosine_graph_by_hand_reaches_metric_cosine_on_the_digits(cls):
    """Measured: trust@15 0.9890 (UMAP) and 0.9894 (t-SNE) both ways, defaults, seed 0."""
    x = np.asarray(get_registry().build("dataset", "digits").load()["data"], dtype=np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.clip(1 - unit @ unit.T, 0, None)
    np.fill_diagonal(d, 0)
    idx = np.argsort(d, axis=1, kind="stable")[:, :91]  # each row and its 90 nearest
    by_hand = quiet(cls().fit, x, knn=(idx, np.take_along_axis(d, idx, axis=1)))
    built_in = quiet(cls(metric="cosine").fit, x)
    ours, theirs = (trustworthiness(x, r.embedding_, k=15) for r in (by_hand, built_in))
    assert abs(ours - theirs) <= 0.01 and ours > 0.98
