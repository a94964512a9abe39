"""Every built-in recipe's full form lists every knob (``Recipe.full_defaults``): the MI
estimators, DII, IMNN and InfoMax too, not only the embeddings (fix26a).  Before, their
``to_dict(full=True)`` / ``infoblocks config NAME --full`` left out e.g. MINE's critic
``dropout``, its samplers' ``fixed`` / ``fixed_seed``, InfoMax's ``linear_lr``, DII's
``max_elements`` and IMNN's ``lambda_reg`` / ``epsilon`` of the evaluation.  The form still runs
as it is (round trip byte-identical through a fit, the same result), one written before reads
back unedited, and what a recipe fills from the data stays out (DII's distances' ``unit``:
written, a form would pin 1.0 and another data set's fit would change).  IMNN's full form after a
fit also wrote the mode's settings at the end of the file instead of in their place, so its
round trip was not byte-identical."""

from __future__ import annotations

import tomllib
import warnings

import numpy as np
import pytest

from infoblocks.recipes.dii import DII
from infoblocks.recipes.imnn import IMNN
from infoblocks.recipes.imnn_problem import gaussian_simulations
from infoblocks.recipes.infomax import InfoMax
from infoblocks.recipes.mi import MINE, MINEE, NWJ, SMILE, InfoNCE

from .test_fix26a_full_form_every_field import omitted

RNG = np.random.default_rng(0)
X = RNG.normal(size=(400, 3)).astype(np.float32)
Y = (X[:, :2] + 0.3 * RNG.normal(size=(400, 2))).astype(np.float32)
FID, DER = gaussian_simulations(200, seed=0)
MI_SHORT = dict(epochs=2, seed=0)
#: the MI recipes' validation sampler takes every test row: its batch_size None is written
#: "none" now (a None inside a block table was dropped, so the form could not show it)
MI_FILLED: list[tuple[str, str]] = []


def result(fitted):
    """What each recipe's fit determines, to compare two fits."""
    if isinstance(fitted, DII):
        return fitted.weights_
    if isinstance(fitted, IMNN):
        return fitted.summaries(FID)
    if isinstance(fitted, InfoMax):
        return fitted.transform(X)
    return np.array([fitted.estimate_nats_])


CASES = [pytest.param(cls, MI_SHORT, (X, Y), MI_FILLED if cls is not InfoNCE else [],
                      id=cls.name)  # (InfoNCE validates on in-batch negatives of its own size)
         for cls in (MINE, MINEE, InfoNCE, NWJ, SMILE)] + [
    pytest.param(DII, dict(epochs=2, seed=0), (X, Y), [], id="dii"),
    pytest.param(IMNN, dict(n_summaries=2, theta_fid=(0.0, 1.0), epochs=3, min_epochs=1,
                            seed=0), (FID, DER), [], id="imnn"),
    pytest.param(InfoMax, dict(n_components=2, epochs=2, seed=0), (X,), [], id="infomax")]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (2-epoch fits: convergence warnings)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("cls, short, data, filled", CASES)
def test_the_full_form_lists_every_field(cls, short, data, filled):
    def left_out(recipe):  # (but what the recipe fills from the data: DII's `unit`)
        return [o for o in omitted(recipe) if o[1] not in cls.full_defaults_skip]

    assert left_out(cls(**short)) == filled
    assert left_out(quiet(cls(**short).fit, *data)) == filled


@pytest.mark.parametrize("cls, short, data, filled", CASES)
def test_the_full_form_runs_as_it_is_and_round_trips(cls, short, data, filled, tmp_path):
    fitted = quiet(cls(**short).fit, *data)
    text = fitted.to_toml(full=True)
    again = quiet(cls.from_dict(tomllib.loads(text)).fit, *data)
    assert again.to_toml(full=True) == text  # config --full -> run -> config --full
    np.testing.assert_array_equal(result(again), result(fitted))


@pytest.mark.parametrize("cls, short, data, filled", CASES)
def test_a_full_form_written_without_the_defaults_reads_back_unedited(
        cls, short, data, filled, monkeypatch):
    recipe = cls(**short)
    with monkeypatch.context() as before:
        before.setattr(cls, "full_defaults", False)
        old = recipe.to_toml(full=True)
    assert len(recipe.to_toml(full=True)) > len(old)
    read = cls.from_dict(tomllib.loads(old))
    assert all(getattr(read, s) is None for s in ("globals", "models", "phases", "evaluation"))
    assert read.to_toml(full=True) == recipe.to_toml(full=True)


def test_dii_full_form_leaves_the_unit_to_the_data():
    """The unfitted full form names no ``unit``: run on data in other units it fills them from
    that data as the default does (with ``unit = 1.0`` written it would not)."""
    text = DII().to_toml(full=True)
    assert "max_elements" in text and "unit =" not in text
    scaled = (X * 1e4, Y)
    default = quiet(DII(epochs=3, seed=0).fit, *scaled)
    written = quiet(DII.from_dict(tomllib.loads(text)).set_params(epochs=3, seed=0).fit, *scaled)
    np.testing.assert_allclose(written.weights_, default.weights_, rtol=1e-6)
