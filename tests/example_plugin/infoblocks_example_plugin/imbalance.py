"""Example plugin blocks for the DII recipe, each used by name from TOML.

- :class:`WeightedManhattan` (distance ``weighted_l1``): a distance of space A for the
  ``distance_A`` slots of the ``dii`` recipe (training *and* ``final_dii`` /
  ``select_features``): d(x, y) = Σ_f |w_f| |Δ_f|, the learnt weights taken through the
  distance protocol of :mod:`infoblocks.blocks.imbalance.distances` (only
  ``weighted_pairwise`` is implemented; the loss's table and chunk paths use its defaults).

It counts its calls in a class attribute (``calls``) so a test can prove that it ran.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from infoblocks.blocks.imbalance import FeatureWeightedDistance


@attrs.define(frozen=True)
class WeightedManhattan(FeatureWeightedDistance):
    """d(x, y) = Σ_f |w_f| |x_f − y_f| (``weights`` None: all 1): ``(n, D), (m, D) -> (n, m)``.

    The Gaussian softmax of the DII then weighs neighbours by exp(−d / λ) with an l1 d.
    """

    name: ClassVar[str] = "weighted_l1"
    #: how many times :meth:`weighted_pairwise` ran (a test's proof that the block was used)
    calls: ClassVar[int] = 0
    #: the block's own weights, used by ``pairwise`` (the DII passes its learnt weights)
    weights: tuple | None = attrs.field(
        default=None, converter=lambda w: None if w is None else tuple(float(v) for v in w))

    def weighted_pairwise(self, a, b, weights):
        WeightedManhattan.calls += 1
        diff = (a[:, None, :] - b[None, :, :]).abs()
        return diff.sum(-1) if weights is None else diff @ weights.abs()


#: hook name without ``register_`` -> block classes
BLOCKS: dict[str, list[type]] = {"distances": [WeightedManhattan]}
