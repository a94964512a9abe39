"""2-fold cross-fitting of a neural MI estimator: :func:`cross_fit`.

One fit trains the critic on one half of the items and evaluates the bound on the other
(``test_fraction`` = 0.5): the estimate carries the luck of that half — on benchmark-mi's
dense 25 × 25 task the same fit with the halves swapped moved by up to 0.05 nats (docs/mi.md,
"Which half is held out").  Cross-fitting runs the recipe twice on the same seeded split, the
second time with the parts exchanged (the ``globals`` section: ``train_index`` takes ``part =
"test"``, ``test_index`` ``part = "train"``), so every item is evaluated once, by the critic
that did not train on it; the estimate is the mean of the two folds' estimates.  It costs two
fits.

The interval: given the two trained critics, the folds' evaluation items are disjoint halves
of the sample, so their sampling errors are independent; each fold's half-sampling interval
(see :meth:`~infoblocks.recipes.mi.NeuralMIEstimator.estimate`) gives its lower and upper
deviation, and the mean's deviations are √(d₁² + d₂²) / 2 on each side.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from infoblocks.blocks.errors import ValidationError

from .mi_evaluation import MIEstimate, units_scale

#: the two folds' ``globals`` updates: the seeded split as the recipe draws it, then swapped
FOLD_GLOBALS = ({}, {"train_index": {"relation": {"part": "test"}},
                     "test_index": {"relation": {"part": "train"}}})


class CrossFit:
    """The result of :func:`cross_fit`: ``folds`` (the two fitted estimators: the recipe's own
    split, then the swapped one), ``estimate(units="nats", ci=0.95)`` (an
    :class:`MIEstimate`: the mean of the folds' estimates, with the interval above) and
    ``estimate_nats_``."""

    def __init__(self, folds: tuple[Any, Any]) -> None:
        self.folds = folds
        self.estimate_nats_ = float(np.mean([f.estimate_nats_ for f in folds]))

    def estimate(self, units: str = "nats", ci: float = 0.95) -> MIEstimate:
        scale = units_scale(units)
        values = [f.estimate(ci=ci) for f in self.folds]  # validates ci
        low = math.sqrt(sum((float(v) - v.low) ** 2 for v in values)) / 2
        high = math.sqrt(sum((v.high - float(v)) ** 2 for v in values)) / 2
        mean = self.estimate_nats_
        return MIEstimate(mean * scale, (mean - low) * scale, (mean + high) * scale, float(ci),
                          units)

    def __repr__(self) -> str:
        return (f"CrossFit({type(self.folds[0]).__name__}, folds "
                f"{', '.join(f'{f.estimate_nats_:.4f}' for f in self.folds)} -> "
                f"{self.estimate_nats_:.4f} nats)")


def cross_fit(estimator: Any, x: Any, y: Any) -> CrossFit:
    """Fit ``estimator`` (a neural MI recipe: MINE, NWJ, InfoNCE, SMILE, MI-NEE; left
    unfitted) twice on ``x``, ``y`` — once on its seeded split, once with training and
    held-out halves exchanged — and return a :class:`CrossFit` whose estimate is the mean of
    the two (every item evaluated once, by the critic that did not train on it).

    Needs a held-out set (``test_fraction`` > 0; 0.5, the default, gives two equal folds),
    ``evaluate_on="test"``, no ``globals`` section of its own for the split, no
    ``warm_start``; a ``critic_module`` is deep-copied for the second fold.  Data as for
    ``fit`` (arrays, memory-mapped ``.npy``); fresh samples (``sampler=``) have no fixed
    sample to cross-fit."""
    if not callable(getattr(estimator, "get_params", None)) or \
            not callable(getattr(estimator, "fit", None)):
        raise ValidationError(
            f"cross_fit takes an unfitted MI estimator, e.g. cross_fit(MINE(seed=0), x, y); "
            f"got {type(estimator).__name__} {estimator!r:.40}.")
    params = estimator.get_params()
    if not params["test_fraction"] > 0:
        raise ValidationError("cross_fit needs a held-out set: `test_fraction` must be > 0 "
                              "(0.5, the default, gives two equal folds).")
    if params["evaluate_on"] != "test":
        raise ValidationError(f"cross_fit evaluates each fold on its held-out half: "
                              f"`evaluate_on` must be \"test\", got {params['evaluate_on']!r}.")
    if params["warm_start"]:
        raise ValidationError("cross_fit fits each fold from scratch: set `warm_start=False`.")
    own = params.get("globals") or {}
    if any(key in own for key in ("train_index", "test_index")):
        raise ValidationError("cross_fit sets the split itself (`globals.train_index` / "
                              "`globals.test_index`); remove them from the `globals` section.")
    module = params.get("critic_module")  # copied before the first fold trains it
    modules = (module, None if module is None else copy.deepcopy(module))
    folds = []
    for fold_globals, fold_module in zip(FOLD_GLOBALS, modules):
        fold_params = {**params, "globals": {**own, **fold_globals} or None}
        if module is not None:
            fold_params["critic_module"] = fold_module
        folds.append(type(estimator)(**fold_params).fit(x, y))
    return CrossFit((folds[0], folds[1]))


__all__ = ["CrossFit", "cross_fit", "FOLD_GLOBALS"]
