"""author29-11: `infoblocks run` scored label -1 (umap-learn's "unlabelled") as a class."""

import json

import numpy as np
import pytest

from infoblocks.blocks.embedding_quality import knn_accuracy, labelled_knn_accuracy
from infoblocks.recipes.cli import main


def _blobs(n_per: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0, 0.0], [8.0, 0.0, 0.0, 0.0], [0.0, 8.0, 0.0, 0.0]])
    x = np.concatenate([c + rng.normal(size=(n_per, 4)) for c in centres])
    return x, np.repeat(np.arange(3), n_per)


def test_labels_below_zero_are_left_out_of_the_knn_accuracy():
    y, labels = _blobs()
    semi = labels.copy()
    semi[1::2] = -1  # every other row unlabelled, as umap-learn's semi-supervised data
    assert knn_accuracy(y, semi, k=10) < 0.6  # -1 scored as a class: the old figure
    result = labelled_knn_accuracy(y, semi, k=10)
    assert result == {"knn_accuracy_10": pytest.approx(1.0), "knn_scored_rows": 60,
                      "knn_unlabelled_rows": 60}
    # no label below 0: knn_accuracy alone, no counts
    assert labelled_knn_accuracy(y, labels, k=10) == {"knn_accuracy_10": 1.0}
    # string labels are never "unlabelled"
    assert labelled_knn_accuracy(y, labels.astype(str), k=10) == {"knn_accuracy_10": 1.0}
    assert labelled_knn_accuracy(y, np.full(120, -1), k=10) == {
        "knn_scored_rows": 0, "knn_unlabelled_rows": 120}


def test_run_scores_the_labelled_rows_and_says_how_many(tmp_path, capsys):
    x, labels = _blobs()
    labels[1::2] = -1
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    config = tmp_path / "c.toml"
    config.write_text('recipe = "parametric_umap"\nn_neighbors = 5\nlayout_epochs = 20\n'
                      'init_epochs = 1\nepochs = 1\ntransform_epochs = 2\n')
    assert main(["run", str(config), "--data", str(tmp_path / "x.npy"), "--data",
                 str(tmp_path / "y.npy"), "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["knn_accuracy_10"] > 0.95  # (was about 0.5: -1 counted as a class)
    assert summary["knn_scored_rows"] == 60 and summary["knn_unlabelled_rows"] == 60
    assert "knn_scored_rows: 60" in capsys.readouterr().out
