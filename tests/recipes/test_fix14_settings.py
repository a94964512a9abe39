"""Settings that were accepted and then did nothing (user13 notes, "Other"): each is refused
naming both settings and the fix, while the defaults and the meaningful values still pass."""

from __future__ import annotations

import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import IMNN, MINE, ParametricTSNE


def test_mi_validate_every_above_epochs_is_refused():
    # was accepted: one validation at the last epoch, so patience / best restore did nothing
    with pytest.raises(ValidationError, match=r"`validate_every` = 1000 exceeds `epochs` = 3"):
        MINE(epochs=3, validate_every=1000)
    with pytest.raises(ValidationError, match="validate_every"):
        MINE(epochs=30, validate_every=10).set_params(epochs=5)
    MINE(epochs=3, validate_every=3)  # one validation, at the end: a choice
    MINE(epochs=3, validate_every=5, test_fraction=0.0)  # no held-out set: nothing validated
    MINE(epochs=3)  # the default interval (5) of a short run


def test_imnn_min_epochs_above_epochs_is_refused():
    with pytest.raises(ValidationError, match=r"`min_epochs` = 10 exceeds `epochs` = 3"):
        IMNN(theta_fid=(0, 1), n_summaries=2, min_epochs=10, epochs=3)
    IMNN(theta_fid=(0, 1), n_summaries=2, epochs=3)  # the default floor (100): no early stop


def test_tsne_layout_exaggeration_beyond_the_layout_is_refused():
    with pytest.raises(ValidationError, match=r"`layout_exaggeration_epochs` = 50 exceeds "
                                              r"`layout_epochs` = 5"):
        ParametricTSNE(layout_exaggeration_epochs=50, layout_epochs=5)
    ParametricTSNE(layout_epochs=5)  # the default 10, capped at a short layout's length
