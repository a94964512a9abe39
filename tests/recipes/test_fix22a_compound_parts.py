"""A built-in loss named as a part of a ``compound`` that replaces it keeps what the recipe
gave it (author22-0): the default block's spec is merged under the part's own table, as a
replaced ``transforms`` list's entry gets its default entry's values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks.assembly import ShortcutWarning, expand_sections, merge_entry
from infoblocks.recipes import ParametricTSNE, ParametricUMAP

X = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")


def _phase(sections, name):
    return next(p for p in sections["phases"] if p["name"] == name)


def test_merge_entry_gives_a_compound_part_the_default_blocks_spec():
    default = {"name": "relation", "model": "layout", "kernel": {"name": "k", "a": 1.0}}
    override = {"name": "compound", "weights": [1.0, 2.0, 3.0], "losses": [
        "relation", {"name": "relation", "model": "main"}, {"name": "other"},
        {"name": "compound", "losses": [{"name": "relation", "kernel": {"a": 2.0}}]}]}
    parts = merge_entry(default, override)["losses"]
    assert parts[0] == default
    assert parts[1] == {**default, "model": "main"}  # the part's own keys win
    assert parts[2] == {"name": "other"}
    assert parts[3]["losses"][0] == {"name": "relation", "model": "layout",
                                     "kernel": {"name": "k", "a": 2.0}}  # nested: merged too
    assert override["losses"][0] == "relation"  # the override is not changed in place


def test_umap_shortcuts_reach_the_relation_inside_a_compound():
    # before: the part ran the block defaults (min_dist 0.1, repulsion 1.0, no anchor)
    rec = ParametricUMAP(min_dist=0.5, repulsion_strength=2.0, phases=[
        {"name": "main", "loss": {"name": "compound", "weights": [1.0],
                                  "losses": [{"name": "relation"}]}}])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortcutWarning)  # anchor_strength reaches the part
        sections = expand_sections(rec)
    builtin = _phase(expand_sections(ParametricUMAP(min_dist=0.5, repulsion_strength=2.0)),
                     "main")["loss"]
    part = _phase(sections, "main")["loss"]["losses"][0]
    assert part == builtin
    assert part["kernel"]["min_dist"] == 0.5 and part["repulsion_strength"] == 2.0
    assert part["anchor_model"] == "layout"


def test_tsne_exaggeration_reaches_the_kl_inside_a_compound():
    # before: 12 -> the block's default 1.0, no warning
    rec = ParametricTSNE.preset("network").set_params(phases=[
        {"name": "exaggerate", "loss": {"name": "compound", "losses": [{"name": "kl"}]}}])
    assert _phase(expand_sections(rec), "exaggerate")["loss"]["losses"][0]["exaggeration"] == 12.0


def test_tsne_init_position_inside_a_compound_keeps_its_target_model():
    rec = ParametricTSNE(phases=[
        {"name": "init", "loss": {"name": "compound", "losses": ["position"]}}])
    part = _phase(expand_sections(rec), "init")["loss"]["losses"][0]
    assert part["target_model"] == "layout"


def test_a_set_shortcut_whose_block_no_part_names_still_warns():
    rec = ParametricTSNE.preset("network").set_params(early_exaggeration=8.0, phases=[
        {"name": "exaggerate", "loss": {"name": "compound", "losses": [{"name": "position"}]}}])
    with pytest.warns(ShortcutWarning, match="early_exaggeration"):
        expand_sections(rec)


@pytest.mark.filterwarnings("ignore:.*cannot reach the layout")  # (1 init epoch)
def test_umap_layout_loss_in_a_compound_trains_the_layout():
    # before: the part read models.main, the phase trained only `layout`: embedding_ stayed
    # at its (scaled) spectral start, silently
    kw = dict(layout_epochs=3, init_epochs=1, epochs=1, n_neighbors=5, batch_size=50,
              layout_batch_size=100, seed=0)
    plain = ParametricUMAP(**kw).fit(X)
    wrapped = ParametricUMAP(**kw, phases=[{"name": "layout", "loss": {
        "name": "compound", "losses": [{"name": "relation"}]}}]).fit(X)
    np.testing.assert_array_equal(plain.embedding_, wrapped.embedding_)
