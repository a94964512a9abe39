"""A set shortcut and the blocks that replace the ones it fills (author23-1).

t-SNE's ``perplexity`` fills two places: the k-NN size (k = 3 × perplexity) and the
affinity's calibration (``perplexity_rescale``).  A plugin affinity with a ``perplexity`` field
in place of ``perplexity_rescale`` kept its own default 30 (≈ uniform on k = 30 neighbours at
perplexity = 10) with no warning, because the shortcut still reached the k-NN size.  Now the
shortcut reaches the plugin entry with the same field, and a shortcut that reaches only some of
the blocks it fills warns, naming the ones it misses."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.assembly import ShortcutWarning
from infoblocks.blocks.embedding import EmbeddingKernel
from infoblocks.blocks.relations import SparseRelations
from infoblocks.blocks.transforms import Transform
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import recipe_from_dict


@attrs.define
class EntropicAffinity(Transform):
    """A TSNEkhorn-like affinity: its own perplexity calibration (here the built-in's)."""
    name: ClassVar[str] = "test23b_entropic"
    accepts: ClassVar[tuple[type, ...]] = (SparseRelations,)
    perplexity: float = 30.0

    def apply(self, relations):
        from infoblocks.blocks.embedding.affinities import PerplexityBasedRescale

        return PerplexityBasedRescale(perplexity=self.perplexity).apply(relations)


@attrs.define
class BinaryAffinity(Transform):
    """LargeVis' k-NN affinity: every edge weight 1; no perplexity."""
    name: ClassVar[str] = "test23b_binary"
    accepts: ClassVar[tuple[type, ...]] = (SparseRelations,)

    def apply(self, relations):  # pragma: no cover
        return attrs.evolve(relations, values=torch.ones_like(relations.values))


@attrs.define
class GaussianKernel(EmbeddingKernel):
    """q(d) = exp(−γ d²): SNE's embedding affinity (no dof, no min_dist)."""
    name: ClassVar[str] = "test23b_gaussian"
    gamma: float = 1.0

    def log_kernel(self, sq_dist):  # pragma: no cover
        return -self.gamma * sq_dist

    def apply(self, relations):  # pragma: no cover
        return relations


@pytest.fixture
def affinities(infoblocks_plugin):
    class Plugin:
        @hookimpl
        def register_transforms(self):
            return [EntropicAffinity, BinaryAffinity, GaussianKernel]

    infoblocks_plugin(Plugin(), "test23b")


def _full(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full = recipe_from_dict(spec).to_dict(full=True)
    return full, [str(w.message) for w in caught if w.category is ShortcutWarning]


def _phase(full: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in full["phases"] if p["name"] == name)


def test_tsne_perplexity_reaches_a_plugin_affinity_with_that_field(affinities):
    # before: transforms[0] = {name = "test23b_entropic"} (its own perplexity 30), no warning
    full, warned = _full({"recipe": "parametric_tsne", "perplexity": 10.0, "globals": {
        "P": {"transforms": [{"name": "test23b_entropic"}, "normalize"]}}})
    assert full["globals"]["P"]["transforms"][0] == {"name": "test23b_entropic",
                                                     "perplexity": 10.0}
    assert full["globals"]["P"]["relation"]["n_neighbors"] == 30  # k = 3 × perplexity
    assert warned == []
    # the entry's own table still wins
    full, warned = _full({"recipe": "parametric_tsne", "perplexity": 10.0, "globals": {
        "P": {"transforms": [{"name": "test23b_entropic", "perplexity": 12.0}, "normalize"]}}})
    assert full["globals"]["P"]["transforms"][0]["perplexity"] == 12.0
    # a perplexity left at its default changes nothing in the plugin's table (but the value a
    # fit lowers it to: test_the_fits_lowered_perplexity_reaches_a_listed_affinity)
    full, _ = _full({"recipe": "parametric_tsne", "globals": {
        "P": {"transforms": [{"name": "test23b_entropic"}, "normalize"]}}})
    assert full["globals"]["P"]["transforms"][0] == {"name": "test23b_entropic"}


def test_tsne_perplexity_that_calibrates_nothing_warns_naming_the_list(affinities):
    # before: quiet (the shortcut still set k = 30, so it "reached a block")
    full, warned = _full({"recipe": "parametric_tsne", "perplexity": 10.0, "globals": {
        "P": {"transforms": ["test23b_binary", "normalize"]}}})
    assert full["globals"]["P"]["relation"]["n_neighbors"] == 30
    assert len(warned) == 1, warned
    assert "`perplexity` = 10.0 reaches `globals.P.relation` but not every block it fills" \
        in warned[0]
    assert "`globals.P.transforms` no longer has 'perplexity_rescale'" in warned[0]
    assert "Give that block its own setting in its table; to use the value only where it " \
           "goes, set it in the table of `globals.P.relation` instead of `perplexity`." \
        in warned[0]


def test_a_kernel_replaced_in_one_phase_of_two_warns_for_that_phase(affinities):
    # before: min_dist = 0.1 reached the main phase's kernel, the layout's (embedding_) lost it
    # silently; a kernel replaced in both phases warned (reaches no block)
    full, warned = _full({"recipe": "parametric_umap", "min_dist": 0.1, "phases": [
        {"name": "layout", "loss": {"kernel": "test23b_gaussian"}}]})
    assert _phase(full, "main")["loss"]["kernel"]["min_dist"] == 0.1
    assert len(warned) == 1, warned
    assert "`min_dist` = 0.1 reaches `phases.main.loss.kernel` but not every block" in warned[0]
    assert "`phases.layout.loss.kernel` is now 'test23b_gaussian', which has no field " \
           "`min_dist`" in warned[0]
    # t-SNE's dof the same way
    full, warned = _full({"recipe": "parametric_tsne", "dof": 0.5, "phases": [
        {"name": "layout", "loss": {"kernel": "test23b_gaussian"}}]})
    assert len(warned) == 1 and "`dof` = 0.5 reaches" in warned[0] and \
        "`phases.layout.loss.kernel` is now 'test23b_gaussian'" in warned[0], warned
    # both replaced: the old message (reaches no block)
    _, warned = _full({"recipe": "parametric_umap", "min_dist": 0.1, "phases": [
        {"name": "layout", "loss": {"kernel": "test23b_gaussian"}},
        {"name": "main", "loss": {"kernel": "test23b_gaussian"}}]})
    assert len(warned) == 1 and "`min_dist` = 0.1 reaches no block" in warned[0], warned


def test_a_shortcut_that_reaches_every_block_is_quiet(affinities):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortcutWarning)
        recipe_from_dict({"recipe": "parametric_umap", "min_dist": 0.1, "n_neighbors": 10}
                         ).to_dict(full=True)
        recipe_from_dict({"recipe": "parametric_tsne", "perplexity": 10.0, "dof": 0.5}
                         ).to_dict(full=True)
        # the kernel given in the replaced table itself: nothing lost
        recipe_from_dict({"recipe": "parametric_umap", "phases": [
            {"name": "layout", "loss": {"kernel": "test23b_gaussian"}}]}).to_dict(full=True)



def test_a_value_only_derived_from_a_shortcut_is_not_warned_about():
    # author23-9: `layout_epochs` = 2 sets the phase's epochs, and caps the built-in KL's
    # `exaggeration_steps` at 2; a loss without that field lost only the derived cap, and the
    # first draw of this fix warned "reaches `phases.layout` but not every block ...: remove
    # `layout_epochs`" (wrong advice: the epochs are its own value, and they ran)
    layout_loss = {"name": "relation", "model": "layout", "input": "items"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortcutWarning)
        full = recipe_from_dict({"recipe": "parametric_tsne", "layout_epochs": 2, "phases": [
            {"name": "layout", "loss": layout_loss}]}).to_dict(full=True)
    assert _phase(full, "layout")["epochs"] == 2
    assert "exaggeration_steps" not in _phase(full, "layout")["loss"]


def test_the_fits_lowered_perplexity_reaches_a_listed_affinity(affinities):
    # On 60 rows t-SNE lowers the default perplexity 30 to (60 − 1) / 3 = 19.67 and says so;
    # before, `transforms = ["perplexity_rescale", ...]` (no value in its table) ran at the
    # block's own 30 and `perplexity_` was None after the fit; a plugin affinity the same
    import numpy as np

    from infoblocks.recipes import ParametricTSNE

    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    for first in ("perplexity_rescale", "test23b_entropic"):
        recipe = ParametricTSNE(layout_epochs=1, init_epochs=1, transform_epochs=0, globals={
            "P": {"transforms": [first, "symmetrize", "normalize"]}})
        # as written (the recipe's entry where it names the recipe's block: author28-3)
        assert recipe.routine_spec()["globals"]["P"]["transforms"][0] in (
            first, {"name": first, "perplexity": 30.0})
        with pytest.warns(UserWarning, match=r"this fit uses perplexity = \(samples − 1\) / 3 "
                                             r"= 19\.67"):
            recipe.fit(x)
        assert recipe.perplexity_ == pytest.approx(59 / 3)
        assert recipe.routine_.global_relations["P"].transforms[0].perplexity == \
            pytest.approx(59 / 3)
    # the entry's own value still wins
    recipe = ParametricTSNE(layout_epochs=1, init_epochs=1, transform_epochs=0, globals={
        "P": {"transforms": [{"name": "perplexity_rescale", "perplexity": 5.0}, "symmetrize",
                             "normalize"]}})
    with pytest.warns(UserWarning, match="19.67"):
        recipe.fit(x)
    assert recipe.perplexity_ == 5.0
