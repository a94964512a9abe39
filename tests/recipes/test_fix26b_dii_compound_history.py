"""fix26b (author26-2): DII's loss wrapped in a `compound` (dii + a penalty): `dii_history_`
is read from the dii part ("0.dii.dii"); before, it held the initial value only, shape (1,)
against (epochs + 1,), and `plot()` / `infoblocks run` died with matplotlib's "x and y must
have same first dimension".  A loss that reports no `dii` is refused before training."""
import types
from typing import ClassVar

import attrs
import matplotlib
import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.plugins import hookimpl

matplotlib.use("Agg")


@attrs.define
class L1Penalty(Loss):
    name: ClassVar[str] = "f26b_l1"
    consumes: ClassVar[frozenset[str]] = frozenset()
    reports: ClassVar[frozenset[str]] = frozenset({"l1"})
    strength: float = 0.0

    def required_models(self):
        return frozenset({"weights"})

    def __call__(self, batch, models, state):
        v = self.strength * models["weights"].feature_weights().abs().sum()
        return LossOutput(v, {"l1": v.detach()})


@pytest.fixture
def plugin(infoblocks_plugin):
    module = types.ModuleType("f26b_compound")
    module.register_losses = hookimpl(lambda: [L1Penalty])
    return infoblocks_plugin(module, name="f26b_compound")


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 4)).astype(np.float32)
    return A, A[:, :2] * np.array([3.0, 1.0], dtype=np.float32)


def _compound(penalty):
    return [{"name": "dii", "loss": {"name": "compound", "losses": ["dii", penalty]}}]


@pytest.mark.parametrize("per_epoch", ["mean", "last_batch"])
def test_a_compound_around_dii_keeps_the_dii_history(plugin, tmp_path, per_epoch):
    from infoblocks.recipes import DII
    A, B = _data()
    settings = dict(epochs=5, batches_per_epoch=2, optimizer="adam", learning_rate=0.05,
                    dii_per_epoch=per_epoch)
    plain = DII(**settings).fit(A, B)
    wrapped = DII(**settings, phases=_compound({"name": "f26b_l1", "strength": 0.0})).fit(A, B)
    assert wrapped.dii_history_.shape == (6,)
    np.testing.assert_array_equal(wrapped.dii_history_, plain.dii_history_)
    np.testing.assert_array_equal(wrapped.weights_, plain.weights_)
    wrapped.plot(tmp_path / "dii.png")
    assert (tmp_path / "dii.png").stat().st_size > 0


def test_the_history_is_the_dii_part_not_the_total(plugin):
    from infoblocks.recipes import DII
    A, B = _data()
    m = DII(epochs=3, phases=_compound({"name": "f26b_l1", "strength": 10.0})).fit(A, B)
    total = np.array(m.routine_.history.column("loss"))
    assert m.dii_history_.shape == (4,)
    assert np.all(m.dii_history_ < 1.5)          # a DII, not DII + 10 · Σ|w|
    assert np.all(total > m.dii_history_[1:] + 1.0)


def test_a_loss_that_reports_no_dii_is_refused_before_training(plugin):
    from infoblocks.recipes import DII
    A, B = _data()
    with pytest.raises(ConfigError, match=r"phases\.dii \('f26b_l1'\) reports no `dii`.*"
                       r"compound"):
        DII(epochs=2, phases=[{"name": "dii", "loss": {"name": "f26b_l1"}}]).fit(A, B)
