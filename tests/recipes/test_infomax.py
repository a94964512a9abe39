"""InfoMax (issue 14): the issue's pinned cases, the transformer API, the slots, the blocks."""

from __future__ import annotations

import math
import shutil
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.resume import NothingToResumeWarning
from infoblocks.blocks.mutual_information.infomax import (CODE_KEY, GaussianChannelCritic,
                                                          InfoMaxLoss, JSDivergenceBound,
                                                          LinearReconstructionLoss,
                                                          LinearResidualMLP, ParameterL2Loss,
                                                          unexplained_fraction)
from infoblocks.plugins.testing import check_block
from infoblocks.recipes.infomax import (LINSKER_OPTIONS, PCA_START_OPTIONS, InfoMax,
                                        linear_regression_mse, noise_floor, sanity_problem)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from infomax_bench import (pca_form, perturbed, sd_components, semi_supervised,  # noqa: E402
                           ten_functions)

#: var x of x ~ U(−1, 1): the LR-MSE of a code that carries nothing about x
VAR_X = 1 / 3


def _small(**kw):
    return InfoMax(**{"epochs": 30, **kw})


# ---------------------------------------------------------------------------- the issue's cases


def test_sanity_case_recovers_x_linearly():
    # issue 14's sanity row: reference form 0.083, PCA-1 0.135; pinned at 0.05 (defaults, the
    # PCA start: 0.030 on seed 0, best epoch 68, stopped at 169; 0.029 ± 0.004 over seeds 0-4;
    # the previous MLP defaults 0.035 on seed 0)
    x, features = sanity_problem(0)
    codes = InfoMax(n_components=1).fit_transform(features)
    assert codes.shape == (3000, 1)
    assert linear_regression_mse(codes, x) <= 0.05


def test_47_functions_noise_02_test_mse():
    # issue 14's 47-function row at noise 0.2, dim 3: test MSE <= 0.02 (issue: reference 0.019,
    # PCA 0.025, raw regression 0.597).  Measured with the defaults over seeds 0-4 (200 epochs):
    # 0.0042 / 0.0074 / 0.0068 / 0.0084 / 0.0044; here, 60 epochs, seed 0: 0.0132; PCA-3 on
    # this split (seed 0) scores 0.029
    x, features, (unlabelled, labelled, test) = semi_supervised(0, True, 0.2)

    def score(encode):
        return linear_regression_mse(encode(features[labelled]), x[labelled],
                                     encode(features[test]), x[test])

    ours = score(InfoMax(n_components=3, epochs=60).fit(features[unlabelled]).transform)
    assert ours <= 0.02
    assert ours <= score(pca_form(features[unlabelled], 3, 0)) / 2
    assert ours <= score(lambda f: f) / 10


def test_47_functions_noise_005_no_longer_codes_the_jump():
    # the row that lost most before the critic's scale was set from the channel (0.096 ± 0.027
    # over 5 seeds, critic_init = "one"): 0.0030 on seed 0 with the defaults' PCA start and 60
    # epochs (the previous MLP defaults 0.0016; PCA-3 0.027)
    x, features, (unlabelled, labelled, test) = semi_supervised(0, True, 0.05)
    encode = InfoMax(n_components=3, epochs=60).fit(features[unlabelled]).transform
    ours = linear_regression_mse(encode(features[labelled]), x[labelled], encode(features[test]),
                                 x[test])
    assert ours <= 0.008


def test_linsker_options_beat_pca_on_the_linear_19_function_row():
    # LINSKER_OPTIONS: the PCA-started linear path + residual MLP, identity output, power
    # constraint by per-batch standardisation.  semi 19/0.05 (linear data: PCA is the bar),
    # seed 0: 0.0022 against PCA-3's 0.0029 (the tanh-MLP default 0.0027); over seeds 0-4
    # 0.0024 ± 0.0006 against PCA's 0.0039 (docs/infomax.md)
    x, features, (unlabelled, labelled, test) = semi_supervised(0, False, 0.05)

    def score(encode):
        return linear_regression_mse(encode(features[labelled]), x[labelled],
                                     encode(features[test]), x[test])

    assert InfoMax.preset("linsker", n_components=3) == InfoMax(n_components=3, **LINSKER_OPTIONS)
    model = InfoMax.preset("linsker", n_components=3).fit(features[unlabelled])
    assert type(model.routine_.models["encoder"]).__name__ == "LinearResidualNet"
    assert score(model.transform) <= 0.85 * score(pca_form(features[unlabelled], 3, 0))


def test_heldout_bound_stays_below_the_channel_capacity():
    # a tanh code |y| <= 1 through N(0, σ²) output noise carries at most ½ log(1 + 1/σ²) nats
    # per component: the bound cannot saturate or drift upward without limit
    x, features = sanity_problem(1, n=600)
    model = _small(n_components=1, epochs=8, patience=None).fit(features)
    capacity = 0.5 * math.log(1 + 1 / model.output_noise ** 2)  # 2.31 nats at σ = 0.1
    values = [r["val_mi"] for r in model.history_]
    assert max(values) <= capacity
    assert model.bound_nats_ == max(values) > values[0] + 0.05  # it rose; the best is kept


# ---------------------------------------------------------------------------- the API


def test_pipeline_with_linear_regression():
    pipeline = pytest.importorskip("sklearn.pipeline")
    linear = pytest.importorskip("sklearn.linear_model")
    x, features = sanity_problem(2, n=600)
    pipe = pipeline.Pipeline([("infomax", _small(n_components=2, epochs=5)),
                              ("lr", linear.LinearRegression())])
    pipe.fit(features, x)
    assert pipe.predict(features).shape == (600,)
    assert np.mean((pipe.predict(features) - x) ** 2) < VAR_X / 2


def test_pipeline_ending_in_infomax_transforms():
    # user13 U13-13: Pipeline.transform checks its last step is fitted through its tags:
    # "AttributeError: 'InfoMax' object has no attribute '__sklearn_tags__'"
    pipeline = pytest.importorskip("sklearn.pipeline")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    _, features = sanity_problem(2, n=200)
    pipe = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                  _small(n_components=2, epochs=2)).fit(features)
    assert pipe.transform(features[:10]).shape == (10, 2)


def test_save_load_transform_and_history(tmp_path):
    x, features = sanity_problem(3, n=400)
    model = _small(n_components=2, epochs=3).fit(features)
    model.save(tmp_path / "m")
    again = InfoMax.load(tmp_path / "m")
    np.testing.assert_array_equal(again.transform(features), model.transform(features))
    assert again.history_ == model.history_ and again.best_epoch_ == model.best_epoch_
    figure = again.plot(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0 and figure is not None


def test_resume_from_a_finished_checkpoint_gives_the_same_encoder(tmp_path):
    x, features = sanity_problem(4, n=400)
    first = _small(n_components=1, epochs=3).fit(features, checkpoint=tmp_path / "ck")
    second = _small(n_components=1, epochs=3).fit(features, resume=tmp_path / "ck")
    np.testing.assert_array_equal(first.transform(features), second.transform(features))


def test_warm_start_continues_the_epochs():
    x, features = sanity_problem(5, n=400)
    model = _small(n_components=1, epochs=2, patience=None, warm_start=True).fit(features)
    model.fit(features)
    assert [r["epoch"] for r in model.history_] == [0, 1, 2, 3]
    with pytest.raises(ValidationError, match="same shape"):
        model.fit(features[:300])


def test_linear_residual_encoder_in_the_recipe_starts_at_pca():
    # encoder = "linear_residual_mlp" untrained (learning rate 1e-7): the code is tanh of the
    # whitened PCA-3 code, and the probe scores as PCA-3 does (semi 19/0.05, seed 0: 0.0029)
    x, features, (unlabelled, labelled, test) = semi_supervised(0, False, 0.05)

    def score(encode):
        return linear_regression_mse(encode(features[labelled]), x[labelled],
                                     encode(features[test]), x[test])

    model = InfoMax(n_components=3, encoder="linear_residual_mlp", epochs=1, learning_rate=1e-7,
                    batches_per_epoch=1, pca_whiten=True, residual_init=0.01
                    ).fit(features[unlabelled])
    assert model.routine_spec()["models"]["encoder"]["name"] == "linear_residual_mlp"
    pca = score(pca_form(features[unlabelled], 3, 0))
    assert abs(score(model.transform) - pca) <= 0.1 * pca
    net = model.routine_.models["encoder"]
    scaled = (features[unlabelled] - model.mean_) / model.scale_
    with torch.no_grad():
        linear = net.linear(torch.as_tensor(scaled, dtype=torch.float32)).numpy()
    assert np.std(linear, 0) == pytest.approx([0.5] * 3, rel=0.01)  # pca_gain


def test_restarts_keep_the_best_heldout_bound():
    # ten d1, seed 3 (defaults): one initialisation ends in a folded code, LR-MSE 0.31, held-out
    # bound 1.465 nats; with n_init = 2 the second start (1.495 nats) is kept: 0.042.  Here a
    # small budget: the kept restart's bound is the best of the restarts, and the first restart
    # is the n_init = 1 fit
    x, features = sanity_problem(9, n=600)
    one = _small(n_components=1, epochs=4, patience=None).fit(features)
    two = _small(n_components=1, epochs=4, patience=None, n_init=2).fit(features)
    assert two.bound_nats_ >= one.bound_nats_
    kept_first = two.bound_nats_ == one.bound_nats_
    assert np.array_equal(two.transform(features), one.transform(features)) == kept_first


def test_restarts_checkpoint_each_restart_and_resume_where_the_kill_left_them(tmp_path):
    # n_init = 2 with a checkpoint: one directory per restart; a resume after a kill during
    # the second restart (its directory missing: it had not begun) reads the first back and
    # runs the second, and gives the uninterrupted fit; before, n_init > 1 refused checkpoint
    x, features = sanity_problem(9, n=600)
    options = dict(n_components=1, epochs=4, patience=None, n_init=2)
    plain = _small(**options).fit(features)
    ck = tmp_path / "ck"
    first = _small(**options).fit(features, checkpoint=ck)
    assert sorted(p.name for p in ck.iterdir()) == ["restart0", "restart1"]
    assert np.array_equal(first.transform(features), plain.transform(features))
    shutil.rmtree(ck / "restart1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NothingToResumeWarning)  # restart 1: not announced
        again = _small(**options).fit(features, resume=ck)
    assert np.array_equal(again.transform(features), plain.transform(features))
    assert again.bound_nats_ == plain.bound_nats_ and len(again.history_) == len(plain.history_)
    assert (ck / "restart1").is_dir()
    with pytest.raises(ValidationError, match="different directories"):
        _small(**options).fit(features, checkpoint=tmp_path / "a", resume=tmp_path / "b")


# ---------------------------------------------------------------------------- slots and data


def test_every_slot_is_a_registry_name_in_the_full_config():
    spec = InfoMax().routine_spec()
    assert spec["models"]["encoder"]["name"] == "linear_residual_mlp"
    assert spec["models"]["encoder"]["whiten"] is False
    assert InfoMax.preset("mlp").routine_spec()["models"]["encoder"]["name"] == "mlp"
    assert spec["models"]["critic"]["name"] == "gaussian_channel_critic"
    phase = spec["phases"][0]
    assert phase["sampler"]["name"] == "all_pairs"
    assert phase["loss"]["name"] == "infomax"
    assert phase["loss"]["bound"]["name"] == "js_divergence"
    assert phase["validation"]["metric"] == "mi"
    text = InfoMax(bound="infonce", critic="joint").to_toml(full=True)
    assert 'name = "infonce_loss"' in text and 'name = "joint_critic"' in text


def test_validation_scores_the_trained_bound_unless_given_its_own_in_the_spec():
    pytest.importorskip("infoblocks_example_plugin")
    train = {"name": "train", "loss": {"bound": {"name": "js"}}}
    phase = InfoMax(phases=[train]).routine_spec()["phases"][0]
    assert phase["validation"]["loss"]["bound"]["name"] == "js"  # follows, and says so
    # a validation loss of its own stays, even the default's (author5: it was replaced by
    # the training loss while the saved routine said js_divergence)
    own = {**train, "validation": {"loss": {"bound": {"name": "js_divergence"}}}}
    phase = InfoMax(phases=[own]).routine_spec()["phases"][0]
    assert phase["validation"]["loss"]["bound"]["name"] == "js_divergence"
    assert phase["loss"]["bound"]["name"] == "js"
    again = InfoMax.from_dict(InfoMax(phases=[own]).to_dict(full=True)).routine_spec()
    assert again["phases"][0]["validation"]["loss"]["bound"]["name"] == "js_divergence"


def test_a_critic_and_bound_swapped_from_the_sections():
    x, features = sanity_problem(6, n=400)
    model = InfoMax(n_components=2, epochs=2, models={"critic": {"name": "separable_critic",
                                                                  "embed_dim": 8}},
                    phases=[{"name": "train", "loss": {"critic_input": "data",
                                                       "bound": {"name": "js_divergence"}},
                             "sampler": {"name": "marginal_pairs"}}])
    model.fit(features)
    critic = model.routine_.models["critic"]
    assert type(critic).__name__ == "SeparableCriticNet"
    assert "js" in model.history_[0] and np.isfinite(model.history_[-1]["mi"])


def test_a_plugins_negative_sampler_by_the_shortcut_and_from_a_section():
    pytest.importorskip("infoblocks_example_plugin")
    x, features = sanity_problem(6, n=400)
    # the shortcut takes any registered sampler, as MINE's does
    shortcut = InfoMax(n_components=1, epochs=2, batch_size=64, negatives="shifted").fit(features)
    sampler = shortcut.routine_.phases[0].sampler
    assert sampler.name == "shifted" and sampler.batch_size == 64
    assert np.isfinite(shortcut.history_[-1]["val_mi"])
    # named in a section: the recipe's batch settings reach the fields it has, capped at the
    # split (400 rows, test_fraction 0.1: 360 training rows)
    section = InfoMax(n_components=1, epochs=2, batch_size=1000,
                      phases=[{"name": "train", "sampler": "shifted"}]).fit(features)
    assert section.routine_.phases[0].sampler.batch_size == 360


def test_a_penalty_named_in_the_loss_section():
    # the infomax loss's `penalties` slot takes loss blocks by name from a TOML section; the
    # recipe's `reconstruction` option writes the same block there
    x, features = sanity_problem(6, n=400)
    model = InfoMax(n_components=2, epochs=2, phases=[{"name": "train", "loss": {
        "penalties": [{"name": "linear_reconstruction", "weight": 0.5, "scale": "log"}]}}])
    model.fit(features)
    last = model.history_[-1]
    assert 0 < last["reconstruction"] < 1 and 0 < last["val_reconstruction"] < 1
    text = InfoMax(reconstruction=0.1).to_toml(full=True)
    assert 'name = "linear_reconstruction"' in text
    assert InfoMax.preset("mlp").routine_spec()["phases"][0]["loss"]["penalties"] == []


def test_encoder_module_from_python():
    x, features = sanity_problem(7, n=400)
    module = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    model = _small(n_components=2, epochs=2, encoder_module=module).fit(features)
    assert model.routine_.models["encoder"] is module
    assert "encoder_module" not in model.to_dict()
    with pytest.raises(ValidationError, match="must map"):
        _small(n_components=3, encoder_module=module).fit(features)


def test_bad_input_and_settings_are_named():
    x, features = sanity_problem(8, n=200)
    features[3, 2] = np.nan
    with pytest.raises(ValidationError, match="X"):
        InfoMax().fit(features)
    with pytest.raises(ValidationError, match="bound"):
        InfoMax(bound="mine")
    with pytest.raises(ValidationError, match="too few"):
        InfoMax(n_components=2).fit(np.random.default_rng(0).normal(size=(5, 3)))
    model = _small(n_components=1, epochs=1).fit(sanity_problem(8, n=200)[1])
    with pytest.raises(ValidationError, match="6"):
        model.transform(np.zeros((4, 5)))
    with pytest.raises(ConfigError):
        InfoMax.from_dict({"recipe": "infomax", "n_componets": 2})
    # user13 U13-6: the default jsd bound's all-pairs negatives need 2 rows per batch (was
    # "PluginError: ... js_divergence raised ValueError: math domain error" in the first step)
    with pytest.raises(ConfigError, match="`batch_size` = 1: all_pairs"):
        InfoMax(epochs=1, batch_size=1).fit(sanity_problem(8, n=200)[1])
    # user13 U13-9: was "`hidden_dims` must hold positive integers" from the critic's block
    # (the user's hidden_dims was (64, 64)); with the default gaussian critic, accepted unused
    for critic in ("joint", "gaussian"):
        with pytest.raises(ValidationError, match="`critic_hidden_dims` must hold positive"):
            InfoMax(critic=critic, critic_hidden_dims=(-1,))
    # author11 A11-8: a block of one's own in the `critic` / `encoder` / `bound` shortcut was
    # refused with the built-ins' names only, not where it goes
    for key, where in (("critic", r"`\[models.critic\] name = \"my_block\"`"),
                       ("encoder", r"`\[models.encoder\] name = \"my_block\"`"),
                       ("bound", r"`\[\[phases\]\] name = \"train\"` with `loss = "
                                 r"\{ bound = \"my_block\" \}`")):
        with pytest.raises(ConfigError, match=rf"`{key}` must be one of .*got 'my_block'. .* "
                                              rf"of your own .*{where}"):
            InfoMax.from_dict({"recipe": "infomax", key: "my_block"})


# ---------------------------------------------------------------------------- the blocks


def test_new_blocks_pass_the_plugin_conformance_check():
    check_block(InfoMaxLoss)
    check_block(JSDivergenceBound)
    check_block(GaussianChannelCritic, {"x_dim": 3, "y_dim": 3})
    check_block(LinearResidualMLP, {"in_dim": 5, "out_dim": 2})
    check_block(LinearReconstructionLoss)
    check_block(ParameterL2Loss)


def test_channel_critic_scale_is_the_measured_noise_variance():
    # z = u + N(0, diag(0.1², 0.3²)): τ of prefix k is the mean noise variance of coords 1..k
    net = GaussianChannelCritic(x_dim=2, y_dim=2, init_from_data=True).build()
    assert not bool(net.fitted)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(20000, 2, generator=gen)
    z = u + torch.randn(20000, 2, generator=gen) * torch.tensor([0.1, 0.3])
    net.fit_scale(z, u)
    torch.testing.assert_close(net.log_tau.exp(), torch.tensor([0.01, (0.01 + 0.09) / 2]),
                               rtol=0.03, atol=0)
    assert bool(net.fitted)


def test_channel_critic_offset_starts_nwj_at_the_dv_value():
    # c = 1 − log mean e^t over the negatives: NWJ's best constant, so NWJ = DV at the start
    from infoblocks.blocks.mutual_information.bounds import dv_bound, nwj_bound
    from infoblocks.blocks.mutual_information.scores import BatchScores

    net = GaussianChannelCritic(x_dim=2, y_dim=2, init_from_data=True, offset=True).build()
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(400, 2, generator=gen)
    z = u + 0.3 * torch.randn(400, 2, generator=gen)
    net.fit_scale(z, u)
    with torch.no_grad():
        scores = BatchScores.from_matrix(net.pairwise(z, u))
        nwj, dv = float(nwj_bound(scores)), float(dv_bound(scores))
    assert dv > 1.0 and abs(nwj - dv) < 0.02 * dv  # without c, NWJ is far below: e^{-1}·…


def test_a_bound_that_is_not_shift_invariant_gets_the_critics_offset():
    # author7 A7-3: `bound = "nwj"` with the Gaussian critic (no constant) reported a negative
    # held-out bound (−0.28 nats after 200 epochs, JSD +1.64); with the learnt offset NWJ
    # reports DV's bound (measured 0.935 against DV's 0.937, 30 epochs)
    sanity_features = sanity_problem(0, 1000)[1]
    nwj = _small(n_components=1, bound="nwj").fit(sanity_features)
    dv = _small(n_components=1, bound="dv").fit(sanity_features)
    assert nwj.routine_spec()["models"]["critic"]["offset"] is True
    assert dv.routine_spec()["models"]["critic"]["offset"] is False
    assert abs(nwj.bound_nats_ - dv.bound_nats_) < 0.1 * dv.bound_nats_ and dv.bound_nats_ > 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        without = _small(n_components=1, bound="nwj", critic_offset=False, epochs=3).fit(
            sanity_features)
    said = [str(w.message) for w in caught]
    assert any("not shift-invariant" in m and "critic_offset = true" in m for m in said)
    assert without.bound_nats_ < 0.5 * dv.bound_nats_
    # a negative best held-out bound says the bound is too loose (author7 A7-3b)
    negative = any("below zero" in m and "'nwj_loss'" in m for m in said)
    assert negative == (without.bound_nats_ < 0)


def test_linear_residual_encoder_starts_at_the_whitened_pca_code():
    # Linsker's linear InfoMax code: the linear path starts at the PCA projection, each
    # component with std = gain, and the residual starts near zero
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2000, 5)) @ np.diag([3.0, 2.0, 1.0, 0.5, 0.1])
    x = torch.as_tensor(data @ np.linalg.qr(rng.standard_normal((5, 5)))[0], dtype=torch.float32)
    net = LinearResidualMLP(in_dim=5, out_dim=2, gain=0.5, output_activation="identity").build()
    net.on_phase_start(SimpleNamespace(dataset={"x": x}))
    with torch.no_grad():
        linear, code = net.linear(x), net(x)
    np.testing.assert_allclose(linear.std(0).numpy(), [0.5, 0.5], rtol=1e-3)
    pca = (x.numpy() - x.numpy().mean(0)) @ np.linalg.svd(
        x.numpy() - x.numpy().mean(0), full_matrices=False)[2][:2].T
    corr = np.corrcoef(linear.numpy().T, pca.T)[:2, 2:]
    np.testing.assert_allclose(np.abs(np.diag(corr)), [1, 1], atol=1e-4)
    assert float((code - linear).abs().max()) < 0.05  # the residual: near zero at the start
    weight = net.linear.weight.clone()
    net.on_phase_start(SimpleNamespace(dataset={"x": 2 * x}))  # fitted once: kept on resume
    torch.testing.assert_close(net.linear.weight, weight)


def test_linear_residual_mix_path_starts_at_the_same_code_with_a_fixed_projection():
    # linear_path = "mix": L = M P, P the whitened PCA projection (a buffer, not trained), M
    # starts at gain·I: the same start as the full path, the optimizer moves only M
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.standard_normal((1000, 6)) * [4.0, 2.0, 1.0, 0.5, 0.2, 0.1],
                        dtype=torch.float32)
    codes = {}
    for path in ("full", "mix"):
        torch.manual_seed(0)
        net = LinearResidualMLP(in_dim=6, out_dim=3, gain=0.5, linear_path=path,
                                output_activation="identity").build()
        net.on_phase_start(SimpleNamespace(dataset={"x": x}))
        with torch.no_grad():
            codes[path] = net.preactivation(x) - net.residual(x)
        names = {name for name, _ in net.named_parameters()}
    torch.testing.assert_close(codes["mix"], codes["full"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(codes["mix"].std(0).numpy(), [0.5] * 3, rtol=1e-3)
    assert "projection" not in names and "linear.weight" in names
    torch.testing.assert_close(net.linear.weight, 0.5 * torch.eye(3))


def test_unwhitened_pca_start_keeps_the_variance_ratios():
    # whiten = False: the first component starts at std = gain, the others in PCA's ratios
    # (here 3 : 2 : 1), so the minor directions do not start as loud as the leading one
    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.standard_normal((4000, 5)) * [3.0, 2.0, 1.0, 0.1, 0.1],
                        dtype=torch.float32)
    net = LinearResidualMLP(in_dim=5, out_dim=3, gain=0.5, whiten=False,
                            output_activation="identity").build()
    net.on_phase_start(SimpleNamespace(dataset={"x": x}))
    with torch.no_grad():
        std = net.linear(x).std(0).numpy()
    np.testing.assert_allclose(std, [0.5, 0.5 * 2 / 3, 0.5 / 3], rtol=0.05)


def test_linear_lr_is_a_trust_region_around_the_pca_start():
    # linear_lr = m: L = L₀ + m·Δ, Δ trained from 0, so Adam moves the PCA-started linear path
    # m times as far per step as the residual (m = 0: L stays at L₀, only the residual trains);
    # the code starts at the same place for every m
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.standard_normal((500, 6)) * [3.0, 2.0, 1.0, 0.5, 0.2, 0.1],
                        dtype=torch.float32)
    target = torch.as_tensor(rng.standard_normal((500, 2)), dtype=torch.float32)
    moved, starts = {}, {}
    for m in (1.0, 0.1, 0.0):
        torch.manual_seed(0)
        net = LinearResidualMLP(in_dim=6, out_dim=2, whiten=False, residual_init=1.0,
                                linear_lr=m).build()
        net.on_phase_start(SimpleNamespace(dataset={"x": x}))
        with torch.no_grad():
            starts[m] = net(x)
            before = net.preactivation(x) - net.residual(x)
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=3e-3)
        for _ in range(20):
            optimizer.zero_grad()
            (net(x) - target).pow(2).mean().backward()
            optimizer.step()
        with torch.no_grad():
            moved[m] = float((net.preactivation(x) - net.residual(x) - before).norm())
    torch.testing.assert_close(starts[0.1], starts[1.0])
    torch.testing.assert_close(starts[0.0], starts[1.0])
    assert moved[0.0] < 1e-5 < moved[0.1] < 0.3 * moved[1.0]  # (0: float rounding only)
    recipe = InfoMax(n_components=2, encoder="linear_residual_mlp", linear_lr=0.1)
    assert recipe.routine_spec()["models"]["encoder"]["linear_lr"] == 0.1
    with pytest.raises(ValidationError, match="linear_lr"):
        InfoMax(linear_lr=-1.0)


def test_unexplained_fraction_is_the_trailing_variance_of_a_pca_code():
    # x with variances 9, 4, 1, 0.25, 0.04: a code on the two leading principal axes leaves
    # (1 + 0.25 + 0.04) / 14.29 = 0.0903 unexplained, whatever invertible linear map of it
    # the code is; a code independent of x explains ~ d/b of it by chance
    rng = np.random.default_rng(0)
    sd = np.array([3.0, 2.0, 1.0, 0.5, 0.2])
    x = torch.as_tensor(rng.standard_normal((20000, 5)) * sd, dtype=torch.float64)
    truth = (sd[2:] ** 2).sum() / (sd ** 2).sum()
    mixed = x[:, :2] @ torch.tensor([[2.0, -1.0], [0.5, 3.0]], dtype=torch.float64) + 7.0
    assert float(unexplained_fraction(mixed, x, ridge=0.0)) == pytest.approx(truth, rel=0.02)
    assert float(unexplained_fraction(100 * mixed, x)) == pytest.approx(truth, rel=0.02)
    assert float(unexplained_fraction(x, x)) < 2e-3  # ridge 1e-3 of the code's variance
    noise = torch.as_tensor(rng.standard_normal((20000, 2)))
    assert float(unexplained_fraction(noise, x, ridge=0.0)) == pytest.approx(1.0, abs=1e-3)


def test_linear_reconstruction_loss_reads_the_code_or_encodes():
    # the block takes the infomax loss's clean code from batch[code_key], or encodes x itself;
    # "log" reports the same fraction and returns weight × its logarithm
    torch.manual_seed(0)
    x = torch.randn(300, 6)
    encoder = torch.nn.Linear(6, 2)
    models = torch.nn.ModuleDict({"encoder": encoder})
    block = LinearReconstructionLoss(weight=0.5)
    own = block({"x": x}, models, None)
    given = block({"x": x, CODE_KEY: encoder(x)}, models, None)
    torch.testing.assert_close(own.value, given.value)
    fraction = own.metrics["reconstruction"]
    assert 0.4 < float(fraction) < 0.9  # 2 of 6 isotropic directions: ~2/3 left
    torch.testing.assert_close(own.value, 0.5 * fraction)
    logged = LinearReconstructionLoss(weight=0.5, scale="log")({"x": x}, models, None)
    torch.testing.assert_close(logged.value, 0.5 * fraction.log())
    with pytest.raises(ValidationError, match="scale"):
        LinearReconstructionLoss(scale="sqrt")


def test_parameter_l2_sums_the_named_parameters_only():
    torch.manual_seed(0)
    net = LinearResidualMLP(in_dim=4, out_dim=2, hidden_dims=(8,)).build()
    models = torch.nn.ModuleDict({"encoder": net})
    out = ParameterL2Loss(weight=0.1)({}, models, None)  # the residual MLP by default
    assert out.value.requires_grad
    residual = sum(float(p.detach().pow(2).sum()) for p in net.residual.parameters())
    assert float(out.metrics["l2"]) == pytest.approx(residual, rel=1e-6)
    assert float(out.value.detach()) == pytest.approx(0.1 * residual, rel=1e-6)
    everything = ParameterL2Loss(prefix="")({}, models, None).metrics["l2"]
    assert float(everything) > residual  # the linear path's weights too
    with pytest.raises(ValidationError, match="no trained parameter named 'decoder'"):
        ParameterL2Loss(prefix="decoder")({}, models, None)


def test_reconstruction_prior_keeps_the_codes_linear_content():
    # ten d5 (issue 14): the 5th principal component (0.05 % of the variance) is what a linear
    # probe needs (PCA-4 0.028, PCA-5 0.016).  The bound alone trades it for non-linear codes of
    # the leading ones; the prior (reconstruction = 1, log scale) keeps it.  Measured (seed 0,
    # 1,000 points, 15 epochs): unexplained share 0.0052 -> 0.00016, LR-MSE 0.040 -> 0.0168
    # (PCA-5 0.0166)
    x, features = ten_functions(0, 1000)
    centred = torch.as_tensor(features - features.mean(0), dtype=torch.float64)
    pca = linear_regression_mse(pca_form(features, 5, 0)(features), x)
    kept = {}
    for weight in (0.0, 1.0):
        recipe = InfoMax(n_components=5, epochs=15, reconstruction=weight,
                         reconstruction_scale="log", marginal_prior=0.0)
        codes = recipe.fit_transform(features)
        kept[weight] = (float(unexplained_fraction(torch.as_tensor(codes, dtype=torch.float64),
                                                   centred, ridge=0.0)),
                        linear_regression_mse(codes, x))
    assert kept[1.0][0] < kept[0.0][0] / 5
    assert kept[1.0][1] <= 1.1 * pca < 1.5 * pca <= kept[0.0][1]
    spec = InfoMax(reconstruction=0.1, marginal_prior=0.0).routine_spec()["phases"][0]["loss"]
    assert spec["penalties"] == [{"name": "linear_reconstruction", "weight": 0.1,
                                  "scale": "fraction"}]
    assert InfoMax(marginal_prior=0.0).routine_spec()["phases"][0]["loss"]["penalties"] == []
    with pytest.raises(ValidationError, match="reconstruction"):
        InfoMax(reconstruction=-1.0)


@pytest.mark.slow
def test_pca_start_preset_keeps_the_47_function_low_noise_row_off_saturation():
    # semi 47/0.05, seed 3: the whitened PCA start (pca_whiten = True) saturates two of three
    # tanh components on every row and the probe blows up (10.75); the preset's start in PCA's
    # variance ratios gives 0.0072 (measured, patience 20 and 100 alike; PCA-3 here 0.037)
    assert InfoMax.preset("pca_start", n_components=3) == InfoMax(n_components=3,
                                                                   **PCA_START_OPTIONS)
    x, features, (unlabelled, labelled, test) = semi_supervised(3, True, 0.05)
    encode = InfoMax.preset("pca_start", n_components=3, seed=3).fit(features[unlabelled]).transform
    ours = linear_regression_mse(encode(features[labelled]), x[labelled], encode(features[test]),
                                 x[test])
    assert ours <= 0.015


def test_saturation_guard_keeps_the_code_off_tanh_ends():
    # a PCA start with gain 4 puts the tanh code deep in saturation (|y| > 0.99 wherever
    # |a| > 2.65); the guard (penalty on E[a_k²] beyond 1) brings the pre-activation's RMS
    # down to the bound, the run without it stays saturated (no held-out split: the final
    # weights, not the epoch of the best bound)
    x, features = sanity_problem(3, n=600)
    rms, saturated = {}, {}
    for weight in (0.0, 10.0):
        model = _small(n_components=2, encoder="linear_residual_mlp", pca_gain=4.0, epochs=15,
                       pca_whiten=True, residual_init=0.01,
                       test_fraction=0, saturation=weight, saturation_bound=1.0,
                       marginal_prior=0.0).fit(features)  # (the guard alone)
        net = model.routine_.models["encoder"]
        with torch.no_grad():
            scaled = (features - model.mean_) / model.scale_
            pre = net.preactivation(torch.as_tensor(scaled, dtype=torch.float32))
        rms[weight] = pre.pow(2).mean(0).sqrt().max().item()
        saturated[weight] = float((np.abs(model.transform(features)) > 0.99).mean())
    assert rms[0.0] >= 3 and saturated[0.0] >= 0.3  # measured: 7.6, 0.49
    assert rms[10.0] <= 1.1 and saturated[10.0] <= 0.02  # measured: 0.96, 0.002


def test_saturation_guard_needs_an_encoder_that_ends_in_its_activation():
    x, features = sanity_problem(7, n=300)
    module = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with pytest.raises(ValidationError, match="saturation"):
        _small(n_components=1, epochs=1, saturation=1.0, encoder_module=module).fit(features)


def test_gaussian_channel_critic_prefix_scores():
    net = GaussianChannelCritic(x_dim=3, y_dim=3, init_scale=0.5).build()
    gen = torch.Generator().manual_seed(0)
    z, u = torch.randn(5, 3, generator=gen), torch.randn(4, 3, generator=gen)
    prefix = net.prefix_pairwise(z, u)
    assert prefix.shape == (3, 5, 4)
    # the whole code's prefix is the pairwise score; the first only compares coordinate 0
    torch.testing.assert_close(prefix[-1], net.pairwise(z, u), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prefix[0], -(z[:, None, 0] - u[None, :, 0]) ** 2, atol=1e-6,
                               rtol=1e-6)
    torch.testing.assert_close(net(z[:4], u), torch.diagonal(net.pairwise(z[:4], u)))
    with pytest.raises(ValidationError, match="x_dim"):
        GaussianChannelCritic(x_dim=3, y_dim=2)


def test_infomax_loss_refuses_a_loss_that_is_not_a_bound():
    with pytest.raises(ValidationError, match="MI bound"):
        InfoMaxLoss(bound="position")


def test_noise_floor_of_isotropic_noise_around_a_line():
    # signal along one axis, N(0, 0.2²) in every direction: the trailing components are noise
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, (4000, 1))
    data = np.c_[t, np.zeros((4000, 9))] + 0.2 * rng.standard_normal((4000, 10))
    assert abs(noise_floor(torch.as_tensor(data, dtype=torch.float32)) - 0.2) < 0.01


def test_edge_noise_unit_keeps_real_noise_and_drops_a_curves_trailing_signal():
    # noise_unit = "edge": the floor capped by the noise the smallest principal variance allows
    # (Marchenko-Pastur lower edge).  Isotropic noise: the same floor (0.2).  Ten d5's
    # noise-free curve x^k - x^(k+1): the trailing half of its components is signal (floor
    # 0.0163 in scaled units, seed 0), the edge 0.00055 (30x lower); a constant column
    # (rank deficiency) is not noise
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, (4000, 1))
    noisy = torch.as_tensor(np.c_[t, np.zeros((4000, 9))] + 0.2 * rng.standard_normal((4000, 10)),
                            dtype=torch.float32)
    assert noise_floor(noisy, "edge") == pytest.approx(noise_floor(noisy), rel=1e-6)
    _, features = ten_functions(0)
    features = features / np.sqrt(features.var(0).mean())  # the recipe's "global" scaling
    curve = torch.as_tensor(features, dtype=torch.float32)
    assert noise_floor(curve) == pytest.approx(0.0163, abs=0.001)
    assert noise_floor(curve, "edge") < noise_floor(curve) / 10
    padded = torch.as_tensor(np.c_[features, np.zeros(3000)], dtype=torch.float32)
    assert noise_floor(padded, "edge") == pytest.approx(noise_floor(curve, "edge"), rel=0.01)


# ---------------------------------------------------------------------------- slow: the rows


@pytest.mark.slow
def test_semi_supervised_19_functions_beats_the_reference():
    # reference form 0.237 / 0.143 (issue) at noise 0.05 / 0.2; measured here over 3 seeds
    for noise, bound in ((0.05, 0.237), (0.2, 0.143)):
        values = []
        for seed in range(3):
            x, f, (u, lab, test) = semi_supervised(seed, False, noise)
            encode = InfoMax(n_components=3, seed=seed).fit(f[u]).transform
            values.append(linear_regression_mse(encode(f[lab]), x[lab], encode(f[test]),
                                                x[test]))
        assert np.mean(values) < bound / 4


@pytest.mark.slow
def test_sanity_and_ten_d1_rows_over_five_seeds():
    # benchmarks/infomax_bench.py, reference form re-run here: sanity 0.119 ± 0.035,
    # ten d1 0.150 ± 0.003; PCA 0.134 / 0.160.  Measured with the defaults (the PCA start):
    # sanity 0.029 ± 0.004; ten d1 0.038 / 0.040 / 0.044 / 0.040 / 0.040 (the previous MLP
    # defaults folded seed 3's code: 0.308)
    sanity = [linear_regression_mse(InfoMax(n_components=1, seed=s).fit_transform(f), x)
              for s in range(5) for x, f in [sanity_problem(s)]]
    assert np.mean(sanity) <= 0.05 and np.std(sanity) <= 0.035 / 2
    from infomax_bench import ten_functions

    ten = [linear_regression_mse(InfoMax(n_components=1, seed=s).fit_transform(f), x)
           for s in range(5) for x, f in [ten_functions(s)]]
    assert np.mean(ten) <= 0.145 and max(ten) <= 0.05


@pytest.mark.slow
def test_ten_d3_row_is_met_over_five_seeds():
    # issue 14's ten d3 row, a row the previous MLP defaults missed (0.0414 ± 0.0073): the
    # reference form re-run here 0.0385 ± 0.0160, PCA 0.0450; the defaults (the PCA start,
    # 200 epochs) 0.0290 / 0.0314 / 0.0348 / 0.0328 / 0.0266 = 0.0309 ± 0.0029
    from infomax_bench import ten_functions

    values = [linear_regression_mse(InfoMax(n_components=3, seed=s).fit_transform(f), x)
              for s in range(5) for x, f in [ten_functions(s)]]
    assert np.mean(values) <= 0.0385 and np.std(values) <= 0.0160 / 2


@pytest.mark.slow
def test_linsker_options_meet_the_19_function_low_noise_row_over_five_seeds():
    # docs/infomax.md, "Linsker's setting": semi 19/0.05 0.0024 ± 0.0006 (per seed 0.0022 /
    # 0.0034 / 0.0028 / 0.0018 / 0.0017) against PCA-3's 0.0039 ± 0.0006 (every seed below its
    # PCA); the defaults tie with PCA there (0.0039 ± 0.0019)
    ours, pca = [], []
    for seed in range(5):
        x, f, (u, lab, test) = semi_supervised(seed, False, 0.05)
        for out, encode in ((ours, InfoMax(n_components=3, seed=seed, **LINSKER_OPTIONS)
                             .fit(f[u]).transform), (pca, pca_form(f[u], 3, seed))):
            out.append(linear_regression_mse(encode(f[lab]), x[lab], encode(f[test]), x[test]))
    assert np.mean(ours) <= 0.8 * np.mean(pca)
    assert sum(o < p for o, p in zip(ours, pca)) >= 4


@pytest.mark.slow
def test_digits_probe_beats_pca16_on_the_mean_of_three_splits():
    # benchmarks/infomax_bench.py --tables digits: PCA-16 0.900 / 0.896 / 0.918, InfoMax-16
    # (defaults: the PCA start, 200 epochs) 0.920 / 0.935 / 0.928 (the previous MLP defaults
    # 0.912 / 0.918 / 0.912, the 100-epoch PCA start 0.9085 / 0.907 / 0.900)
    pytest.importorskip("sklearn")
    from infomax_bench import table_digits

    results = table_digits(3, False, {})
    assert np.mean(results["InfoMax-16"]) >= np.mean(results["PCA-16"]) + 0.01
    assert all(o > p for o, p in zip(results["InfoMax-16"], results["PCA-16"]))


@pytest.mark.slow
def test_demo_quick(tmp_path):
    result = InfoMax.demo(tmp_path, quick=True)
    assert result["lr_mse"] <= 0.05 and Path(result["figure"]).exists()


def test_sd_components_separate_the_data_draw_from_the_initialisation():
    # the bench's --tables sd: rows = data draws, columns = initialisations
    only_data = sd_components([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    assert only_data["within"] == 0 and only_data["data"] == pytest.approx(1.0)
    only_init = sd_components([[1.0, 2.0, 3.0]] * 3)
    assert only_init["within"] == pytest.approx(1.0) and only_init["data"] == 0
    assert only_init["between"] == 0 and only_init["mean"] == pytest.approx(2.0)
    # both: the data component is the between-draw sd less the initialisation's share
    both = sd_components([[0.0, 2.0], [10.0, 12.0]])
    assert both["within"] == pytest.approx(math.sqrt(2))
    assert both["data"] == pytest.approx(math.sqrt(50 - 2 / 2))


def test_the_chaos_tables_perturbation_is_at_float32_rounding_and_pca_does_not_see_it():
    # the bench's --tables chaos: the fitting inputs plus N(0, (1e-7 std)^2), a fixed draw per
    # seed; PCA (a property of the data) keeps its score, while the inputs do change
    x, features = ten_functions(0)
    seen = {}

    def spy(f, dim, seed):
        seen["f"] = f
        return pca_form(f, dim, seed)

    encode = perturbed(spy)(features, 3, 0)
    change = np.abs(seen["f"] - features)
    assert 0 < change.max() < 1e-6 * features.std()
    assert seen["f"].dtype == features.dtype
    assert linear_regression_mse(encode(features), x) == pytest.approx(
        linear_regression_mse(pca_form(features, 3, 0)(features), x), rel=1e-5)
    assert np.array_equal(perturbed(spy)(features, 3, 0)(features), encode(features))


def test_pca_helper_matches_the_issue_anchor():
    # the issue's PCA-1 anchor on the sanity problem (its table: 0.135 for dim 1)
    x, features = sanity_problem(0)
    assert abs(linear_regression_mse(pca_form(features, 1, 0)(features), x) - 0.135) < 0.005


def test_a_negative_jsd_bound_blames_the_learning_rate_not_the_bound():
    # user13: with the default bound (jsd) and learning_rate=10 the warning advised
    # 'Use bound = "jsd" (the default) or "dv"'
    x = np.random.default_rng(0).normal(size=(400, 6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = InfoMax(n_components=2, learning_rate=10.0, epochs=10, seed=0).fit(x)
    said = [str(w.message) for w in caught if "below zero" in str(w.message)]
    assert model.bound_nats_ < 0 and said
    assert "`learning_rate` (now 10)" in said[0] and "Use bound" not in said[0]
