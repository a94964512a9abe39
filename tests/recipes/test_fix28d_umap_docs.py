"""docs/umap.md's claims that author29 found wrong or missing, checked against the code.

author29-4: the demo's seed-0 figure (the page said 0.977 for the 10-NN accuracy; the demo
printed 0.9716); author29-8: "every copy is embedded at the same point" holds for the network's
f(X), not for `embedding_` (the layout's free coordinates); author29-12: a global the user adds
gets no `n_neighbors` / `metric` shortcut."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from infoblocks.plugins import get_registry
from infoblocks.recipes import ParametricUMAP

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "umap.md").read_text()


def _digits():
    return get_registry().build("dataset", "digits").load()


@pytest.mark.slow
def test_demo_seed_0_figures_are_the_pages():  # ~25 s: the demo's own fit
    from infoblocks.blocks.embedding_quality import knn_accuracy, trustworthiness

    found = re.search(r"\*\*(0\.\d{4}) / (0\.\d{4})\*\* with the defaults \(seed 0", PAGE)
    assert found, "docs/umap.md: the demo's seed-0 figures, to 4 decimals, in bold"
    digits = _digits()
    x, labels = digits["data"], digits["target"]
    recipe = ParametricUMAP().fit(x)
    assert round(trustworthiness(x, recipe.embedding_, k=15), 4) == float(found.group(1))
    assert round(knn_accuracy(recipe.embedding_, labels, k=10), 4) == float(found.group(2))


@pytest.mark.filterwarnings("ignore:parametric_umap. after the init phase")
def test_copies_share_the_network_point_not_the_layout_point():
    assert "Every copy is embedded at the\n  same point" not in PAGE
    assert "The network maps every copy to\n  the same point" in PAGE
    x = _digits()["data"][:200]
    copies = np.concatenate([x, x[:20]])
    recipe = ParametricUMAP(layout_epochs=20, init_epochs=5, epochs=2, transform_epochs=0,
                            seed=0).fit(copies)
    network = recipe.transform(copies, refine=False)
    assert np.array_equal(network[:20], network[200:])  # the same input, the same point
    gaps = np.linalg.norm(recipe.embedding_[:20] - recipe.embedding_[200:], axis=1)
    assert np.median(gaps) > 0  # free coordinates: each copy its own point


def test_an_added_global_gets_no_shortcut():
    assert "A global you add gets no shortcut" in PAGE
    spec = ParametricUMAP(n_neighbors=30, metric="cosine", globals={"radius": {
        "input": "data", "relation": {"name": "neighbor_pdist"}}}).routine_spec()
    assert spec["globals"]["radius"]["relation"] == {"name": "neighbor_pdist"}
    assert spec["globals"]["graph"]["relation"]["n_neighbors"] == 30
