"""t-SNE's P contract (≥ 0, summing to 1, symmetric) is checked at the KL losses' phase start
(author28-2: a P list without `symmetrize` — docs/plugins.md's own example — trained silently
on the conditional P, digits trust@15 0.917 instead of 0.989; a plugin affinity's P summing to
~300 or with negative entries 0.72 / 0.88)."""

import types
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import PluginError, ValidationError
from infoblocks.blocks.embedding.tsne_loss import check_joint_probabilities
from infoblocks.blocks.relations import DenseRelations, SparseRelations
from infoblocks.blocks.transforms import Transform
from infoblocks.plugins import hookimpl
from infoblocks.recipes import ParametricTSNE, ParametricUMAP

SMALL = dict(layout_epochs=3, layout_exaggeration_epochs=1, init_epochs=1, epochs=1, seed=0,
             transform_epochs=0)
SYM = {"name": "symmetrize", "subtract_product": False}


def _data(n=150, d=8, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(4, d)) * 5
    return (c[rng.integers(0, 4, n)] + rng.normal(size=(n, d))).astype(np.float32)


@attrs.define
class RowWeighted(Transform):
    """A wrong affinity: entry (i, j) × (1 + i), not normalised (author28's bad_affinity)."""

    name: ClassVar[str] = "fix28b_row_weighted"

    def apply(self, relations):
        return attrs.evolve(relations, values=relations.values * (1.0 + relations.rows))


def test_P_without_symmetrize_is_refused_naming_the_global_and_the_fix():
    tsne = ParametricTSNE(**SMALL, globals={"P": {"transforms": ["perplexity_rescale",
                                                                 "normalize"]}})
    with pytest.raises(ValidationError, match=r"phase 'layout': loss 'all_pairs_kl' reads "
                       r"`globals.P` as t-SNE's joint probabilities.*made by its last transform "
                       r"'normalize', is not symmetric: max \|P − Pᵀ\| = .*add \{ name = "
                       r"\"symmetrize\", subtract_product = false \}"):
        tsne.fit(_data())


def test_P_not_summing_to_one_is_refused():
    tsne = ParametricTSNE(**SMALL, globals={"P": {"transforms": [
        "perplexity_rescale", SYM, {"name": "functional", "fn": "exp"}]}})
    with pytest.raises(ValidationError, match=r"'functional', sums to [0-9.]+, not 1.*end the "
                       r"list with \"normalize\""):
        tsne.fit(_data())


def test_negative_P_is_refused():
    tsne = ParametricTSNE(**SMALL, globals={"P": {"transforms": [
        "perplexity_rescale", SYM, "normalize", {"name": "functional", "fn": "neg"}]}})
    with pytest.raises(ValidationError, match=r"has [0-9]+ negative entries"):
        tsne.fit(_data())


def test_the_parametric_kl_loss_checks_P_too():
    # no layout phase: the `kl` loss of the exaggerate phase reads P
    tsne = ParametricTSNE(**{**SMALL, "layout_epochs": 0},
                          globals={"P": {"transforms": ["perplexity_rescale", "normalize"]}})
    with pytest.raises(ValidationError, match=r"loss 'kl' reads `globals.P`.*not symmetric"):
        tsne.fit(_data())


def test_a_plugin_affinity_is_a_plugin_error_naming_it(infoblocks_plugin):
    module = types.ModuleType("fix28b_affinity")
    module.register_transforms = hookimpl(lambda: [RowWeighted])
    infoblocks_plugin(module, name="fix28b_affinity")
    tsne = ParametricTSNE(**SMALL, globals={"P": {"transforms": [
        "perplexity_rescale", SYM, "normalize", "fix28b_row_weighted"]}})
    with pytest.raises(PluginError, match=r"last transform 'fix28b_row_weighted' \(plugin "
                       r"'fix28b_affinity'\), sums to [0-9.]+, not 1; is not symmetric"):
        tsne.fit(_data())
    # the plugin's affinity before a built-in "normalize" (docs/plugins.md's example list)
    tsne = ParametricTSNE(**SMALL, globals={"P": {"transforms": [
        "perplexity_rescale", "fix28b_row_weighted", "normalize"]}})
    with pytest.raises(PluginError, match=r"last transform 'normalize' after transform "
                       r"'fix28b_row_weighted' \(plugin 'fix28b_affinity'\), is not symmetric"):
        tsne.fit(_data())


def test_the_default_P_passes_and_dense_or_sparse_forms_are_judged_alike():
    tsne = ParametricTSNE(**SMALL).fit(_data())  # every built-in path trains as before
    p = tsne.routine_.compute_global_relations()["P"]
    state = types.SimpleNamespace(phase="x", global_blocks={})
    check_joint_probabilities(p, state, "P", "kl")
    dense = p.to_dense()
    check_joint_probabilities(dense, state, "P", "kl")
    values = dense.values.clone()
    values[0, 1] += 0.01
    with pytest.raises(ValidationError, match=r"`globals.P`.*is not symmetric"):
        check_joint_probabilities(DenseRelations(values / values.sum()), state, "P", "kl")
    # duplicate sparse entries are summed (P_01 given in two halves equals P_10)
    half = SparseRelations(torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]),
                           torch.tensor([0.25, 0.25, 0.5]), (2, 2))
    check_joint_probabilities(half, state, "P", "kl")
    # a diagonal entry is its own transpose (twice listed, still symmetric)
    diagonal = SparseRelations(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 0]),
                               torch.tensor([0.2, 0.2, 0.3, 0.3]), (2, 2))
    check_joint_probabilities(diagonal, state, "P", "kl")


def test_umaps_graph_is_not_checked():
    # the fuzzy graph sums to ~n, and may be any weights: UMAP's losses are not the KL
    umap = ParametricUMAP(layout_epochs=2, epochs=1, init_epochs=1, transform_epochs=0,
                          seed=0).fit(_data())
    graph = umap.routine_.compute_global_relations()["graph"]
    assert float(graph.values.sum()) > 2
