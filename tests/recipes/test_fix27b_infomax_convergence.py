"""InfoMax warns, as MINE does, when the restored (best held-out) epoch is the first or, after
all the epochs ran, one of the last 10 % (author27-4). Before, a plugin encoder on the digits
restored epoch 0 (probe 0.852 against raw pixels' 0.918) and the defaults on split 1 restored
epoch 199 of 200, both silently."""

from __future__ import annotations

import warnings

from infoblocks.recipes.infomax import InfoMax
from infoblocks.recipes.mi_evaluation import MIConvergenceWarning
from infoblocks.recipes.infomax import sanity_problem


def _fit(**options) -> tuple[InfoMax, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = InfoMax(n_components=1, **options).fit(sanity_problem(0, n=300)[1])
    return model, [str(w.message) for w in caught
                   if issubclass(w.category, MIConvergenceWarning)]


def test_best_at_the_first_epoch_warns():
    # lr 1e-4: the PCA start's held-out bound falls from 0.576 (epoch 0) to 0.518 (epoch 5)
    model, found = _fit(epochs=6, learning_rate=1e-4)
    assert model.best_epoch_ == 0
    assert len(found) == 1 and found[0].startswith(
        "InfoMax: the held-out bound was best at the first epoch (0: 0.576 nats) and did not "
        "rise in the 5 epochs after it, so the encoder restored is barely trained")
    assert "Raise `epochs`" in found[0] and "lower `learning_rate` (now 0.0001)" in found[0]


def test_best_in_the_last_epochs_warns_still_rising():
    # a random-init MLP, 8 epochs: the held-out bound 0.015 -> 0.309, best at epoch 7
    model, found = _fit(epochs=8, learning_rate=0.05, encoder="mlp")
    assert model.best_epoch_ == 7
    assert found == ["InfoMax: the held-out bound was still rising at the last epoch (8; "
                     "restored epoch 7); increase `epochs` (or the learning rate) for a "
                     "converged code."]


def test_a_best_epoch_inside_the_run_is_silent():
    # the defaults, 6 epochs: the held-out bound peaks at epoch 3 of 0..5
    model, found = _fit(epochs=6)
    assert model.best_epoch_ == 3 and found == []
