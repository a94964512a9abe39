"""A warm fit's record of the settings holds a torch module given as a setting by reference, not
a deep copy: the copy doubled the module's memory on every fit and, compared by identity, never
equalled the module it came from; a second warm fit with the same module still continues."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from infoblocks.recipes.infomax import InfoMax


def test_a_module_setting_is_recorded_by_reference_and_the_warm_fit_continues():
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    module = torch.nn.Linear(4, 2)
    recipe = InfoMax(n_components=2, encoder_module=module, epochs=2, patience=None, seed=0,
                     warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (2-epoch fits: convergence warnings)
        recipe.fit(x)
        assert recipe._trained[1]["encoder_module"] is module
        recipe.fit(x)
    assert len(recipe.history_) == 4  # 2 + 2 epochs: continued, nothing refused
