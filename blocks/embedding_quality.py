"""Quality measures of an embedding Y of data X, computed in torch a block of rows at a time.

* :func:`trustworthiness` — are the embedding's neighbours true neighbours? (Venna & Kaski)
* :func:`knn_accuracy` — k-NN classification accuracy in the embedding, cross-validated on
  stratified folds.

Both follow scikit-learn's definitions (``sklearn.manifold.trustworthiness``;
``cross_val_score(KNeighborsClassifier(k), Y, labels, cv=5)``), so that the figures reported
here, in the benchmarks and by the peers are one measure.
* :func:`knn_preservation` — the fraction of each point's k nearest neighbours kept.

No n × n array is built: each function streams blocks of ``chunk_elements`` distances.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .data import as_tensor, check_same_length
from .errors import ValidationError
from .numerics import CHUNK_ELEMENTS, chunked_topk


def _pair(X: Any, Y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x = as_tensor(X, "X", ndim=2, dtype=torch.float64 if _is_f64(X) else torch.float32)
    y = as_tensor(Y, "Y", ndim=2, dtype=torch.float64 if _is_f64(Y) else torch.float32)
    check_same_length(X=x, Y=y)
    return x, y


def _is_f64(a: Any) -> bool:
    return getattr(a, "dtype", None) in (np.float64, torch.float64)


def _check_k(k: int, n: int, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValidationError(f"`{name}` must be a positive integer, got {k!r}.")
    if k >= n:
        raise ValidationError(f"`{name}` = {k} needs more than {k} points, got {n}; lower {name}.")


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)


def _rows(n: int, width: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(width, 1))


def nearest_neighbors(Y: torch.Tensor, k: int, chunk_elements: int = CHUNK_ELEMENTS,
                      reference: torch.Tensor | None = None,
                      exclude_self: bool = True) -> torch.Tensor:
    """Indices ``(n, k)`` of the k nearest rows of ``reference`` (default ``Y``) to each row of
    ``Y`` in Euclidean distance, nearest first; a point is not its own neighbour (the shared
    :func:`~infoblocks.blocks.numerics.chunked_topk`)."""
    if reference is None and not exclude_self:
        reference = Y
    return chunked_topk(Y, reference, k, chunk_elements=chunk_elements)


def trustworthiness(X: Any, Y: Any, k: int = 15, chunk_elements: int = CHUNK_ELEMENTS) -> float:
    """T(k) = 1 − 2 / (n k (2n − 3k − 1)) Σ_i Σ_{j ∈ N_k^Y(i)} max(0, r_X(i, j) − k).

    r_X(i, j) is the rank of j among i's neighbours in X (1 = nearest), N_k^Y(i) the k nearest
    neighbours of i in the embedding.  1 when no false neighbours appear.  Euclidean in both;
    X's distances in float64.  scikit-learn's ``sklearn.manifold.trustworthiness``: the same
    definition, the ranks of its ``argsort`` — equal distances (integer pixels have many) are
    ranked by item index here (a stable sort), where scikit-learn's unstable sort orders them
    arbitrarily (measured: 1e-4 apart on the raw digits; identical without ties).
    """
    x, y = _pair(X, Y)
    x = x.double()
    n = len(x)
    _check_k(k, n)
    if 2 * n - 3 * k - 1 <= 0:
        raise ValidationError(f"trustworthiness needs k < (2n − 1)/3; got k = {k}, n = {n}.")
    embedded = nearest_neighbors(y, k, chunk_elements)  # (n, k)
    step = _rows(n, n * k, chunk_elements)
    items = torch.arange(n)
    penalty = 0
    for start in range(0, n, step):
        d = _sq_dists(x[start:start + step], x)
        r = torch.arange(d.shape[0])
        d[r, r + start] = float("inf")
        chosen_items = embedded[start:start + step]  # (c, k)
        chosen = d.gather(1, chosen_items)[:, :, None]
        closer = d[:, None, :] < chosen  # (c, k, n)
        tied_before = (d[:, None, :] == chosen) & (items[None, None, :] < chosen_items[:, :, None])
        rank = (closer | tied_before).sum(-1) + 1  # 1 = nearest
        penalty += int((rank - k).clamp_min(0).sum())
    return 1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))


def stratified_folds(labels: Any, folds: int = 5, shuffle: bool = False,
                     seed: int = 0) -> np.ndarray:
    """Test fold ``(n,)`` of every item, as scikit-learn's ``StratifiedKFold(folds)`` assigns
    them (without shuffling: identical): classes numbered in order of first appearance, the
    class-sorted items dealt to the folds in turn for the per-fold class counts, and each
    class's items given their folds in data order (``shuffle``: in a seeded random order)."""
    labels = np.asarray(labels).reshape(-1)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    _, order = np.unique(first, return_inverse=True)
    encoded = order[inverse.reshape(-1)]
    n_classes = len(first)
    by_class = np.sort(encoded)
    allocation = np.stack([np.bincount(by_class[f::folds], minlength=n_classes)
                           for f in range(folds)])  # (folds, classes)
    rng = np.random.default_rng(seed)
    test_fold = np.empty(len(labels), dtype=np.int64)
    for c in range(n_classes):  # a loop over classes, not items
        assigned = np.repeat(np.arange(folds), allocation[:, c])
        if shuffle:
            rng.shuffle(assigned)
        test_fold[encoded == c] = assigned
    return test_fold


def knn_accuracy(Y: Any, labels: Any, k: int = 10, folds: int = 5, shuffle: bool = False,
                 seed: int = 0, chunk_elements: int = CHUNK_ELEMENTS) -> float:
    """Cross-validated accuracy of a majority-vote k-NN classifier in the embedding: the mean
    over ``folds`` stratified folds (:func:`stratified_folds`) of each fold's accuracy —
    scikit-learn's ``cross_val_score(KNeighborsClassifier(k), Y, labels, cv=folds).mean()``
    (``shuffle=True``: the folds of a seeded shuffle instead).  Vote ties go to the smallest
    label, as there."""
    y = as_tensor(Y, "Y", ndim=2, dtype=torch.float64 if _is_f64(Y) else torch.float32)
    labels_np = np.asarray(labels).reshape(-1)
    check_same_length(Y=y, labels=labels_np)
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(y):
        raise ValidationError(f"`folds` must be an integer in [2, n_samples], got {folds!r}.")
    _, codes = np.unique(labels_np, return_inverse=True)
    codes = torch.from_numpy(codes.reshape(-1).astype(np.int64))
    n_classes = int(codes.max()) + 1
    test_fold = torch.from_numpy(stratified_folds(labels_np, folds, shuffle, seed))
    accuracies = []
    for f in range(folds):
        test = (test_fold == f).nonzero().squeeze(1)
        train = (test_fold != f).nonzero().squeeze(1)
        if test.numel() == 0:
            raise ValidationError(f"`folds` = {folds}: fold {f} is empty (fewer items than "
                                  "folds in every class); lower folds.")
        _check_k(k, len(train))
        neighbours = nearest_neighbors(y[test], k, chunk_elements, reference=y[train])
        votes = torch.zeros(len(test), n_classes)
        votes.scatter_add_(1, codes[train][neighbours], torch.ones(neighbours.shape))
        accuracies.append(float((votes.argmax(1) == codes[test]).double().mean()))
    return float(np.mean(accuracies))


def labelled_knn_accuracy(Y: Any, labels: Any, k: int = 10) -> dict[str, Any]:
    """``{"knn_accuracy_<k>": ...}`` of ``Y`` by ``labels``, as ``infoblocks run`` reports it.
    Numeric labels below 0 mean "unlabelled" (umap-learn's -1 for semi-supervised data): those
    rows are left out, and ``knn_scored_rows`` / ``knn_unlabelled_rows`` say how many rows
    were scored and left out (author29-11: the -1 rows scored as an eleventh class read 0.496
    where the labelled rows read 0.974).  Without labels below 0: :func:`knn_accuracy` alone."""
    labels_np = np.asarray(labels).reshape(-1)
    key = f"knn_accuracy_{k}"
    if not (np.issubdtype(labels_np.dtype, np.number) and not np.iscomplexobj(labels_np)):
        return {key: knn_accuracy(Y, labels_np, k=k)}
    labelled = ~(labels_np < 0)
    if bool(labelled.all()):
        return {key: knn_accuracy(Y, labels_np, k=k)}
    scored = int(labelled.sum())
    counts = {"knn_scored_rows": scored, "knn_unlabelled_rows": int(len(labels_np) - scored)}
    if scored == 0:
        return counts
    rows = torch.from_numpy(np.flatnonzero(labelled))
    y = as_tensor(Y, "Y", ndim=2, dtype=torch.float64 if _is_f64(Y) else torch.float32)
    check_same_length(Y=y, labels=labels_np)
    return {key: knn_accuracy(y[rows], labels_np[labelled], k=k), **counts}


def knn_preservation(X: Any, Y: Any, k: int = 15, chunk_elements: int = CHUNK_ELEMENTS) -> float:
    """Mean over points of |N_k^X(i) ∩ N_k^Y(i)| / k (Euclidean neighbours, self excluded)."""
    x, y = _pair(X, Y)
    _check_k(k, len(x))
    in_x = nearest_neighbors(x, k, chunk_elements)
    in_y = nearest_neighbors(y, k, chunk_elements)
    shared = (in_x[:, :, None] == in_y[:, None, :]).any(-1).sum()
    return float(shared) / (len(x) * k)


__all__ = ["trustworthiness", "knn_accuracy", "labelled_knn_accuracy", "knn_preservation",
           "nearest_neighbors", "stratified_folds"]
