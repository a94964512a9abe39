"""IMNN: information maximising neural networks (Charnock, Lavaux & Wandelt 2018).

A summary network ``f`` maps a simulation to ``n_summaries`` numbers; it is trained to
maximise the Gaussian Fisher information of its summaries at ``theta_fid``
(``F = (∂μ/∂θ)ᵀ C⁻¹ (∂μ/∂θ)``, loss ``−ln det F + r_Λ Λ₂``; see
:mod:`infoblocks.blocks.fisher`).  One epoch is one optimizer step on the whole set of
training simulations (one batch); after each, det F is measured on a fixed validation set
and the best weights are kept (patience, min_epochs / epochs).

The routine, as data (``infoblocks config imnn --full``):

- ``models.main``: the summary network, ``summary_mlp`` (``in_dim`` = values per simulation
  and ``out_dim`` = ``n_summaries`` filled at fit time); any model block by name;
- ``phases`` = one phase ``fit``: sampler ``simulations``, loss ``fisher`` (with its
  regulariser), optimizer and schedule, validation on a fixed set tracking ``det_F``
  (``mode = "max"``, so a replacement loss must report ``det_F``), patience;
- ``evaluation.statistics``: the block whose ``statistics(model, batch)`` gives ``F_``,
  ``C_``, ``mu_``, ``dmu_dtheta_`` (and so ``estimate``), computed on the validation set.

Data only in :meth:`IMNN.fit`: a simulator callable or fiducial / derivative arrays.  See
docs/imnn.md (the slots and their contracts) and docs/plugins.md.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import numpy as np
import torch

from infoblocks.blocks.assembly import ShortcutWarning, unreached_shortcuts
from infoblocks.blocks.data import as_tensor, intra_op_threads, resolve_device
from infoblocks.blocks.base import naming_blocks
from infoblocks.blocks.errors import ConfigError, NotFittedError, ValidationError
from infoblocks.blocks.contracts import SIMULATIONS
from infoblocks.blocks.fisher import (FIDUCIAL, FIDUCIAL_SAMPLE, FisherStatistics,
                                     SimulationSampler, as_theta)
from infoblocks.blocks.fisher.loss import undeclared_reduction
from infoblocks.blocks.phases import TrainingPhase, optimizer_class
from infoblocks.blocks.recipe import (EXPANDED_KEY, Recipe, check_saved_recipe, shortcut_fields,
                                      transient_field)
from infoblocks.blocks.routine import Routine
from infoblocks.blocks.schedules import schedule_data, schedule_spec
from infoblocks.blocks.validators import device as valid_device
from infoblocks.blocks.validators import non_negative, one_of, positive, positive_int

from .imnn_data import (attach, build_phases, draws_own_simulations, take_source,
                         validation_source)
from .imnn_inference import PosteriorInference, PosteriorSamples  # noqa: F401
from .imnn_problem import (DEMO_EXACT_DET_F, DEMO_PRIOR, DEMO_TARGET_SEED,  # noqa: F401
                           DEMO_THETA_FID, OracleSummaries, exact_posterior,
                           gaussian_simulations, gaussian_simulator, oracle_det_F, plot_history)

#: the folder inside ``run``'s output directory that holds the saved model (``IMNN.load``)
MODEL_DIR = "model"

#: seed offset of the validation simulations drawn from a simulator (fixed, drawn once)
VALIDATION_SEED_OFFSET = 7919

#: ``IMNN.preset(name)`` (docs/imnn.md).  ``fresh``: with a simulator, fresh training
#: simulations every epoch (no overfitting), a cosine learning-rate decay over 3000 epochs (no
#: step noise), SiLU units, no early stop (the best validation weights are still restored),
#: validated every epoch (on 1000 simulations when the simulator draws them): the simulator
#: defaults before they chose on 50,000 validation simulations every 50 epochs.
#: ``fresh_2k``: the same with n_s = n_d = 2000 (less gradient noise, 2× the time).
PRESETS: dict[str, dict[str, Any]] = {
    "fresh": {"activation": "silu", "lr_schedule": "cos", "epochs": 3000, "patience": 3000,
              "min_epochs": 100, "n_validation": 1000, "validation_every": 1},
}
PRESETS["fresh_2k"] = {**PRESETS["fresh"], "n_s": 2000, "n_d": 2000}
#: aliases of ``IMNN.presets["fresh"]`` / ``["fresh_2k"]``
FRESH_SIMULATIONS_PRESET = PRESETS["fresh"]
FRESH_SIMULATIONS_2K_PRESET = PRESETS["fresh_2k"]

#: the defaults of ``activation``, ``lr_schedule``, ``epochs``, ``patience``, ``n_validation``
#: and ``validation_every`` (left at None), by where the simulations come from (docs/imnn.md).
#: A simulator gives fresh training simulations every epoch, which do not overfit: SiLU units
#: and a cosine decay over 3000 epochs with no early stop average the step noise out (the
#: "fresh" preset's measurements), and the returned weights are chosen on 50,000 validation
#: simulations drawn once, every 50 epochs: det F of n simulations scatters by ≈ ±3.3 √(1000/n)
#: around the truth — the exact statistics score 47.3 on one 10,000-simulation set of the
#: tutorial problem, 49.4 on its 50,000 — and the selection should not be decided by that.
#: Fixed arrays overfit after ~100 epochs: the tutorial's LeakyReLU, constant rate, patience 10.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "simulator": {"activation": "silu", "lr_schedule": "cos", "epochs": 3000, "patience": 3000,
                  "n_validation": 50_000, "validation_every": 50},
    "arrays": {"activation": "leaky_relu", "lr_schedule": "none", "epochs": 1000,
               "patience": 10, "n_validation": None, "validation_every": 1},
}


def _in_field_order(cls: type, out: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """``out`` updated with ``added``, each new setting placed among the others in the
    recipe's field order (where a recipe read back with it set writes it), not at the end."""
    order = {f.name: i for i, f in enumerate(attrs.fields(cls))}
    new = sorted((k for k in added if k not in out), key=order.get)
    merged: dict[str, Any] = {}
    for key, value in out.items():
        while new and key in order and order[new[0]] < order[key]:
            merged[new[0]] = added[new[0]]
            new.pop(0)
        merged[key] = added.get(key, value)
    merged.update({k: added[k] for k in new})
    return merged


class IMNNWarning(UserWarning):
    """A fit that runs but may not train what was asked (e.g. a plugin loss under torchrun
    that does not say how it reduces over the ranks)."""


#: the mode whose :data:`MODE_DEFAULTS` the None shortcuts take while a spec is expanded
_FIT_MODE: ContextVar[str] = ContextVar("imnn_fit_mode", default="arrays")


@contextmanager
def _fit_mode(mode: str | None) -> Iterator[None]:
    token = None if mode is None else _FIT_MODE.set(mode)
    try:
        yield
    finally:
        if token is not None:
            _FIT_MODE.reset(token)


HISTORY_KEYS = ("det_F", "det_C", "det_invC", "Lambda2", "r")


def _optimizer_name(instance: Any, attribute: Any, value: Any) -> None:
    optimizer_class(value)  # "adam", "sgd", "adamw" or any torch.optim class name


def _at_least_two(instance: Any, attribute: Any, value: Any) -> None:
    positive_int(instance, attribute, value)
    if value < 2:
        raise ValidationError(f"`{attribute.name}` must be at least 2 (a covariance needs two "
                              f"simulations), got {value!r}.")


def _listed(value: tuple[float, ...] | None) -> list[float] | None:
    return None if value is None else list(value)


def _parameter_values(name: str) -> Any:
    """The converter of a setting with one number per parameter (``theta_fid``,
    ``delta_theta``): a list of numbers, or one number for one parameter (``theta_fid=5.0``
    is ``(5.0,)``, as ``[5.0]``); None stays None.  A flag or a string is refused naming
    ``name`` (the strict check of the other settings: ``[true]`` is not ``[1.0]``)."""

    def convert(value: Any) -> tuple[float, ...] | None:
        if value is None:
            return None
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
            value = value.item()  # (a 0-d array or tensor: its number)
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            return as_theta(value, name)  # (one number: one parameter)
        values = value
        listed = isinstance(values, Iterable) and not isinstance(values, (str, bytes, dict))
        # (a tuple kept as it is: as_theta returns a tuple of floats itself, so that
        # sklearn.base.clone sees the constructor keep its argument)
        values = list(values) if listed and not isinstance(values, (tuple, list)) else values
        if not listed or any(isinstance(v, (bool, np.bool_, str)) for v in values):
            raise ValidationError(
                f"`{name}` must be a number per parameter: a list of numbers (theta_fid = "
                f"[0.0, 1.0]), or one number for one parameter, got {value!r}.")
        return as_theta(values, name)

    return convert


@attrs.define(kw_only=True)
class IMNN(PosteriorInference, Recipe):
    """Information maximising neural network.

    Hyperparameters only; the simulations go to :meth:`fit` — a ``simulator(generator,
    theta)`` (``batched_simulator``: theta (n, p) -> (n, ...); else theta (p,) -> (...)), or
    ``fiducial`` (n_s, ...) arrays with ``derivative`` (n_d, p, ...) = ∂d/∂θ of the first n_d
    fiducial simulations, or with ``numerical_derivative`` (n_d, 2, p, ...) = seed-matched
    simulations at θ_fid ∓ δθ/2 (``delta_theta``).  With a simulator, ``derivative_mode``
    ("autograd" or "numerical"), ``n_s`` / ``n_d`` simulations per epoch (``fresh_simulations``)
    or drawn once.  ``validation_*`` arrays give the fixed validation set; without them a
    simulator draws it once (``n_validation`` simulations, seed ``seed + 7919``) and arrays
    are validated on the training arrays, every ``validation_every`` epochs.

    ``activation``, ``lr_schedule``, ``epochs``, ``patience``, ``n_validation`` and
    ``validation_every`` left at None take the defaults of the fit's source
    (:data:`MODE_DEFAULTS`): with a simulator SiLU, a cosine decay over 3000 epochs without
    early stop, 50,000 validation simulations every 50 epochs; with arrays LeakyReLU, a
    constant rate, at most 1000 epochs, patience 10, validation every epoch.
    ``restore_best``: return the best validation weights (else the last).  ``warm_start``:
    a second ``fit`` continues the weights and optimizer state (else it starts afresh).
    ``optimizer``: "adam", "sgd", "adamw" or any ``torch.optim`` class name, with
    ``optimizer_options`` (its keyword arguments).  After fitting, :meth:`gaussian_posterior`,
    :meth:`abc` and :meth:`pmc` give posteriors for observed data (docs/imnn.md).

    ``theta_fid`` is required before ``fit``; ``n_summaries`` defaults to the number of
    parameters.  Loss (``lambda_reg`` = λ, ``epsilon`` = ε): −ln det F + r_Λ Λ₂ with
    Λ₂ = ‖C − I‖_F + ‖C⁻¹ − I‖_F, r_Λ = λΛ₂/(Λ₂ + exp(−αΛ₂)).  The summary network is
    ``models.main`` (default ``summary_mlp`` with ``hidden_dims``, ``activation``,
    ``whiten_init``: start from summaries with C = I), or a ``torch.nn.Module`` passed as
    ``network`` (not data).  ``lr_schedule``: a registered schedule, e.g. "none" or "cos"
    (half cosine over ``epochs``), or its table ``{name = ..., ...}``.
    ``chunk_size``: aggregated (chunked) gradients.  ``threads``: torch intra-op threads while
    fitting (1: fastest on small, busy CPUs; None: leave torch's setting).  See docs/imnn.md.
    """

    #: the arrays of `infoblocks run` in order (an .npz named after them is reordered)
    run_inputs: ClassVar[tuple[str, ...]] = (
        "fiducial", "derivative|numerical_derivative", "validation_fiducial",
        "validation_derivative|validation_numerical_derivative")

    required_settings: ClassVar[tuple[str, ...]] = ("theta_fid",)
    #: the full form writes every block's defaults (every knob; :attr:`Recipe.full_defaults`)
    full_defaults: ClassVar[bool] = True
    name: ClassVar[str] = "imnn"
    summary: ClassVar[str] = ("Information maximising neural network: summaries that maximise "
                              "the Fisher information (Charnock et al. 2018)")
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    evaluation_kinds: ClassVar[dict[str, str]] = {"statistics": "loss"}
    #: a warm fit builds the statistics block (and its phases) from the settings again
    warm_fit_reads: ClassVar[frozenset[str]] = frozenset({"evaluation"})

    n_summaries: int | None = attrs.field(default=None, validator=optional(positive_int))
    #: one number per parameter; a single number for one parameter (``5.0`` is ``[5.0]``)
    theta_fid: tuple[float, ...] | float | None = attrs.field(
        default=None, converter=_parameter_values("theta_fid"))
    network: Any = transient_field(default=None, repr=False)
    derivative_mode: str = attrs.field(default="autograd", validator=one_of("autograd",
                                                                             "numerical"))
    delta_theta: tuple[float, ...] | float | None = attrs.field(
        default=None, converter=_parameter_values("delta_theta"))
    batched_simulator: bool = True
    fresh_simulations: bool = True
    n_s: int = attrs.field(default=1000, validator=positive_int)
    n_d: int = attrs.field(default=1000, validator=positive_int)
    hidden_dims: tuple[int, ...] = attrs.field(default=(128, 128, 128), converter=tuple)
    activation: str | None = None
    whiten_init: bool = True
    optimizer: str = attrs.field(default="adam", validator=_optimizer_name)
    optimizer_options: dict[str, Any] = attrs.field(factory=dict)
    learning_rate: float = attrs.field(default=1e-3, validator=positive)
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    lr_schedule: str | dict[str, Any] | None = attrs.field(
        default=None, converter=schedule_data, validator=optional(schedule_spec))
    lambda_reg: float = attrs.field(default=10.0, validator=positive)
    epsilon: float = attrs.field(default=0.1, validator=positive)
    chunk_size: int | None = attrs.field(default=None, validator=optional(positive_int))
    epochs: int | None = attrs.field(default=None, validator=optional(positive_int))
    min_epochs: int = attrs.field(default=100, validator=non_negative)
    patience: int | None = attrs.field(default=None, validator=optional(positive_int))
    n_validation: int | None = attrs.field(default=None, validator=optional(_at_least_two))
    validation_every: int | None = attrs.field(default=None, validator=optional(positive_int))
    restore_best: bool = True
    warm_start: bool = False
    threads: int | None = attrs.field(default=1, validator=optional(positive_int))
    seed: int = attrs.field(default=0, validator=non_negative)
    device: str = attrs.field(default="cpu", validator=valid_device)
    verbose: bool = False

    routine_: Routine | None = attrs.field(init=False, default=None, repr=False)
    F_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    invF_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    C_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    invC_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    mu_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    dmu_dtheta_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    history_: dict[str, list[float]] | None = attrs.field(init=False, default=None, repr=False)
    best_epoch_: int | None = attrs.field(init=False, default=None, repr=False)
    n_epochs_: int | None = attrs.field(init=False, default=None, repr=False)
    fit_seconds_: float | None = attrs.field(init=False, default=None, repr=False)
    input_shape_: tuple[int, ...] | None = attrs.field(init=False, default=None, repr=False)
    _source: dict[str, Any] | None = attrs.field(init=False, default=None, repr=False)
    #: "simulator" or "arrays": where the simulations of the current fit come from
    _mode: str | None = attrs.field(init=False, default=None, repr=False)
    _network_start: tuple[torch.nn.Module, dict[str, torch.Tensor]] | None = attrs.field(
        init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.theta_fid is not None and self.n_summaries is not None \
                and self.n_summaries < len(self.theta_fid):
            p = len(self.theta_fid)
            raise ValidationError(
                f"`n_summaries` = {self.n_summaries} is smaller than the number of parameters "
                f"({p}, from theta_fid={list(self.theta_fid)}): F would be singular. Use "
                f"n_summaries ≥ {p}.")
        if self.theta_fid is not None and self.delta_theta is not None and \
                len(self.delta_theta) != len(self.theta_fid):
            p, given = len(self.theta_fid), len(self.delta_theta)
            raise ValidationError(
                f"`delta_theta` has {given} step{'s' if given > 1 else ''} for the {p} "
                f"parameter{'s' if p > 1 else ''} of theta_fid={list(self.theta_fid)}: give one "
                f"step per parameter, e.g. delta_theta = {[self.delta_theta[0]] * p}.")
        if self.n_d > self.n_s:
            raise ValidationError(f"`n_d` = {self.n_d} exceeds `n_s` = {self.n_s}; derivatives are "
                                  "taken of the first n_d fiducial simulations.")
        # a min_epochs of one's own above epochs is a floor that never applies (the default's
        # above a short run's epochs only means: no early stop, as a short run wants)
        if self.epochs is not None and self.min_epochs > self.epochs and \
                self.min_epochs != attrs.fields(type(self)).min_epochs.default:
            raise ValidationError(
                f"`min_epochs` = {self.min_epochs} exceeds `epochs` = {self.epochs}: training "
                f"stops after {self.epochs} epochs, so the floor under early stopping never "
                "applies. Set min_epochs ≤ epochs (min_epochs = epochs: no early stop).")

    # ------------------------------------------------------------------ the assembly

    n_params = property(lambda self: len(self._theta()))

    def _theta(self) -> tuple[float, ...]:
        if self.theta_fid is None:
            raise ValidationError("IMNN needs `theta_fid`, the fiducial parameter values at which "
                                  "the Fisher information is maximised, e.g. theta_fid = [0.0, 1.0].")
        return self.theta_fid

    def summaries_dim(self) -> int:
        """The width the summary network must output (``n_summaries``, default p)."""
        return self.n_summaries if self.n_summaries is not None else self.n_params

    def setting(self, name: str) -> Any:
        """A hyperparameter left at None takes the default of the mode of the fit
        (:data:`MODE_DEFAULTS`: "simulator" with ``fit(simulator=...)``, else "arrays")."""
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "validation_every":  # at least once, at the last epoch
            return min(MODE_DEFAULTS[_FIT_MODE.get()][name], self.setting("epochs"))
        return MODE_DEFAULTS[_FIT_MODE.get()][name]

    def routine_spec(self) -> dict[str, Any]:
        # the mode of the last fit decides the None shortcuts, also for the copies that the
        # shortcut/section conflict check makes (attrs.evolve does not copy it)
        with _fit_mode(self._spec_mode()):
            return super().routine_spec()

    def _spec_mode(self) -> str | None:
        """The fit mode whose defaults expand the settings left None: the last fit's; else
        "simulator" where every sampler draws its own simulations (no other mode is possible:
        `config --full` of such a routine showed the arrays mode's patience 10 and constant
        rate, and its full form with `epochs` read back conflicted with the fit's
        `validation.every`, author26-9); else None (the context's, "arrays")."""
        if self._mode is not None:
            return self._mode
        try:  # (the samplers' names do not depend on the mode; a copy: no warning kept)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                own = draws_own_simulations(Recipe.routine_spec(attrs.evolve(self)))
        except (ConfigError, ValidationError):
            return None  # the fit reports a bad config itself
        return "simulator" if own else None

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        with _fit_mode(self._spec_mode()):
            out = super().to_dict(full)
        if full and self._mode is not None:
            # the settings left None took the fit mode's defaults: written out, so that the
            # full config loads (unfitted, in no mode) with the same sections it was saved with
            with _fit_mode(self._mode):
                resolved = {name: self.setting(name) for name in MODE_DEFAULTS[self._mode]
                            if getattr(self, name) is None}
            resolved = {k: v for k, v in resolved.items() if v is not None}
            # ... not those a section sets otherwise: the explicit value wins over a mode's
            # default as over any default (author19 F2: a validation sampler with its own
            # `n_s` made to_toml(full=True) raise after the fit on `n_validation` = 50000,
            # a shortcut never set, and `infoblocks run` lost the fitted model)
            resolved = {k: v for k, v in resolved.items() if not self._overridden(k, v)}
            # ... but only those that reach a block: a network of one's own without an
            # `activation` field would read 'silu' back as a setting that reaches no block
            # (author11 A11-3: a spurious ShortcutWarning on IMNN.load)
            lost = unreached_shortcuts(attrs.evolve(self, **resolved)) if resolved else []
            resolved = {k: v for k, v in resolved.items() if k not in lost}
            # in the order a read-back recipe writes them (the settings' own order), so that
            # config --full -> run -> config --full is byte-identical
            out = _in_field_order(type(self), out, resolved)
            merged = {**out.get(EXPANDED_KEY, {}), **resolved}
            order = [f.name for f in shortcut_fields(type(self)) if f.name in merged]
            out[EXPANDED_KEY] = {**{k: merged[k] for k in order},
                                 **{k: v for k, v in merged.items() if k not in order}}
        return out

    def _overridden(self, name: str, value: Any) -> bool:
        """Whether the sections set what the setting ``name`` = ``value`` would fill, to
        another value: a shortcut/section conflict, were the setting given — checked as the
        written full config is read back (unfitted, in no fit mode)."""
        try:
            with warnings.catch_warnings():  # a probe: the setting is not the user's (a mode
                # default reaching no block of a plugin network warned "remove `activation`"
                # on every save / `infoblocks run`, author26-4); to_dict drops it after
                warnings.simplefilter("ignore", ShortcutWarning)
                attrs.evolve(self, **{name: value}).routine_spec()
        except ConfigError:
            return True
        return False

    def default_models(self) -> dict[str, Any]:
        if self.network is not None:  # a torch module given from Python fills the slot
            return {}
        return {"main": {"name": "summary_mlp", "hidden_dims": list(self.hidden_dims),
                         "activation": self.setting("activation"), "whiten": self.whiten_init}}

    def sampler_spec(self, validation: bool) -> dict[str, Any]:
        spec = {"name": "simulations", "theta_fid": _listed(self.theta_fid),
                "derivative_mode": self.derivative_mode, "delta_theta": _listed(self.delta_theta),
                "batched": self.batched_simulator, "n_s": self.n_s, "n_d": self.n_d,
                "fresh": self.fresh_simulations and not validation}
        if validation:
            spec["seed"] = self.seed + VALIDATION_SEED_OFFSET
            if self.setting("n_validation") is not None:  # a simulator draws it once
                spec["n_s"] = spec["n_d"] = self.setting("n_validation")
        return spec

    def _loss_spec(self) -> dict[str, Any]:
        return {"name": "fisher", "lambda_reg": self.lambda_reg, "epsilon": self.epsilon,
                "chunk_size": self.chunk_size}

    def default_phases(self) -> list[dict[str, Any]]:
        return [{"name": "fit", "epochs": self.setting("epochs"),
                 "sampler": self.sampler_spec(False),
                 "loss": self._loss_spec(), "optimizer": self.optimizer,
                 "optimizer_options": dict(self.optimizer_options),
                 "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                 "lr_schedule": self.setting("lr_schedule"),
                 "validation": {"sampler": self.sampler_spec(True), "loss": self._loss_spec(),
                                "metric": "det_F", "mode": "max",
                                "every": self.setting("validation_every")},
                 "patience": self.setting("patience"), "min_epochs": self.min_epochs,
                 "restore_best": self.restore_best}]

    def default_evaluation(self) -> dict[str, Any]:
        return {"statistics": {"name": "fisher", "chunk_size": self.chunk_size}}

    # ------------------------------------------------------------------ the data of a fit

    def _phases(self, spec: dict[str, Any], source: dict[str, Any]) -> list[TrainingPhase]:
        self._theta()
        phases = build_phases(self, spec)
        val_source = validation_source(source)
        for phase in phases:
            path = f"{self.name}.phases.{phase.name}"
            phase.sampler = attach(phase.sampler, source, f"{path}.sampler")
            if phase.validation is not None:
                phase.validation.sampler = attach(phase.validation.sampler, val_source,
                                                  f"{path}.validation.sampler")
        main = self._main_phase(phases)
        train_shape = getattr(main.sampler, "simulation_shape", None)
        val_shape = getattr(self._evaluation_sampler(main), "simulation_shape", None)
        if train_shape is not None and val_shape is not None and train_shape != val_shape:
            raise ValidationError(f"Validation simulations have shape {val_shape} but training "
                                  f"simulations {train_shape}.")
        return phases

    @staticmethod
    def _main_phase(phases: list[TrainingPhase]) -> TrainingPhase:
        """The phase whose validation set is the evaluation set (``fit``, else the last)."""
        return next((p for p in phases if p.name == "fit"), phases[-1])

    def _input_shape(self, phase: TrainingPhase, source: dict[str, Any]) -> tuple[int, ...]:
        """Shape of one simulation (from the arrays, or one simulator call)."""
        shape = getattr(phase.sampler, "simulation_shape", None)
        if shape is not None:
            return tuple(shape)
        fiducial = source.get("fiducial")
        if fiducial is not None:  # the arrays given to fit: (n_s, *shape)
            return tuple(int(n) for n in (getattr(fiducial, "shape", None)
                                          or np.shape(fiducial))[1:])
        if source.get("simulator") is not None:
            device = resolve_device(self.device)
            generator = torch.Generator(device=device).manual_seed(self.seed)
            theta = torch.tensor([self.theta_fid], device=device)
            caller = phase.sampler if hasattr(phase.sampler, "_call") else SimulationSampler(
                theta_fid=self.theta_fid, batched=self.batched_simulator,
                simulator=source["simulator"])  # (a plugin sampler fed the simulator: one
            # call of it, as for the built-in, author26-9; before, it needed simulation_shape)
            return tuple(caller._call(generator, theta).shape[1:])
        raise ValidationError(
            f"Cannot tell the shape of one simulation from sampler {phase.sampler.name!r}: give "
            "it a `simulation_shape` property (the shape of one simulation; docs/plugins.md, "
            "IMNN's sampler slot).")

    def _model(self, spec: dict[str, Any], shape: tuple[int, ...]) -> Any:
        if self.network is None:
            return self.build_model("main", spec, in_dim=int(np.prod(shape)),
                                    out_dim=self.summaries_dim())
        if self.models and "main" in self.models:
            raise ConfigError("imnn: both `network` (a torch module) and `models.main` give the "
                              "summary network; remove one of them.")
        if not isinstance(self.network, torch.nn.Module):
            raise ValidationError(f"`network` must be a torch.nn.Module, got "
                                  f"{type(self.network).__name__}.")
        # a fit that starts afresh starts the module from the weights it was given with
        if self._network_start is None or self._network_start[0] is not self.network:
            self._network_start = (self.network, {k: v.detach().clone() for k, v
                                                  in self.network.state_dict().items()})
        else:
            self.network.load_state_dict(self._network_start[1])
        return self.network

    # ------------------------------------------------------------------ fitting

    def fit(self, fiducial: Any = None, derivative: Any = None, *,
            numerical_derivative: Any = None, simulator: Any = None,
            validation_fiducial: Any = None, validation_derivative: Any = None,
            validation_numerical_derivative: Any = None,
            checkpoint: str | Path | None = None, resume: bool | str | Path = False) -> IMNN:
        """Train until validation det F has not improved for ``patience`` epochs (after at
        least ``min_epochs``, at most ``epochs``); keep the best weights (``restore_best``).

        Simulations: ``simulator=fn(generator, theta)``, or ``fiducial`` with ``derivative``
        (or ``numerical_derivative``); optional ``validation_*`` arrays.  A second call
        starts afresh (scikit-learn's convention) unless ``warm_start=True``: then it continues
        from the current weights and optimizer state for ``epochs`` more epochs, on new data
        if given, else on the same simulations.  ``checkpoint=DIR`` writes the whole training
        state every epoch; ``resume=True`` (or ``resume=DIR``) continues a killed run from it.
        """
        source = take_source({
            "simulator": simulator, "fiducial": fiducial, "derivative": derivative,
            "numerical_derivative": numerical_derivative,
            "validation_fiducial": validation_fiducial,
            "validation_derivative": validation_derivative,
            "validation_numerical_derivative": validation_numerical_derivative}, self._source,
            loaded=self.routine_ is not None, own_source=self.draws_own_simulations())
        resolve_device(self.device)  # CUDA asked for but absent: a ValidationError first
        warm = self.warm_start and self.routine_ is not None
        # a sampler that draws its own simulations is a simulator
        self._mode = "arrays" if source["simulator"] is None and source["fiducial"] is not None \
            else "simulator"
        with intra_op_threads(self.threads), _fit_mode(self._mode):
            spec = self.routine_spec()
            phases = self._phases(spec, source)
            main = self._main_phase(phases)
            shape = self._input_shape(main, source)
            if not warm:
                # models besides the summary network (a critic of a compound loss): built
                # from their tables, with the simulation's size where they leave it out
                extra = {name: self.build_model(name, spec, in_dim=int(np.prod(shape)),
                                                n_summaries=self.summaries_dim())
                         for name in spec["models"] if name != "main"}
                routine = Routine(models={"main": self._model(spec, shape), **extra},
                                  phases=phases, device=self.device, seed=self.seed,
                                  verbose=self.verbose)
            else:
                if self.input_shape_ is not None and tuple(shape) != tuple(self.input_shape_):
                    raise ValidationError(f"This IMNN was fitted on simulations of shape "
                                          f"{self.input_shape_}; these have shape {shape}.")
                routine = self.routine_
                previous = {p.name: p.last_run for p in routine.phases}
                for phase in phases:  # the optimizer state each phase continues from
                    phase.last_run = previous.get(phase.name)
                routine.phases = phases
            evaluation = self._evaluation(spec)
            self._check_start(routine, main, evaluation, first=not warm)
            start = time.perf_counter()
            self.train_routine(routine, checkpoint=checkpoint, resume=resume, warm_start=warm)
            self.fit_seconds_ = time.perf_counter() - start
            self.routine_, self._source, self.input_shape_ = routine, source, tuple(shape)
            self._collect(routine, main, evaluation, [p.name for p in phases])
        return self

    def config_notes(self, full: bool) -> list[str]:
        """Comment lines for ``infoblocks config imnn --full``: the sections show the
        settings left unset in one fit mode; the other mode expands them otherwise."""
        unset = [name for name in MODE_DEFAULTS["simulator"] if getattr(self, name) is None]
        if not full or self._spec_mode() is not None or not unset:
            return []
        shown, other = _FIT_MODE.get(), "simulator" if _FIT_MODE.get() == "arrays" else "arrays"
        values = ", ".join(f"{name} = {MODE_DEFAULTS[other][name]!r}" for name in unset)
        return [f"The sections below expand the settings left unset ({', '.join(unset)}) for "
                f"a fit on {shown} ({'fit(fiducial, derivative)' if shown == 'arrays' else 'fit(simulator=...)'}).",
                f"A fit in {other} mode expands them with MODE_DEFAULTS[{other!r}] instead: "
                f"{values}.", "Loading this file keeps them unset, so each fit takes its "
                "own mode's values; copy a value into a section to fix it."]

    def draws_own_simulations(self) -> bool:
        """Whether every sampler of the routine draws its own simulations (a plugin sampler
        without ``with_source``): then ``fit()`` and ``infoblocks run`` take no data."""
        try:  # (the samplers' names do not depend on the fit's mode)
            with _fit_mode(self._mode):
                return draws_own_simulations(super().routine_spec())
        except (ConfigError, ValidationError):
            return False  # the fit reports a bad config itself

    def _evaluation(self, spec: dict[str, Any]) -> Any:
        block = self.build_evaluation("statistics", spec)
        if not callable(getattr(block, "statistics", None)):
            raise ConfigError(f"imnn.evaluation.statistics: {getattr(block, 'name', block)!r} has "
                              "no statistics(model, batch) -> FisherStatistics method; use "
                              "\"fisher\" or a block that implements it.")
        return block

    @staticmethod
    def _first_batch(sampler: Any, state: Any) -> dict[str, torch.Tensor]:
        with naming_blocks("imnn.evaluation"):  # a plugin sampler that raises is named
            sampler.setup(state)
            return next(iter(sampler.batches(state)))

    @staticmethod
    def _evaluation_sampler(phase: TrainingPhase) -> Any:
        return phase.validation.sampler if phase.validation is not None else phase.sampler

    def _check_start(self, routine: Routine, phase: TrainingPhase, evaluation: Any,
                     first: bool) -> None:
        """Before training: the network's output width, a singular covariance or Fisher
        matrix at initialisation (first fit); then the global ``fiducial_sample`` (the first
        training draw) that the summary network's declared whitening step reads."""
        routine.compute_global_relations()
        self._check_reduction(routine, phase)
        state = routine.state
        model = routine.models["main"]
        batch = self._first_batch(self._evaluation_sampler(phase), state)
        self._check_width(model, batch[FIDUCIAL][:2])
        if first:
            evaluation.statistics(model, batch).check(
                "the validation simulations at initialisation")
        if FIDUCIAL_SAMPLE not in state.globals:
            state.globals[FIDUCIAL_SAMPLE] = self._first_batch(phase.sampler, state)[FIDUCIAL]

    @staticmethod
    def _check_reduction(routine: Routine, phase: TrainingPhase) -> None:
        """Under torchrun: a training loss on SIMULATIONS batches that does not declare
        ``whole_batch`` gets the rank's shard; F is non-linear in the batch, so one formed
        from the shard trains another objective with no error (author26-5: det F 44.19 on two
        ranks against 43.97 on one).  Declared, the engine checks the ranks agree."""
        if not routine.dist.active:
            return
        slots = [(phase.sampler, phase.loss, f"phases.{phase.name}.loss")]
        if phase.validation is not None:  # (validation is sharded and reduced the same way)
            slots.append((phase.validation.sampler or phase.sampler, phase.validation.loss,
                          f"phases.{phase.name}.validation.loss"))
        for sampler, loss, path in slots:
            names = undeclared_reduction(loss) \
                if getattr(sampler, "batch_type", None) == SIMULATIONS else []
            if not names:
                continue
            quoted = ", ".join(repr(n) for n in names)
            warnings.warn(
                f"imnn under torchrun: loss {quoted} ({path}) does not declare "
                f"`whole_batch`, so each of the {routine.dist.world_size} ranks computes it from "
                "its own shard of the simulations; a Fisher matrix formed from a shard is not the "
                "whole batch's and the ranks train another objective. Sum the statistics over "
                "the ranks (`fisher_statistics(s, ds, reduce=state.dist.differentiable_sum)`, or "
                "subclass `FisherLoss`) and declare `whole_batch: ClassVar[bool] = True` (the "
                "engine then checks that the ranks agree), or declare `whole_batch = False` if a "
                "per-rank value whose mean is the whole batch's is meant (docs/plugins.md).",
                IMNNWarning, stacklevel=2)

    def _check_width(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        """One call of the summary network on two validation simulations, before training:
        a network that cannot take them, or returns anything but ``(n, n_summaries)``, is a
        ValidationError naming the argument (``network`` or ``models.main``)."""
        width = self.summaries_dim()
        what = "`network`" if self.network is not None else "The summary network (models.main)"
        shape = tuple(x.shape[1:])
        expected = (f"it must map simulations (n, {', '.join(map(str, shape))}) to summaries "
                    f"(n, {width})")
        if self.network is not None and not any(p.requires_grad for p in model.parameters()):
            raise ValidationError(f"`network` has no trainable parameters; {expected}.")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as error:  # noqa: BLE001 - reported with the shapes, chained
            raise ValidationError(
                f"{what} failed on two simulations of shape {shape} "
                f"({type(error).__name__}: {error}); {expected}.") from error
        finally:
            model.train(was_training)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != width \
                or out.shape[0] != len(x) or not out.is_floating_point():
            got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
            if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] != len(x):
                got = f"{tuple(out.shape)} for {len(x)} simulations"
            elif isinstance(out, torch.Tensor) and not out.is_floating_point():
                got = f"{got} of dtype {out.dtype}"
            raise ValidationError(
                f"{what} maps a simulation of shape {shape} to {got}, but n_summaries = "
                f"{width}: {expected}. Set the network's out_dim (or n_summaries) so that "
                "they agree.")

    def _collect(self, routine: Routine, phase: TrainingPhase, evaluation: Any,
                 names: list[str]) -> None:
        batch = self._first_batch(self._evaluation_sampler(phase), routine.state)
        stats = evaluation.statistics(routine.models["main"], batch)
        stats.check("the validation simulations after training")
        host = {f.name: getattr(stats, f.name).detach().double().cpu().numpy()
                for f in attrs.fields(type(stats))}
        self.F_, self.C_, self.invC_ = host["F"], host["C"], host["invC"]
        self.mu_, self.dmu_dtheta_ = host["mu"], host["dmu_dtheta"]
        self.invF_ = np.linalg.inv(self.F_)
        rows = [r for r in routine.history.rows if r.get("phase") in names]
        history: dict[str, list[float]] = {"epoch": list(range(len(rows)))}
        for key in HISTORY_KEYS:
            history[key] = [r.get(key, math.nan) for r in rows]
            history[f"val_{key}"] = [r.get(f"val_{key}", math.nan) for r in rows]
        self.history_ = history
        self.n_epochs_ = len(rows)
        seen = np.isfinite(np.asarray(history["val_det_F"], dtype=float))
        self.best_epoch_ = int(np.nanargmax(history["val_det_F"])) if seen.any() else None

    @property
    def det_F_history_(self) -> np.ndarray:
        """Validation det F per epoch (the early-stopping criterion)."""
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
        with intra_op_threads(self.threads):
            return self.routine_.apply(x).numpy()

    def _as_batch(self, data: Any, name: str) -> tuple[torch.Tensor, bool]:
        x = as_tensor(data, name, ndim=None)
        shape = tuple(self.input_shape_)
        if tuple(x.shape) == shape:
            return x.unsqueeze(0), True
        if tuple(x.shape[1:]) == shape:
            return x, False
        raise ValidationError(
            f"`{name}` must be one simulation of shape {shape} or many of shape (n, "
            f"{', '.join(map(str, shape))}), got {tuple(x.shape)}.")

    def estimate(self, data: Any) -> np.ndarray:
        """Quasi-maximum-likelihood θ̂ = θ_fid + F⁻¹ (∂μ/∂θ)ᵀ C⁻¹ (s − μ).

        ``data``: one simulation (shape ``input_shape_``) -> (p,), or (n, ...) -> (n, p).
        """
        self._check_fitted()
        x, single = self._as_batch(data, "data")
        with intra_op_threads(self.threads):
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

    def plot(self, expected_detF: float | None = None, path: str | Path | None = None,
             label: str = "") -> Any:
        """det F (train and validation), det C / det C⁻¹, Λ₂ and r per epoch."""
        self._check_fitted()
        return plot_history(self, expected_detF, path, label)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Weights + the full recipe (``to_dict(full=True)``) + fitted statistics (JSON),
        loadable with :meth:`load`."""
        self._check_fitted()
        fitted = {"F": self.F_, "C": self.C_, "invC": self.invC_, "mu": self.mu_,
                  "dmu_dtheta": self.dmu_dtheta_, "history": self.history_,
                  "best_epoch": self.best_epoch_, "n_epochs": self.n_epochs_,
                  "input_shape": list(self.input_shape_)}
        fitted = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in fitted.items()}
        return self.routine_.save(path, extra={"recipe": self.to_dict(full=True),
                                               "fitted": fitted})

    @classmethod
    def load(cls, path: str | Path, network: torch.nn.Module | None = None) -> IMNN:
        """A fitted IMNN from :meth:`save` (pass ``network`` again if it was a custom module).
        ``fit`` on it continues training; the save holds no simulations, so pass them again
        (``fit()`` without them says so)."""
        check_saved_recipe(cls, path)  # another recipe's save: named, with its loader
        routine = Routine.load(path, models=None if network is None else {"main": network})
        extra = routine.saved_extra
        # the full form reads back without the sections the shortcuts give, so set_params on
        # a shortcut still reaches the routine
        recipe = cls.from_dict(extra["recipe"])
        recipe.network = network
        fitted = extra["fitted"]
        recipe.routine_ = routine
        for key in ("F", "C", "invC", "mu", "dmu_dtheta"):
            setattr(recipe, f"{key}_", np.asarray(fitted[key], dtype=np.float64))
        recipe.invF_ = np.linalg.inv(recipe.F_)
        recipe.history_ = fitted["history"]
        recipe.best_epoch_ = fitted["best_epoch"]
        recipe.n_epochs_ = fitted["n_epochs"]
        recipe.input_shape_ = tuple(fitted["input_shape"])
        return recipe

    # ------------------------------------------------------------------ command line

    def run(self, data: list[np.ndarray], out_dir: Path, **fit_options: Any) -> dict[str, Any]:
        """``--data FIDUCIAL --data DERIVATIVE [--data VAL_FIDUCIAL --data VAL_DERIVATIVE]``;
        the derivative arrays are numerical (n_d, 2, p, ...) when ``delta_theta`` is set.
        ``fit_options`` go to :meth:`fit` (the CLI's ``--resume``: ``checkpoint``, ``resume``)."""
        if not data and self.draws_own_simulations():
            self.fit(**fit_options)
            return self._run_outputs(Path(out_dir))
        if len(data) not in (2, 4):
            raise ValidationError(
                f"imnn run takes 2 or 4 arrays (fiducial, derivative[, validation fiducial, "
                f"validation derivative]), or none with samplers that draw their own "
                f"simulations (no `with_source`), got {len(data)}.")
        key = "numerical_derivative" if self.delta_theta is not None else "derivative"
        arrays = {"fiducial": data[0], key: data[1]}
        if len(data) == 4:
            arrays.update({"validation_fiducial": data[2], f"validation_{key}": data[3]})
        self.fit(**arrays, **fit_options)
        return self._run_outputs(Path(out_dir))

    def _run_outputs(self, out_dir: Path) -> dict[str, Any]:
        # a folder of its own: the save replaces its directory whole, and out_dir also holds
        # the CLI's checkpoint (--resume)
        self.save(out_dir / MODEL_DIR)
        self.plot(path=out_dir / "imnn_history.png")
        return {"best_val_det_F": self.best_val_det_F_, "det_F": float(np.linalg.det(self.F_)),
                "F": self.F_.tolist(), "n_epochs": self.n_epochs_,
                "best_epoch": self.best_epoch_, "seconds": self.fit_seconds_}

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """The imnn tutorial: 10 Gaussian points, θ = (μ, Σ) at (0, 1), exact det F = 50."""
        n = 1000
        fiducial, derivative = gaussian_simulations(n, seed=0)
        val_fiducial, val_derivative = gaussian_simulations(n, seed=1)
        imnn = cls(n_summaries=2, theta_fid=DEMO_THETA_FID, epochs=150 if quick else 1000,
                   min_epochs=100)
        imnn.fit(fiducial, derivative, validation_fiducial=val_fiducial,
                 validation_derivative=val_derivative)
        oracle = oracle_det_F(val_fiducial, val_derivative)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        imnn.plot(expected_detF=DEMO_EXACT_DET_F, path=out_dir / "imnn_demo.png")
        best = imnn.best_val_det_F_
        # likelihood-free inference for a target drawn at θ_fid (docs/imnn.md)
        target = gaussian_simulator(torch.Generator().manual_seed(DEMO_TARGET_SEED),
                                    torch.tensor([DEMO_THETA_FID]))[0]
        prior = torch.distributions.Uniform(torch.tensor(DEMO_PRIOR[0]),
                                            torch.tensor(DEMO_PRIOR[1]))
        posteriors = {"Gaussian approximation": imnn.gaussian_posterior(target, prior),
                      "ABC": imnn.abc(target, prior, gaussian_simulator),
                      "PMC": imnn.pmc(target, prior, gaussian_simulator)}
        imnn.posterior_plot(posteriors, truth=DEMO_THETA_FID, labels=["μ", "Σ"],
                            path=out_dir / "imnn_posterior.png")
        exact_mean, exact_std = exact_posterior(target.numpy(), *DEMO_PRIOR)
        return {"best_val_det_F": round(best, 2), "exact_det_F": DEMO_EXACT_DET_F,
                "best_over_exact": round(best / DEMO_EXACT_DET_F, 3),
                "oracle_val_det_F": round(oracle, 2), "best_over_oracle": round(best / oracle, 3),
                "epochs": imnn.n_epochs_, "seconds": round(imnn.fit_seconds_, 1),
                "figure": str(out_dir / "imnn_demo.png"),
                "posterior_std": {name: np.round(post.std(), 3).tolist()
                                  for name, post in posteriors.items()},
                "exact_posterior_std": np.round(exact_std, 3).tolist(),
                "exact_posterior_mean": np.round(exact_mean, 3).tolist(),
                "posterior_figure": str(out_dir / "imnn_posterior.png")}


__all__ = ["IMNN", "IMNNWarning", "PRESETS", "MODE_DEFAULTS", "MODEL_DIR", "PosteriorSamples",
           "FRESH_SIMULATIONS_PRESET", "FRESH_SIMULATIONS_2K_PRESET",
           "gaussian_simulator", "gaussian_simulations", "oracle_det_F", "OracleSummaries",
           "DEMO_EXACT_DET_F", "DEMO_THETA_FID", "VALIDATION_SEED_OFFSET"]
