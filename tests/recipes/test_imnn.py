"""IMNN recipe on the imnn tutorial problem (10 Gaussian points, θ = (μ, Σ), fiducial (0, 1),
exact det F = 50), at a reduced budget: fixed arrays, simulator with autograd derivatives,
numerical derivatives; estimates, persistence, errors."""

from __future__ import annotations

import json
import tomllib

from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import (ConfigError, ContractError, NotFittedError,
                                      NumericalError, ValidationError)
from infoblocks.blocks.fisher import (FisherLoss, SimulationSampler, fisher_statistics,
                                      network_summaries)
from infoblocks.blocks.models import Model
from infoblocks.blocks.resume import read_checkpoint
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.plugins.testing import check_block
from infoblocks.recipes.imnn import (DEMO_EXACT_DET_F, FRESH_SIMULATIONS_2K_PRESET,
                                     FRESH_SIMULATIONS_PRESET, IMNN, OracleSummaries,
                                     gaussian_simulations, gaussian_simulator, intra_op_threads,
                                     oracle_det_F)
from infoblocks.recipes.imnn_problem import exact_posterior

#: reduced budget of the default tests (the benchmark runs the tutorial's 1000 / patience 10)
QUICK = dict(learning_rate=5e-3, min_epochs=150, epochs=300, patience=10)
#: with a simulator: its default validation (50,000 simulations every 50 epochs) is for full
#: runs; the reduced budget validates 2000 every 5 epochs
SIMULATOR_QUICK = dict(QUICK, n_validation=2000, validation_every=5, patience=4)
#: the issue's bar for the default run: validation det F ≥ 0.8 × 50
TARGET = 0.8 * DEMO_EXACT_DET_F


@pytest.fixture(scope="module")
def arrays():
    fid, der = gaussian_simulations(1000, seed=0)
    val_fid, val_der = gaussian_simulations(1000, seed=1)
    return fid, der, val_fid, val_der


@pytest.fixture(scope="module")
def fitted(arrays):
    fid, der, val_fid, val_der = arrays
    return IMNN(n_summaries=2, theta_fid=(0.0, 1.0), **QUICK).fit(
        fid, der, validation_fiducial=val_fid, validation_derivative=val_der)


def test_fixed_simulations_reach_target(fitted, arrays):
    # imnn's GradientIMNN reaches 33-45 with the tutorial budget; we need ≥ 40 at a reduced one
    best = fitted.best_val_det_F_
    assert best >= TARGET
    # the exact statistics score ≈ 50 ± 3.3 on 1000 sims; a network cannot beat them by much
    assert best <= 1.05 * oracle_det_F(arrays[2], arrays[3])
    # F_ is recomputed on the validation set at the returned (best) weights
    assert np.linalg.det(fitted.F_) == pytest.approx(best, rel=1e-3)
    assert fitted.F_.shape == (2, 2) and fitted.C_.shape == (2, 2)
    assert fitted.dmu_dtheta_.shape == (2, 2)
    assert set(fitted.history_) >= {"det_F", "val_det_F", "det_C", "val_det_invC", "Lambda2",
                                    "val_r"}
    assert len(fitted.history_["val_det_F"]) == fitted.n_epochs_
    assert fitted.det_F_history_.max() == pytest.approx(best)
    assert QUICK["min_epochs"] <= fitted.n_epochs_ <= QUICK["epochs"]


def test_estimate_tracks_the_exact_statistics_at_another_theta(fitted, arrays):
    # 200 data sets at θ = (0.3, 1.2).  What the method determines: the network's quasi-ML
    # estimate θ̂ = θ_fid + F⁻¹ (∂μ/∂θ)ᵀ C⁻¹ (s − μ) behaves like the same estimate from the
    # exact sufficient statistics (Σd, Σd²) on the same data sets.  (This test compared the
    # mean with the truth at 3 standard errors and measured −2.70 SE: a property of this draw —
    # the exact statistics give −2.5 SE — and of one-step compression from (0, 1), whose Σ bias
    # is +μ² = +0.09, not of the network; a few training digits could cross the line.)
    # Measured: mean difference (−0.17, −0.18) SE, correlation 0.95 in both parameters.
    g = torch.Generator().manual_seed(11)
    theta = torch.tensor([[0.3, 1.2]]).expand(200, 2)
    data = gaussian_simulator(g, theta).numpy()
    est = fitted.estimate(data)
    assert est.shape == (200, 2)
    val_fid, val_der = (torch.as_tensor(a, dtype=torch.float64) for a in arrays[2:])
    s, ds = network_summaries(OracleSummaries(), {"fiducial": val_fid, "derivative": val_der})
    exact = fisher_statistics(s, ds).estimate(
        OracleSummaries()(torch.as_tensor(data, dtype=torch.float64)),
        torch.tensor([0.0, 1.0], dtype=torch.float64)).numpy()
    se = est.std(0, ddof=1) / np.sqrt(len(est))
    assert np.all(np.abs(est.mean(0) - exact.mean(0)) < se), (est.mean(0), exact.mean(0), se)
    for k in range(2):
        assert np.corrcoef(est[:, k], exact[:, k])[0, 1] > 0.85
    single = fitted.estimate(data[0])
    assert single.shape == (2,) and np.allclose(single, est[0], atol=1e-5)


def test_simulator_autograd_mode_reaches_target():
    # training simulations drawn once from the simulator, ∂d/∂θ by forward-mode autograd
    imnn = IMNN(n_summaries=2, theta_fid=(0.0, 1.0), fresh_simulations=False,
                **SIMULATOR_QUICK).fit(simulator=gaussian_simulator)
    assert imnn.best_val_det_F_ >= TARGET


def test_numerical_derivative_mode_reaches_target():
    # seed-matched simulations at θ ∓ δθ/2 (imnn's NumericalGradientIMNN)
    imnn = IMNN(n_summaries=2, theta_fid=(0.0, 1.0), derivative_mode="numerical",
                delta_theta=(0.1, 0.1), fresh_simulations=False,
                **SIMULATOR_QUICK).fit(simulator=gaussian_simulator)
    assert imnn.best_val_det_F_ >= TARGET


def test_simulator_with_validation_arrays(arrays):
    # fresh simulations for training, validated on fixed user arrays (the benchmark's setup:
    # the same validation set as the fixed-array variants, so det F is comparable to its
    # oracle); the cosine schedule is accepted and kept through to_dict / from_dict
    _, _, val_fid, val_der = arrays
    imnn = IMNN(n_summaries=2, theta_fid=(0.0, 1.0), lr_schedule="cos", n_s=300, n_d=300,
                epochs=5, min_epochs=0).fit(simulator=gaussian_simulator,
                                            validation_fiducial=val_fid[:300],
                                            validation_derivative=val_der[:300])
    assert imnn.n_epochs_ == 5 and np.isfinite(imnn.F_).all()
    # F_ is recomputed on the validation arrays: equal to the last history value's set
    assert np.isclose(np.linalg.det(imnn.F_),
                      imnn.det_F_history_[imnn.best_epoch_], rtol=1e-3)
    assert IMNN.from_dict(imnn.to_dict()).lr_schedule == "cos"
    with pytest.raises(ValidationError, match="lr_schedule"):
        IMNN(n_summaries=2, theta_fid=(0, 1), lr_schedule="step")
    # user13 U13-17: was "`n_s` must be an integer >= 2, got 1" (the validation sampler's)
    with pytest.raises(ValidationError, match="`n_validation` must be at least 2"):
        IMNN(n_summaries=2, theta_fid=(0, 1), n_validation=1)


def test_numerical_derivative_arrays(arrays):
    # the same numbers as (n_d, 2, p, ...) arrays: Σ shifted by ±δ/2 on the same noise
    fid = arrays[0][:200]
    z = fid  # at (0, 1) the fiducial points are the noise itself
    delta = np.array([0.1, 0.1])
    minus = np.stack([z - delta[0] / 2, np.sqrt(1 - delta[1] / 2) * z], 1)
    plus = np.stack([z + delta[0] / 2, np.sqrt(1 + delta[1] / 2) * z], 1)
    numerical = np.stack([minus, plus], 1)  # (200, 2, 2, 10)
    imnn = IMNN(n_summaries=2, theta_fid=(0.0, 1.0), delta_theta=(0.1, 0.1), epochs=3,
                min_epochs=0).fit(fid, numerical_derivative=numerical)
    assert imnn.n_epochs_ == 3 and np.isfinite(imnn.F_).all()


def test_chunked_training_matches_unchunked(arrays):
    # aggregated mode: same trajectory as the plain computation (float32 rounding only).  From
    # whitened summaries (C = I): unwhitened, det C ≈ 1e-6 at the start and C⁻¹ amplifies
    # rounding — the two runs then agreed to 5e-7 with AVX-512 kernels but differed by 3e-3
    # with ATEN_CPU_CAPABILITY=default (issue 11: digits at the noise floor).  Whitened they
    # agree to ≤ 1e-5 on default / AVX2 / AVX-512 kernels.
    fid, der = arrays[0][:300], arrays[1][:300]
    runs = [IMNN(n_summaries=2, theta_fid=(0, 1), chunk_size=chunk, epochs=5, min_epochs=5,
                 whiten_init=True).fit(fid, der)
            for chunk in (None, 64)]
    np.testing.assert_allclose(runs[0].history_["det_F"], runs[1].history_["det_F"], rtol=1e-3)


def test_warm_start_continues_as_one_longer_run(arrays):
    # warm_start=True: a second fit continues the weights and Adam's state (issue 15 item 2);
    # 4 + 3 epochs at a constant rate on fixed simulations = one run of 7, bit for bit
    fid, der = arrays[0][:300], arrays[1][:300]
    options = dict(n_summaries=2, theta_fid=(0, 1), restore_best=False, hidden_dims=(32, 32))
    once = IMNN(epochs=7, min_epochs=7, **options).fit(fid, der)
    imnn = IMNN(epochs=4, min_epochs=4, warm_start=True, **options).fit(fid, der)
    imnn.set_params(epochs=3, min_epochs=3).fit()  # the same simulations, a new budget
    assert imnn.n_epochs_ == 7 and imnn.history_["epoch"] == list(range(7))
    assert imnn.history_["det_F"] == once.history_["det_F"]
    for key, value in once.routine_.models.state_dict().items():
        assert torch.equal(value, imnn.routine_.models.state_dict()[key]), key
    # warm_start=False (scikit-learn's convention): a second fit starts afresh
    cold = IMNN(epochs=4, min_epochs=4, **options).fit(fid, der)
    first = list(cold.history_["det_F"])
    assert cold.fit(fid, der).history_["det_F"] == first


def test_restore_best_false_keeps_the_final_weights(arrays):
    fid, der, val_fid, val_der = (a[:300] for a in arrays)
    runs = {best: IMNN(n_summaries=2, theta_fid=(0, 1), epochs=30, min_epochs=30,
                       learning_rate=2e-2, restore_best=best).fit(
        fid, der, validation_fiducial=val_fid, validation_derivative=val_der)
        for best in (True, False)}
    history = runs[False].history_["val_det_F"]
    assert history == runs[True].history_["val_det_F"]  # the same run; only the end differs
    assert int(np.argmax(history)) < len(history) - 1  # the last epoch is not the best here
    # F_ is measured on the validation set at the returned weights: the last, or the best
    assert np.linalg.det(runs[False].F_) == pytest.approx(history[-1], rel=1e-3)
    assert np.linalg.det(runs[True].F_) == pytest.approx(max(history), rel=1e-3)


def test_defaults_follow_the_source_of_the_simulations(arrays):
    # issue 13 item 3: the shortcuts left at None take MODE_DEFAULTS of the fit's source
    fid, der = arrays[0][:200], arrays[1][:200]
    simulated = IMNN(theta_fid=(0, 1), epochs=3, n_validation=500, n_s=200, n_d=200).fit(
        simulator=gaussian_simulator)
    spec = simulated.to_dict(full=True)
    phase = spec["phases"][0]
    assert spec["models"]["main"]["activation"] == "silu" and phase["lr_schedule"] == "cos"
    assert phase["patience"] == 3000 and phase["validation"]["every"] == 3  # ≤ epochs
    assert phase["validation"]["sampler"]["n_s"] == 500
    assert np.isfinite(simulated.history_["val_det_F"][-1])  # validated at the last epoch
    fixed = IMNN(theta_fid=(0, 1), epochs=3).fit(fid, der).to_dict(full=True)
    assert fixed["models"]["main"]["activation"] == "leaky_relu"
    assert fixed["phases"][0]["lr_schedule"] == "none" and fixed["phases"][0]["patience"] == 10
    assert "activation" not in IMNN(theta_fid=(0, 1)).to_dict()  # None: left to the source
    assert IMNN(theta_fid=(0, 1), activation="tanh").to_dict()["activation"] == "tanh"


def test_custom_torch_optimizer_from_the_data_form(arrays):
    fid, der = arrays[0][:300], arrays[1][:300]
    data = {"recipe": "imnn", "theta_fid": [0.0, 1.0], "epochs": 3, "min_epochs": 3,
            "optimizer": "RAdam", "optimizer_options": {"betas": [0.8, 0.99]}}
    imnn = recipe_from_dict(data)
    assert imnn.to_dict()["optimizer_options"] == {"betas": [0.8, 0.99]}
    imnn.fit(fid, der)
    optimizer = imnn.routine_.phases[0].make_optimizer(list(imnn.routine_.models.parameters()))
    assert type(optimizer) is torch.optim.RAdam
    assert tuple(optimizer.defaults["betas"]) == (0.8, 0.99)
    adam = IMNN(theta_fid=(0, 1), epochs=3, min_epochs=3).fit(fid, der)
    assert imnn.history_["det_F"][-1] != adam.history_["det_F"][-1]  # another optimizer ran
    with pytest.raises(ValidationError, match="`optimizer` must be one of"):
        IMNN(theta_fid=(0, 1), optimizer="lbfgs")
    # refused when the routine is built, before training (the phase's path named)
    with pytest.raises(ConfigError, match="phases.fit: `optimizer_options`: torch.optim.Adagrad "
                       ".*does not take the options"):
        IMNN(theta_fid=(0, 1), epochs=1, optimizer="Adagrad",
             optimizer_options={"betas": [0.9, 0.9]}).fit(fid, der)
    # user13 U13-8: the default adam's misspelt option / `lr` were raw TypeErrors from torch
    with pytest.raises(ConfigError, match="'betaz'.*did you mean 'betas'"):
        IMNN(theta_fid=(0, 1), epochs=1, optimizer_options={"betaz": [0.9, 0.9]}).fit(fid, der)
    with pytest.raises(ConfigError, match="set `learning_rate` = 1.0 instead"):
        IMNN(theta_fid=(0, 1), epochs=1, optimizer_options={"lr": 1.0}).fit(fid, der)


def test_save_load_round_trip(fitted, arrays, tmp_path):
    fitted.save(tmp_path / "model")
    again = IMNN.load(tmp_path / "model")
    np.testing.assert_allclose(again.estimate(arrays[2][:20]), fitted.estimate(arrays[2][:20]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.F_, fitted.F_)
    assert again.history_["val_det_F"] == fitted.history_["val_det_F"]
    saved = json.loads((tmp_path / "model" / "routine.json").read_text())["extra"]["recipe"]
    assert saved == fitted.to_dict(full=True)  # the full routine, every block by name
    assert saved["models"]["main"]["name"] == "summary_mlp" and saved["phases"][0]["loss"]
    assert again.to_dict(full=True) == fitted.to_dict(full=True)
    # a warm fit on the loaded model continues training (the simulations are passed again)
    fid, der, val_fid, val_der = arrays
    again.set_params(epochs=2, min_epochs=2, warm_start=True).fit(
        fid, der, validation_fiducial=val_fid, validation_derivative=val_der)
    assert again.n_epochs_ == fitted.n_epochs_ + 2
    assert again.history_["val_det_F"][-2] > 0.9 * fitted.history_["val_det_F"][-1]


def test_abc_posterior_covers_the_truth_with_the_exact_width(fitted, tmp_path):
    # issue 15 item 5: a target drawn at θ = (0, 1) (seed 7: mean d 0.06, mean d² 1.09), a
    # uniform prior; ABC with the trained summaries against the exact posterior on a grid
    target = gaussian_simulator(torch.Generator().manual_seed(7), torch.tensor([[0.0, 1.0]]))[0]
    low, high = (-1.5, 0.1), (1.5, 3.0)
    prior = torch.distributions.Uniform(torch.tensor(low), torch.tensor(high))
    # N(θ̂, F⁻¹): centred on the quasi-ML estimate (4 SE of 10,000 draws: 0.02)
    np.testing.assert_allclose(fitted.gaussian_posterior(target).mean(),
                               fitted.estimate(target.numpy()), atol=0.02)
    gauss = fitted.gaussian_posterior(target, prior)  # × the prior
    abc = fitted.abc(target, prior, gaussian_simulator, n_simulations=50_000,
                     accept_fraction=0.02)
    lower, upper = abc.interval(0.95).T
    assert np.all(lower < [0.0, 1.0]) and np.all(upper > [0.0, 1.0])  # covers the truth
    mean, std = exact_posterior(target.numpy(), low, high)  # std (0.40, 0.60)
    np.testing.assert_allclose(abc.std(), std, rtol=0.2)
    # the summaries hold ~0.84 of the information (det F 42 of 50), not the exact statistics:
    # the mean within a third of a posterior std (measured Σ: 1.49 against 1.60)
    assert np.all(np.abs(abc.mean() - mean) < std / 3)
    # μ: the Gaussian approximation's width within 20 % of ABC's (measured 0.33 vs 0.39);
    # Σ: the posterior of a variance from 10 points is skewed (exact std 0.60 against
    # F⁻¹'s 0.45), which N(θ̂, F⁻¹) cannot show and ABC does
    assert abc.std()[0] == pytest.approx(gauss.std()[0], rel=0.2)
    assert gauss.std()[1] < 0.85 * std[1] < abc.std()[1]
    pmc = fitted.pmc(target, prior, gaussian_simulator, n_points=300, n_initial=3000,
                     max_simulations=30_000)
    assert pmc.rounds >= 2 and pmc.epsilons[-1] < pmc.epsilons[0]
    fig = fitted.posterior_plot({"Gaussian": gauss, "ABC": abc, "PMC": pmc}, truth=(0, 1),
                                labels=["μ", "Σ"], path=tmp_path / "posterior.png")
    assert (tmp_path / "posterior.png").stat().st_size > 10_000 and len(fig.axes) == 4
    with pytest.raises(ValidationError, match="pass `simulator=fn"):
        fitted.abc(target, prior)  # fitted on arrays: no simulator of its own
    with pytest.raises(ValidationError, match="`prior` must be a torch.distributions"):
        fitted.abc(target, (0, 1), gaussian_simulator)
    with pytest.raises(ValidationError, match="`target` must be one simulation of shape"):
        fitted.gaussian_posterior(target[:5])


def test_plot_writes_png(fitted, tmp_path):
    fig = fitted.plot(expected_detF=50, path=tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 10_000 and len(fig.axes) == 4


def test_recipe_is_data():
    recipe = IMNN(n_summaries=3, theta_fid=(0.0, 1.0), hidden_dims=(64, 64), chunk_size=500,
                  delta_theta=(0.1, 0.2))
    data = recipe.to_dict()
    assert data["theta_fid"] == [0.0, 1.0]
    again = recipe_from_dict(data)
    assert again.to_dict() == data and again.hidden_dims == (64, 64)
    check_block(IMNN, {"n_summaries": 2, "theta_fid": (0.0, 1.0)})
    assert get_registry().get("recipe", "imnn") is IMNN


def test_run_from_arrays(arrays, tmp_path):
    recipe = IMNN(n_summaries=2, theta_fid=(0, 1), epochs=3, min_epochs=0)
    summary = recipe.run([a[:200] for a in arrays], tmp_path, checkpoint=tmp_path / "ckpt")
    assert summary["n_epochs"] == 3 and (tmp_path / "imnn_history.png").exists()
    # the model in its own folder: the checkpoint beside it survives the save
    assert IMNN.load(tmp_path / "model").n_epochs_ == 3 and (tmp_path / "ckpt").exists()
    json.dumps(summary)
    with pytest.raises(ValidationError, match="2 or 4 arrays"):
        recipe.run([arrays[0]], tmp_path)


def test_presets_build_and_step():
    # the recommended settings are IMNN.preset(name) (docs/imnn.md); the module constants are
    # aliases; a 3-epoch fit of each checks that they construct and run (the full budget is
    # the benchmark's)
    assert IMNN.presets["fresh"] is FRESH_SIMULATIONS_PRESET
    assert FRESH_SIMULATIONS_2K_PRESET["n_s"] == FRESH_SIMULATIONS_2K_PRESET["n_d"] == 2000
    for name in ("fresh", "fresh_2k"):
        imnn = IMNN.preset(name, n_summaries=2, theta_fid=(0.0, 1.0))
        assert imnn.activation == "silu" and imnn.lr_schedule == "cos" and imnn.epochs == 3000
        imnn.set_params(epochs=3, min_epochs=0).fit(simulator=gaussian_simulator)
        assert imnn.n_epochs_ == 3 and np.isfinite(imnn.best_val_det_F_)


def test_threads_context_restores():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------- bad inputs

def test_n_summaries_below_n_params():
    with pytest.raises(ValidationError, match="n_summaries` = 1 is smaller than the number of "
                                              "parameters"):
        IMNN(n_summaries=1, theta_fid=(0.0, 1.0))


def test_wrong_simulation_shapes(arrays):
    fid, der = arrays[0], arrays[1]
    with pytest.raises(ValidationError, match=r"`derivative` must have shape .* got \(1000, 10, 2\)"):
        IMNN(n_summaries=2, theta_fid=(0, 1)).fit(fid, der.transpose(0, 2, 1))
    with pytest.raises(ValidationError, match="Validation simulations have shape"):
        IMNN(n_summaries=2, theta_fid=(0, 1)).fit(
            fid, der, validation_fiducial=fid[:, :5], validation_derivative=der[:, :, :5])
    imnn = IMNN(n_summaries=2, theta_fid=(0, 1), epochs=1, min_epochs=0).fit(fid[:100],
                                                                            der[:100])
    with pytest.raises(ValidationError, match=r"one simulation of shape \(10,\)"):
        imnn.estimate(np.zeros((4, 9)))


def test_singular_covariance(arrays):
    fid = np.zeros((200, 10), dtype=np.float32)  # identical simulations: C of any summary is 0
    with pytest.raises(NumericalError, match="covariance of the summaries .* singular"):
        IMNN(n_summaries=2, theta_fid=(0, 1)).fit(fid, arrays[1][:200])


def test_nan_in_simulations(arrays):
    fid = arrays[0].copy()
    fid[3, 4] = np.nan
    with pytest.raises(ValidationError, match=r"`fiducial` contains 1 non-finite value.*\(3, 4\)"):
        IMNN(n_summaries=2, theta_fid=(0, 1)).fit(fid, arrays[1])

    def nan_simulator(generator, theta):
        return gaussian_simulator(generator, theta) / 0.0 * 0.0

    with pytest.raises(ValidationError, match="simulator produced non-finite values"):
        IMNN(n_summaries=2, theta_fid=(0, 1), n_s=50, n_d=50).fit(simulator=nan_simulator)


def test_missing_sources_and_not_fitted(arrays):
    with pytest.raises(ValidationError, match="IMNN needs simulations"):
        IMNN(n_summaries=2, theta_fid=(0, 1)).fit()
    with pytest.raises(ValidationError, match="not both"):
        IMNN(theta_fid=(0, 1)).fit(arrays[0], arrays[1], simulator=gaussian_simulator)
    with pytest.raises(ValidationError, match="IMNN needs `theta_fid`"):
        IMNN().fit(arrays[0], arrays[1])
    with pytest.raises(NotFittedError, match="call fit"):
        IMNN(n_summaries=2, theta_fid=(0, 1)).estimate(np.zeros(10))


def test_output_width_is_checked_before_training(arrays):
    # a network whose width differs from n_summaries fails before the first step, by name
    imnn = IMNN(n_summaries=3, theta_fid=(0, 1), models={"main": {"name": "summary_mlp",
                                                                  "out_dim": 2}})
    with pytest.raises(ValidationError, match=r"maps a simulation of shape \(10,\) to \(2,\), "
                                              r"but n_summaries = 3"):
        imnn.fit(arrays[0][:200], arrays[1][:200])
    custom = IMNN(theta_fid=(0, 1), network=torch.nn.Linear(10, 4))  # n_summaries: p = 2
    with pytest.raises(ValidationError, match=r"to \(4,\), but n_summaries = 2"):
        custom.fit(arrays[0][:200], arrays[1][:200])



class _Constant(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(len(x), 2)


class _Integer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(10, 2)

    def forward(self, x):
        return self.lin(x).long()


@pytest.mark.parametrize("network, fragment", [
    # expects 7 values per simulation: torch's "mat1 and mat2 shapes cannot be multiplied" came
    # from the first training step
    (torch.nn.Linear(7, 2), r"`network` failed on two simulations of shape \(10,\) "
                            r"\(RuntimeError: .*\); it must map simulations \(n, 10\) to "
                            r"summaries \(n, 2\)"),
    (torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Unflatten(1, (2, 5))),
     r"`network` maps a simulation of shape \(10,\) to \(2, 5\), but n_summaries = 2"),
    (_Constant(), r"`network` has no trainable parameters"),
    (_Integer(), r"`network` maps .* to \(2,\) of dtype torch.int64"),
])
def test_custom_network_is_checked_once_up_front(arrays, network, fragment):
    imnn = IMNN(n_summaries=2, theta_fid=(0, 1), network=network, epochs=3, min_epochs=3)
    with pytest.raises(ValidationError, match=fragment):
        imnn.fit(arrays[0][:200], arrays[1][:200])
    assert imnn.routine_ is None  # nothing trained


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "CPU", ""])
def test_invalid_device_is_named_at_construction(device):
    # "gpu" reached torch.device at fit time: "Expected one of cpu, cuda, ipu, xpu, ..."
    with pytest.raises(ValidationError, match=r"`device` = .* is not a device; use 'cpu', "
                                              r"'cuda', 'cuda:N' or 'auto'"):
        IMNN(n_summaries=2, theta_fid=(0, 1), device=device)
    with pytest.raises(ConfigError, match="device"):
        recipe_from_dict({"recipe": "imnn", "theta_fid": [0, 1], "device": device})
    imnn = IMNN(theta_fid=(0, 1))
    with pytest.raises(ValidationError, match="is not a device"):
        imnn.set_params(device=device)


def test_cuda_without_a_gpu_is_a_clear_error(arrays):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValidationError, match="`device` is 'cuda' but torch reports no CUDA"):
        IMNN(theta_fid=(0, 1), device="cuda", epochs=2, min_epochs=2).fit(arrays[0][:100],
                                                                           arrays[1][:100])


def test_fit_after_load_without_simulations_says_what_to_pass(fitted, tmp_path):
    fitted.save(tmp_path / "model")
    again = IMNN.load(tmp_path / "model")
    with pytest.raises(ValidationError, match="loaded from a file: a save keeps the weights "
                                              "and the fitted statistics, not the simulations"):
        again.fit()
    assert again.n_epochs_ == fitted.n_epochs_  # untouched

# ---------------------------------------------------------------------- the routine as data

def test_config_prints_a_usable_routine(capsys):
    from infoblocks.recipes.cli import main

    assert main(["config", "imnn", "--full"]) == 0
    data = tomllib.loads(capsys.readouterr().out)
    spec = recipe_from_dict(data).routine_spec()
    assert spec["models"]["main"]["name"] == "summary_mlp"
    phase = spec["phases"][0]
    assert (phase["name"], phase["sampler"]["name"], phase["loss"]["name"]) == \
        ("fit", "simulations", "fisher")
    assert phase["validation"]["metric"] == "det_F" and phase["validation"]["mode"] == "max"
    assert spec["evaluation"]["statistics"]["name"] == "fisher"
    assert main(["config", "imnn", "--preset", "fresh_2k"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["n_s"] == 2000


def test_shortcut_and_section_conflict_names_both_keys():
    with pytest.raises(ConfigError, match=r"`learning_rate` = 0.01 and "
                                          r"`phases.fit.learning_rate` = 0.002"):
        recipe_from_dict({"recipe": "imnn", "learning_rate": 0.01,
                          "phases": [{"name": "fit", "learning_rate": 0.002}]})
    with pytest.raises(ConfigError, match=r"`lambda_reg` = 5.0 and `phases.fit.loss.lambda_reg`"):
        IMNN(lambda_reg=5.0, phases=[{"name": "fit", "loss": {"lambda_reg": 3.0}}]).routine_spec()
    # a section alone (shortcut at its default) wins
    spec = IMNN(phases=[{"name": "fit", "learning_rate": 0.002}]).routine_spec()
    assert spec["phases"][0]["learning_rate"] == 0.002


def test_epochs_must_be_an_integer_with_its_path():
    with pytest.raises(ConfigError, match=r"imnn\.epochs"):
        recipe_from_dict({"recipe": "imnn", "epochs": 5.7})
    with pytest.raises(ConfigError, match=r"imnn\.phases\.fit.*epochs"):
        recipe_from_dict({"recipe": "imnn", "theta_fid": [0.0, 1.0],
                          "phases": [{"name": "fit", "epochs": 5.7}]}).fit(
            simulator=gaussian_simulator)


def test_sklearn_clone():
    base = pytest.importorskip("sklearn.base")
    recipe = IMNN.preset("fresh", n_summaries=2, theta_fid=(0.0, 1.0), hidden_dims=(32, 32),
                         models={"main": {"whiten": False}})
    twin = base.clone(recipe)
    assert twin is not recipe and twin.get_params()["theta_fid"] == (0.0, 1.0)
    assert twin.to_dict(full=True) == recipe.to_dict(full=True)
    custom = IMNN(theta_fid=(0, 1), network=torch.nn.Linear(10, 2))
    assert isinstance(base.clone(custom).network, torch.nn.Linear)


# ---------------------------------------------------------------------- slots, by name

@attrs.define
class LogDetLoss(FisherLoss):
    """A replacement loss: −ln det F alone (no regulariser), counting its calls."""

    name: ClassVar[str] = "test_log_det"
    calls: ClassVar[int] = 0

    def objective(self, summaries, derivatives):
        LogDetLoss.calls += 1
        value, metrics = super().objective(summaries, derivatives)
        return -metrics["log_det_F"] + 0.0 * value, metrics


@attrs.define
class CountingSimulations(SimulationSampler):
    """A replacement simulation sampler (the built-in one, counting its draws)."""

    name: ClassVar[str] = "test_counting_simulations"
    draws: ClassVar[int] = 0

    def simulate(self, generator, device):
        CountingSimulations.draws += 1
        return super().simulate(generator, device)


@attrs.define
class ShapelessSimulations(SimulationSampler):
    """A replacement sampler that does not say the shape of one simulation."""

    name: ClassVar[str] = "test_shapeless_simulations"

    @property
    def simulation_shape(self):
        return None


@attrs.define
class NeedsTheta(FisherLoss):
    """A loss that needs a batch field simulation samplers do not yield."""

    name: ClassVar[str] = "test_needs_theta"
    consumes: ClassVar[frozenset[str]] = frozenset({"fiducial", "theta"})


@attrs.define
class NoDetF(FisherLoss):
    """A loss that does not report det_F (what the IMNN validation tracks)."""

    name: ClassVar[str] = "test_no_det_f"
    reports: ClassVar[frozenset[str]] = frozenset({"log_det_F"})


class _Plugin:
    @hookimpl
    def register_losses(self):
        return [LogDetLoss, NeedsTheta, NoDetF]

    @hookimpl
    def register_samplers(self):
        return [CountingSimulations, ShapelessSimulations]


def test_loss_and_sampler_replaced_by_name_from_toml(infoblocks_plugin):
    infoblocks_plugin(_Plugin(), "test_imnn")
    text = """
recipe = "imnn"
theta_fid = [0.0, 1.0]
epochs = 5
min_epochs = 0
n_s = 300
n_d = 300
[[phases]]
name = "fit"
loss = { name = "test_log_det" }
sampler = { name = "test_counting_simulations" }
"""
    imnn = recipe_from_dict(tomllib.loads(text))
    phase = imnn.routine_spec()["phases"][0]
    # a new block by name replaces the default whole, but the shortcuts set here (theta_fid,
    # n_s) and those left at their defaults (the flags and the derivative mode; not n_d,
    # which has no default before fit) reach the fields it has; the rest are filled from the
    # recipe at fit time
    assert phase["sampler"] == {"name": "test_counting_simulations", "theta_fid": [0.0, 1.0],
                                "n_s": 300, "batched": True, "derivative_mode": "autograd",
                                "fresh": True}
    LogDetLoss.calls = CountingSimulations.draws = 0
    imnn.fit(simulator=gaussian_simulator)
    assert LogDetLoss.calls >= 5 and CountingSimulations.draws >= 5
    assert imnn.n_epochs_ == 5 and np.isfinite(imnn.F_).all()


def test_contract_error_names_both_blocks(infoblocks_plugin, arrays):
    infoblocks_plugin(_Plugin(), "test_imnn")
    imnn = IMNN(theta_fid=(0.0, 1.0), epochs=2,
                phases=[{"name": "fit", "loss": {"name": "test_needs_theta"}}])
    with pytest.raises(ContractError, match=r"loss 'test_needs_theta' consumes the batch "
                                            r"field\(s\) \['theta'\], but sampler 'simulations' "
                                            r"\(simulations batches\) yields only derivative, "
                                            r"fiducial"):
        imnn.fit(arrays[0][:200], arrays[1][:200])
    # the validation tracks det_F: a loss that does not report it is refused, by name
    other = IMNN(theta_fid=(0.0, 1.0), epochs=2,
                 phases=[{"name": "fit", "validation": {"loss": {"name": "test_no_det_f"}}}])
    with pytest.raises(ContractError, match="tracks the metric 'det_F', but loss "
                                            "'test_no_det_f' reports only log_det_F"):
        other.fit(arrays[0][:200], arrays[1][:200])


# ---------------------------------------------------------------------- slow

@pytest.mark.slow
def test_demo_quick(tmp_path):
    numbers = IMNN.demo(tmp_path, quick=True)
    assert numbers["best_val_det_F"] >= TARGET and (tmp_path / "imnn_demo.png").exists()


@pytest.mark.slow
def test_defaults_with_a_simulator_reach_095_of_the_information():
    # issue 13 item 3: IMNN(...).fit(simulator) with nothing else set — SiLU, cosine decay over
    # 3000 epochs, fresh simulations, 50,000 validation simulations every 50 epochs.  Measured
    # best validation det F 49.14 / 49.23 / 48.34 and det F on 100,000 independent simulations
    # 48.70 / 49.45 / 48.88 on seeds 0 / 1 / 2 (docs/imnn.md); ~17 min on 2 loaded cores.
    imnn = IMNN(n_summaries=2, theta_fid=(0.0, 1.0)).fit(simulator=gaussian_simulator)
    assert imnn.best_val_det_F_ >= 0.95 * DEMO_EXACT_DET_F
    fid, der = gaussian_simulations(100_000, seed=10 ** 6)  # never seen in training
    with torch.no_grad():
        s, ds = network_summaries(imnn.routine_.models["main"],
                                  {"fiducial": torch.as_tensor(fid),
                                   "derivative": torch.as_tensor(der)})
    independent = float(torch.linalg.det(fisher_statistics(s.double(), ds.double()).F))
    assert independent >= 0.95 * DEMO_EXACT_DET_F  # the exact statistics: 50 ± 0.3 here


@pytest.mark.slow
def test_fresh_simulations_preset_reaches_095(arrays):
    # the benchmark bar, 0.95 × 50, with IMNN.preset("fresh") (fresh simulations,
    # SiLU, cosine decay over 3000 epochs) validated on the fixed seed-1 arrays (oracle
    # 49.45): 50.16 measured for seed 0 (50.16 / 47.29 / 49.74 on the benchmark's seeds 0-2;
    # seed 1's validation set has oracle 48.35, see docs/imnn.md).  5-9 min on 2 loaded cores.
    _, _, val_fid, val_der = arrays
    imnn = IMNN.preset("fresh", n_summaries=2, theta_fid=(0.0, 1.0)).fit(
        simulator=gaussian_simulator, validation_fiducial=val_fid, validation_derivative=val_der)
    assert imnn.best_val_det_F_ >= 0.95 * DEMO_EXACT_DET_F
    assert imnn.best_val_det_F_ >= 0.97 * oracle_det_F(val_fid, val_der)


class PointwiseNet(torch.nn.Module):
    """A custom summary network (not a plain Sequential): per-point features, then pooled;
    input (n, 10) -> (n, 2).  Exercises the generic vmap(jvp) path and save / load."""

    def __init__(self):
        super().__init__()
        self.point = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(),
                                         torch.nn.Linear(16, 2))

    def forward(self, x):
        return self.point(x.unsqueeze(-1)).sum(-2)


def test_custom_network_fit_save_load(arrays, tmp_path):
    fid, der = arrays[0][:300], arrays[1][:300]
    torch.manual_seed(0)
    imnn = IMNN(n_summaries=2, theta_fid=(0, 1), network=PointwiseNet(), epochs=5,
                min_epochs=5).fit(fid, der)
    assert np.isfinite(imnn.F_).all() and imnn.n_epochs_ == 5
    imnn.save(tmp_path / "custom")
    with pytest.raises(ValidationError, match="custom torch module; pass it again"):
        IMNN.load(tmp_path / "custom")
    again = IMNN.load(tmp_path / "custom", network=PointwiseNet())
    np.testing.assert_allclose(again.estimate(fid[:10]), imnn.estimate(fid[:10]), rtol=1e-5,
                               atol=1e-6)


class _FailingSimulator:
    """The tutorial simulator that fails on call ``fail_at`` (a run that dies mid-phase)."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, generator, theta):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("node lost")
        return gaussian_simulator(generator, theta)


def test_fit_resumes_from_its_checkpoint_as_if_never_stopped(tmp_path):
    # fresh simulations every epoch, drawn from the routine's generator: the checkpoint keeps
    # its state, so the resumed run draws what the uninterrupted one drew (issue 12 item 5)
    options = dict(theta_fid=(0, 1), n_s=200, n_d=200, hidden_dims=(16,), epochs=8,
                   min_epochs=8, lr_schedule="cos")
    whole = IMNN(**options).fit(simulator=gaussian_simulator)
    with pytest.raises(ValidationError, match="node lost"):
        # 2 calls (one per parameter) per draw: it dies in the 4th of the 8 epochs
        IMNN(**options).fit(simulator=_FailingSimulator(fail_at=14),
                            checkpoint=tmp_path / "ckpt")
    saved = read_checkpoint(tmp_path / "ckpt")
    assert (saved["phase"], saved["epoch"], saved["complete"]) == ("fit", 2, False)
    again = IMNN(**options).fit(simulator=gaussian_simulator, resume=tmp_path / "ckpt")
    assert again.history_["det_F"] == whole.history_["det_F"]
    for key, value in whole.routine_.models.state_dict().items():
        assert torch.equal(value, again.routine_.models.state_dict()[key]), key


def test_the_full_config_of_a_simulator_fit_loads_and_refits_the_same():
    # the settings left None took the simulator mode's defaults: the full config writes them,
    # so that it loads unfitted (in no mode) with the sections it was saved with
    fitted = IMNN(n_summaries=2, theta_fid=(0.0, 1.0), epochs=2, min_epochs=0, n_s=200,
                  n_d=200).fit(simulator=gaussian_simulator)
    text = fitted.to_toml(full=True)
    again = recipe_from_dict(tomllib.loads(text))
    assert again.validation_every == 2 and again.n_validation == 50_000  # written out
    assert again.routine_spec() == fitted.routine_spec()
    np.testing.assert_allclose(again.fit(simulator=gaussian_simulator).F_, fitted.F_, rtol=1e-6)


def test_a_sampler_without_simulation_shape_takes_it_from_the_arrays(infoblocks_plugin, arrays):
    infoblocks_plugin(_Plugin(), "test_imnn")
    phases = [{"name": "fit", "sampler": "test_shapeless_simulations"}]
    imnn = IMNN(theta_fid=(0.0, 1.0), epochs=2, min_epochs=0, phases=phases)
    imnn.fit(arrays[0][:200], arrays[1][:200])  # the shape of one simulation: fiducial[0]
    assert np.isfinite(imnn.F_).all() and imnn.F_[0, 0] > 0


def test_a_model_besides_the_summary_network_is_built_from_its_table():
    # author8 A8-1: an extra [models.critic] was dropped, and the loss that used it was told
    # to add it under [models] (where it was)
    from infoblocks.recipes.imnn import gaussian_simulations

    fid, der = gaussian_simulations(200, seed=0)
    # (a phase names it: a model nothing reads is refused, fix14 / user13 U13-10)
    imnn = IMNN(theta_fid=[0.0, 1.0], hidden_dims=(8,), epochs=2,
                models={"extra": {"name": "mlp", "out_dim": 3}},
                phases=[{"name": "fit", "trainable": ["main", "extra"]}]).fit(fid, der)
    extra = imnn.routine_.models["extra"]
    assert extra(torch.zeros(4, 10)).shape == (4, 3)  # in_dim: the simulation's size


@attrs.define
class PlainSummaries(Model):
    """A summary network without an `activation` field (tanh inside)."""

    name: ClassVar[str] = "test_plain_summaries"
    in_dim: int = 0
    out_dim: int = 2

    def build(self):
        return torch.nn.Sequential(torch.nn.Linear(self.in_dim, 8), torch.nn.Tanh(),
                                   torch.nn.Linear(8, self.out_dim))


def test_load_of_a_simulator_fit_with_a_network_without_activation(infoblocks_plugin, tmp_path):
    # author11 A11-3: the full form wrote the simulator mode's `activation` = 'silu' as a
    # setting, which IMNN.load then warned "reaches no block" (the user never set it)
    import warnings

    from infoblocks.blocks.assembly import ShortcutWarning

    class Plugin:
        @hookimpl
        def register_models(self):
            return [PlainSummaries]

    infoblocks_plugin(Plugin(), "test_imnn_plain")
    fitted = IMNN(theta_fid=(0.0, 1.0), epochs=2, min_epochs=0, n_s=100, n_d=100,
                  n_validation=200, models={"main": {"name": "test_plain_summaries"}})
    fitted.fit(simulator=gaussian_simulator)
    full = fitted.to_dict(full=True)
    assert "activation" not in full and full["lr_schedule"] == "cos"  # the ones that reach
    fitted.save(tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortcutWarning)
        again = IMNN.load(tmp_path / "model")
        assert again.routine_spec() == fitted.routine_spec()
    np.testing.assert_allclose(again.F_, fitted.F_)


@attrs.define
class FlatDerivative(SimulationSampler):
    """A simulation sampler whose `derivative` lost its parameter axis: (n_d, *S)."""

    name: ClassVar[str] = "test_flat_derivative"

    def simulate(self, generator, device):
        out = super().simulate(generator, device)
        out["derivative"] = out["derivative"][:, 0]
        return out


def test_a_derivative_of_the_wrong_shape_names_the_sampler(infoblocks_plugin):
    # author11 A11-9: was "loss 'fisher' raised IndexError: Dimension out of range ... (at
    # blocks/fisher/summaries.py in _mlp_jvp)", the sampler and the expected shape unnamed
    class Plugin:
        @hookimpl
        def register_samplers(self):
            return [FlatDerivative]

    infoblocks_plugin(Plugin(), "test_imnn_flat")
    imnn = IMNN(theta_fid=(0.0, 1.0), epochs=1, min_epochs=0, n_s=50, n_d=50,
                n_validation=100, phases=[{"name": "fit", "sampler": "test_flat_derivative"}])
    with pytest.raises(ContractError, match=r"Phase 'fit': sampler 'test_flat_derivative' "
                                            r"yields `derivative` of shape \(50, 10\) with "
                                            r"`fiducial` of shape \(50, 10\): `derivative` must "
                                            r"be \(n_d, p, \*S\) = \(n_d, 2, 10\)"):
        imnn.fit(simulator=gaussian_simulator)


def test_validation_arrays_are_named_as_passed():
    # user13 U13-27: a NaN in validation_fiducial was reported as "`fiducial` contains ...",
    # and too many validation_derivative rows as "`derivative` has 200 rows but `fiducial` ..."
    rng = np.random.default_rng(0)
    fid, der = rng.normal(size=(200, 10)), rng.normal(size=(100, 2, 10))
    bad = fid.copy()
    bad[0, 0] = np.nan
    imnn = IMNN(theta_fid=[0.0, 1.0], n_summaries=2, epochs=2)
    with pytest.raises(ValidationError, match=r"`validation_fiducial` contains 1 non-finite"):
        imnn.fit(fid, der, validation_fiducial=bad, validation_derivative=der)
    with pytest.raises(ValidationError, match=r"`validation_derivative` has 100 rows but "
                                              r"`validation_fiducial` only 50"):
        imnn.fit(fid, der, validation_fiducial=fid[:50], validation_derivative=der)
