"""The IMNN's figures and posterior methods check their arguments: two posteriors of one
method in a list were one legend entry (the first dropped silently), labels / truth of
another length and a non-posterior raised IndexError / AttributeError or were ignored, a
string seed or expected det F reached torch / matplotlib (baduser19 F15)."""

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import IMNN
from infoblocks.recipes.imnn_problem import gaussian_simulations


@pytest.fixture(scope="module")
def fitted():
    fid, der = gaussian_simulations(200, seed=0)
    return IMNN(n_summaries=2, theta_fid=(0.0, 1.0), epochs=2, min_epochs=2).fit(fid, der)


@pytest.fixture(scope="module")
def targets():
    return gaussian_simulations(2, seed=5)[0]


def test_two_posteriors_of_one_method_are_both_drawn(fitted, targets):
    first, second = (fitted.gaussian_posterior(t, n_samples=500) for t in targets)
    fig = fitted.posterior_plot([first, second])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["gaussian", "gaussian 2"]


@pytest.mark.parametrize("options, match", [
    ({"labels": ["a"]}, "`labels` has 1 entries for 2 parameters"),
    ({"truth": (0.0, 1.0, 2.0)}, "`truth` has 3 entries for 2 parameters"),
])
def test_labels_and_truth_need_one_entry_per_parameter(fitted, targets, options, match):
    post = fitted.gaussian_posterior(targets[0], n_samples=500)
    with pytest.raises(ValidationError, match=match):
        fitted.posterior_plot([post], **options)


def test_posterior_plot_names_what_is_not_a_posterior(fitted):
    with pytest.raises(ValidationError, match="takes PosteriorSamples .* got ndarray for 0"):
        fitted.posterior_plot([np.zeros((3, 2))])


def test_seed_and_expected_det_f_are_checked(fitted, targets):
    with pytest.raises(ValidationError, match="`seed` must be a non-negative integer or None"):
        fitted.gaussian_posterior(targets[0], seed="1")
    assert fitted.gaussian_posterior(targets[0], n_samples=10, seed=np.int64(3)).samples.shape \
        == (10, 2)
    with pytest.raises(ValidationError, match="`expected_detF` must be a finite number"):
        fitted.plot(expected_detF="50")  # drawn as a categorical axis before
