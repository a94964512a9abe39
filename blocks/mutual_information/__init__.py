"""Blocks of the neural mutual-information estimators (MINE, MI-NEE, InfoNCE, NWJ, SMILE).

* :mod:`.samplers` — negative samplers: ``all_pairs`` (in-batch negatives), ``marginal_pairs``
  (product-of-marginals index pairs (J, K)), ``reference`` (i.i.d. draws from P_X' × P_Y');
* :mod:`.critics` — ``joint_critic`` t(x, y) = MLP([x, y]), ``separable_critic``
  t(x, y) = h(x)ᵀg(y) and ``linear_critic`` t(x, y) = xᵀWy + aᵀx + bᵀy + c;
* :mod:`.bounds` — the bound functions (DV, NWJ, InfoNCE, SMILE), each defined once, and the
  bound blocks (``dv``, ``mine_loss``, ``nwj_loss``, ``infonce_loss``, ``smile_loss``) that
  train with them; :class:`MIBound` documents the protocol a plugin bound implements;
* :mod:`.minee` — ``minee_loss`` (three reference divergences) and its final scores;
* :mod:`.scores` — the reductions bounds are written in, for batches (:class:`BatchScores`) and
  for the deterministic all-pairs final estimate (:func:`pair_scores` -> :class:`PairScores`,
  with a half-sampling interval over item weights, :meth:`PairScores.interval`);
* :mod:`.split` — ``random_split``, the recipes' train / test split as a global.

Every ``exp`` of a critic value is taken inside a logsumexp (or after subtracting a maximum),
so a drifting critic offset (the DV bound is invariant to t → t + c) cannot overflow.
"""

from .bounds import (BOUND_FUNCTIONS, DVLoss, InfoNCELoss, MIBound, MINELoss, NWJLoss,
                     SMILELoss, dv_bound, infonce_bound, js_value, log_average_step, nwj_bound,
                     smile_bound)
from .critics import (JointCritic, JointCriticNet, LinearCritic, LinearCriticNet,
                      SeparableCritic, SeparableCriticNet)
from .minee import MINEELoss, ReferenceScores, reference_scores
from .samplers import (JOINT_PAIRS, REFERENCE_PAIRS, InBatchSampler, MarginalSampler,
                       PairSampler, ReferenceDistribution, ReferenceSampler, draw_positions)
from .scores import (CHUNK_PAIRS, MAX_PAIRS, NETWORK_MAX_PAIRS, BatchScores, PairScores,
                     centred_interval, critic_pairwise, default_max_pairs, log_mean_exp,
                     off_diagonal, pair_scores, quantile_interval, scalar_output, shifts_for)
from .split import RandomSplit, split_sizes

#: names of the built-in bound functions the final estimator knows by name
BOUNDS = tuple(BOUND_FUNCTIONS)

__all__ = [
    "MIBound", "DVLoss", "MINELoss", "NWJLoss", "InfoNCELoss", "SMILELoss", "MINEELoss",
    "dv_bound", "nwj_bound", "smile_bound", "infonce_bound", "js_value", "log_average_step",
    "BOUND_FUNCTIONS", "BOUNDS", "JointCritic", "SeparableCritic", "JointCriticNet",
    "SeparableCriticNet", "LinearCritic", "LinearCriticNet", "InBatchSampler", "PairSampler",
    "MarginalSampler", "ReferenceSampler",
    "ReferenceDistribution", "JOINT_PAIRS", "REFERENCE_PAIRS", "draw_positions",
    "BatchScores", "PairScores", "ReferenceScores", "pair_scores", "reference_scores",
    "shifts_for", "log_mean_exp", "off_diagonal", "critic_pairwise", "scalar_output",
    "quantile_interval", "centred_interval", "CHUNK_PAIRS", "MAX_PAIRS", "NETWORK_MAX_PAIRS", "default_max_pairs", "RandomSplit",
    "split_sizes",
]
