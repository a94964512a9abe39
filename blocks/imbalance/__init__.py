"""Blocks of the (Differentiable) Information Imbalance.

Space A is described by features ``x`` (n, D_A) under learnable weights ``w``; space B by
features ``y`` (n, D_B) or by a user distance matrix.  With d_ij the distance in A and r_ij
the rank of j among the neighbours of i in B (1 = nearest, i itself excluded):

    c_ij = exp(−d_ij / λ_i) / Σ_{l≠i} exp(−d_il / λ_i)           (GaussianSoftmax)
    DII  = 2 / (n_rows · n_cols) · Σ_i Σ_{j≠i} c_ij r_ij          (DIILoss)
    Δ(A→B) = 2 / n · mean_i r_{i, nn_A(i)}                        (information_imbalance)

The built-in distance of A is the weighted *squared* Euclidean, periodic-aware:
d_ij = Σ_f w_f² Δ_f(x_if, x_jf)², Δ = x − y − P·round((x − y)/P) on a feature of period P.
λ_i is ``lambda_factor`` × (distance of i to its k-th neighbour) (point-adaptive), its mean
over the rows (global), or a given value; the gradient flows through λ.

Every block is a registry slot of the ``dii`` recipe, replaceable by name from TOML:

========================  ==========================  ==========================================
module                    blocks                      protocol
========================  ==========================  ==========================================
:mod:`.distances`         ``weighted_sqeuclidean``    :class:`FeatureWeightedDistance`: the
                                                      distance of A takes the weights
                                                      (``weighted_pairwise``; fast paths
                                                      ``prepare`` / ``combine`` /
                                                      ``pairwise_into``)
:mod:`.ranks`             ``ranks``                   a row-wise transform of B's distances
:mod:`.softmax`           ``gaussian_softmax``        ``coefficients(d, exclude, k=, ...)``
:mod:`.weights`           ``feature_weights``         module with ``weights`` and
                                                      ``feature_weights()``
:mod:`.training`          ``rows_columns``, ``dii``   ROWS_COLS batches: ``rows``, ``cols``
:mod:`.evaluation`        (functions)                 the final DII and the classic imbalance
========================  ==========================  ==========================================

Memory: nothing here builds an n × n matrix for the whole data set.  A training step sees a
batch of rows × columns (:class:`RowsColumnsSampler`) and ranks B *within that batch*; the
final DII and the classic imbalance work through row chunks whose size is set by
``max_elements``.
"""

from .distances import (CHUNK_ELEMENTS, SELF_DISTANCE, FeatureWeightedDistance,
                        WeightedSquaredEuclidean, check_feature_weighted, data_unit,
                        feature_major_squared_differences, is_feature_weighted,
                        periods_tensor, squared_differences, squared_distances,
                        weighted_squared_distances)
from .evaluation import chunked_dii, information_imbalance, nearest_neighbour_ranks
from .ranks import Ranks, diagonal_mask, rank_rows
from ..numerics import cosine_schedule
from .softmax import (LAMBDA_FACTOR, GaussianSoftmax, exclusion_logits, expected_ranks,
                      neighbour_index, neighbour_lambdas, softmax_coefficients)
from .training import (EPOCH_TABLE_ELEMENTS, DIILoss, RowsColumnsSampler,
                       check_k_below_points)
from .weights import (WEIGHT_INIT, FeatureWeights, FeatureWeightsHistory, FeatureWeightsModule,
                      check_weights_finite, recorded_weights, weights_unit)

__all__ = [
    "CHUNK_ELEMENTS", "EPOCH_TABLE_ELEMENTS", "LAMBDA_FACTOR", "SELF_DISTANCE", "WEIGHT_INIT",
    "FeatureWeightedDistance", "WeightedSquaredEuclidean", "Ranks", "GaussianSoftmax",
    "DIILoss", "FeatureWeights", "FeatureWeightsModule", "FeatureWeightsHistory",
    "RowsColumnsSampler", "check_feature_weighted", "check_k_below_points",
    "check_weights_finite", "chunked_dii",
    "cosine_schedule", "data_unit", "diagonal_mask", "exclusion_logits", "expected_ranks",
    "feature_major_squared_differences", "information_imbalance", "is_feature_weighted",
    "nearest_neighbour_ranks", "neighbour_index", "neighbour_lambdas", "periods_tensor",
    "rank_rows", "recorded_weights", "softmax_coefficients", "squared_differences",
    "squared_distances", "weighted_squared_distances", "weights_unit",
]
