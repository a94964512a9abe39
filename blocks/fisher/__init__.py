"""Fisher-information blocks for IMNNs: simulations, summaries, the Fisher loss.

An information maximising neural network (Charnock, Lavaux & Wandelt 2018) is a summary
network ``s = f(d)`` trained so that the Gaussian Fisher information of its summaries at a
fiducial parameter ``θ_fid`` is as large as possible.  From ``n_s`` fiducial simulations
``d_i`` and the derivatives of ``n_d`` of them with respect to the ``p`` parameters:

    μ = mean_i s_i,   C = cov(s) (unbiased, 1/(n_s − 1)),
    ∂μ/∂θ = mean_i ∂s_i/∂θ = mean_i J_f(d_i) ∂d_i/∂θ          (chain rule: one jvp),
    F = (∂μ/∂θ)ᵀ C⁻¹ (∂μ/∂θ)                                     (p × p).

The family, one module per concern:

* :mod:`.statistics` — :class:`FisherStatistics`, :func:`fisher_statistics`, the objective
  and its regulariser constants, the batch keys;
* :mod:`.summaries` — :func:`network_summaries` (jvp, the MLP fast path, numerical
  derivatives, chunks);
* :mod:`.loss` — :class:`FisherLoss` (loss ``"fisher"``), also the evaluation block;
* :mod:`.sampler` — :class:`SimulationSampler` (sampler ``"simulations"``), which yields
  SIMULATIONS batches ``fiducial`` ``(n_s, *S)`` + ``derivative`` ``(n_d, p, *S)``, or
  ``numerical_derivative`` ``(n_d, 2, p, *S)`` + ``delta_theta`` ``(p,)``;
* :mod:`.networks` — :class:`SummaryMLP` (model ``"summary_mlp"``) and its declared
  whitening step;
* :mod:`.inference` — likelihood-free inference with the summaries: the Gaussian
  approximation, rejection ABC, population Monte Carlo, :class:`PosteriorSamples` and the
  corner plot :func:`posterior_plot`.
"""

from __future__ import annotations

from .inference import (PosteriorSamples, abc_rejection, gaussian_posterior,
                        population_monte_carlo, posterior_plot)
from .loss import FisherLoss, _ChunkedGradient
from .networks import FIDUCIAL_SAMPLE, SummaryMLP, SummaryNetwork, whiten_output_layer
from .sampler import SimulationSampler
from .statistics import (DELTA_THETA, DERIVATIVE, DERIVATIVE_MODES, FIDUCIAL, FISHER_METRICS,
                         NUMERICAL, SINGULAR_RCOND, FisherStatistics, as_theta,
                         fisher_statistics, imnn_objective, optional_theta,
                         regularisation_rate)
from .summaries import (_is_plain_mlp, _jvp_summaries, _mlp_jvp, _piece_outputs, _plan,
                        network_summaries)

__all__ = [
    "FisherLoss", "FisherStatistics", "SimulationSampler", "SummaryMLP", "SummaryNetwork",
    "as_theta", "optional_theta", "fisher_statistics", "imnn_objective", "network_summaries",
    "regularisation_rate", "whiten_output_layer", "SINGULAR_RCOND", "DERIVATIVE_MODES",
    "FIDUCIAL", "DERIVATIVE", "NUMERICAL", "DELTA_THETA", "FIDUCIAL_SAMPLE", "FISHER_METRICS",
    "PosteriorSamples", "gaussian_posterior", "abc_rejection", "population_monte_carlo",
    "posterior_plot",
]
