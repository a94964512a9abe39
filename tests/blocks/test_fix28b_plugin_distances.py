"""A plugin distance's values are checked in the k-NN search (finite, ≥ 0): author29-1 (a NaN
row got arbitrary neighbours, silently) and author29-2 (a similarity passed as a distance was
blamed on duplicate rows).  The built-in distances are not re-checked."""

import types
from typing import ClassVar, Literal

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.distances import Distance, Euclidean
from infoblocks.blocks.errors import PluginError, ValidationError
from infoblocks.blocks.neighbors import DistanceCheck, exact_knn
from infoblocks.plugins import hookimpl


@attrs.define
class ModeEuclid(Distance):
    """Euclidean distance; ``mode`` 'nan' puts NaN on the first row of every call,
    'negative' flips the sign (a similarity), 'rounding' gives equal rows −1e-7 × the largest
    value (a rounding error), 'zero' returns 0 everywhere."""

    name: ClassVar[str] = "fix28b_mode_euclid"
    mode: Literal["ok", "nan", "negative", "rounding", "zero"] = "ok"

    def _fix(self, d):
        if self.mode == "nan":
            d = d.clone()
            d[0] = float("nan")
        elif self.mode == "negative":
            d = -d
        elif self.mode == "rounding":
            d = torch.where(d == 0, -1e-7 * d.max(), d)
        elif self.mode == "zero":
            d = torch.zeros_like(d)
        return d

    def pairwise(self, a, b=None):
        b = a if b is None else b
        return self._fix(torch.cdist(a.double(), b.double()).to(a.dtype))

    def paired(self, a, b):
        return self._fix((a.double() - b.double()).norm(dim=1).to(a.dtype))


def _plugin(infoblocks_plugin):
    module = types.ModuleType("fix28b_plugin")
    module.register_distances = hookimpl(lambda: [ModeEuclid])
    return infoblocks_plugin(module, name="fix28b_plugin")


def _blobs(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 6
    return (centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_nan_from_a_plugin_distance_is_a_plugin_error_naming_it(infoblocks_plugin):
    # before: row 0 got 15 arbitrary neighbours (its NaN row ranked in any order), no error
    registry = _plugin(infoblocks_plugin)
    relation = registry.build("relation", {"name": "neighbor_pdist", "n_neighbors": 15,
                                           "metric": {"name": "fix28b_mode_euclid",
                                                      "mode": "nan"}})
    with pytest.raises(PluginError, match=r"distance 'fix28b_mode_euclid' \(plugin "
                       r"'fix28b_plugin'\): `pairwise\(a, b\)` returned 120 NaN or inf among "
                       r"[0-9]+ .*finite and ≥ 0.*division by 0"):
        relation.compute(torch.as_tensor(_blobs()))


def test_negative_plugin_distance_in_a_fit_names_the_distance_not_duplicates(infoblocks_plugin):
    # before: "every point's 15 nearest neighbours are at distance 0 ... Remove the duplicate
    # rows" (author29-2)
    _plugin(infoblocks_plugin)
    from infoblocks.recipes import ParametricUMAP

    umap = ParametricUMAP(metric="fix28b_mode_euclid", metric_kwds={"mode": "negative"},
                          layout_epochs=1, epochs=1, init_epochs=1, transform_epochs=0)
    with pytest.raises(PluginError, match=r"^globals.graph.relation.metric: distance "
                       r"'fix28b_mode_euclid' \(plugin 'fix28b_plugin'\)"
                       r".* negative value\(s\).*a similarity s is not a distance \(use 1 − s"):
        umap.fit(_blobs())


def test_rounding_below_zero_is_accepted_and_the_graph_is_the_same(infoblocks_plugin):
    registry = _plugin(infoblocks_plugin)
    x = torch.as_tensor(_blobs())
    x[1::2] = x[::2]  # pairs of equal rows: their distance is the rounding's −1e-7 × max
    graphs = {}
    for mode in ("ok", "rounding"):
        metric = registry.build("distance", {"name": "fix28b_mode_euclid", "mode": mode})
        graphs[mode] = exact_knn(x, 10, metric)
    assert torch.equal(graphs["ok"][0], graphs["rounding"][0])
    assert float(graphs["rounding"][1].min()) < 0  # the tiny negatives went through


def test_transform_query_checks_the_plugin_distance(infoblocks_plugin):
    _plugin(infoblocks_plugin)
    from infoblocks.recipes import ParametricUMAP

    x = _blobs(150)
    umap = ParametricUMAP(metric="fix28b_mode_euclid", layout_epochs=2, epochs=1,
                          init_epochs=1, transform_epochs=1, seed=0).fit(x[:120])
    metric = umap.routine_.global_relations["graph"].relation.metric
    metric.mode = "nan"  # the same distance turns NaN on the new rows
    with pytest.raises(PluginError, match=r"'fix28b_mode_euclid' \(plugin 'fix28b_plugin'\)"
                       r": `pairwise\(a, b\)` returned [0-9]+ NaN"):
        umap.transform(x[120:])


def test_dense_pdist_with_a_plugin_distance_is_checked(infoblocks_plugin):
    registry = _plugin(infoblocks_plugin)
    relation = registry.build("relation", {"name": "pdist",
                                           "metric": {"name": "fix28b_mode_euclid",
                                                      "mode": "negative"}})
    with pytest.raises(PluginError, match=r"fix28b_mode_euclid.* [0-9]+ negative value"):
        relation.compute(torch.as_tensor(_blobs(30)))


def test_builtin_distances_are_not_rechecked():
    assert not DistanceCheck(Euclidean()).active
    check = DistanceCheck(ModeEuclid())  # a user's class, in no registry: checked
    assert check.active
    with pytest.raises(PluginError, match=r"1 NaN or inf"):
        check(torch.tensor([[0.0, float("nan")]]), "pairwise")


def test_all_zero_plugin_distance_names_the_distance_in_the_rescale_error(infoblocks_plugin):
    # a plugin distance that returns 0 for rows that differ: the "distance 0" error of the
    # graph's rescale names it as a possible cause (before: only the data was blamed)
    _plugin(infoblocks_plugin)
    from infoblocks.recipes import ParametricUMAP

    umap = ParametricUMAP(metric="fix28b_mode_euclid", metric_kwds={"mode": "zero"},
                          layout_epochs=1, epochs=1, init_epochs=1, transform_epochs=0)
    with pytest.raises(ValidationError, match=r"distance 0.*distance 'fix28b_mode_euclid' "
                       r"\(plugin 'fix28b_plugin'\)"):
        umap.fit(_blobs())
