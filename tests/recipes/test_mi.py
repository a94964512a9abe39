"""MI recipes (MINE, MI-NEE, InfoNCE, NWJ, SMILE) against known Gaussian mutual information."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ConfigError, ContractError, NotFittedError, ValidationError
from infoblocks.blocks.mutual_information import DVLoss, MINELoss
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.recipes.mi import (MINE, MINEE, NWJ, SMILE, InfoNCE, MIConvergenceWarning,
                                   MIEstimate, dense_gaussian, seed_problem)

RHO = 0.6
TRUE_MI = -0.5 * math.log(1 - RHO ** 2)  # 0.2231 nats
#: a small, fast configuration for the 1-D checks (measured: 1-3 s per fit)
FAST = dict(hidden_dims=(32, 32), learning_rate=3e-3, patience=20, batch_size=200)


def gaussian_1d(n: int, seed: int, rho: float = RHO) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, rho * x + math.sqrt(1 - rho ** 2) * rng.standard_normal(n)


def quiet_fit(est, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MIConvergenceWarning)
        return est.fit(x, y)


# ---------------------------------------------------------------- accuracy (issue 5 targets)


def test_mine_seed_problem_mean_over_seeds_within_003():
    # issue 5: mean over seeds 0, 1, 2 within 0.03 nats of the truth, each within 0.08
    # (the n = 1000 sample itself is off by ±0.03; the notebook trainer's mean bias is −0.040)
    biases = []
    for seed in (0, 1, 2):
        x, y, truth = seed_problem(seed)
        est = quiet_fit(MINE(seed=seed), x, y)
        biases.append(est.estimate() - truth)
    assert max(abs(b) for b in biases) < 0.08, biases
    assert abs(np.mean(biases)) < 0.03, biases


def test_minee_seed_problem_within_008_and_entropies():
    biases = []
    for seed in (0, 1, 2):
        x, y, truth = seed_problem(seed)
        # small budget: plain DV terms, one reference draw per row, patience 50 (defaults are
        # tuned for large MI and take ~3x longer; see the slow R⁶ test)
        est = quiet_fit(MINEE(seed=seed, ma_rate=1.0, reference_factor=1.0, patience=50,
                              standardize=True), x, y)  # (the entropies: the moments)
        biases.append(est.estimate() - truth)
        d = est.divergences_
        assert est.estimate() == pytest.approx(d["d_xy"] - d["d_x"] - d["d_y"])
        # x ~ N(0, 1): h(X) = ½ ln(2πe) = 1.419 nats (Gaussian reference: D(P_X‖P_X') ≈ 0)
        assert est.entropies_["h_x"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e),
                                                      abs=0.1)
        ent = est.entropies_
        assert ent["h_x"] + ent["h_y"] - ent["h_xy"] == pytest.approx(est.estimate(), abs=1e-6)
    assert abs(np.mean(biases)) < 0.08, biases


@pytest.mark.parametrize("cls, seed", [(InfoNCE, 11), (NWJ, 12), (SMILE, 13)])
def test_infonce_nwj_smile_on_fresh_gaussian_samples(cls, seed):
    # 1-D Gaussian ρ = 0.6, fresh samples: within 0.05 nats of −½ ln(1 − ρ²)
    x, y = gaussian_1d(2000, seed)
    est = quiet_fit(cls(seed=1, **FAST), x, y)
    assert est.estimate() == pytest.approx(TRUE_MI, abs=0.05)
    interval = est.estimate(ci=0.9)  # half-sampling of this recipe's own bound
    assert interval.low < interval.value < interval.high < interval.low + 0.2


def test_10000_mine_steps_without_nan():
    # the notebook trainer reaches NaN after 500-800 epochs: its offset drifts and exp overflows;
    # here every exp is inside a logsumexp.  Tiny critic, no held-out set: 10,000 steps.
    x, y, truth = seed_problem(0)
    est = MINE(hidden_dims=(8,), test_fraction=0.0, epochs=1000, batches_per_epoch=10,
               learning_rate=1e-2)
    quiet_fit(est, x, y)
    assert len(est.history_) == 1000
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["mi"]) for r in est.history_)
    assert math.isfinite(est.estimate()) and abs(est.estimate() - truth) < 0.3



def test_infonce_interval_contains_its_estimate_at_high_mi():
    # issue 11: at high MI InfoNCE's interval excluded its own estimate (4.49 against
    # [3.99, 4.21]): a bootstrap resampling items with replacement duplicates rows, and a
    # duplicate of y_i is a negative of x_i scoring as high as the positive, so every resample
    # fell below the estimate.  Here, before the fix, the estimate was +inf (a separable critic
    # scores pairs from about −2600 to +1400 nats and a row underflowed to log 0) and the
    # interval [nan, nan].  Now the estimate is finite and the half-sampling interval (subsets
    # of distinct items) contains it.
    rho = 0.9999
    truth = -0.5 * math.log(1 - rho ** 2)  # 4.26 nats
    x, y = gaussian_1d(600, 0, rho=rho)
    est = quiet_fit(InfoNCE(seed=0, hidden_dims=(32, 32), learning_rate=3e-3, patience=20,
                            batch_size=128, epochs=100), x, y)
    value = est.estimate()
    assert math.isfinite(value) and 2.5 < value < truth + 0.1  # measured 3.40 (a lower bound)
    for ci in (0.95, 0.5):
        interval = est.estimate(ci=ci)
        assert interval.low < float(interval) < interval.high < interval.low + 0.5, interval


# ---------------------------------------------------------------- API


@pytest.fixture(scope="module")
def fitted():
    x, y = gaussian_1d(600, 3)
    return quiet_fit(MINE(seed=0, epochs=40, **FAST), x, y)


def test_estimate_units_and_interval(fitted):
    nats = fitted.estimate()
    assert fitted.estimate(units="bits") == pytest.approx(nats / math.log(2))
    interval = fitted.estimate(ci=0.95)
    assert isinstance(interval, MIEstimate) and float(interval) == nats
    assert interval.low < nats < interval.high and interval.high - interval.low < 0.5
    bits = fitted.estimate(units="bits", ci=0.9)
    assert bits.high == pytest.approx(fitted.estimate(ci=0.9).high / math.log(2))


def test_history_and_plot(fitted, tmp_path):
    rows = fitted.history_
    assert all({"epoch", "loss", "mi"} <= set(row) for row in rows)
    # the held-out bound every 5th epoch (the fixed product-of-marginals pairs)
    assert [r["epoch"] for r in rows if "val_mi" in r][:3] == [4, 9, 14]
    fig = fitted.plot(truth=TRUE_MI, path=tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("truth" in t for t in labels) and any("held-out" in t for t in labels)


@pytest.mark.parametrize("every", [1, None])
def test_early_stopping_restores_best_epoch(every):
    """``patience`` counts epochs whatever ``validate_every`` is (default: every 5th epoch with
    the fixed product-of-marginals pairs): training stops ⌈patience / every⌉ validations after
    the best one, and the restored epoch is the held-out best among the validated epochs."""
    x, y = gaussian_1d(400, 4)
    # (the moments: with normal scores (the default ranks) this small critic keeps improving
    # for all 500 epochs — no early stop to test)
    est = quiet_fit(MINE(seed=0, patience=10, epochs=500, hidden_dims=(16,), standardize=True,
                         learning_rate=1e-2, validate_every=every), x, y)
    step = 1 if every == 1 else 5
    assert est.routine_.phases[0].validation.every == step
    assert est.routine_.phases[0].patience == 10 // step
    epochs, vals = zip(*[(r["epoch"], r["val_mi"]) for r in est.history_ if "val_mi" in r])
    assert all((e + 1) % step == 0 for e in epochs) and len(epochs) >= 3
    last = len(est.history_) - 1
    assert last < 499 and last == epochs[-1]  # stopped early, at a validation
    assert est.best_epoch_ == epochs[int(np.argmax(vals))]  # the restored epoch is the best
    assert last - est.best_epoch_ == 10  # patience: 10 epochs = 10 // step validations
    assert max(vals[-10 // step:]) < max(vals)


def test_one_dimensional_input_equals_column_input():
    x, y = gaussian_1d(300, 5)
    a = quiet_fit(MINE(seed=0, epochs=5, hidden_dims=(8,)), x, y).estimate()
    b = quiet_fit(MINE(seed=0, epochs=5, hidden_dims=(8,)), x[:, None], y[:, None]).estimate()
    assert a == pytest.approx(b, abs=1e-6)


def test_multivariate_and_separable_critic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3))
    y = np.c_[x[:, :1] * 0.8 + 0.6 * rng.standard_normal((500, 1)), rng.standard_normal((500, 4))]
    est = quiet_fit(NWJ(critic="separable", epochs=5, hidden_dims=(8,), embed_dim=4), x, y)
    assert math.isfinite(est.estimate())


def test_standardisation_makes_estimate_scale_free():
    x, y = gaussian_1d(300, 6)
    a = quiet_fit(MINE(seed=0, epochs=5, hidden_dims=(8,)), x, y).estimate()
    b = quiet_fit(MINE(seed=0, epochs=5, hidden_dims=(8,)), 1e4 * x + 7, y * 1e-3).estimate()
    assert a == pytest.approx(b, abs=1e-3)  # MI is invariant under affine maps of each variable


def test_warns_when_still_rising():
    x, y = gaussian_1d(400, 7)
    with pytest.warns(MIConvergenceWarning, match="still rising"):
        MINE(epochs=6, learning_rate=1e-4, patience=None, validate_every=1).fit(x, y)


def test_infonce_cap_warning():
    # ρ = 0.999: I = 3.1 nats, above log(8) = 2.08: InfoNCE cannot reach it
    x, y = gaussian_1d(400, 8, rho=0.999)
    with pytest.warns(MIConvergenceWarning, match="log\\(batch_size\\)"):
        InfoNCE(batch_size=8, epochs=30, hidden_dims=(16,), learning_rate=1e-2).fit(x, y)


@pytest.mark.parametrize("cls, lr, match", [
    (MINE, 0.1, r"MINE: the estimate -\d.* is below zero.*`learning_rate` \(now 0.1\)"),
    (InfoNCE, 1.0, r"InfoNCE: the estimate -\d.* is below zero"),
    (SMILE, 1.0, r"SMILE: the estimate \d.* is above log\(n_eval\) = 5.011"),
])
def test_a_diverged_estimate_is_reported(cls, lr, match):
    # user13: at a learning rate far too large the critic diverges; the estimates were -12.4
    # (MINE), -37,888 (InfoNCE) and +29.0 nats from 150 evaluation pairs (SMILE), truth 1.61,
    # returned without a word
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = x + 0.5 * rng.normal(size=(300, 2))
    with pytest.warns(MIConvergenceWarning, match=match):
        estimate = cls(epochs=30, batch_size=50, learning_rate=lr, seed=0).fit(x, y).estimate()
    assert not 0 <= estimate <= np.log(150)  # the warning is about this number


def test_best_epoch_is_the_epoch_the_phase_restored():
    # author11 A11-2: best_epoch_ was the argmax of val_mi whatever the phase monitored
    # (MI-NEE restores the best val_d_sum)
    x, y = gaussian_1d(400, 3)
    est = quiet_fit(MINEE(epochs=12, seed=0, hidden_dims=(8,)), x, y)
    rows = [r for r in est.history_ if "val_d_sum" in r]
    assert est.best_epoch_ == max(rows, key=lambda r: r["val_d_sum"])["epoch"]
    assert est.best_epoch_ != max(rows, key=lambda r: r["val_mi"])["epoch"]  # the case


def test_no_divergence_warning_near_zero_mi():
    # independent data: an overfitted critic gives a few hundredths below zero; not divergence
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 1)), rng.normal(size=(400, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimate = MINE(epochs=20, seed=0).fit(x, y).estimate()
    assert abs(estimate) < 0.1
    assert not [w for w in caught if "below zero" in str(w.message)]


@pytest.mark.parametrize("cls", [MINE, MINEE, InfoNCE, NWJ, SMILE])
def test_recipe_round_trips_as_data(cls, tmp_path):
    est = cls(seed=3, epochs=7, hidden_dims=(4, 5))
    again = recipe_from_dict(est.to_dict())
    assert type(again) is cls and again.to_dict() == est.to_dict()
    est.to_toml(tmp_path / "r.toml")
    assert cls.from_toml(tmp_path / "r.toml").to_dict() == est.to_dict()
    assert ("recipe", cls.name) in get_registry()
    full = recipe_from_dict(est.to_dict(full=True))  # the expanded routine is valid data too
    assert full.routine_spec() == est.routine_spec()
    (tmp_path / "full.toml").write_text(est.to_toml(full=True))
    assert cls.from_toml(tmp_path / "full.toml").routine_spec() == est.routine_spec()


def test_run_writes_outputs(tmp_path):
    x, y = gaussian_1d(300, 9)
    summary = MINEE(epochs=5, hidden_dims=(8,)).run([x[:, None], y[:, None]], tmp_path)
    assert json.loads((tmp_path / "estimate.json").read_text())["estimate_nats"] == \
        pytest.approx(summary["estimate_nats"])
    assert (tmp_path / "mi_training.png").exists() and (tmp_path / "model" / "weights.pt").exists()
    assert MINEE.load(summary["model"]).estimate() == pytest.approx(summary["estimate_nats"])
    assert set(summary["entropies_nats"]) == {"h_x", "h_y", "h_xy"}
    json.dumps(summary)  # JSON-able
    split = MINE(epochs=3, hidden_dims=(8,), split_at=1).run([np.c_[x, y]], tmp_path / "b")
    assert math.isfinite(split["estimate_nats"])


@pytest.mark.slow  # one seed-problem fit, as in test_mine_seed_problem_... (quick: < 30 s)
def test_demo_quick(tmp_path):
    out = MINE.demo(tmp_path, quick=True)
    assert abs(out["mean_bias_nats"]) < 0.08
    assert (tmp_path / "mi_mine_demo.png").exists()


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("x, y, error, fragment", [
    (np.zeros((10, 1)), np.zeros((12, 1)), ValidationError, "Mismatched numbers of samples"),
    (np.r_[np.nan, np.arange(99.0)], np.arange(100.0), ValidationError, "non-finite"),
    (np.r_[np.inf, np.arange(99.0)], np.arange(100.0), ValidationError, "non-finite"),
    (np.zeros((10, 2, 2)), np.zeros(10), ValidationError, "must have 1 or 2 dimension"),
    (np.c_[np.arange(100.0), np.ones(100)], np.arange(100.0), ValidationError,
     "column(s) [1] are constant"),
    (np.arange(3.0), np.arange(3.0), ValidationError, "too few"),
    (np.array(["a", "b"] * 50), np.arange(100.0), ValidationError, "must hold numbers"),
    (np.zeros((0, 1)), np.zeros((0, 1)), ValidationError, "empty"),
    (None, np.zeros(10), ValidationError, "`x` is None"),
])
def test_bad_inputs(x, y, error, fragment):
    with pytest.raises(error, match=_escape(fragment)):
        MINE(epochs=1).fit(x, y)


def _escape(text: str) -> str:
    import re
    return re.escape(text)


def test_batch_larger_than_training_set():
    x, y = gaussian_1d(100, 0)
    with pytest.raises(ValidationError, match="exceeds the 50 training samples"):
        MINE(batch_size=80).fit(x, y)


def test_non_finite_critic_output_is_a_clear_error():
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, y):
            return (x * y).sum(-1) * self.w * float("inf")
    x, y = gaussian_1d(200, 0)
    with pytest.raises(Exception, match="(non-finite|became)"):
        MINE(epochs=2, critic_module=Exploding()).fit(x, y)


class _Concat(torch.nn.Module):
    """t(x, y) = a linear map of [x, y] to ``out`` values (a critic only when out = 1)."""

    def __init__(self, in_dim: int, out: int = 1, cast: bool = False):
        super().__init__()
        self.lin, self.cast = torch.nn.Linear(in_dim, out), cast

    def forward(self, x, y):
        t = self.lin(torch.cat([x, y], -1))
        return t.long() if self.cast else t


class _OneArgument(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, xy):
        return self.lin(xy)


class _Fixed(torch.nn.Module):
    def forward(self, x, y):
        return (x * y).sum(-1)


class _BadPairwise(_Concat):
    def pairwise(self, x, y):
        return torch.zeros(len(x))


@pytest.mark.parametrize("module, fragment", [
    # x has 2 columns here: a critic built for 1 + 1 inputs failed inside the first step with
    # torch's "mat1 and mat2 shapes cannot be multiplied"
    (_Concat(2), r"`critic_module` failed on x of shape \(3, 2\) and y of shape \(3, 1\) "
                 r"\(RuntimeError: .*\); it must map x \(3, 2\) and y \(3, 1\) .* to "
                 r"scores \(3,\) or \(3, 1\)"),
    # two scores per pair: "grad can be implicitly created only for scalar outputs"
    (_Concat(3, out=2), r"critic_module\(x, y\) returned \(3, 2\) for 3 items"),
    (_Concat(3, cast=True), r"returned \(3, 1\) of dtype torch.int64"),
    (_OneArgument(), r"failed on x .*TypeError"),
    (_Fixed(), r"`critic_module` has no trainable parameters"),
    (_BadPairwise(3), r"critic_module.pairwise\(x, y\) returned \(3,\) .* must be \(3, 3\)"),
    ("not a module", r"`critic_module` must be a torch.nn.Module"),
])
def test_custom_critic_is_checked_once_up_front(module, fragment):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    y = x[:, :1] + rng.standard_normal((200, 1))
    est = MINE(epochs=2, critic_module=module)
    with pytest.raises(ValidationError, match=fragment):
        est.fit(x, y)
    assert est.routine_ is None  # nothing trained


def test_a_good_custom_critic_trains():
    x, y = gaussian_1d(300, 2)
    est = quiet_fit(MINE(epochs=3, critic_module=_Concat(2)), x, y)
    assert math.isfinite(est.estimate()) and est.routine_.models["main"] is est.critic_module


@pytest.mark.parametrize("kwargs, fragment", [
    ({"test_fraction": 1.0}, "test_fraction"), ({"critic": "bilinear"}, "critic"),
    ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device"),
    ({"device": "gpu"}, "device"), ({"device": "cuda:x"}, "device"),
    ({"seed": -1}, "seed"), ({"negatives": "random"}, "negatives"),
    ({"optimizer": "lbfgs"}, "optimizer"), ({"evaluate_on": "train"}, "evaluate_on"),
    ({"hidden_dims": [100, 0]}, "`hidden_dims` must hold positive integers"),
])
def test_bad_hyperparameters(kwargs, fragment):
    with pytest.raises(ValidationError, match=fragment):
        MINE(**kwargs)
    with pytest.raises(ConfigError, match=fragment):
        recipe_from_dict({"recipe": "mine", **kwargs})


def test_all_pairs_with_a_batch_of_one_is_refused_before_training():
    # user13 U13-6: was "PluginError: ... loss 'mine_loss' raised ValueError: math domain error"
    x, y = gaussian_1d(100, 0)
    est = MINE(epochs=2, batch_size=1, negatives="all_pairs")
    with pytest.raises(ConfigError, match="`batch_size` = 1: all_pairs .* batch_size >= 2"):
        est.fit(x, y)
    assert est.routine_ is None


def test_results_before_fit_and_bad_arguments(fitted):
    with pytest.raises(NotFittedError, match="call fit"):
        MINE().estimate()
    with pytest.raises(NotFittedError, match="call fit"):
        NWJ().plot()
    with pytest.raises(ValidationError, match="units"):
        fitted.estimate(units="hartley")
    with pytest.raises(ValidationError, match="ci"):
        fitted.estimate(ci=95)
    with pytest.raises(ValidationError, match="two arrays"):
        MINE().run([np.zeros((10, 2))], "unused")
    with pytest.raises(ValidationError, match="reference"):
        MINEE(reference="laplace")
    with pytest.raises(ValidationError, match="negatives"):
        InfoNCE(negatives="pairs")


# ---------------------------------------------------------------- the routine as data (slots)


@pytest.mark.parametrize("cls, sampler, loss, validation, final, critic", [
    (MINE, "marginal_pairs", "mine_loss", "dv", "dv", "joint_critic"),
    (NWJ, "marginal_pairs", "nwj_loss", "nwj_loss", "nwj_loss", "joint_critic"),
    (InfoNCE, "all_pairs", "infonce_loss", "infonce_loss", "infonce_loss", "separable_critic"),
    (SMILE, "marginal_pairs", "smile_loss", "smile_loss", "smile_loss", "joint_critic"),
    (MINEE, "reference", "minee_loss", "minee_loss", "dv", "joint_critic"),
])
def test_slots_of_the_expanded_routine(cls, sampler, loss, validation, final, critic):
    spec = cls(seed=4).to_dict(full=True)
    split = spec["globals"]["train_index"]["relation"]
    assert split == {"name": "random_split", "test_fraction": 0.5, "seed": 4, "part": "train"}
    assert spec["globals"]["test_index"]["relation"]["part"] == "test"
    assert spec["models"]["main"]["name"] == critic
    (phase,) = spec["phases"]
    assert phase["sampler"]["name"] == sampler and phase["sampler"]["index_key"] == "train_index"
    assert phase["loss"]["name"] == loss
    assert phase["validation"]["loss"]["name"] == validation
    assert phase["validation"]["sampler"]["index_key"] == "test_index"
    # MI-NEE selects on the sum of its three bounds (a collapsed marginal critic raises I)
    assert phase["validation"]["metric"] == ("d_sum" if cls is MINEE else "mi")
    assert phase["validation"]["mode"] == "max"
    assert spec["evaluation"]["bound"]["name"] == final
    assert spec["evaluation"]["pairs"]["index"] == "test_index"
    if cls is MINEE:
        assert {"critic_x", "critic_y"} <= set(spec["models"])
    if cls is SMILE:  # the shortcut reaches every bound block that has the field
        assert phase["loss"]["clip"] == spec["evaluation"]["bound"]["clip"] == 5.0


def test_shortcuts_fill_the_slots_and_sections_replace_blocks():
    spec = MINE(test_fraction=0.0, evaluate_on="all", critic="separable", ma_rate=0.05,
                negatives="all_pairs").routine_spec()
    phase = spec["phases"][0]
    assert "validation" not in phase and spec["evaluation"]["pairs"]["index"] == "all_index"
    assert spec["globals"]["all_index"]["relation"]["part"] == "all"
    assert spec["models"]["main"]["name"] == "separable_critic"
    assert phase["loss"] == {"name": "mine_loss", "ma_rate": 0.05}
    assert phase["sampler"]["name"] == "all_pairs" and "marginal_factor" not in phase["sampler"]
    est = MINE(evaluation={"bound": "nwj_loss"}, phases=[{"name": "train", "loss": "dv"}])
    spec = est.routine_spec()
    assert spec["evaluation"]["bound"] == "nwj_loss" and spec["phases"][0]["loss"] == "dv"


def test_the_slots_are_the_blocks_that_run():
    x, y = gaussian_1d(400, 2)
    est = quiet_fit(NWJ(epochs=3, hidden_dims=(8,), phases=[{"name": "train", "loss": "dv"}],
                        evaluation={"bound": "dv"}), x, y)
    phase = est.routine_.phases[0]
    # the validation follows the trained bound (fix23c, author24-2: it stayed nwj_loss)
    assert type(phase.loss) is DVLoss and type(phase.validation.loss) is DVLoss
    assert type(est.bound_) is DVLoss
    # the final estimate is the bound block's own function over all pairs of the held-out set
    assert est.estimate() == pytest.approx(est.scores_.bound("dv"), abs=1e-9)
    assert est.scores_.n == est.n_eval_ == 200
    mine = quiet_fit(MINE(epochs=2, hidden_dims=(8,)), x, y)
    loss = mine.routine_.phases[0].loss
    assert type(loss) is MINELoss and loss.log_average is not None  # its own state
    assert not hasattr(mine.routine_.state, "scratch")


@pytest.mark.parametrize("data, fragment", [
    ({"critic": "separable", "models": {"main": {"name": "joint_critic"}}},
     "`critic` = 'separable' and `models.main.name` = 'joint_critic'"),
    ({"learning_rate": 0.01, "phases": [{"name": "train", "learning_rate": 0.002}]},
     "`learning_rate` = 0.01 and `phases.train.learning_rate` = 0.002"),
    ({"ma_rate": 0.05, "phases": [{"name": "train", "loss": {"ma_rate": 0.1}}]},
     "`ma_rate` = 0.05 and `phases.train.loss.ma_rate` = 0.1"),
    ({"seed": 3, "globals": {"test_index": {"relation": {"seed": 5}}}},
     "`seed` = 3 and `globals.test_index.relation.seed` = 5"),
])
def test_a_shortcut_and_a_section_that_disagree_are_named(data, fragment):
    with pytest.raises(ConfigError, match=_escape(fragment)):
        recipe_from_dict({"recipe": "mine", **data})


@pytest.mark.parametrize("key, value, fragment", [
    ("verbose", "false", "expected true or false, got 'false' @ mine.verbose"),
    ("standardize", "no", "`standardize` must be True (zero mean, unit variance), \"rank\""),
    ("epochs", 5.7, "expected an integer, got 5.7 @ mine.epochs"),
    ("threads", True, "mine.threads"),
])
def test_no_silent_coercion_in_configs(key, value, fragment):
    with pytest.raises(ConfigError, match=_escape(fragment)):
        recipe_from_dict({"recipe": "mine", key: value})


def test_a_block_in_a_slot_is_checked_with_its_path():
    x, y = gaussian_1d(200, 1)
    est = recipe_from_dict({"recipe": "mine", "epochs": 2,
                            "phases": [{"name": "train", "loss": {"ma_rate": "x"}}]})
    with pytest.raises(ConfigError, match=_escape("@ mine.phases.train.loss.ma_rate")):
        est.fit(x, y)
    with pytest.raises(ConfigError, match=_escape("mine.evaluation.pairs: unknown key(s)")):
        MINE(epochs=2, evaluation={"pairs": {"rows": 3}}).fit(x, y)


def test_a_contract_error_names_both_blocks():
    # MI-NEE's loss needs reference draws; the product-of-marginals sampler has none
    x, y = gaussian_1d(200, 1)
    with pytest.raises(ContractError, match="loss 'minee_loss' consumes the batch field.*"
                                            "x_reference.*sampler 'marginal_pairs'"):
        MINEE(negatives="marginal_pairs", epochs=2, hidden_dims=(8,)).fit(x, y)
    with pytest.raises(ValidationError, match="negatives"):
        MINE(negatives="no_such_sampler")


def test_minee_names_the_reference_protocol_a_plugin_sampler_lacks(infoblocks_plugin):
    # a sampler that yields reference pairs but cannot draw the final estimate's reference
    import attrs
    from typing import ClassVar

    from infoblocks.blocks.mutual_information.samplers import REFERENCE_PAIRS, PairSampler
    from infoblocks.plugins import hookimpl

    @attrs.define(kw_only=True)
    class Halfway(PairSampler):
        name: ClassVar[str] = "halfway_reference"
        batch_type: ClassVar = REFERENCE_PAIRS

        def fit_reference(self, x, y):
            pass

    class _Plugin:
        @hookimpl
        def register_samplers(self):
            return [Halfway]

    infoblocks_plugin(_Plugin(), "test_minee_protocol")
    x, y = gaussian_1d(200, 1)
    with pytest.raises(ConfigError, match=r"minee.phases.train.sampler: .*'halfway_reference' "
                                          r"has no draw\(\.\.\.\), reference_entropies\(\.\.\.\)"):
        MINEE(epochs=2, hidden_dims=(8,),
              phases=[{"name": "train", "sampler": {"name": "halfway_reference"}}]).fit(x, y)


@pytest.mark.parametrize("cls", [MINE, MINEE, InfoNCE, NWJ, SMILE])
def test_sklearn_clone(cls):
    base = pytest.importorskip("sklearn.base")
    est = cls(seed=5, epochs=3, hidden_dims=(8,), phases=[{"name": "train", "epochs": 3}])
    twin = base.clone(est)
    assert type(twin) is cls and twin is not est
    assert twin.to_dict() == est.to_dict() and twin.get_params() == est.get_params()
    assert twin.set_params(epochs=9).epochs == 9 and est.epochs == 3


def test_clone_of_a_fitted_estimator_is_unfitted(fitted):
    base = pytest.importorskip("sklearn.base")
    twin = base.clone(fitted)
    assert twin.estimate_nats_ is None and twin.get_params() == fitted.get_params()


def test_estimate_is_always_an_mi_estimate(fitted):
    value = fitted.estimate()
    assert isinstance(value, MIEstimate) and isinstance(value, float)
    assert float(value) == value.value and value.level == 0.95 and value.units == "nats"
    assert value.low < value < value.high
    assert json.loads(json.dumps({"v": value}))["v"] == pytest.approx(float(value))
    assert "nats" in repr(value)


def test_preset():
    est = MINE.preset("notebook", seed=2)
    assert est.init_std == 0.02 and est.test_fraction == 0.0 and est.seed == 2
    assert "validation" not in est.routine_spec()["phases"][0]
    with pytest.raises(ConfigError, match="no preset"):
        MINE.preset("fast")


@pytest.mark.parametrize("cls", [MINE, MINEE])
def test_save_and_load(cls, tmp_path):
    x, y = gaussian_1d(300, 10)
    est = quiet_fit(cls(seed=1, epochs=4, hidden_dims=(8,)), x, y)
    est.save(tmp_path / "est")
    again = cls.load(tmp_path / "est")
    assert type(again) is cls and again.routine_spec() == est.routine_spec()
    assert again.epochs == est.epochs and again.seed == est.seed
    assert float(again.estimate()) == float(est.estimate())
    a, b = again.estimate(ci=0.8, units="bits"), est.estimate(ci=0.8, units="bits")
    assert (a.low, a.high) == pytest.approx((b.low, b.high))
    assert again.history_ == est.history_
    probe = torch.randn(5, 1), torch.randn(5, 1)
    assert torch.allclose(again.routine_.models["main"](*probe), est.routine_.models["main"](*probe))
    if cls is MINEE:
        assert again.entropies_ == est.entropies_
    with pytest.raises(ValidationError, match="not a NWJ|holds a"):
        NWJ.load(tmp_path / "est")


# ---------------------------------------------------------------- slow accuracy checks


@pytest.mark.slow
@pytest.mark.parametrize("cls", [InfoNCE, MINE, NWJ, SMILE, MINEE])
def test_interval_coverage_of_the_true_mi(cls):
    # issue 11: the 95 % interval covers the true MI of a Gaussian in >= 85 % of 40 fresh
    # problems (ρ = 0.6, I = 0.223 nats, n = 600, 30 % held out: the estimator's bias,
    # about −0.01 to −0.02 nats at this budget, is small against the interval's half-width of
    # ~0.08).  Measured coverage (1 thread): InfoNCE 0.950, MINE 0.950, NWJ 0.950, SMILE 0.950,
    # MI-NEE 0.925; every interval contains its estimate.  ~0.3 s per fit (MI-NEE ~0.9 s).
    truth = -0.5 * math.log(1 - RHO ** 2)
    covered = 0
    for rep in range(40):
        x, y = gaussian_1d(600, 1000 + rep)
        est = quiet_fit(cls(seed=rep, test_fraction=0.3, **FAST), x, y).estimate(ci=0.95)
        assert est.low <= float(est) <= est.high
        covered += est.low <= truth <= est.high
    assert covered / 40 >= 0.85, covered / 40


@pytest.mark.slow
def test_minee_r6_no_overshoot():
    # 6 independent pairs of ρ = 0.9: truth 6 × −½ ln(0.19) = 4.982; the reference MI-NEE code
    # overshoots to 8.86 with a fixed sample; held-out early stopping must keep us below 1.1×
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 6))
    y = 0.9 * x + math.sqrt(1 - 0.81) * rng.standard_normal((1000, 6))
    truth = 6 * -0.5 * math.log(1 - 0.81)
    est = quiet_fit(MINEE(seed=0, epochs=1000), x, y)
    assert est.estimate() < 1.1 * truth  # measured 4.964 (1.00x)
    assert est.estimate() > 0.8 * truth


@pytest.mark.slow
def test_mine_on_benchmark_mi_dense_task_is_within_0_06_of_the_truth():
    # issue 13: benchmark-mi's multinormal-dense-25-25-0.5 (n = 5,000, truth 1.292) at its
    # batch of 256, on numpy's draw 0 (benchmark-mi's own draws need JAX).  Measured with the
    # defaults (joint critic, rank standardisation, 10⁶ final pairs), numpy draws 0 / 1 / 2:
    # −0.039 / −0.048 / −0.027 (recipe seed = draw; with seed 0 on every draw, 10⁶ / 5·10⁵ final
    # pairs, today's default: −0.040 / −0.044, −0.056 / −0.054, −0.034 / −0.034); on benchmark-mi's draws −0.079 / −0.050 / −0.080, where its own
    # MINE gives −0.067 / −0.101 / −0.110 (docs/mi.md).  ~15-20 s.
    x, y, truth = dense_gaussian(25, 0.5, n=5000, seed=0)
    assert truth == pytest.approx(1.2922, abs=1e-4)
    est = quiet_fit(MINE(seed=0, batch_size=256), x, y)
    assert abs(est.estimate_nats_ - truth) <= 0.06, est.estimate_nats_


@pytest.mark.slow
def test_minee_on_the_dense_task_is_within_0_06_of_the_truth():
    # benchmark-mi's dense 25 × 25 task (numpy's draw 0, truth 1.292): selecting the epoch on
    # the held-out I kept marginal critics whose D̂ had collapsed below 0, +1.015 nats here
    # (MI-NEE then warned above 10 features); on the sum of the three bounds −0.036 (5 + 5 to
    # 15 + 15: −0.042 / −0.066 / −0.039; MINE −0.074 on this draw).  ~30 s.
    x, y, truth = dense_gaussian(25, 0.5, n=5000, seed=0)
    est = quiet_fit(MINEE(seed=0), x, y)
    assert abs(est.estimate_nats_ - truth) <= 0.06, est.estimate_nats_


@pytest.mark.slow
def test_minee_defaults_on_seed_problem():
    biases = [quiet_fit(MINEE(seed=s), *seed_problem(s)[:2]).estimate() - seed_problem(s)[2]
              for s in (0, 1, 2)]
    assert abs(np.mean(biases)) < 0.05, biases  # measured -0.024 / +0.023 / +0.026


@pytest.mark.slow
def test_mine_seed_problem_robust_to_recipe_seed():
    biases = []
    for seed in (0, 1, 2):
        x, y, truth = seed_problem(seed)
        for recipe_seed in (10, 20):
            biases.append(quiet_fit(MINE(seed=recipe_seed), x, y).estimate() - truth)
    assert abs(np.mean(biases)) < 0.04 and max(abs(b) for b in biases) < 0.1, biases


@pytest.mark.slow
@pytest.mark.parametrize("cls", [InfoNCE, NWJ, SMILE])
def test_default_configuration_on_larger_sample(cls):
    x, y = gaussian_1d(4000, 21)
    assert quiet_fit(cls(seed=0), x, y).estimate() == pytest.approx(TRUE_MI, abs=0.04)


def test_a_recipe_number_reaches_a_plugin_field_as_the_type_it_declares(infoblocks_plugin):
    # MI-NEE fills its reference_factor (4.0, a float) into a plugin sampler's same-named
    # field; a field declared int gets 4, as a user writing `reference_factor = 4` would
    import attrs
    from typing import ClassVar

    from infoblocks.blocks.mutual_information.samplers import ReferenceSampler
    from infoblocks.plugins import hookimpl

    @attrs.define(kw_only=True)
    class WholeDraws(ReferenceSampler):
        name: ClassVar[str] = "whole_draws_reference"
        reference_factor: int = 1

    class _Plugin:
        @hookimpl
        def register_samplers(self):
            return [WholeDraws]

    infoblocks_plugin(_Plugin(), "test_declared_type")
    x, y = gaussian_1d(200, 1)
    for options in ({"negatives": "whole_draws_reference"},
                    {"phases": [{"name": "train", "sampler": "whole_draws_reference"}]}):
        est = MINEE(epochs=1, hidden_dims=(8,), **options).fit(x, y)
        sampler = est.routine_.phases[0].sampler
        assert type(sampler) is WholeDraws and sampler.reference_factor == 4
        assert type(sampler.reference_factor) is int
    with pytest.raises(ConfigError, match=r"expected an integer, got 2.5 @ .*reference_factor"):
        MINEE(epochs=1, hidden_dims=(8,), negatives="whole_draws_reference",
              reference_factor=2.5).fit(x, y)


def test_minee_refuses_a_training_loss_that_leaves_the_marginal_critics_untrained():
    # author5 A5-7: a plain bound in MI-NEE's training slot trained only `main`; the estimate
    # then mixed a trained joint critic with two untrained marginal ones, with no message
    x, y = gaussian_1d(200, 1)
    with pytest.raises(ConfigError, match=r"minee.phases.train.loss: 'dv' trains the model\(s\) "
                                          r"\['main'\].*\['critic_x', 'critic_y'\]"):
        MINEE(epochs=1, hidden_dims=(8,), phases=[{"name": "train", "loss": "dv"}]).fit(x, y)


def test_minee_names_a_negative_divergence_and_its_critic():
    # a KL divergence is >= 0; an untrained critic with large weights gives a DV estimate far
    # below 0 for the joint divergence, and the estimate is reported as unreliable
    x, y = gaussian_1d(400, 1)
    with pytest.warns(MIConvergenceWarning, match=r"'d_xy': -\d.*the critic\(s\) \['main'\] "
                                                  r"did not converge"):
        MINEE(epochs=1, learning_rate=1e-7, init_std=1.0, seed=0).fit(x, y)


def skewed_pair(seed):
    # author5 A5-6: X ~ Exp(1), Y = X + Exp(1): I = h(Y) − h(Y | X) = h(Gamma(2)) − h(Exp(1))
    # = (2 − ψ(2)) − 1 = γ (Euler's constant)
    rng = np.random.default_rng(seed)
    x = rng.exponential(size=(2000, 1))
    return x, x + rng.exponential(size=(2000, 1)), 0.5772156649


@pytest.mark.slow
def test_minee_on_skewed_data_selects_on_the_critics_bounds_not_on_i():
    # Selecting the epoch of the highest held-out I kept a collapsed marginal critic (final D_x
    # −0.71 / −0.35) and gave 1.614 / 1.299 nats on seeds 0 / 3; on the sum of the three bounds
    # 0.592 / 0.388 (seeds 0-5: 0.388-0.592).  The defaults determine γ to about ±0.2 here,
    # not better: with the moments and the Gaussian reference p/q has exponential tails against
    # Gaussian ones, and seed 3's D_xy rests on one of its 20,000 final reference draws (22 % of
    # the sum of e^t; the same critic on three other sets of 20,000 draws gives 0.56-0.67, on
    # 2·10⁶ draws 0.45; docs/mi.md).  ~40 s.
    for seed in (0, 3):
        x, y, truth = skewed_pair(seed)
        est = quiet_fit(MINEE(seed=seed, standardize=True), x, y)  # (the moments' case)
        assert min(est.divergences_.values()) > 0, est.divergences_
        assert abs(est.estimate_nats_ - truth) < 0.25, est.estimate_nats_
        if abs(est.estimate_nats_ - truth) > 0.15:  # ... and the interval says so: seed 3's
            ci = est.estimate(ci=0.95)  # is [0.115, 0.673], the other seeds' 0.10-0.14 wide
            assert ci.low <= truth <= ci.high, (est.estimate_nats_, ci.low, ci.high)


@pytest.mark.slow
def test_minee_with_ranks_on_skewed_data_is_within_0_1():
    # the remedy MI-NEE's negative-divergence warning and docs/mi.md name for skewed data: the
    # normal scores' marginals are what the Gaussian reference draws (D_x, D_y ≈ 0), and D_xy is
    # the copula's.  Measured: seeds 0-5 0.544 / 0.496 / 0.554 / 0.572 / 0.527 / 0.557.  ~45 s.
    for seed in (0, 3):
        x, y, truth = skewed_pair(seed)
        est = quiet_fit(MINEE(seed=seed, standardize="rank"), x, y)
        assert abs(est.estimate_nats_ - truth) < 0.1, est.estimate_nats_


def test_the_critic_shortcut_names_the_section_a_plugin_critic_goes_in(bilinear_critic):
    # author11 A11-8: `critic = "bilinear_critic"` (a registered critic) was refused with
    # "`critic` must be one of ['joint', 'separable', 'linear']", not saying where it goes
    for recipe in ("mine", "infonce", "minee"):
        with pytest.raises(ConfigError, match=r"`critic` must be one of \['joint', 'separable', "
                           r"'linear'\], got 'test_bilinear_critic'. A critic of your own .* "
                           r"`\[models.main\] name = \"test_bilinear_critic\"`"):
            recipe_from_dict({"recipe": recipe, "critic": "test_bilinear_critic"})
    x, y = gaussian_1d(200, 1)  # ... where it trains
    est = recipe_from_dict({"recipe": "mine", "epochs": 1,
                            "models": {"main": {"name": "test_bilinear_critic"}}}).fit(x, y)
    assert type(est.routine_.models["main"]).__name__ == "Bilinear"


def test_one_subsample_is_not_an_interval():
    # user13: n_subsamples=1 gave an interval of zero width from one subsample
    with pytest.raises(ValidationError, match=r"`n_subsamples` must be at least 2"):
        MINE(n_subsamples=1)
