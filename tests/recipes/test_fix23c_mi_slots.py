"""fix23c: author24's findings in the MI recipes and InfoMax (a torch-mist user's slots)."""
import warnings

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ConfigError
from infoblocks.plugins.registry import recipe_from_dict


def gauss(rho, n, seed=0, d=2):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d))
    y = rho * x + np.sqrt(1 - rho ** 2) * r.normal(size=(n, d))
    return x.astype(np.float32), y.astype(np.float32)


def _fit(cfg, *data):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = recipe_from_dict(cfg).fit(*data)
    return m, [str(q.message) for q in w]


# ---------------------------------------------------------------- author24-1


def test_a_row_bound_beside_explicit_negatives_is_refused_naming_both():
    # author24-1: infonce_loss (rows = True) under marginal_pairs scored the in-batch pairs
    # and dropped the sampler's x_marginal / y_marginal unread: marginal_factor (a plugin
    # sampler's k = 1 or 8) gave the same bits, no message
    x, y = gauss(0.5, 400)
    cfg = {"recipe": "mine", "hidden_dims": [8], "batch_size": 50, "epochs": 2, "seed": 0,
           "phases": [{"name": "train", "loss": "infonce_loss"}]}
    with pytest.raises(ConfigError) as info:
        recipe_from_dict(cfg).fit(x, y)
    msg = str(info.value)
    assert msg.startswith("mine.phases.train: the bound 'infonce_loss' has `rows = True`")
    assert "`negatives` = 'marginal_pairs'" in msg and 'negatives = "all_pairs"' in msg
    # the fix it names runs: in-batch negatives for the row bound
    m, _ = _fit({**cfg, "negatives": "all_pairs"}, x, y)
    assert np.isfinite(float(m.estimate()))


def test_infonce_with_marginal_pairs_and_infomax_with_explicit_negatives_are_refused():
    x, y = gauss(0.5, 300)
    with pytest.raises(ConfigError, match=r"^infonce\.phases\.train: the bound 'infonce_loss'"):
        recipe_from_dict({"recipe": "infonce", "hidden_dims": [8], "epochs": 1,
                          "negatives": "marginal_pairs"}).fit(x, y)
    with pytest.raises(ConfigError, match=r"^infomax\.phases\.train: the bound 'infonce_loss' "
                                          r".*`negatives` = 'marginal_pairs' yields"):
        recipe_from_dict({"recipe": "infomax", "n_components": 1, "epochs": 1,
                          "bound": "infonce", "negatives": "marginal_pairs"}).fit(x)


# ---------------------------------------------------------------- author24-2


def test_validation_and_evaluation_follow_a_bound_put_in_the_training_phase():
    # author24-2: NWJ trained with smile_loss (a plugin's alpha_tuba alike) was validated and
    # estimated with nwj_loss, no message; the slot tables say "else the training bound"
    x, y = gauss(0.5, 300)
    cfg = {"recipe": "nwj", "hidden_dims": [8], "epochs": 1, "seed": 0,
           "phases": [{"name": "train", "loss": "smile_loss"}]}
    m, _ = _fit(cfg, x, y)
    full = m.to_dict(full=True)  # (with every field of the block: the full form's defaults)
    smile = {"name": "smile_loss", "critic": "main", "clip": 5.0}
    assert full["phases"][0]["validation"]["loss"] == smile
    assert full["evaluation"]["bound"] == smile
    assert type(m.routine_.phases[0].validation.loss).__name__ == "SMILELoss"
    assert type(m.bound_).__name__ == "SMILELoss"
    # the full form reads back to the same routine (nothing counts as an edit)
    again = recipe_from_dict(full).routine_spec()
    assert again["phases"][0]["validation"]["loss"] == {"name": "smile_loss"}
    assert again["evaluation"]["bound"] == {"name": "smile_loss"}


def test_a_followed_mine_loss_validates_without_its_moving_average_and_own_slots_win():
    from infoblocks.recipes.mi import MINE, SMILE

    spec = SMILE(phases=[{"name": "train", "loss": {"name": "mine_loss", "ma_rate": 0.1}}]
                 ).routine_spec()
    # the held-out bound of one fixed set: ma_rate 1 there, as the defaults have it
    assert spec["phases"][0]["validation"]["loss"] == {"name": "mine_loss", "ma_rate": 1.0}
    assert spec["evaluation"]["bound"] == {"name": "mine_loss", "ma_rate": 0.1}
    # a validation loss / evaluation bound of one's own stays
    spec = SMILE(phases=[{"name": "train", "loss": "nwj_loss", "validation": {"loss": "dv"}}],
                 evaluation={"bound": "dv"}).routine_spec()
    assert spec["phases"][0]["validation"]["loss"] == "dv" and spec["evaluation"]["bound"] == "dv"
    # MINE's validation and estimate are DV whatever trains (documented)
    spec = MINE(phases=[{"name": "train", "loss": "nwj_loss"}]).routine_spec()
    assert spec["phases"][0]["validation"]["loss"] == {"name": "dv"}
    assert spec["evaluation"]["bound"] == {"name": "dv"}


# ---------------------------------------------------------------- author24-3


def test_minee_refuses_a_row_bound_in_evaluation_before_training():
    # author24-3: the whole fit trained, then scores.py raised a bare ValidationError advising
    # negatives = "all_pairs", which MI-NEE cannot take (its batches hold reference draws)
    from infoblocks.recipes.mi import MINEE

    x, y = gauss(0.5, 300)
    est = MINEE(epochs=1, seed=0, hidden_dims=(8,), evaluation={"bound": "infonce_loss"})
    with pytest.raises(ConfigError) as info:
        est.fit(x, y)
    msg = str(info.value)
    assert msg.startswith("minee.evaluation.bound: the bound 'infonce_loss' has `rows = True`")
    assert '"dv"' in msg and "all_pairs" not in msg
    assert est.routine_ is None and est.history_ is None  # refused before any training


# ---------------------------------------------------------------- author24-7


def test_embed_dim_reaches_a_critic_with_the_field_or_warns_naming_the_critic():
    # author24-7: NWJ's default critic is joint (no embed_dim): embed_dim = 8 changed nothing,
    # no ShortcutWarning (activation / init_std there did warn), and a critic of one's own in
    # [models.main] with an embed_dim field kept its own size
    from infoblocks.blocks.assembly import ShortcutWarning
    from infoblocks.recipes.mi import NWJ

    x, y = gauss(0.5, 200)
    _, w = _fit({"recipe": "nwj", "hidden_dims": [8], "epochs": 1, "seed": 0,
                 "embed_dim": 8}, x, y)
    assert any(s.startswith("nwj: `embed_dim` = 8 reaches no block: `models.main` is "
                            "'joint_critic'") and 'critic = "separable"' in s for s in w), w
    m, w = _fit({"recipe": "nwj", "hidden_dims": [8], "epochs": 1, "seed": 0, "embed_dim": 8,
                 "models": {"main": {"name": "separable_critic"}}}, x, y)
    codes, _ = m.routine_.models["main"].embed(torch.as_tensor(x[:3]), torch.as_tensor(y[:3]))
    assert codes.shape == (3, 8)
    assert m.to_dict(full=True)["models"]["main"]["embed_dim"] == 8
    assert not any("embed_dim" in s for s in w), w
    with pytest.raises(ConfigError, match=r"`embed_dim` = 8 and `models.main.embed_dim` = 16 "
                                          r"both set this value"):
        NWJ(embed_dim=8, models={"main": {"name": "separable_critic", "embed_dim": 16}}
            ).routine_spec()
    with warnings.catch_warnings():  # the default embed_dim: nothing to say
        warnings.simplefilter("error", ShortcutWarning)
        NWJ().routine_spec()


# ---------------------------------------------------------------- author24-4


def _clip_case(high):
    """10 items, joint scores 3, negatives −3 but for ``high`` pairs at 4 (above τ = 2)."""
    import types

    from infoblocks.blocks.mutual_information.bounds import SMILELoss
    from infoblocks.blocks.mutual_information.scores import PairScores

    n = 10
    marginal = torch.full((n - 1, n), -3.0, dtype=torch.float64)
    marginal[0, :high] = 4.0
    scores = PairScores(torch.full((n,), 3.0, dtype=torch.float64), marginal,
                        torch.arange(1, n))
    bound = SMILELoss(clip=2.0)
    return types.SimpleNamespace(bound_=bound, scores_=scores,
                                 estimate_nats_=float(scores.bound(bound)))


def test_smile_warns_when_its_clip_lifts_the_estimate_above_dv_on_the_same_pairs():
    # author24-4: SMILE 4.311 [4.17, 4.455] on a truth of 4.152, DV on the same critic 3.928:
    # 0.24 % of the negatives above τ = 5 and their e^t clipped out of the partition, silently
    from infoblocks.recipes.mi_evaluation import MIConvergenceWarning, check_clip

    case = _clip_case(high=2)  # 2 of 90 negatives at 4 > τ: DV 2.767, SMILE 4.216
    assert float(case.scores_.bound("dv")) == pytest.approx(2.7673, abs=1e-4)
    with pytest.warns(MIConvergenceWarning) as record:
        check_clip(case)
    (msg,) = [str(w.message) for w in record]
    assert "the clip τ = 2 is active: 2.22% of the evaluation's negative pairs" in msg
    assert "4.216 nats lies 1.45 above the unclipped DV bound" in msg and "(2.767)" in msg
    assert "Raise `clip`" in msg and 'evaluation.bound = "dv"' in msg
    with warnings.catch_warnings():  # no negative above τ: the clip only raises the partition
        warnings.simplefilter("error", MIConvergenceWarning)
        check_clip(_clip_case(high=0))
