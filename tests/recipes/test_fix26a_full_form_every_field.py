"""The embeddings' full form lists every knob: each block table of ``to_dict(full=True)``
(``infoblocks config parametric_umap --full``, the save) holds every field of its block with a
default that stands alone (None and the sizes a fit fills stay out), built-in blocks too
(``Recipe.full_defaults``).  Before, only a plugin block's own fields were written: UMAP's
full form left out 25 such fields in 13 tables (``chunk_elements``, ``bandwidth``, ``n_iter``,
``fused``, ``epoch_draws`` ...), t-SNE's 28.  The form still runs as it is (round trip
byte-identical through a fit) and one written before reads back unedited."""

from __future__ import annotations

import tomllib
import warnings

import attrs
import numpy as np
import pytest

from infoblocks.blocks.base import default_data
from infoblocks.blocks.recipe import map_block_slots, visit_entry
from infoblocks.plugins.registry import get_registry
from infoblocks.recipes.tsne import ParametricTSNE
from infoblocks.recipes.umap import ParametricUMAP

UMAP_SHORT = dict(layout_epochs=2, init_epochs=1, epochs=1, hidden_dims=(8,), seed=0)
TSNE_SHORT = dict(layout_epochs=2, layout_exaggeration_epochs=1, init_epochs=1,
                  hidden_dims=(8,), perplexity=5.0, seed=0)
X = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)
RECIPES = [pytest.param(ParametricUMAP, UMAP_SHORT, id="umap"),
           pytest.param(ParametricTSNE, TSNE_SHORT, id="tsne")]


def omitted(recipe) -> list[tuple[str, str]]:
    """(place, field) of each field with a default of its own that a block table leaves out."""
    registry, out = get_registry(), []

    def visit(kind, value, where):
        table = {"name": value} if isinstance(value, str) else value
        if not isinstance(table, dict) or (kind, table.get("name")) not in registry:
            return value
        for f in attrs.fields(registry.get(kind, table["name"])):
            key = f.alias or f.name
            if not f.init or key.startswith("_"):
                continue
            if f.metadata.get("block_kind") and key in table:
                visit_entry(f.metadata["block_kind"], table[key], f"{where}.{key}", visit)
            default = default_data(f)
            if key not in table and default is not attrs.NOTHING and default is not None:
                out.append((where, key))
        return value

    map_block_slots(recipe.to_dict(full=True), recipe.evaluation_kinds, visit)
    return out


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the init's reach on a 1-epoch fit)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("cls, short", RECIPES)
def test_every_block_table_of_the_full_form_lists_every_field(cls, short):
    assert omitted(cls()) == []
    assert omitted(cls(metric="cosine", phases=[{"name": "main", "loss": {
        "kernel": "student_t"}}])) == []  # blocks named by the user, nested ones
    fitted = quiet(cls(**short).fit, X)
    assert omitted(fitted) == []
    graph = fitted.to_dict(full=True)["globals"][fitted.graph_name]["relation"]
    assert graph["chunk_elements"] == 16_000_000 and graph["key"] == "data"


@pytest.mark.parametrize("cls, short", RECIPES)
def test_the_full_form_runs_as_it_is_and_round_trips(cls, short, tmp_path):
    fitted = quiet(cls(**short).fit, X)
    text = fitted.to_toml(full=True)
    again = quiet(cls.from_dict(tomllib.loads(text)).fit, X)
    assert again.to_toml(full=True) == text  # config --full -> run -> config --full
    np.testing.assert_array_equal(again.embedding_, fitted.embedding_)
    fitted.save(tmp_path / "model")
    assert cls.load(tmp_path / "model").to_toml(full=True) == text


@pytest.mark.parametrize("cls, short", RECIPES)
def test_a_full_form_written_without_the_defaults_reads_back_unedited(cls, short,
                                                                      monkeypatch):
    recipe = cls(**short, metric="cosine")  # (cosine: a distance named alone, `eps` now)
    with monkeypatch.context() as before:
        before.setattr(cls, "full_defaults", False)
        old = recipe.to_toml(full=True)
    assert "chunk_elements" not in old and "chunk_elements" in recipe.to_toml(full=True)
    read = cls.from_dict(tomllib.loads(old))
    assert all(getattr(read, s) is None for s in ("globals", "models", "phases", "evaluation"))
    assert read.to_toml(full=True) == recipe.to_toml(full=True)
