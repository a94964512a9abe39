"""Embedding quality measures against definitions and (when installed) scikit-learn."""

import numpy as np
import pytest

from infoblocks.blocks.embedding_quality import (knn_accuracy, knn_preservation, stratified_folds,
                                                 trustworthiness)
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


def _trustworthiness_by_hand(x, y, k):
    """The definition, loop by loop: ranks in X by (distance, index), k-NN in Y."""
    n = len(x)
    penalty = 0
    for i in range(n):
        dx = [(float(((x[i] - x[j]) ** 2).sum()), j) for j in range(n) if j != i]
        rank = {j: r + 1 for r, (_, j) in enumerate(sorted(dx))}
        dy = sorted((float(((y[i] - y[j]) ** 2).sum()), j) for j in range(n) if j != i)
        penalty += sum(max(0, rank[j] - k) for _, j in dy[:k])
    return 1 - 2 * penalty / (n * k * (2 * n - 3 * k - 1))


def test_trustworthiness_is_the_definition_with_ties_ranked_by_index():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 3, size=(40, 3)).astype(float)  # integer features: many equal distances
    y = rng.normal(size=(40, 2))
    expected = _trustworthiness_by_hand(x, y, k=5)
    assert trustworthiness(x, y, k=5) == pytest.approx(expected, abs=1e-12)
    assert trustworthiness(x.astype(np.float32), y, k=5) == pytest.approx(expected, abs=1e-12)


def test_trustworthiness_matches_sklearn():
    manifold = pytest.importorskip("sklearn.manifold")
    x, _ = _data(seed=1)
    y = x[:, :2] + 0.3 * np.random.default_rng(2).normal(size=(300, 2))
    expected = manifold.trustworthiness(x, y, n_neighbors=15)
    assert expected < 0.95  # a map with false neighbours, so the penalty is exercised
    assert trustworthiness(x, y, k=15) == pytest.approx(expected, abs=1e-12)  # no ties: same


def test_knn_accuracy_is_stratified_cross_validation_by_hand():
    # 2 classes (a: 0-5 / b: 6-9); 2 stratified folds deal each class's items in data order:
    # a: 3 + 3, b: 2 + 2 -> fold 0 = {0,1,2,6,7}, fold 1 = {3,4,5,8,9}
    labels = np.array(["a"] * 6 + ["b"] * 4)
    assert stratified_folds(labels, 2).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    y = np.array([[0.0], [1], [2], [3], [4], [10], [5], [10.4], [12], [13]])
    # k = 1, fold 0 tested against fold 1's items {3:a, 4:a, 10:a, 12:b, 13:b}: 0, 1, 2 -> a
    # (right), 5 -> 4 a (wrong), 10.4 -> 10 a (wrong): 3/5; fold 1 against {0, 1, 2: a;
    # 5, 10.4: b}: 3 -> 2 a, 4 -> 5 b (wrong), 10 -> 10.4 b (wrong), 12, 13 -> 10.4 b: 3/5
    assert knn_accuracy(y, labels, k=1, folds=2) == pytest.approx(0.6)


def test_knn_accuracy_matches_sklearn():
    neighbors = pytest.importorskip("sklearn.neighbors")
    model_selection = pytest.importorskip("sklearn.model_selection")
    x, labels = _data(n=203, d=2, seed=3)
    labels = (x[:, 0] > 0).astype(int) + 2 * (np.random.default_rng(4).random(203) < 0.1)
    folds = np.empty(203, dtype=int)
    for f, (_, test) in enumerate(model_selection.StratifiedKFold(5).split(x, labels)):
        folds[test] = f
    assert stratified_folds(labels, 5).tolist() == folds.tolist()
    scores = model_selection.cross_val_score(neighbors.KNeighborsClassifier(10), x, labels, cv=5)
    assert scores.std() > 0  # folds of different accuracy: the mean of folds is what is compared
    assert knn_accuracy(x, labels, k=10) == pytest.approx(scores.mean(), abs=1e-12)


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
