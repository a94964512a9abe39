"""check_block feeds a supervised loss labels that fit it (author24-5 / author22-8 follow-up):
a loss that declares ``classes`` (``encoded_mi`` scoring one-hot targets) gets class indices
0 … classes − 1 and a critic that takes ``classes`` columns; labels of several columns
(``labels=`` a function giving (n, k)) get a critic of k columns.  Before, the kits' critic
took one column: ``classes = 4`` failed with "mat1 and mat2 shapes cannot be multiplied
(40x4 and 1x8)", ``classes = 2`` was not run (labels 0 … 2 outside the classes)."""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest

from infoblocks.blocks.mutual_information.encoded import EncodedMILoss
from infoblocks.plugins.testing import NotExercisedWarning, check_block

SEEN: dict[str, tuple] = {}
BOUND = {"name": "infonce_loss", "critic": "critic"}


@attrs.define
class _Spy(EncodedMILoss):
    """encoded_mi, recording the labels it was given and the width of the critic's input."""

    name: ClassVar[str] = "test_fix25a_encoded_spy"

    def __call__(self, batch, models, state):
        SEEN["labels"] = tuple(sorted(set(batch[self.target].reshape(len(batch[self.target]),
                                                                     -1)[:, 0].tolist())))
        SEEN["columns"] = tuple(batch[self.target].shape[1:])
        out = super().__call__(batch, models, state)
        SEEN["mi"] = float(out.metrics["mi"])
        return out


def _run(example, **kwargs):
    SEEN.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_block(_Spy, example, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, NotExercisedWarning)]


@pytest.mark.parametrize("classes", [2, 4])
def test_a_loss_declaring_classes_is_run_with_labels_of_those_classes(classes):
    assert _run({"bound": BOUND, "classes": classes}) == []
    assert SEEN["labels"] == tuple(range(classes)) and SEEN["columns"] == ()
    assert np.isfinite(SEEN["mi"])


def test_labels_of_several_columns_get_a_critic_of_that_width():
    rng = np.random.default_rng(0)
    assert _run({"bound": BOUND}, labels=lambda n: rng.normal(size=(n, 3))) == []
    assert SEEN["columns"] == (3,) and np.isfinite(SEEN["mi"])


def test_given_labels_within_the_declared_classes():
    assert _run({"bound": BOUND, "classes": 5}, labels=3) == []
    assert SEEN["labels"] == (0, 1, 2)


def test_the_built_in_encoded_mi_with_classes_passes():
    from infoblocks.plugins.registry import get_registry

    loss = get_registry().get("loss", "encoded_mi")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotExercisedWarning)
        assert check_block(loss, {"bound": BOUND, "classes": 4}).classes == 4
