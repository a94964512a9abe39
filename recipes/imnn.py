"""IMNN: information maximising neural networks (Charnock, Lavaux & Wandelt 2018).

A summary network ``f`` maps a simulation to ``n_summaries`` numbers; it is trained to
maximise the Gaussian Fisher information of its summaries at ``theta_fid``
(``F = (∂μ/∂θ)ᵀ C⁻¹ (∂μ/∂θ)``, loss ``−ln det F + r_Λ Λ₂``; see
:mod:`infoblocks.blocks.fisher`).  One iteration is one optimizer step on the whole set of
training simulations (one epoch of one batch); after each, det F is measured on a fixed
validation set and the best weights are kept (patience, min / max iterations).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import numpy as np
import torch
from matplotlib.figure import Figure

from infoblocks.blocks.data import as_tensor, intra_op_threads, resolve_device
from infoblocks.blocks.errors import NotFittedError, ValidationError
from infoblocks.blocks.fisher import (FisherStatistics, as_theta, fisher_statistics,
                                      network_summaries)
from infoblocks.blocks.phases import TrainingPhase, Validation
from infoblocks.blocks.recipe import Recipe, transient_field
from infoblocks.blocks.routine import Routine
from infoblocks.blocks.validators import non_negative, one_of, positive, positive_int
from infoblocks.plugins.registry import get_registry

#: the reference problem of the imnn tutorial: 10 points d_i ~ N(μ, Σ) at θ_fid = (μ, Σ) = (0, 1)
DEMO_POINTS = 10
DEMO_THETA_FID = (0.0, 1.0)
#: exact Fisher matrix there: diag(n/Σ, n/(2Σ²)) = diag(10, 5), det F = 50
DEMO_EXACT_DET_F = 50.0

#: seed offset of the validation simulations drawn from a simulator (fixed, drawn once)
VALIDATION_SEED_OFFSET = 7919

#: recommended settings with a simulator (docs/imnn.md): fresh training simulations every
#: iteration remove the overfitting of a fixed set, the cosine decay of the learning rate over
#: 3000 iterations removes the step noise they add, smooth SiLU units fit the quadratic optimal
#: statistics of the reference problem better than LeakyReLU (and than softplus, the earlier
#: choice: 0.987 against 0.975 × 50 on independent simulations, seed 1); no early stop (the
#: best validation weights are still restored).
#: ``IMNN(simulator=..., **FRESH_SIMULATIONS_PRESET)``
FRESH_SIMULATIONS_PRESET: dict[str, Any] = {"activation": "silu", "lr_schedule": "cos",
                                            "max_iterations": 3000, "patience": 3000,
                                            "min_iterations": 100}
#: the same with n_s = n_d = 2000 fresh training simulations per iteration (2× the simulations
#: and the time per iteration): less gradient noise, 0.997 × 50 on independent simulations
#: (seed 1); the configuration that clears 0.95 × 50 on all three benchmark seeds
FRESH_SIMULATIONS_2K_PRESET: dict[str, Any] = {**FRESH_SIMULATIONS_PRESET, "n_s": 2000,
                                               "n_d": 2000}

HISTORY_KEYS = ("det_F", "det_C", "det_invC", "Lambda2", "r")


def gaussian_simulator(generator: torch.Generator, theta: torch.Tensor) -> torch.Tensor:
    """Batched simulator of the reference problem: theta (n, 2) = (μ, Σ) -> (n, 10) points
    d = μ + √Σ · z, z ~ N(0, 1); differentiable in θ (forward-mode autograd)."""
    noise = torch.randn(theta.shape[0], DEMO_POINTS, generator=generator, device=theta.device,
                        dtype=theta.dtype)
    return theta[:, :1] + theta[:, 1:2].sqrt() * noise


def gaussian_simulations(n: int, seed: int, theta: tuple[float, float] = DEMO_THETA_FID
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Fixed simulations of the reference problem: fiducial (n, 10) and ∂d/∂θ (n, 2, 10)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, DEMO_POINTS, generator=generator, dtype=torch.float64)
    mu, sigma = theta
    fiducial = mu + math.sqrt(sigma) * z
    derivative = torch.stack([torch.ones_like(z), z / (2 * math.sqrt(sigma))], 1)
    return fiducial.float().numpy(), derivative.float().numpy()


class OracleSummaries(torch.nn.Module):
    """The exact sufficient statistics of the reference problem: (Σ d_i, Σ d_i²)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.sum(-1), (x ** 2).sum(-1)], -1)


def _optional_theta(value: Any) -> tuple[float, ...] | None:
    return None if value is None else as_theta(value)


@attrs.define(kw_only=True)
class IMNN(Recipe):
    """Information maximising neural network.

    Simulations come from ``simulator(generator, theta)`` (``batched``: theta (n, p) ->
    (n, ...); else theta (p,) -> (...)) or from arrays: ``fiducial`` (n_s, ...) with
    ``derivative`` (n_d, p, ...) = ∂d/∂θ of the first n_d fiducial simulations, or with
    ``numerical_derivative`` (n_d, 2, p, ...) = seed-matched simulations at θ_fid ∓ δθ/2 and
    ``delta_theta``.  ``validation_*`` arrays (same layout) give the fixed validation set,
    with a simulator too; without them a simulator draws it once (n_s simulations, seed
    ``seed + 7919``) and arrays are validated on the training arrays.  ``lr_schedule``:
    "none" or "cos" (half cosine from ``learning_rate`` to 0 over ``max_iterations``; with
    fresh simulations it averages out the step noise, see docs/imnn.md).

    Loss (``lambda_reg`` = λ, ``epsilon`` = ε): −ln det F + r_Λ Λ₂ with
    F = (∂μ/∂θ)ᵀ C⁻¹ (∂μ/∂θ), Λ₂ = ‖C − I‖_F + ‖C⁻¹ − I‖_F,
    r_Λ = λΛ₂/(Λ₂ + exp(−αΛ₂)), α = −ln(ε(λ − 1) + ε²/(1 + ε))/ε.  ``network``: any
    ``nn.Module`` (n, ...) -> (n, n_summaries), else an MLP (``hidden_dims``, ``activation``)
    on flattened simulations.  ``chunk_size``: aggregated (chunked) gradients.
    ``whiten_init``: start from summaries with C = I.  ``num_threads``: torch intra-op
    threads while fitting (1: fastest on small, busy CPUs; None: leave torch's setting).
    See docs/imnn.md.
    """

    name: ClassVar[str] = "imnn"
    summary: ClassVar[str] = ("Information maximising neural network: summaries that maximise "
                              "the Fisher information (Charnock et al. 2018)")

    n_summaries: int = attrs.field(validator=positive_int)
    theta_fid: tuple[float, ...] = attrs.field(converter=as_theta)
    simulator: Any = transient_field(default=None)
    fiducial: Any = transient_field(default=None, repr=False)
    derivative: Any = transient_field(default=None, repr=False)
    numerical_derivative: Any = transient_field(default=None, repr=False)
    validation_fiducial: Any = transient_field(default=None, repr=False)
    validation_derivative: Any = transient_field(default=None, repr=False)
    validation_numerical_derivative: Any = transient_field(default=None, repr=False)
    network: Any = transient_field(default=None, repr=False)
    batched_simulator: bool = True
    derivative_mode: str = attrs.field(default="autograd", validator=one_of("autograd",
                                                                             "numerical"))
    delta_theta: tuple[float, ...] | None = attrs.field(default=None, converter=_optional_theta)
    fresh_simulations: bool = True
    n_s: int = attrs.field(default=1000, validator=positive_int)
    n_d: int = attrs.field(default=1000, validator=positive_int)
    hidden_dims: tuple[int, ...] = attrs.field(default=(128, 128, 128), converter=tuple)
    activation: str = "leaky_relu"
    optimizer: str = attrs.field(default="adam", validator=one_of("sgd", "adam", "adamw"))
    learning_rate: float = attrs.field(default=1e-3, validator=positive)
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    lr_schedule: str = attrs.field(default="none", validator=one_of("none", "cos"))
    lambda_reg: float = attrs.field(default=10.0, validator=positive)
    epsilon: float = attrs.field(default=0.1, validator=positive)
    chunk_size: int | None = attrs.field(default=None, validator=optional(positive_int))
    whiten_init: bool = True
    patience: int = attrs.field(default=10, validator=positive_int)
    min_iterations: int = attrs.field(default=100, validator=non_negative)
    max_iterations: int = attrs.field(default=1000, validator=positive_int)
    num_threads: int | None = attrs.field(default=1, validator=optional(positive_int))
    seed: int = attrs.field(default=0, validator=non_negative)
    device: str = "cpu"
    verbose: bool = False

    routine_: Routine | None = attrs.field(init=False, default=None, repr=False)
    F_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    invF_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    C_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    invC_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    mu_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    dmu_dtheta_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    history_: dict[str, list[float]] | None = attrs.field(init=False, default=None, repr=False)
    best_iteration_: int | None = attrs.field(init=False, default=None, repr=False)
    n_iterations_: int | None = attrs.field(init=False, default=None, repr=False)
    fit_seconds_: float | None = attrs.field(init=False, default=None, repr=False)
    input_shape_: tuple[int, ...] | None = attrs.field(init=False, default=None, repr=False)
    _samplers: tuple[Any, Any] | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        p = len(self.theta_fid)
        if self.n_summaries < p:
            raise ValidationError(
                f"`n_summaries` = {self.n_summaries} is smaller than the number of parameters "
                f"({p}, from theta_fid={list(self.theta_fid)}): F would be singular. Use "
                f"n_summaries ≥ {p}.")
        if self.n_d > self.n_s:
            raise ValidationError(f"`n_d` = {self.n_d} exceeds `n_s` = {self.n_s}; derivatives are "
                                  "taken of the first n_d fiducial simulations.")

    # ------------------------------------------------------------------ building

    @property
    def n_params(self) -> int:
        return len(self.theta_fid)

    def _uses_arrays(self) -> bool:
        return self.fiducial is not None

    def _sampler_spec(self, fiducial: Any, derivative: Any, numerical: Any, *, validation: bool
                      ) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": "simulations", "theta_fid": self.theta_fid,
                                "flatten": self.network is None}
        if self._uses_arrays() or (validation and fiducial is not None):
            spec.update(fiducial=fiducial, derivative=derivative, numerical_derivative=numerical,
                        delta_theta=self.delta_theta)
        else:
            spec.update(simulator=self.simulator, batched=self.batched_simulator,
                        derivative_mode=self.derivative_mode, delta_theta=self.delta_theta,
                        n_s=self.n_s, n_d=self.n_d,
                        fresh=self.fresh_simulations and not validation,
                        seed=self.seed + VALIDATION_SEED_OFFSET if validation else None)
        return spec

    def _validate_sources(self) -> None:
        if self.simulator is None and not self._uses_arrays():
            raise ValidationError(
                "IMNN needs simulations: pass `simulator=fn(generator, theta)` or the arrays "
                "`fiducial=` (n_s, ...) with `derivative=` (n_d, p, ...) or "
                "`numerical_derivative=` (n_d, 2, p, ...) and `delta_theta=`.")
        if self.simulator is not None and self._uses_arrays():
            raise ValidationError("Pass either `simulator` or `fiducial`/`derivative` arrays, "
                                  "not both.")
        if self.network is not None and not isinstance(self.network, torch.nn.Module):
            raise ValidationError(f"`network` must be a torch.nn.Module, got "
                                  f"{type(self.network).__name__}.")
        has_val = [self.validation_fiducial is not None,
                   (self.validation_derivative is not None
                    or self.validation_numerical_derivative is not None)]
        if any(has_val) and not all(has_val):
            raise ValidationError("Give `validation_fiducial` together with "
                                  "`validation_derivative` (or `validation_numerical_derivative`).")

    def _make_samplers(self) -> tuple[Any, Any]:
        # the class comes from the registry (a plugin may replace "simulations"); it is called
        # directly so that bad arrays surface as the ValidationError the sampler raises
        sampler_cls = get_registry().get("sampler", "simulations")

        def build(spec: dict[str, Any]) -> Any:
            return sampler_cls(**{k: v for k, v in spec.items() if k != "name"})

        train = build(self._sampler_spec(
            self.fiducial, self.derivative, self.numerical_derivative, validation=False))
        if self._uses_arrays() and self.validation_fiducial is None:
            val = train  # no held-out arrays: monitor det F on the training simulations
        elif self.validation_fiducial is not None:  # fixed validation arrays (any source)
            val = build(self._sampler_spec(
                self.validation_fiducial, self.validation_derivative,
                self.validation_numerical_derivative, validation=True))
            shapes = (train.simulation_shape, val.simulation_shape)
            if shapes[0] is not None and shapes[0] != shapes[1]:
                raise ValidationError(f"Validation simulations have shape {shapes[1]} but "
                                      f"training simulations {shapes[0]}.")
        else:
            val = build(self._sampler_spec(None, None, None, validation=True))
        return train, val

    def _loss(self) -> Any:
        return get_registry().build("loss", {"name": "fisher", "lambda_reg": self.lambda_reg,
                                             "epsilon": self.epsilon,
                                             "chunk_size": self.chunk_size})

    def _phase(self, patience: int, min_iterations: int, max_iterations: int) -> TrainingPhase:
        train, val = self._samplers
        return TrainingPhase(
            name="fit", epochs=max_iterations, sampler=train, loss=self._loss(),
            optimizer=self.optimizer, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, lr_schedule=self.lr_schedule,
            validation=Validation(sampler=val, loss=self._loss(), metric="det_F", mode="max"),
            patience=patience, min_epochs=min_iterations, restore_best=True)

    def build(self) -> Routine:
        """The routine: summary network ``main`` and one phase ``fit`` (default budget)."""
        self._validate_sources()
        self._samplers = self._make_samplers()
        if self.network is not None:
            model: Any = self.network
        else:
            in_dim = int(np.prod(self._input_shape()))
            model = get_registry().build("model", {
                "name": "mlp", "in_dim": in_dim, "out_dim": self.n_summaries,
                "hidden_dims": self.hidden_dims, "activation": self.activation})
        return Routine(models={"main": model},
                       phases=[self._phase(self.patience, self.min_iterations,
                                           self.max_iterations)],
                       device=self.device, seed=self.seed, verbose=self.verbose)

    def _input_shape(self) -> tuple[int, ...]:
        """Shape of one simulation (from the arrays, or one simulator call)."""
        train = self._samplers[0]
        if train.simulation_shape is not None:
            return train.simulation_shape
        generator = torch.Generator(device=resolve_device(self.device)).manual_seed(self.seed)
        theta = torch.tensor([self.theta_fid], device=resolve_device(self.device))
        out = train._call(generator, theta)
        return tuple(out.shape[1:])

    # ------------------------------------------------------------------ fitting

    def fit(self, patience: int | None = None, min_iterations: int | None = None,
            max_iterations: int | None = None) -> IMNN:
        """Train until validation det F has not improved for ``patience`` iterations (after at
        least ``min_iterations``, at most ``max_iterations``); keep the best weights.

        A second call continues from the current weights (fresh optimizer state).
        """
        patience = self.patience if patience is None else patience
        min_iterations = self.min_iterations if min_iterations is None else min_iterations
        max_iterations = self.max_iterations if max_iterations is None else max_iterations
        for name, value, low in (("patience", patience, 1), ("min_iterations", min_iterations, 0),
                                 ("max_iterations", max_iterations, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValidationError(f"`{name}` must be an integer ≥ {low}, got {value!r}.")
        with intra_op_threads(self.num_threads):
            if self.routine_ is None:
                routine = self.build()
                self.input_shape_ = self._input_shape()
                self._check_start(routine)
            else:
                routine = self.routine_
            routine.phases = [self._phase(patience, min_iterations, max_iterations)]
            start = time.perf_counter()
            routine.train()
            self.fit_seconds_ = time.perf_counter() - start
            self.routine_ = routine
            self._collect()
        return self

    def _validation_batch(self, routine: Routine) -> dict[str, torch.Tensor]:
        state = routine.state or routine._new_state()
        routine.state = state
        val = self._samplers[1]
        val.setup(state)
        return next(iter(val.batches(state)))

    def _statistics(self, routine: Routine) -> FisherStatistics:
        batch = self._validation_batch(routine)
        model = routine.models["main"]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            s, ds = network_summaries(model, batch, self.chunk_size)
        model.train(was_training)
        return fisher_statistics(s.double(), ds.double())

    def _check_start(self, routine: Routine) -> None:
        """Singular covariance or Fisher matrix at initialisation: fail before training;
        then (``whiten_init``) rescale the output layer so that C = I on the training set."""
        routine.compute_global_relations()
        self._statistics(routine).check("the validation simulations at initialisation")
        if self.whiten_init:
            train = self._samplers[0]
            state = routine.state
            train.setup(state)
            whiten_output_layer(routine.models["main"], next(iter(train.batches(state))))

    def _collect(self) -> None:
        routine = self.routine_
        stats = self._statistics(routine)
        stats.check("the validation simulations after training")
        host = attrs.evolve(stats, **{f.name: getattr(stats, f.name).cpu()
                                      for f in attrs.fields(type(stats))})
        self.F_ = host.F.numpy()
        self.invF_ = np.linalg.inv(self.F_)
        self.C_, self.invC_ = host.C.numpy(), host.invC.numpy()
        self.mu_, self.dmu_dtheta_ = host.mu.numpy(), host.dmu_dtheta.numpy()
        rows = [r for r in routine.history.rows if r.get("phase") == "fit"]
        history: dict[str, list[float]] = {"iteration": list(range(len(rows)))}
        for key in HISTORY_KEYS:
            history[key] = [r.get(key, math.nan) for r in rows]
            history[f"val_{key}"] = [r.get(f"val_{key}", math.nan) for r in rows]
        self.history_ = history
        self.n_iterations_ = len(rows)
        self.best_iteration_ = int(np.nanargmax(history["val_det_F"])) if rows else None

    @property
    def det_F_history_(self) -> np.ndarray:
        """Validation det F per iteration (the early-stopping criterion)."""
        self._check_fitted()
        return np.asarray(self.history_["val_det_F"], dtype=float)

    @property
    def best_val_det_F_(self) -> float:
        self._check_fitted()
        return float(np.nanmax(self.history_["val_det_F"]))

    # ------------------------------------------------------------------ using the summaries

    def summaries(self, data: Any) -> np.ndarray:
        """Network summaries of simulations ``(n, ...)`` -> ``(n, n_summaries)``."""
        self._check_fitted()
        x, _ = self._as_batch(data, "data")
        with intra_op_threads(self.num_threads):
            return self.routine_.apply(x).numpy()

    def _as_batch(self, data: Any, name: str) -> tuple[torch.Tensor, bool]:
        x = as_tensor(data, name, ndim=None)
        shape = tuple(self.input_shape_)
        if tuple(x.shape) == shape:
            x, single = x.unsqueeze(0), True
        elif tuple(x.shape[1:]) == shape:
            single = False
        else:
            raise ValidationError(
                f"`{name}` must be one simulation of shape {shape} or many of shape (n, "
                f"{', '.join(map(str, shape))}), got {tuple(x.shape)}.")
        if self.network is None:
            x = x.reshape(len(x), -1)
        return x, single

    def estimate(self, data: Any) -> np.ndarray:
        """Quasi-maximum-likelihood θ̂ = θ_fid + F⁻¹ (∂μ/∂θ)ᵀ C⁻¹ (s − μ).

        ``data``: one simulation (shape ``input_shape_``) -> (p,), or (n, ...) -> (n, p).
        """
        self._check_fitted()
        x, single = self._as_batch(data, "data")
        with intra_op_threads(self.num_threads):
            s = self.routine_.apply(x).double()
        stats = FisherStatistics(mu=torch.as_tensor(self.mu_), C=torch.as_tensor(self.C_),
                                 invC=torch.as_tensor(self.invC_),
                                 dmu_dtheta=torch.as_tensor(self.dmu_dtheta_),
                                 F=torch.as_tensor(self.F_))
        theta = stats.estimate(s, torch.tensor(self.theta_fid, dtype=torch.float64)).numpy()
        return theta[0] if single else theta

    def _check_fitted(self, attribute: str = "F_") -> None:
        if getattr(self, attribute, None) is None:
            raise NotFittedError("This IMNN is not fitted yet; call fit() first.")

    # ------------------------------------------------------------------ plotting

    def plot(self, expected_detF: float | None = None, path: str | Path | None = None,
             label: str = "") -> Figure:
        """det F (train and validation), det C / det C⁻¹, Λ₂ and r per iteration."""
        self._check_fitted()
        h = self.history_
        fig = Figure(figsize=(6, 8), constrained_layout=True)
        ax = fig.subplots(3, 1, sharex=True)
        it = h["iteration"]
        ax[0].plot(it, h["det_F"], color="C0", alpha=0.6, label=f"{label} train".strip())
        ax[0].plot(it, h["val_det_F"], color="C1", label=f"{label} validation".strip())
        if expected_detF is not None:
            ax[0].axhline(expected_detF, color="k", ls="--", lw=1, label="expected")
        if self.best_iteration_ is not None:
            ax[0].axvline(self.best_iteration_, color="gray", ls=":", lw=1, label="best")
        ax[0].set_ylabel(r"$|\mathbf{F}|$")
        ax[0].legend(fontsize=8)
        ax[1].semilogy(it, h["det_C"], color="C0", label=r"$|\mathbf{C}|$")
        ax[1].semilogy(it, h["det_invC"], color="C2", label=r"$|\mathbf{C}^{-1}|$")
        ax[1].axhline(1, color="k", ls="--", lw=1)
        ax[1].legend(fontsize=8)
        ax[2].plot(it, h["Lambda2"], color="C0", label=r"$\Lambda_2$")
        twin = ax[2].twinx()
        twin.plot(it, h["r"], color="C3", label="r")
        twin.set_ylabel("r")
        ax[2].set_ylabel(r"$\Lambda_2$")
        ax[2].set_xlabel("iteration")
        if path is not None:
            fig.savefig(path, dpi=90)
        return fig

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Weights + recipe + fitted statistics (JSON), loadable with :meth:`load`."""
        self._check_fitted()
        fitted = {"F": self.F_, "C": self.C_, "invC": self.invC_, "mu": self.mu_,
                  "dmu_dtheta": self.dmu_dtheta_, "history": self.history_,
                  "best_iteration": self.best_iteration_, "n_iterations": self.n_iterations_,
                  "input_shape": list(self.input_shape_)}
        fitted = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in fitted.items()}
        return self.routine_.save(path, extra={"recipe": self.to_dict(), "fitted": fitted})

    @classmethod
    def load(cls, path: str | Path, network: torch.nn.Module | None = None) -> IMNN:
        """A fitted IMNN from :meth:`save` (pass ``network`` again if it was a custom module)."""
        routine = Routine.load(path, models=None if network is None else {"main": network})
        extra = routine.saved_extra
        recipe = cls.from_dict(extra["recipe"])
        recipe.network = network
        fitted = extra["fitted"]
        recipe.routine_ = routine
        for key in ("F", "C", "invC", "mu", "dmu_dtheta"):
            setattr(recipe, f"{key}_", np.asarray(fitted[key], dtype=np.float64))
        recipe.invF_ = np.linalg.inv(recipe.F_)
        recipe.history_ = fitted["history"]
        recipe.best_iteration_ = fitted["best_iteration"]
        recipe.n_iterations_ = fitted["n_iterations"]
        recipe.input_shape_ = tuple(fitted["input_shape"])
        return recipe

    # ------------------------------------------------------------------ command line

    def run(self, data: list[np.ndarray], out_dir: Path) -> dict[str, Any]:
        """``--data FIDUCIAL --data DERIVATIVE [--data VAL_FIDUCIAL --data VAL_DERIVATIVE]``;
        the derivative arrays are numerical (n_d, 2, p, ...) when ``delta_theta`` is set."""
        if len(data) not in (2, 4):
            raise ValidationError(
                f"imnn run takes 2 or 4 arrays (fiducial, derivative[, validation fiducial, "
                f"validation derivative]), got {len(data)}.")
        key = "numerical_derivative" if self.delta_theta is not None else "derivative"
        arrays = {"fiducial": data[0], key: data[1]}
        if len(data) == 4:
            arrays.update({"validation_fiducial": data[2], f"validation_{key}": data[3]})
        fitted = attrs.evolve(self, simulator=None, **arrays).fit()
        out_dir = Path(out_dir)
        fitted.save(out_dir)
        fitted.plot(path=out_dir / "imnn_history.png")
        return {"best_val_det_F": fitted.best_val_det_F_, "det_F": float(np.linalg.det(fitted.F_)),
                "F": fitted.F_.tolist(), "n_iterations": fitted.n_iterations_,
                "best_iteration": fitted.best_iteration_, "seconds": fitted.fit_seconds_}

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """The imnn tutorial: 10 Gaussian points, θ = (μ, Σ) at (0, 1), exact det F = 50."""
        n = 1000
        fiducial, derivative = gaussian_simulations(n, seed=0)
        val_fiducial, val_derivative = gaussian_simulations(n, seed=1)
        imnn = cls(n_summaries=2, theta_fid=DEMO_THETA_FID, fiducial=fiducial,
                   derivative=derivative, validation_fiducial=val_fiducial,
                   validation_derivative=val_derivative,
                   max_iterations=150 if quick else 1000, min_iterations=100)
        imnn.fit()
        oracle = oracle_det_F(val_fiducial, val_derivative)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        imnn.plot(expected_detF=DEMO_EXACT_DET_F, path=out_dir / "imnn_demo.png")
        best = imnn.best_val_det_F_
        return {"best_val_det_F": round(best, 2), "exact_det_F": DEMO_EXACT_DET_F,
                "best_over_exact": round(best / DEMO_EXACT_DET_F, 3),
                "oracle_val_det_F": round(oracle, 2), "best_over_oracle": round(best / oracle, 3),
                "iterations": imnn.n_iterations_, "seconds": round(imnn.fit_seconds_, 1),
                "figure": str(out_dir / "imnn_demo.png")}


@torch.no_grad()
def whiten_output_layer(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> bool:
    """Data-dependent initialisation: when the network ends in a ``Linear`` layer, map its
    output to zero mean and identity covariance on the batch's fiducial simulations
    (W ← L⁻¹W, b ← L⁻¹(b − μ) with C = LLᵀ).  Then Λ₂ ≈ 0 at the start and training spends
    no iterations fixing the scale of the summaries.  Returns whether it applied."""
    last = list(model.children())[-1] if isinstance(model, torch.nn.Sequential) else None
    if not isinstance(last, torch.nn.Linear) or last.bias is None:
        return False
    was_training = model.training
    model.eval()
    s = model(batch["fiducial"]).double()
    model.train(was_training)
    mu = s.mean(0)
    C = torch.cov(s.T).reshape(s.shape[1], s.shape[1])
    L, info = torch.linalg.cholesky_ex(C)
    if int(info) != 0:
        return False
    eye = torch.eye(len(mu), dtype=torch.float64, device=mu.device)
    L_inv = torch.linalg.solve_triangular(L, eye, upper=False)
    last.weight.copy_((L_inv @ last.weight.double()).to(last.weight.dtype))
    last.bias.copy_((L_inv @ (last.bias.double() - mu)).to(last.bias.dtype))
    return True


def oracle_det_F(fiducial: Any, derivative: Any) -> float:
    """det F of the exact sufficient statistics (Σd, Σd²) on the given reference simulations:
    the best any network can score on that finite set (≈ 50 ± 3.3 for 1000 simulations)."""
    fid = as_tensor(fiducial, "fiducial", ndim=2, dtype=torch.float64)
    der = as_tensor(derivative, "derivative", ndim=3, dtype=torch.float64)
    s, ds = network_summaries(OracleSummaries(), {"fiducial": fid, "derivative": der})
    return float(torch.linalg.det(fisher_statistics(s, ds).F))


__all__ = ["IMNN", "FRESH_SIMULATIONS_PRESET", "FRESH_SIMULATIONS_2K_PRESET",
           "gaussian_simulator", "gaussian_simulations", "oracle_det_F",
           "OracleSummaries", "DEMO_EXACT_DET_F"]
