"""Neural mutual-information estimators: MINE, MI-NEE, InfoNCE, NWJ and SMILE.

Each recipe is ``fit(x, y)`` -> ``estimate()`` (nats, or ``units="bits"``), ``history_`` and
``plot()``.  All share :class:`NeuralMIEstimator`: standardise the inputs, split off a held-out
set, train a critic with the family's bound (blocks from the registry: ``marginal_pairs`` or
``reference`` sampler, ``joint_critic`` / ``separable_critic`` model, ``mine_loss`` ... loss),
early-stop on the held-out bound with the best weights restored, then evaluate the bound
deterministically over all off-diagonal pairs of the held-out set (see ``docs/mi.md``).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import numpy as np
import torch

from infoblocks.blocks.data import as_tensor, check_same_length, intra_op_threads, resolve_device
from infoblocks.blocks.errors import NotFittedError, ValidationError
from infoblocks.blocks.mutual_information import MAX_PAIRS, pair_scores, reference_scores
from infoblocks.blocks.phases import LR_SCHEDULES, OPTIMIZERS, TrainingPhase, Validation
from infoblocks.blocks.recipe import Recipe, transient_field
from infoblocks.blocks.routine import Routine
from infoblocks.blocks.validators import non_negative_int, one_of, positive, positive_int
from infoblocks.plugins.registry import get_registry

#: the seed problem's sample size (docs/mi.md, issue 5)
SEED_PROBLEM_N = 1000
#: validation pairs per held-out item (a fixed set: epoch-to-epoch changes are the critic's)
VALIDATION_PAIRS_FACTOR = 10
#: ... but at most this many pairs (large held-out sets: validation must stay cheap)
VALIDATION_MAX_PAIRS = 10_000
#: MI-NEE validation: reference draws per held-out item (three critics see them: kept small)
VALIDATION_REFERENCE_FACTOR = 4
#: reference draws per evaluation item for MI-NEE's final divergences (at least 20,000)
FINAL_REFERENCE_FACTOR = 20
#: an InfoNCE estimate above this fraction of log(batch) is reported as capped
INFONCE_CAP_WARNING = 0.8
#: the held-out estimate counts as "still rising" when its best is in the last 10 % of epochs
RISING_TAIL = 0.1


class MIConvergenceWarning(UserWarning):
    """Training ended while the estimate was still rising, or it fell from its best."""


@attrs.define(frozen=True)
class MIEstimate:
    """An estimate with a bootstrap interval; ``float(e)`` is the value."""

    value: float
    low: float
    high: float
    level: float
    units: str

    def __float__(self) -> float:
        return self.value


def _fraction(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValidationError(f"`{attribute.name}` must be in [0, 1) (0: no held-out set), "
                              f"got {value!r}.")


def _as_columns(a: Any, name: str) -> torch.Tensor:
    """A ``(n, d)`` float tensor; 1-D input is one feature (n,) -> (n, 1)."""
    t = as_tensor(a, name, ndim=(1, 2))
    return t.reshape(-1, 1) if t.ndim == 1 else t


def _standardize(t: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, std = t.mean(0), t.std(0)
    constant = (std <= 1e-12 * (1 + mean.abs())).nonzero().flatten().tolist()
    if constant:
        raise ValidationError(
            f"`{name}` column(s) {constant} are constant; a constant carries no information and "
            "cannot be standardised. Drop those columns.")
    return (t - mean) / std, mean, std


@attrs.define(kw_only=True)
class NeuralMIEstimator(Recipe):
    """Shared base of the neural MI recipes (not registered: it has no ``name``).

    Subclasses set ``loss`` (the registry name of the training loss), ``bound`` (what the
    final estimate evaluates) and may override the defaults below.
    """

    #: registry name of the training loss and of the held-out (validation) loss
    loss_name: ClassVar[str] = ""
    validation_loss_name: ClassVar[str] = ""
    #: the bound evaluated by the final all-pairs estimate (one of BOUNDS)
    bound: ClassVar[str] = "dv"

    critic: str = attrs.field(default="joint", validator=one_of("joint", "separable"))
    hidden_dims: tuple[int, ...] = attrs.field(default=(100, 100), converter=tuple)
    activation: str = "elu"
    embed_dim: int = attrs.field(default=32, validator=positive_int)
    init_std: float | None = None
    batch_size: int = attrs.field(default=100, validator=positive_int)
    epochs: int = attrs.field(default=400, validator=positive_int)
    batches_per_epoch: int | None = attrs.field(default=None, validator=optional(positive_int))
    learning_rate: float = attrs.field(default=1e-3, validator=positive)
    optimizer: str = attrs.field(default="adam", validator=one_of(*OPTIMIZERS))
    lr_schedule: str = attrs.field(default="none", validator=one_of(*LR_SCHEDULES))
    grad_clip: float | None = None
    test_fraction: float = attrs.field(default=0.5, validator=_fraction)
    patience: int | None = attrs.field(default=50, validator=optional(positive_int))
    validate_every: int = attrs.field(default=1, validator=positive_int)
    standardize: bool = True
    negatives: str = attrs.field(default="pairs", validator=one_of("pairs", "all_pairs"))
    marginal_factor: float = attrs.field(default=1.0, validator=positive)
    replacement: bool = False
    evaluate_on: str = attrs.field(default="test", validator=one_of("test", "all"))
    max_pairs: int = attrs.field(default=MAX_PAIRS, validator=positive_int)
    n_bootstrap: int = attrs.field(default=200, validator=positive_int)
    split_at: int | None = attrs.field(default=None, validator=optional(positive_int))
    seed: int = attrs.field(default=0, validator=non_negative_int)
    device: str = attrs.field(default="cpu")
    threads: int | None = attrs.field(default=1, validator=optional(positive_int))
    verbose: bool = False
    critic_module: Any = transient_field(default=None)

    routine_: Routine | None = attrs.field(init=False, default=None, repr=False)
    history_: list[dict[str, Any]] | None = attrs.field(init=False, default=None, repr=False)
    estimate_nats_: float | None = attrs.field(init=False, default=None, repr=False)
    best_epoch_: int | None = attrs.field(init=False, default=None, repr=False)
    n_train_: int | None = attrs.field(init=False, default=None, repr=False)
    n_eval_: int | None = attrs.field(init=False, default=None, repr=False)
    scores_: Any = attrs.field(init=False, default=None, repr=False)
    x_scale_: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)
    y_scale_: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)

    @device.validator
    def _check_device(self, attribute, value):
        if value not in ("cpu", "cuda", "auto") and not str(value).startswith("cuda:"):
            raise ValidationError(f"`device` must be 'cpu', 'cuda' or 'auto', got {value!r}.")

    # ------------------------------------------------------------------ building

    def _critic_spec(self, x_dim: int, y_dim: int) -> dict[str, Any]:
        common = {"x_dim": x_dim, "y_dim": y_dim, "hidden_dims": list(self.hidden_dims),
                  "activation": self.activation, "init_std": self.init_std}
        if self.critic == "separable":
            return {"name": "separable_critic", "embed_dim": self.embed_dim, **common}
        return {"name": "joint_critic", **common}

    def _models(self, x_dim: int, y_dim: int) -> dict[str, Any]:
        if self.critic_module is not None:
            return {"critic": self.critic_module}
        return {"critic": get_registry().build("model", self._critic_spec(x_dim, y_dim))}

    def _loss_spec(self) -> dict[str, Any]:
        return {"name": self.loss_name, "negatives": self.negatives}

    def _validation_loss_spec(self) -> dict[str, Any]:
        return {**self._loss_spec(), "name": self.validation_loss_name}

    def _batch_count(self, n_train: int) -> int:
        return self.batches_per_epoch or max(1, n_train // self.batch_size)

    def _train_sampler(self, n_train: int) -> Any:
        return get_registry().build("sampler", {
            "name": "marginal_pairs", "batch_size": self.batch_size,
            "batches_per_epoch": self._batch_count(n_train),
            "marginal_factor": self.marginal_factor, "replacement": self.replacement,
            "index_key": "train_index"})

    def _validation_sampler(self, n_test: int) -> Any:
        if self._uses_all_pairs():  # b×b blocks over the held-out set, the same every epoch
            return get_registry().build("sampler", {
                "name": "marginal_pairs", "batch_size": min(self.batch_size, n_test),
                "index_key": "test_index", "fixed": True, "fixed_seed": self.seed})
        return get_registry().build("sampler", {
            "name": "marginal_pairs", "batch_size": None, "index_key": "test_index",
            "marginal_factor": min(VALIDATION_PAIRS_FACTOR, VALIDATION_MAX_PAIRS / n_test),
            "replacement": True, "fixed": True,
            "fixed_seed": self.seed})

    def _uses_all_pairs(self) -> bool:
        return self.negatives == "all_pairs"

    def build(self, x: torch.Tensor, y: torch.Tensor, train_index: torch.Tensor,
              test_index: torch.Tensor) -> Routine:
        """The routine: dataset (x, y), critic model(s), one training phase with held-out
        validation on ``val_mi`` (max) when ``test_index`` is not empty."""
        registry = get_registry()
        validation = None
        if len(test_index):
            validation = Validation(sampler=self._validation_sampler(len(test_index)),
                                    loss=registry.build("loss", self._validation_loss_spec()),
                                    metric="mi", mode="max", every=self.validate_every)
        phase = TrainingPhase(
            name="train", epochs=self.epochs, sampler=self._train_sampler(len(train_index)),
            loss=registry.build("loss", self._loss_spec()), optimizer=self.optimizer,
            learning_rate=self.learning_rate, lr_schedule=self.lr_schedule,
            grad_clip=self.grad_clip, validation=validation,
            optimizer_options={"fused": True} if self.optimizer != "sgd" else {},
            patience=self.patience if validation is not None else None, restore_best=True)
        return Routine(dataset={"x": x, "y": y}, models=self._models(x.shape[1], y.shape[1]),
                       phases=[phase], constants={"train_index": train_index,
                                                  "test_index": test_index},
                       device=self.device, seed=self.seed, verbose=self.verbose)

    # ------------------------------------------------------------------ fitting

    def _validate_input(self, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _as_columns(x, "x"), _as_columns(y, "y")
        n = check_same_length(x=x, y=y)
        for name, t in (("x", x), ("y", y)):
            _standardize(t, name)  # constant columns are a data error, reported first
        n_test = int(round(self.test_fraction * n))
        n_train = n - n_test
        if n_train < 2 or (self.test_fraction > 0 and n_test < 2):
            raise ValidationError(
                f"`x` and `y` have {n} samples: too few for a training set of {n_train} and a "
                f"held-out set of {n_test} (test_fraction={self.test_fraction}); pass more "
                "samples or lower test_fraction.")
        if self.batch_size > n_train and not self.replacement:
            raise ValidationError(
                f"`batch_size` = {self.batch_size} exceeds the {n_train} training samples "
                f"({n} samples × (1 − test_fraction={self.test_fraction})); lower batch_size.")
        return x, y

    def fit(self, x: Any, y: Any) -> NeuralMIEstimator:
        """Train the critic on ``x`` (n, d_x) and ``y`` (n, d_y) (1-D: one feature) and compute
        the final estimate; returns ``self``."""
        x, y = self._validate_input(x, y)
        resolve_device(self.device)
        with intra_op_threads(self.threads):  # small critics: one thread is fastest (docs/mi.md)
            return self._fit(x, y)

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> NeuralMIEstimator:
        if self.standardize:
            x, _, self.x_scale_ = _standardize(x, "x")
            y, _, self.y_scale_ = _standardize(y, "y")
        else:
            self.x_scale_ = torch.ones(x.shape[1])
            self.y_scale_ = torch.ones(y.shape[1])
        n = len(x)
        n_test = int(round(self.test_fraction * n))
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(n))
        test_index, train_index = order[:n_test], order[n_test:]
        self.n_train_ = n - n_test
        self.n_eval_ = n_test if n_test and self.evaluate_on == "test" else n
        routine = self.build(x, y, train_index, test_index)
        routine.train()
        self.routine_ = routine
        self.history_ = [dict(row) for row in routine.history.rows]
        eval_index = test_index if n_test and self.evaluate_on == "test" else order
        device = routine.device
        self._final_estimate(routine, x[eval_index].to(device), y[eval_index].to(device))
        self._diagnose()
        return self

    def _final_estimate(self, routine: Routine, x: torch.Tensor, y: torch.Tensor) -> None:
        self.scores_ = pair_scores(routine.models["critic"], x, y, max_pairs=self.max_pairs)
        self.estimate_nats_ = self.scores_.bound(self.bound, **self._bound_options())

    def _bound_options(self) -> dict[str, Any]:
        return {}

    def _diagnose(self) -> None:
        """Convergence warnings from the held-out (else training) estimate per epoch."""
        key = "val_mi" if any("val_mi" in r for r in self.history_) else "mi"
        values = [r[key] for r in self.history_ if key in r]
        epochs = [r["epoch"] for r in self.history_ if key in r]
        if len(values) < 5:
            return
        best = int(np.nanargmax(values))
        self.best_epoch_ = epochs[best]
        ran_out = len(self.history_) >= self.epochs
        if ran_out and best >= (1 - RISING_TAIL) * (len(values) - 1):
            warnings.warn(
                f"{type(self).__name__}: the {'held-out' if key == 'val_mi' else 'training'} "
                f"estimate was still rising at the last epoch ({self.epochs}); increase `epochs` "
                "(or the learning rate) for a converged estimate.", MIConvergenceWarning,
                stacklevel=4)
        tail = float(np.mean(values[-max(1, len(values) // 10):]))
        if key == "mi" and values[best] - tail > max(0.1, 0.1 * abs(values[best])):
            warnings.warn(
                f"{type(self).__name__}: the training estimate fell from its best "
                f"{values[best]:.3f} to {tail:.3f} nats; training is unstable: lower "
                "`learning_rate` or keep a held-out set (test_fraction > 0).",
                MIConvergenceWarning, stacklevel=4)

    # ------------------------------------------------------------------ results

    def estimate(self, units: str = "nats", ci: float | None = None) -> float | MIEstimate:
        """The final estimate in ``units`` ("nats" or "bits").  With ``ci`` (e.g. 0.95) an
        :class:`MIEstimate` with a percentile bootstrap interval over the evaluation items."""
        self._check_fitted()
        if units not in ("nats", "bits"):
            raise ValidationError(f"`units` must be 'nats' or 'bits', got {units!r}.")
        scale = 1.0 if units == "nats" else 1.0 / math.log(2.0)
        value = self.estimate_nats_ * scale
        if ci is None:
            return value
        if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < ci < 1:
            raise ValidationError(f"`ci` must be a level in (0, 1), e.g. 0.95, got {ci!r}.")
        low, high = self._interval(ci)
        return MIEstimate(value, low * scale, high * scale, float(ci), units)

    def _interval(self, level: float) -> tuple[float, float]:
        return self.scores_.bootstrap(self.bound, level=level, n_boot=self.n_bootstrap,
                                      seed=self.seed, **self._bound_options())

    def plot(self, truth: float | None = None, path: str | Path | None = None) -> Any:
        """Training curve: the batch and held-out estimates per epoch, the final estimate and,
        when given, the true value (nats).  Returns the matplotlib Figure; writes a PNG to
        ``path`` when given."""
        self._check_fitted()
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        ax = fig.add_subplot()
        rows = self.history_
        ax.plot([r["epoch"] for r in rows], [r["mi"] for r in rows], lw=0.8, alpha=0.6,
                label="training batches")
        val = [(r["epoch"], r["val_mi"]) for r in rows if "val_mi" in r]
        if val:
            ax.plot(*zip(*val), lw=1.2, label="held-out")
        ax.axhline(self.estimate_nats_, color="C2", ls="-", lw=1.2,
                   label=f"final estimate {self.estimate_nats_:.3f}")
        if truth is not None:
            ax.axhline(truth, color="k", ls="--", lw=1.0, label=f"truth {truth:.3f}")
        if self.best_epoch_ is not None:
            ax.axvline(self.best_epoch_, color="0.6", ls=":", lw=1.0, label="restored epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mutual information (nats)")
        ax.set_title(f"{type(self).__name__} ({self.bound} bound)")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
        return fig

    def _check_fitted(self, attribute: str = "estimate_nats_") -> None:
        if getattr(self, attribute, None) is None:
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(x, y) "
                                 "first.")

    def summary_dict(self) -> dict[str, Any]:
        """JSON-able numbers of the fit."""
        interval = self.estimate(ci=0.95)
        return {"recipe": self.name, "estimate_nats": self.estimate_nats_,
                "estimate_bits": self.estimate(units="bits"),
                "ci95_nats": [interval.low, interval.high], "n_train": self.n_train_,
                "n_eval": self.n_eval_, "best_epoch": self.best_epoch_,
                "epochs_run": len(self.history_)}

    # ------------------------------------------------------------------ command line / demo

    def run(self, data: list[np.ndarray], out_dir: Path) -> dict[str, Any]:
        """``infoblocks run``: ``--data X.npy --data Y.npy`` (or one array split at column
        ``split_at``); writes the routine, ``mi_training.png`` and returns the summary."""
        if len(data) == 2:
            x, y = data
        elif len(data) == 1 and self.split_at is not None:
            arr = _as_columns(data[0], "data")
            if not 0 < self.split_at < arr.shape[1]:
                raise ValidationError(f"`split_at` = {self.split_at} must lie inside the "
                                      f"{arr.shape[1]} columns of the data.")
            x, y = arr[:, :self.split_at], arr[:, self.split_at:]
        else:
            raise ValidationError(
                f"{self.name} needs two arrays (--data X.npy --data Y.npy), or one array and "
                f"`split_at` (the first column of Y); got {len(data)} array(s).")
        self.fit(x, y)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.routine_.save(out_dir, extra=self.to_dict())
        self.plot(path=out_dir / "mi_training.png")
        summary = self.summary_dict()
        (out_dir / "estimate.json").write_text(json.dumps(summary, indent=2))
        return summary

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """The seed problem (2-D Gaussian, ρ = 1 − 0.19·U, n = 1000) for seeds 0, 1, 2 (seed 0
        only when ``quick``); writes ``mi_<name>_demo.png``; returns truths and estimates."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for seed in ((0,) if quick else (0, 1, 2)):
            x, y, truth = seed_problem(seed)
            est = cls(seed=seed).fit(x, y)
            rows.append({"seed": seed, "truth": truth, "estimate": est.estimate()})
            if seed == 0:
                est.plot(truth=truth, path=out_dir / f"mi_{cls.name}_demo.png")
        bias = [r["estimate"] - r["truth"] for r in rows]
        return {"problem": "2-D Gaussian, rho = 1 - 0.19 U, n = 1000", "runs": rows,
                "mean_bias_nats": float(np.mean(bias)),
                "figure": str(out_dir / f"mi_{cls.name}_demo.png")}


def seed_problem(seed: int, n: int = SEED_PROBLEM_N) -> tuple[np.ndarray, np.ndarray, float]:
    """The seed problem: ρ = 1 − 0.19·U(0, 1) from ``default_rng(seed)``, then n draws of a
    2-D Gaussian with correlation ρ from the same generator.  Returns x (n, 1), y (n, 1) and
    the true MI −½ ln(1 − ρ²) in nats."""
    rng = np.random.default_rng(seed)
    rho = 1.0 - 0.19 * rng.uniform()
    data = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=n)
    return data[:, :1], data[:, 1:], float(-0.5 * np.log(1.0 - rho ** 2))


# ====================================================================== the recipes


@attrs.define(kw_only=True)
class MINE(NeuralMIEstimator):
    """MINE: Donsker–Varadhan bound with the moving-average gradient correction.

    I ≥ E_P[t] − log E_{P_X×P_Y}[e^t]; product-of-marginals pairs by index resampling; the
    moving average of E[e^t] is kept in the log domain (``ma_rate`` weights the newest batch).
    """

    name: ClassVar[str] = "mine"
    summary: ClassVar[str] = "MINE: Donsker-Varadhan mutual-information estimate (nats)"
    loss_name: ClassVar[str] = "mine_loss"
    validation_loss_name: ClassVar[str] = "dv"
    bound: ClassVar[str] = "dv"
    ma_rate: float = 0.01

    def _loss_spec(self):
        return {**super()._loss_spec(), "ma_rate": self.ma_rate}

    def _validation_loss_spec(self):
        return {"name": "dv", "negatives": self.negatives}


@attrs.define(kw_only=True)
class NWJ(NeuralMIEstimator):
    """NWJ: I ≥ E_P[t] − e^{−1} E_{P_X×P_Y}[e^t] (unbiased gradients, higher variance)."""

    name: ClassVar[str] = "nwj"
    summary: ClassVar[str] = "NWJ: f-divergence mutual-information estimate (nats)"
    loss_name: ClassVar[str] = "nwj_loss"
    validation_loss_name: ClassVar[str] = "nwj_loss"
    bound: ClassVar[str] = "nwj"


@attrs.define(kw_only=True)
class InfoNCE(NeuralMIEstimator):
    """InfoNCE: contrastive bound over in-batch negatives, capped at log(batch_size)."""

    name: ClassVar[str] = "infonce"
    summary: ClassVar[str] = "InfoNCE: contrastive mutual-information estimate, <= log(batch)"
    loss_name: ClassVar[str] = "infonce_loss"
    validation_loss_name: ClassVar[str] = "infonce_loss"
    bound: ClassVar[str] = "infonce"
    critic: str = attrs.field(default="separable",
                              validator=one_of("joint", "separable"))
    batch_size: int = attrs.field(default=128, validator=positive_int)
    negatives: str = attrs.field(default="all_pairs", validator=one_of("all_pairs",))

    def _loss_spec(self):
        return {"name": self.loss_name}

    def fit(self, x, y):
        super().fit(x, y)
        cap = math.log(self.batch_size)
        if self.estimate_nats_ > INFONCE_CAP_WARNING * cap:
            warnings.warn(
                f"InfoNCE: the estimate {self.estimate_nats_:.3f} nats is close to its cap "
                f"log(batch_size) = {cap:.3f}; the true MI may be larger. Increase batch_size or "
                "use MINE / SMILE.", MIConvergenceWarning, stacklevel=2)
        return self


@attrs.define(kw_only=True)
class SMILE(NeuralMIEstimator):
    """SMILE: DV with the partition term clipped to [e^{−τ}, e^{τ}], trained with the JS
    gradient; ``clip`` = τ."""

    name: ClassVar[str] = "smile"
    summary: ClassVar[str] = "SMILE: clipped Donsker-Varadhan mutual-information estimate (nats)"
    loss_name: ClassVar[str] = "smile_loss"
    validation_loss_name: ClassVar[str] = "smile_loss"
    bound: ClassVar[str] = "smile"
    clip: float = attrs.field(default=5.0, validator=positive)

    def _loss_spec(self):
        return {**super()._loss_spec(), "clip": self.clip}

    def _bound_options(self):
        return {"clip": self.clip}


@attrs.define(kw_only=True)
class MINEE(NeuralMIEstimator):
    """MI-NEE: I = D(P_XY‖P_X'×P_Y') − D(P_X‖P_X') − D(P_Y‖P_Y') against i.i.d. draws from a
    known reference (``"gaussian"``: the data's mean and covariance per variable, or
    ``"uniform"``: its bounding box); three critics.  Also estimates the entropies
    h(X) = h(P_X') − D(P_X‖P_X') (in the units of the input, standardisation undone)."""

    name: ClassVar[str] = "minee"
    summary: ClassVar[str] = "MI-NEE: mutual information from three reference divergences (nats)"
    loss_name: ClassVar[str] = "minee_loss"
    validation_loss_name: ClassVar[str] = "minee_loss"
    bound: ClassVar[str] = "dv"
    reference: str = attrs.field(default="gaussian",
                                 validator=one_of("gaussian", "uniform"))
    # measured on R⁶ (truth 4.98): ma_rate 1 / factor 1 / patience 50 stop at 0.37× the truth,
    # the moving average + 4 reference draws per row + patience 100 reach 1.00× (docs/mi.md)
    reference_factor: float = attrs.field(default=4.0, validator=positive)
    ma_rate: float = 0.01
    patience: int | None = attrs.field(default=100, validator=optional(positive_int))
    reference_fn: Any = transient_field(default=None)

    divergences_: dict[str, float] | None = attrs.field(init=False, default=None, repr=False)
    entropies_: dict[str, float | None] | None = attrs.field(init=False, default=None,
                                                             repr=False)

    def _models(self, x_dim, y_dim):
        registry = get_registry()
        marginal = {"name": "mlp", "out_dim": 1, "hidden_dims": list(self.hidden_dims),
                    "activation": self.activation}
        models = super()._models(x_dim, y_dim)
        models["critic_x"] = registry.build("model", {**marginal, "in_dim": x_dim})
        models["critic_y"] = registry.build("model", {**marginal, "in_dim": y_dim})
        return models

    def _loss_spec(self):
        return {"name": "minee_loss", "ma_rate": self.ma_rate}

    def _validation_loss_spec(self):
        return {"name": "minee_loss", "ma_rate": 1.0}

    def _reference_spec(self) -> Any:
        return self.reference_fn if self.reference_fn is not None else self.reference

    def _train_sampler(self, n_train):
        return get_registry().build("sampler", {
            "name": "reference", "batch_size": self.batch_size,
            "batches_per_epoch": self._batch_count(n_train), "reference": self._reference_spec(),
            "reference_factor": self.reference_factor, "replacement": self.replacement,
            "index_key": "train_index"})

    def _validation_sampler(self, n_test):
        return get_registry().build("sampler", {
            "name": "reference", "batch_size": None, "reference": self._reference_spec(),
            "reference_factor": min(VALIDATION_REFERENCE_FACTOR, VALIDATION_MAX_PAIRS / n_test),
            "index_key": "test_index",
            "fixed": True, "fixed_seed": self.seed})

    def build(self, x, y, train_index, test_index):
        routine = super().build(x, y, train_index, test_index)
        # one reference for every sampler (fitted to all data), so the divergences agree
        phase = routine.phases[0]
        phase.sampler.fit_reference(x, y)
        if phase.validation is not None:
            phase.validation.sampler.reference_x = phase.sampler.reference_x
            phase.validation.sampler.reference_y = phase.sampler.reference_y
        return routine

    def _final_estimate(self, routine, x, y):
        sampler = routine.phases[0].sampler
        generator = torch.Generator(device=routine.device).manual_seed(self.seed + 1)
        m = max(FINAL_REFERENCE_FACTOR * len(x), 20_000)
        xr, yr = sampler.draw(m, generator, routine.device)
        models = routine.models
        self.scores_ = {
            "d_xy": reference_scores(models["critic"], (x, y), (xr, yr)),
            "d_x": reference_scores(models["critic_x"], (x,), (xr,)),
            "d_y": reference_scores(models["critic_y"], (y,), (yr,)),
        }
        d = {k: s.divergence() for k, s in self.scores_.items()}
        self.divergences_ = d
        self.estimate_nats_ = d["d_xy"] - d["d_x"] - d["d_y"]
        log_scale_x = float(torch.log(self.x_scale_.double()).sum())
        log_scale_y = float(torch.log(self.y_scale_.double()).sum())
        hx_ref, hy_ref = sampler.reference_x.entropy(), sampler.reference_y.entropy()
        ent: dict[str, float | None] = {"h_x": None, "h_y": None, "h_xy": None}
        if hx_ref is not None and hy_ref is not None:
            ent["h_x"] = hx_ref - d["d_x"] + log_scale_x
            ent["h_y"] = hy_ref - d["d_y"] + log_scale_y
            ent["h_xy"] = hx_ref + hy_ref - d["d_xy"] + log_scale_x + log_scale_y
        self.entropies_ = ent

    def _interval(self, level):
        generator = torch.Generator().manual_seed(self.seed)
        s = self.scores_
        n, m = s["d_x"].data.numel(), s["d_x"].reference.numel()
        i = torch.randint(n, (self.n_bootstrap, n), generator=generator)
        j = torch.randint(m, (self.n_bootstrap, m), generator=generator)

        def boot(score):
            data, ref = score.data.double().cpu(), score.reference.double().cpu()
            return data[i].mean(1) - (torch.logsumexp(ref[j], 1) - math.log(m))

        values = boot(s["d_xy"]) - boot(s["d_x"]) - boot(s["d_y"])
        alpha = (1 - level) / 2
        lo, hi = torch.quantile(values, torch.tensor([alpha, 1 - alpha], dtype=values.dtype))
        return float(lo), float(hi)

    def summary_dict(self):
        return {**super().summary_dict(), "divergences_nats": self.divergences_,
                "entropies_nats": self.entropies_}


__all__ = ["NeuralMIEstimator", "MINE", "MINEE", "InfoNCE", "NWJ", "SMILE", "MIEstimate",
           "MIConvergenceWarning", "seed_problem"]
