"""author28-5 / author28-11: ``perplexity_`` says what ran, and too few neighbours for the
perplexity is a ``warnings`` warning.  Before, ``n_neighbors = 15`` with perplexity 30 ran
every row at perplexity 14 with only a ``logging`` line (not catchable, not in ``-W error``)
while ``perplexity_`` said 30; a plugin affinity with a ``perplexity`` field (run at its own
30) left ``perplexity_`` None."""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest

from infoblocks.blocks.relations import SparseRelations
from infoblocks.blocks.transforms import Transform
from infoblocks.plugins import hookimpl
from infoblocks.recipes import ParametricTSNE

pytestmark = pytest.mark.filterwarnings("ignore:.*cannot reach the layout")

SMALL = dict(layout_epochs=2, init_epochs=1, seed=0)


def _data(n=150, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(4, d))[rng.integers(0, 4, n)] * 5
            + rng.normal(size=(n, d))).astype(np.float32)


@attrs.define
class EntropicAffinity(Transform):
    """A plugin affinity with its own perplexity (the built-in's calibration)."""
    name: ClassVar[str] = "fix28a_entropic"
    accepts: ClassVar[tuple[type, ...]] = (SparseRelations,)
    perplexity: float = 25.0

    def apply(self, relations):
        from infoblocks.blocks.embedding.affinities import PerplexityBasedRescale

        return PerplexityBasedRescale(perplexity=self.perplexity).apply(relations)


def test_too_few_neighbours_for_the_perplexity_is_a_warning_and_recorded():
    recipe = ParametricTSNE(**SMALL, n_neighbors=15)
    with pytest.warns(UserWarning, match=r"perplexity = 30 needs more than 30 neighbours per "
                                         r"row, but 150 rows have as few as 15: they use "
                                         r"perplexity = neighbours − 1 = 14\. Give the k-NN "
                                         r"relation at least 3 × perplexity = 90 neighbours"):
        recipe.fit(_data())
    assert recipe.perplexity_ == 14.0
    with warnings.catch_warnings():  # -W error stops it
        warnings.filterwarnings("error", message="perplexity_rescale")
        with pytest.raises(UserWarning, match="perplexity_rescale"):
            ParametricTSNE(**SMALL, n_neighbors=15).fit(_data())
    # enough neighbours for the perplexity: as set, no warning
    recipe = ParametricTSNE(**SMALL, n_neighbors=15, perplexity=5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        recipe.fit(_data())
    assert not [w for w in record if "perplexity" in str(w.message)]
    assert recipe.perplexity_ == 5.0


def test_a_plugin_affinitys_perplexity_is_recorded(infoblocks_plugin, tmp_path):
    class Plugin:
        @hookimpl
        def register_transforms(self):
            return [EntropicAffinity]

    infoblocks_plugin(Plugin(), "fix28a")
    recipe = ParametricTSNE(**SMALL, globals={"P": {"transforms": [
        "fix28a_entropic", {"name": "symmetrize", "subtract_product": False}, "normalize"]}})
    recipe.fit(_data())
    assert recipe.perplexity_ == 25.0  # the block's own value, as it ran (was None)
    recipe.save(tmp_path / "m")
    assert ParametricTSNE.load(tmp_path / "m").perplexity_ == 25.0
