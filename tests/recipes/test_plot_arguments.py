"""The figures' arguments are checked before matplotlib sees them: class names as labels
colour the embedding by class (matplotlib raised), 2-D or NaN labels, a truth that is not a
number, a zero resolution and too few feature names are named (matplotlib's errors, or one
weight curve drawn for six weights), and a directory as the figure's path is refused (it
wrote DIR.png beside it) (baduser19 F13, F14)."""

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.figures import save_figure
from infoblocks.recipes import DII, MINE, ParametricUMAP

X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def umap():
    return ParametricUMAP(n_neighbors=5, epochs=1, init_epochs=1, layout_epochs=1).fit(X)


def test_class_names_colour_the_embedding(umap, tmp_path):
    names = np.array(["cat", "dog", "eel"])[np.arange(60) % 3]
    assert umap.plot(tmp_path / "e.png", labels=names).exists()
    colours, ticks = umap._label_colours(names, 60)
    assert list(ticks) == ["cat", "dog", "eel"] and list(colours[:4]) == [0, 1, 2, 0]
    assert umap.plot(tmp_path / "c.png", labels=np.arange(60)[:, None] % 3).exists()


@pytest.mark.parametrize("labels, match", [
    (np.zeros((60, 2)), r"one label per point \(60\), got shape \(60, 2\)"),
    (np.full(60, np.nan), "`labels` has 60 NaN / inf entries"),
])
def test_labels_matplotlib_cannot_draw_are_named(umap, tmp_path, labels, match):
    with pytest.raises(ValidationError, match=match):
        umap.plot(tmp_path / "e.png", labels=labels)


def test_a_directory_is_not_a_figure_path(umap, tmp_path):
    with pytest.raises(ValidationError, match="it is a directory; give a file name in it"):
        umap.plot(tmp_path)
    assert not tmp_path.with_suffix(".png").exists()
    from matplotlib.figure import Figure

    assert save_figure(Figure(), tmp_path / "fig") == tmp_path / "fig.png"


def test_mi_plot_arguments_are_checked():
    x = np.random.default_rng(1).normal(size=(80, 1))
    mine = MINE(epochs=1, batch_size=20).fit(x, x + 0.5 * x ** 2)
    with pytest.raises(ValidationError, match="`truth` must be the true mutual information"):
        mine.plot(truth="0.5")
    with pytest.raises(ValidationError, match="`resolution` must be an integer of at least 2"):
        mine.plot_critic(resolution=0)
    with pytest.raises(ValidationError, match="`max_points` must be an integer of at least 1"):
        mine.plot_samples(max_points=-1)


def test_dii_plot_needs_a_name_per_weight():
    dii = DII(epochs=1).fit(X, X[:, :2])
    with pytest.raises(ValidationError, match="`feature_names` has 1 names for 4 learned"):
        dii.plot(feature_names=["a"])
    assert len(dii.plot(feature_names=list("abcd")).axes[1].lines) == 4


def test_run_refuses_nan_labels_before_fitting(tmp_path):
    recipe = ParametricUMAP(n_neighbors=5, epochs=1, init_epochs=1, layout_epochs=1)
    with pytest.raises(ValidationError, match="`labels` has 60 NaN / inf entries"):
        recipe.run([X, np.full(60, np.nan)], tmp_path / "out")
    assert recipe.routine_ is None  # (the error came after the fit and the save before)
