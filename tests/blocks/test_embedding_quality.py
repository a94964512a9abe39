"""Embedding quality measures against definitions and (when installed) scikit-learn."""

import numpy as np
import pytest

from infoblocks.blocks.embedding_quality import knn_accuracy, knn_preservation, trustworthiness
from infoblocks.blocks.errors import ValidationError


def _data(n=300, d=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, 4, size=n)


def test_trustworthiness_bounds_and_chunking():
    x, _ = _data()
    assert trustworthiness(x, x, k=10) == pytest.approx(1.0)  # identity: no false neighbours
    y = x[:, :2]
    full = trustworthiness(x, y, k=10)
    chunked = trustworthiness(x, y, k=10, chunk_elements=5_000)
    assert full == pytest.approx(chunked, abs=1e-12)
    rand = trustworthiness(x, np.random.default_rng(9).normal(size=(300, 2)), k=10)
    assert rand < full < 1.0  # a random embedding scores about 0.5


def test_trustworthiness_matches_sklearn():
    manifold = pytest.importorskip("sklearn.manifold")
    x, _ = _data(seed=1)
    y = x[:, :2] + 0.3 * np.random.default_rng(2).normal(size=(300, 2))
    expected = manifold.trustworthiness(x, y, n_neighbors=15)
    assert trustworthiness(x, y, k=15) == pytest.approx(expected, abs=1e-6)


def test_knn_accuracy_matches_sklearn():
    neighbors = pytest.importorskip("sklearn.neighbors")
    model_selection = pytest.importorskip("sklearn.model_selection")
    x, labels = _data(n=200, d=2, seed=3)
    labels = (x[:, 0] > 0).astype(int) + 2 * (np.random.default_rng(4).random(200) < 0.1)
    scores = model_selection.cross_val_score(neighbors.KNeighborsClassifier(10), x, labels,
                                             cv=model_selection.KFold(5))
    assert knn_accuracy(x, labels, k=10, shuffle=False) == pytest.approx(scores.mean(), abs=0.011)


def test_knn_accuracy_separated_classes_and_preservation():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 50)
    y = rng.normal(size=(150, 2)) * 0.1 + labels[:, None] * 10.0
    assert knn_accuracy(y, labels, k=10) == 1.0  # well-separated classes
    assert knn_preservation(y, y, k=5) == 1.0
    x, _ = _data(n=150)
    rand = knn_preservation(x, rng.normal(size=(150, 2)), k=10)
    assert rand < 0.2  # chance level is k / (n − 1) ≈ 0.07


def test_bad_inputs():
    x, labels = _data(n=20)
    with pytest.raises(ValidationError, match="k"):
        trustworthiness(x, x, k=0)
    with pytest.raises(ValidationError, match="needs more than"):
        trustworthiness(x, x, k=20)
    with pytest.raises(ValidationError, match="Mismatched"):
        trustworthiness(x, x[:10], k=3)
    with pytest.raises(ValidationError, match="folds"):
        knn_accuracy(x, labels, folds=1)
    with pytest.raises(ValidationError, match="non-finite"):
        knn_accuracy(np.full((20, 2), np.nan), labels)
