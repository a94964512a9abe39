"""Likelihood-free inference with a fitted IMNN's summaries (a helper module of
:mod:`infoblocks.recipes.imnn`; no recipe is defined here).

:class:`PosteriorInference` gives the IMNN recipe ``gaussian_posterior``, ``abc``, ``pmc`` and
``posterior_plot`` on top of the blocks in :mod:`infoblocks.blocks.fisher.inference`: the
summaries are compressed to the quasi-maximum-likelihood estimate θ̂ (``estimate``), distances
are Fisher distances of estimates, and the simulator is the one given to ``fit`` unless
another is passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from infoblocks.blocks.data import as_tensor, intra_op_threads
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.fisher import FisherStatistics
from infoblocks.blocks.fisher.inference import (PosteriorSamples, abc_rejection, check_prior,
                                                gaussian_posterior, population_monte_carlo,
                                                posterior_plot)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


class PosteriorInference:
    """Posterior inference methods of a fitted IMNN (mixed into the recipe class)."""

    # ------------------------------------------------------------------ the pieces

    def _statistics(self) -> FisherStatistics:
        return FisherStatistics(mu=torch.as_tensor(self.mu_), C=torch.as_tensor(self.C_),
                                invC=torch.as_tensor(self.invC_),
                                dmu_dtheta=torch.as_tensor(self.dmu_dtheta_),
                                F=torch.as_tensor(self.F_))

    def _compressor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """data (n, *S) -> θ̂ (n, p), float64 on the CPU, without gradients."""
        stats = self._statistics()
        theta_fid = torch.tensor(self.theta_fid, dtype=torch.float64)
        model = self.routine_.models["main"]
        device = self.routine_.device

        def compress(data: torch.Tensor) -> torch.Tensor:
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    s = model(data.to(device=device, dtype=torch.float32)).double().cpu()
            finally:
                model.train(was_training)
            return stats.estimate(s, theta_fid)

        return compress

    def _simulate(self, simulator: Any) -> Callable[[torch.Generator, torch.Tensor], torch.Tensor]:
        """The batched simulator ``(generator, theta (n, p) float64) -> (n, *S)``."""
        simulator = simulator if simulator is not None else (self._source or {}).get("simulator")
        if simulator is None:
            why = ("its sampler draws its own simulations (no simulator was passed to fit)"
                   if self._source is not None and self.draws_own_simulations() else
                   "it was loaded from a file" if self._source is None else
                   "it was fitted on arrays")
            raise ValidationError(
                "ABC and PMC simulate: pass `simulator=fn(generator, theta)`; this IMNN has "
                f"none of its own: {why}.")
        if not callable(simulator):
            raise ValidationError(f"`simulator` must be callable as simulator(generator, theta), "
                                  f"got {type(simulator).__name__}.")
        device = self.routine_.device
        batched = self.batched_simulator
        # the inference draws on a CPU generator; on an accelerator the simulator gets its own
        on_device = None if device.type == "cpu" else torch.Generator(device=device).manual_seed(
            self.seed)

        def simulate(generator: torch.Generator, theta: torch.Tensor) -> torch.Tensor:
            rows = theta.to(device=device, dtype=torch.float32)
            generator = on_device or generator
            try:
                if batched:
                    out = simulator(generator, rows)
                else:
                    out = torch.stack([torch.as_tensor(simulator(generator, t)) for t in rows])
            except ValidationError:
                raise
            except Exception as exc:  # noqa: BLE001 - a user function; named with its call
                how = "theta of shape (n, p)" if batched else "theta of shape (p,)"
                raise ValidationError(
                    f"ABC / PMC: `simulator(generator, theta)` failed when called with {how}: "
                    f"{type(exc).__name__}: {exc}. With batched_simulator=False it is called "
                    "once per simulation.") from exc
            return self._checked_simulations(out, theta)

        return simulate

    def _checked_simulations(self, out: Any, theta: torch.Tensor) -> torch.Tensor:
        """The simulator's output for prior draws ``theta`` (n, p): a finite tensor (n,
        *input_shape_), as the network was fitted on — else a clear error (a wrong shape was
        torch's matrix error, a wrong row count or NaN gave a posterior silently)."""
        shape = (len(theta), *self.input_shape_)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValidationError(
                f"ABC / PMC: `simulator` must return a tensor of shape {shape} for theta of "
                f"shape {tuple(theta.shape)} (one simulation of shape {self.input_shape_}, "
                f"as the IMNN was fitted on, per row of theta), got {got}"
                + ("; wrap it in torch.as_tensor(...)." if not isinstance(out, torch.Tensor)
                   else "."))
        finite = torch.isfinite(out.reshape(len(out), -1)).all(1) if out.is_floating_point() \
            else None
        if finite is not None and not bool(finite.all()):
            first = theta[int((~finite).nonzero()[0])].tolist()
            raise ValidationError(
                f"ABC / PMC: the simulator returned non-finite values (NaN or inf) for "
                f"{int((~finite).sum())} of {len(out)} parameter draws (the first at theta = "
                f"{[round(v, 6) for v in first]}); their distance to the target is undefined. "
                "Make the simulator finite over the prior's support, or narrow the prior.")
        return out

    def _target(self, target: Any) -> torch.Tensor:
        """θ̂ of the observed data ``target`` (one simulation of shape ``input_shape_``)."""
        x = as_tensor(target, "target", ndim=None)
        if tuple(x.shape) != tuple(self.input_shape_):
            raise ValidationError(f"`target` must be one simulation of shape {self.input_shape_}"
                                  f" (the observed data), got {tuple(x.shape)}.")
        return self._compressor()(x.unsqueeze(0))[0]

    def _generator(self, seed: int | None) -> torch.Generator:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
                                 or seed < 0):
            raise ValidationError(f"`seed` must be a non-negative integer or None (the IMNN's "
                                  f"seed), got {seed!r}.")
        return torch.Generator().manual_seed(self.seed if seed is None else int(seed))

    # ------------------------------------------------------------------ the methods

    def gaussian_posterior(self, target: Any, prior: Any = None, n_samples: int = 10_000,
                           seed: int | None = None) -> PosteriorSamples:
        """N(θ̂(target), F⁻¹) (× the prior when given: samples weighted by its density) —
        the posterior the Fisher matrix predicts, without a simulation."""
        self._check_fitted()
        if prior is not None:
            check_prior(prior, self.n_params)
        with intra_op_threads(self.threads):
            return gaussian_posterior(self._target(target), torch.as_tensor(self.F_), prior,
                                      n_samples, self._generator(seed))

    def abc(self, target: Any, prior: Any, simulator: Any = None, *,
            n_simulations: int = 100_000, accept_fraction: float | None = 0.01,
            epsilon: float | None = None, seed: int | None = None) -> PosteriorSamples:
        """Rejection ABC: θ ~ ``prior`` (a torch distribution), d ~ simulator(θ); keeps the
        ``accept_fraction`` of the simulations whose θ̂ is closest to the target's in the
        Fisher metric (or those within ``epsilon`` of it)."""
        self._check_fitted()
        check_prior(prior, self.n_params)
        with intra_op_threads(self.threads):
            return abc_rejection(self._compressor(), self._simulate(simulator), prior,
                                 self._target(target), torch.as_tensor(self.F_),
                                 n_simulations=n_simulations, accept_fraction=accept_fraction,
                                 epsilon=epsilon, generator=self._generator(seed))

    def pmc(self, target: Any, prior: Any, simulator: Any = None, *, n_points: int = 1000,
            n_initial: int = 10_000, quantile: float = 0.5, min_acceptance: float = 0.02,
            max_rounds: int = 20, max_simulations: int = 2_000_000,
            seed: int | None = None) -> PosteriorSamples:
        """ABC population Monte Carlo (Beaumont et al. 2009): ``n_points`` particles, the
        tolerance shrinking to the ``quantile`` of their distances each round, until a round
        accepts fewer than ``min_acceptance`` of its simulations (see
        :func:`infoblocks.blocks.fisher.inference.population_monte_carlo`)."""
        self._check_fitted()
        check_prior(prior, self.n_params)
        with intra_op_threads(self.threads):
            return population_monte_carlo(
                self._compressor(), self._simulate(simulator), prior, self._target(target),
                torch.as_tensor(self.F_), n_points=n_points, n_initial=n_initial,
                quantile=quantile, min_acceptance=min_acceptance, max_rounds=max_rounds,
                max_simulations=max_simulations, generator=self._generator(seed))

    @staticmethod
    def posterior_plot(posteriors: Sequence[PosteriorSamples] | dict[str, PosteriorSamples],
                       truth: Sequence[float] | None = None,
                       labels: Sequence[str] | None = None,
                       path: str | Path | None = None) -> Figure:
        """Corner plot of one or more posteriors (a list, or ``{name: samples}``)."""
        return posterior_plot(posteriors, truth=truth, labels=labels, path=path)


__all__ = ["PosteriorInference", "PosteriorSamples"]
