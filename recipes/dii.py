"""DII: the Differentiable Information Imbalance (Wild et al. 2024), DADApy-compatible.

Learns one weight per feature of space A (or per group of features) so that distances in
A(w) predict the neighbourhoods of space B:

    DII(A(w) → B) = 2 / N² · Σ_{i≠j} c_ij(w) r^B_ij,   c_ij = softmax_{j≠i}(−d^A_ij(w)² / λ_i)

with d^A_ij(w)² = Σ_f w_f² Δ_f² (periodic-aware) and r^B_ij the rank of j among i's
neighbours in B.  Training, the final DII in chunks, the classic information imbalance and
greedy / l1 feature selection are built on the blocks of :mod:`infoblocks.blocks.imbalance`
(assembled through the registry) and run by the generic Routine / TrainingPhase engine.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import numpy as np
import torch

from infoblocks.blocks.data import (as_rows, as_tensor, check_same_length,
                                    intra_op_threads)
from infoblocks.blocks.assembly import block_fields
from infoblocks.blocks.base import naming_blocks
from infoblocks.blocks.errors import (ConfigError, NotFittedError, NumericalError,
                                      ValidationError)
from infoblocks.blocks.imbalance import (CHUNK_ELEMENTS, LAMBDA_FACTOR, FeatureWeightsHistory,
                                         check_k_below_points, data_unit, periods_tensor,
                                         recorded_weights, weights_unit)
from infoblocks.blocks.recipe import Recipe
from infoblocks.blocks.phases import _optimizer_name
from infoblocks.blocks.schedules import schedule_data, schedule_spec
from infoblocks.blocks.routine import Routine
from infoblocks.blocks.validators import device as valid_device
from infoblocks.blocks.validators import (non_negative, non_negative_int, one_of, positive,
                                          positive_int)

from .dii_arguments import (_block_spec, _fill, _in_unit, _loss_in_units, _params_groups,
                            _params_groups_entries, _params_init, _params_init_entries,
                            _periods, _periods_entries, _softmax_in_unit, _with_periods)
from .dii_continuation import check_warm_start_shapes, continue_routine, weights_history
from .dii_evaluation import DIIEvaluation
from .dii_persistence import DIIPersistence

#: the DADApy tutorial problem: B = SCALES ⊙ A, A standard normal (N = 500, seed 0)
DEMO_SCALES = (10.0, 3.0, 1.0, 30.0, 7.3)
DEMO_POINTS = 500
#: reference weights (rescaled so that the largest is 30) and final DII, DADApy 0.3.4
DEMO_TARGETS = {
    "a": {"weights": (9.99, 2.95, 0.89, 30.0, 7.31), "final_dii": 0.0047},
    "b": {"weights": (10.04, 2.86, 0.57, 30.0, 7.3), "final_dii": 0.0112},
}
#: name of the user distance matrix of B among the routine's global values
DISTANCES_B_KEY = "distances_B"
#: the default distance of both spaces: weighted squared Euclidean, periodic-aware
DISTANCE = "weighted_sqeuclidean"
#: the "exp" learning-rate decay of the reference implementation: halve every 10 steps
EXP_DECAY_RATE, EXP_DECAY_STEPS = 0.5, 10


# ----------------------------------------------------------------------------- field helpers


def _check_distance_matrix(dist: torch.Tensor) -> None:
    """Refuse a ``distances_B`` that is not a distance matrix: DII ranks B's neighbours by
    increasing distance, so negated distances or a similarity / kernel matrix (larger = closer)
    silently reverse every neighbourhood.  Round-off (tiny negative squared distances, a
    diagonal of 1e-7) passes."""
    scale = float(dist.abs().max()) if dist.numel() else 0.0
    if scale == 0.0:
        return
    low = float(dist.min())
    if low < -1e-4 * scale:
        raise ValidationError(
            f"`distances_B` has negative entries (down to {low:.3g}); it must be a distance "
            "matrix: d(i, j) >= 0, 0 on the diagonal, larger = farther. Negated distances or "
            "log-similarities reverse the neighbourhoods: pass the distances themselves."
        )
    diag = dist.diagonal()
    if float(diag.max()) <= 1e-6 * scale:
        return
    # a point is at distance 0 from itself, below (almost) every other entry of its row; a
    # similarity matrix has its largest entries there
    above = 0
    for start in range(0, dist.shape[0], 1024):
        rows = dist[start:start + 1024]
        above += int(((rows < diag[start:start + 1024, None]).sum(1)
                      > (dist.shape[1] - 1) / 2).sum())
    if above > dist.shape[0] / 2:
        raise ValidationError(
            f"`distances_B` is not a distance matrix: in {above} of its {dist.shape[0]} rows "
            "the diagonal d(i, i) is larger than most of the row, but a point is at distance 0 "
            "from itself. Is it a similarity / kernel matrix (larger = closer)? Pass distances, "
            "e.g. sqrt(2 - 2 K) for a kernel K with K(i, i) = 1, or -log(K)."
        )


def _check_varies(b: Any, distances: bool = False) -> None:
    """Refuse a space B without neighbours: ``data_B`` the same row for every point, or
    ``distances_B`` (``distances``) the same value for every pair — the rank in B of a
    point's neighbour in A is then a tie among all points, and the DII (0.92 with weights
    that wander, baduser19) means nothing."""
    if not isinstance(b, torch.Tensor) or b.shape[0] < 2:
        return  # (rows on disk: not read whole here)
    if distances:
        off = b[~torch.eye(b.shape[0], dtype=torch.bool, device=b.device)]
        if bool((off == off[0]).all()):
            raise ValidationError(
                f"`distances_B` is {float(off[0]):g} for every pair of points: no point has "
                "nearer neighbours than others in space B, so the DII (the rank in B of each "
                "point's nearest neighbour in A) is meaningless. Pass distances that vary.")
    elif bool((b == b[0]).all()):
        raise ValidationError(
            f"`data_B` is the same row for all {b.shape[0]} points: every point is at distance "
            "0 from every other in space B, so none has a nearest neighbour there and the DII "
            "(the rank in B of each point's nearest neighbour in A) is meaningless. Pass "
            "features of B that vary.")


#: data_A's features whose standard deviations span more than this factor are reported: the
#: weights start equal, so the widest features decide the neighbourhoods and the steps (a
#: params_init ∝ 1 / std does not mend it: the gradient steps stay in each feature's unit,
#: DII 0.096 on the case below). Measured (B = [A0, 3·A3] + noise, 10 nuisance features,
#: N = 500, the defaults, seeds 0-1; weights per standard deviation): an informative feature
#: 10× narrower than the rest: DII 0.035-0.087 instead of 0.007, its weight ratio 1.4-1.5
#: instead of 3; 30× narrower: DII 0.77, the feature missed; a nuisance feature 10× wider:
#: max nuisance / min informative weight 0.45-0.51 (0.04 at 1×), 30×: 2.4-5.1 (geninf22-5:
#: A0 × 100, A3 × 0.01 gave near-uniform weights and DII 0.80, as DADApy does)
FEATURE_SPREAD_WARNING = 10.0


#: the weights count as still moving when, at the last epoch's rate of change slowing as it
#: did over the last 10 % of epochs (geometrically), they would move by more than this
#: fraction of the largest weight: B = [A0, 3·A3] + noise (geninf22-6), the defaults (200 SGD
#: epochs) project 0.113 / 0.088 / not slowing (seeds 0-2; w3 / w0 2.20 / 2.11 / 2.10, the
#: truth 3: 0.12 of the largest weight away), 500 epochs 0.018 (2.64), 1,000 0.003 (2.81);
#: the tutorial's configurations (a), (b) 0.000, its data with the defaults 0.008 (actual
#: 0.008) — while the DII is flat (0.0068 -> 0.0067)
MOVING_WEIGHTS = 0.05
#: ... and the message says the DII has flattened when it moved by at most this fraction over
#: those epochs
FLAT_DII = 0.02


class DIIWarning(UserWarning):
    """A DII fit whose weights may not mean what they seem: data_A's features in very
    different units, or weights still moving at the last epoch."""


def _warn_feature_spread(a: Any) -> None:
    """Warn when data_A's features' standard deviations span more than
    :data:`FEATURE_SPREAD_WARNING`; constant features are left out."""
    std = (a.moments()[1] if hasattr(a, "moments") else
           torch.as_tensor(a).detach().to(torch.float64).std(dim=0, correction=0))
    scale = std.to(torch.float64).cpu().numpy()
    varying = np.flatnonzero(np.isfinite(scale) & (scale > 0))
    if len(varying) < 2:
        return
    narrow, wide = varying[np.argmin(scale[varying])], varying[np.argmax(scale[varying])]
    ratio = scale[wide] / scale[narrow]
    if ratio <= FEATURE_SPREAD_WARNING:
        return
    warnings.warn(
        f"DII: data_A's features differ in spread by {ratio:.3g}× (standard deviation "
        f"{scale[narrow]:.3g} for feature {narrow}, {scale[wide]:.3g} for feature {wide}; "
        f"more than {FEATURE_SPREAD_WARNING:g}× is reported): the weights start equal, so the widest "
        "features decide the neighbourhoods and the gradient steps, and an informative narrow "
        "feature may keep a small weight (30× narrower: DII 0.77 instead of 0.007, the feature "
        "missed). Standardise data_A's columns first (data_A / data_A.std(0), and periods_A "
        "by the same factors): the weights then compare features per standard deviation "
        "(docs/dii.md, \"Units of the data\").",
        DIIWarning, stacklevel=3)


#: data_A's unit (``data_unit``, with the initial weights' scale) outside this range, seen as
#: given by a distance of A without a ``unit`` field, is reported.  Measured (author26-10:
#: 10 N(0, 1) features, B = [3·A0, 2·A2, A5], 150 epochs, k 5 -> 1, a plugin squared
#: distance without `unit`; the built-in gives [3, 0, 2, 0, 0, 1], DII 0.0045 at every
#: scale): A × 1e-4 ... 1e10 the same weights; × 1e-5 DII 0.07 (SGD) / 0.10 (Adam), × 1e-6
#: 0.92 / 0.97 (the squared distances under the λ floor, 1e-12), × 1e12 0.25 (near-uniform
#: weights: past the self-distance sentinel, 1e20)
UNITLESS_RANGE = (1e-4, 1e9)


def _distance_names(loss: Any, key: str) -> list[Any]:
    """The names of the ``key`` distances (``distance_A``) of a loss spec, compound parts too."""
    if not isinstance(loss, dict):
        return []
    names = [_block_name_of(loss.get(key))] if key in loss else []
    for part in loss.get("losses") or []:
        names += _distance_names(part, key)
    return names


def _block_name_of(spec: Any) -> Any:
    return spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, dict) else None


def _warn_unitless(spec: dict[str, Any], unit: float) -> None:
    """Warn when data_A's ``unit`` is outside :data:`UNITLESS_RANGE` and a distance of A (the
    loss's, the evaluation's) has no ``unit`` field to measure it in: it sees the data as
    given, and its squared distances sink under the λ floor or pass the self-distance
    sentinel (author26-10: a plugin distance at A × 1e-6 gave final DII 0.975, wrong weights,
    silently)."""
    low, high = UNITLESS_RANGE
    if low <= unit <= high:
        return
    names = [n for phase in spec.get("phases") or [] for n in
             _distance_names(phase.get("loss"), "distance_A")]
    names.append(_block_name_of((spec.get("evaluation") or {}).get("distance_A")))
    unitless = [n for n in dict.fromkeys(names)
                if (fields := block_fields("distance", n)) is not None and "unit" not in fields]
    if not unitless:
        return
    which = " and ".join(repr(n) for n in unitless)
    why = ("its squared distances fall under the λ floor (1e-12): A × 1e-6 gave a final DII of "
           "0.97 instead of 0.0045 and wrong weights" if unit < low else
           "its squared distances pass the self-distance sentinel (1e20) and float32's range: "
           "A × 1e12 gave near-uniform weights and a DII of 0.25 instead of 0.0045")
    warnings.warn(
        f"DII: data_A comes in units of about {unit:.3g} (the root mean square of its "
        f"features' standard deviations), outside [{low:g}, {high:g}], and distance_A = "
        f"{which} has no `unit` field, so it sees the data as given: {why}. Give the distance "
        "an attrs field `unit` and a class variable `unit_power` (the recipe then fills in "
        f"the unit; docs/dii.md, \"Units of the data\"), or rescale data_A (data_A / {unit:.3g}, "
        "periods_A by the same factor).",
        DIIWarning, stacklevel=3)


def _warn_if_weights_moving(history: np.ndarray, dii: np.ndarray) -> None:
    """Warn when the weights (``weights_history_``, (epochs + 1, P)) are still moving at the
    last epoch: the last epoch's change (relative to the largest weight), continued with the
    geometric slowing of the last 10 % of epochs (not slowing: for as many epochs again),
    exceeds :data:`MOVING_WEIGHTS`."""
    epochs = len(history) - 1
    largest = np.abs(history).max(1, keepdims=True)
    if epochs < 10 or not np.all(np.isfinite(history)) or not np.all(largest > 0):
        return
    change = np.abs(np.diff(history / largest, axis=0)).max(1)  # (epochs,) per epoch
    window = epochs // 10
    last, before = change[-1], change[-1 - window]
    rate = (last / before) ** (1 / window) if before > 0 else math.inf
    # (not slowing: as many epochs again at the last epoch's rate)
    remaining = last * rate / (1 - rate) if rate < 1 else last * epochs
    if remaining <= MOVING_WEIGHTS:
        return
    ahead = (f"and, slowing as over the last {window} epochs, would move by about "
             f"{100 * remaining:.3g} % more" if rate < 1 else
             f"and their change is not slowing ({epochs} more epochs at that rate: "
             f"{100 * remaining:.3g} %)")
    start, end = float(dii[-1 - window]), float(dii[-1])
    flat = abs(end - start) <= FLAT_DII * max(abs(end), abs(start))
    warnings.warn(
        f"DII: the weights were still moving at the last epoch ({epochs}): they changed by "
        f"{100 * last:.2g} % of the largest weight in it {ahead}"
        + (", although the DII has flattened" if flat else "; the DII went")
        + f" ({start:.4g} -> {end:.4g} over those epochs): their ratios have not converged "
        "(B = [A0, 3·A3] gave w3 / w0 = 2.2 after 200 epochs, 2.8 after 1,000). Increase "
        "`epochs` (or `warm_start=True` and fit again) until `weights_history_` settles.",
        DIIWarning, stacklevel=3)


def _dii_key(keys: Any, metric: str) -> str | None:
    """The name under which the DII loss's ``metric`` (``dii`` / ``dii_last_batch``) is
    recorded among ``keys``: ``metric`` itself, or a compound part's ``"<k>.<part>.<metric>"``
    (nested compounds too, the first part that reports it); None when none does."""
    if metric in keys:
        return metric
    part = re.compile(rf"(?:\d+\.[^.]+\.)+{re.escape(metric)}")
    return next((key for key in keys if isinstance(key, str) and part.fullmatch(key)), None)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _no_dii_metric(loss: Any, metric: str) -> ConfigError:
    """The error for a loss in DII's slot that reports no ``metric`` (nor a part of it)."""
    name = getattr(loss, "name", type(loss).__name__)
    return ConfigError(
        f"dii: the loss of phases.dii ({name!r}) reports no `{metric}`, nor does any part of it: "
        "the recipe reads `dii_history_` (and its figure) from that metric. A loss in this slot "
        "reports `dii` and `dii_last_batch` as the built-in `dii` does; to add a term, keep "
        "`dii` as a part of a compound (loss = {name = \"compound\", losses = [\"dii\", "
        "\"my_penalty\"]}), whose part's metrics are read.")


def _check_duplicates(a: Any) -> None:
    """Refuse data_A whose rows are mostly exact copies of one another: every such row's
    nearest neighbour is its copy at distance 0 in A (and in B), so the imbalance is ~0 for any
    weights and the weights never move (user13: every row twice gave the initial weights and
    a DII of 0.02, "A predicts B almost perfectly").  A few duplicates train as usual."""
    if not isinstance(a, torch.Tensor) or a.shape[0] < 4:
        return  # (rows on disk: not read whole here)
    n = a.shape[0]
    counts = torch.unique(a.reshape(n, -1), dim=0, return_counts=True)[1]
    twinned = int(counts[counts > 1].sum())  # rows with an exact copy elsewhere
    if twinned > n / 2:
        raise ValidationError(
            f"`data_A` has {twinned} of its {n} rows repeated exactly: each copy's nearest "
            "neighbour is its twin at distance 0 for any weights, so the DII is ~0 and the "
            "weights do not learn. Drop the duplicate rows first (e.g. keep the rows of "
            "np.unique(np.hstack([A, B]), axis=0, return_index=True)).")


@attrs.define(kw_only=True)
class DII(DIIEvaluation, DIIPersistence, Recipe):
    """Differentiable Information Imbalance: weights of A's features that best predict B.

    Parameters (DADApy ``DiffImbalance`` names where they exist):
    periods_A, periods_B : one period per feature (0 / None: not periodic), or None.
    distance_A, distance_B : registry names (or ``{name, ...}``) of the distances of A (it
        takes the learnt weights: training *and* ``final_dii`` / ``select_features``) and of B.
    epochs, batches_per_epoch : epochs; mini-batches per epoch (each batch is both rows and
        columns of its step, and B is ranked within the batch).
    l1_strength : proximal l1 (soft threshold learning_rate × strength after each step).
    point_adapt_lambda : λ_i per point (True) or its mean over points (False).
    k_init, k_final : neighbour order setting λ = lambda_factor × d²_k, cosine schedule.
    lambda_init, lambda_final : a fixed global λ instead (cosine schedule); overrides k.
    params_init, params_groups : initial weights (default 0.1); group sizes sharing a weight.
    optimizer, learning_rate, lr_schedule : "sgd" | "adam" | "adamw"; a registered schedule
        ("none" | "cos" | "exp": × 0.5 ** (step / 10) | a plugin's) or its table.
    num_points_rows : full-batch rows subsampled (rows × all columns) / mini-batch pool size.
    threads : torch intra-op threads while fitting (None: leave torch's setting).
    dii_per_epoch : "mean" (the epoch's mean over its batches) or "last_batch" (the last
        mini-batch's DII, DADApy's convention) in ``dii_history_``.
    warm_start : a second ``fit`` continues the weights and optimizer state (scikit-learn).

    The routine (``to_dict(full=True)``): model ``weights`` (``feature_weights``); phase
    ``dii`` (sampler ``rows_columns``, loss ``dii`` with ``distance_A``, ``distance_B``,
    ``softmax`` = ``gaussian_softmax``, ``ranks``); evaluation ``distance_A``, ``distance_B``,
    ``softmax`` (the blocks of ``final_dii`` / ``select_features``).  No globals: B is ranked
    within each batch (a global N × N rank table is what mini-batches avoid); a user distance
    matrix of B is the constant ``distances_B``.
    """

    #: the arrays of `infoblocks run` in order (an .npz named after them is reordered)
    run_inputs: ClassVar[tuple[str, ...]] = ("data_A", "data_B")
    #: the full form writes every block's defaults (every knob; :attr:`Recipe.full_defaults`)
    full_defaults: ClassVar[bool] = True
    #: ... but the distances' ``unit``, which the fit fills from the data it is given
    full_defaults_skip: ClassVar[frozenset[str]] = frozenset({"unit"})
    #: read again by a warm fit (its history's column) or at every evaluation
    warm_fit_reads: ClassVar[frozenset[str]] = frozenset(
        {"dii_per_epoch", "max_elements", "evaluation"})

    name: ClassVar[str] = "dii"
    summary: ClassVar[str] = ("Differentiable Information Imbalance: learn feature weights of A "
                              "that predict B's neighbourhoods (DADApy DiffImbalance)")
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # the DADApy tutorial's configurations (a) and (b)
        "full_batch": dict(epochs=500, batches_per_epoch=1, k_init=1, k_final=1,
                           optimizer="sgd", learning_rate=1e-2, lr_schedule="none"),
        "mini_batch": dict(epochs=500, batches_per_epoch=5, k_init=5, k_final=5,
                           optimizer="adam", learning_rate=1e-2, lr_schedule="cos"),
    }
    evaluation_kinds: ClassVar[dict[str, str]] = {
        "distance_A": "distance", "distance_B": "distance", "softmax": "transform"}

    periods_A: list[float | None] | float | None = attrs.field(
        default=None, converter=_periods, validator=_periods_entries)
    periods_B: list[float | None] | float | None = attrs.field(
        default=None, converter=_periods, validator=_periods_entries)
    distance_A: str | dict[str, Any] = attrs.field(default=DISTANCE, validator=_block_spec)
    distance_B: str | dict[str, Any] = attrs.field(default=DISTANCE, validator=_block_spec)
    epochs: int = attrs.field(default=200, validator=positive_int)
    batches_per_epoch: int = attrs.field(default=1, validator=positive_int)
    l1_strength: float = attrs.field(default=0.0, validator=non_negative)
    point_adapt_lambda: bool = True
    k_init: int = attrs.field(default=1, validator=positive_int)
    k_final: int = attrs.field(default=1, validator=positive_int)
    lambda_factor: float = attrs.field(default=LAMBDA_FACTOR, validator=positive)
    lambda_init: float | None = attrs.field(default=None, validator=optional(positive))
    lambda_final: float | None = attrs.field(default=None, validator=optional(positive))
    params_init: list[float] | None = attrs.field(default=None, converter=_params_init,
                                                  validator=_params_init_entries)
    params_groups: list[int] | None = attrs.field(default=None, converter=_params_groups,
                                                  validator=_params_groups_entries)
    optimizer: str = attrs.field(default="sgd", validator=_optimizer_name)  # any phase optimizer
    learning_rate: float = attrs.field(default=1e-2, validator=positive)
    lr_schedule: str | dict[str, Any] = attrs.field(
        default="none", converter=schedule_data, validator=schedule_spec)
    num_points_rows: int | None = attrs.field(default=None, validator=optional(positive_int))
    seed: int = attrs.field(default=0, validator=non_negative_int)
    device: str = attrs.field(default="cpu", validator=valid_device)
    threads: int | None = attrs.field(default=1, validator=optional(positive_int))
    max_elements: int = attrs.field(default=CHUNK_ELEMENTS, validator=positive_int)
    dii_per_epoch: str = attrs.field(default="mean", validator=one_of("mean", "last_batch"))
    warm_start: bool = False
    verbose: bool = False

    # fitted state
    routine_: Routine | None = attrs.field(init=False, default=None, repr=False)
    weights_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    weights_history_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    dii_history_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    final_dii_: float | None = attrs.field(init=False, default=None, repr=False)
    final_dii_error_: float | None = attrs.field(init=False, default=None, repr=False)
    selection_: list[dict[str, Any]] | None = attrs.field(init=False, default=None, repr=False)
    fit_seconds_: float | None = attrs.field(init=False, default=None, repr=False)
    _data: dict[str, torch.Tensor] | None = attrs.field(init=False, default=None, repr=False)
    #: why a loaded DII has no data (its arrays were files that cannot be opened again)
    _data_missing: str | None = attrs.field(init=False, default=None, repr=False)

    # ------------------------------------------------------------------ the assembly

    def default_models(self) -> dict[str, Any]:
        weights: dict[str, Any] = {"name": "feature_weights", "l1_strength": self.l1_strength}
        if self.params_groups is not None:
            weights["groups"] = list(self.params_groups)
        if self.params_init is not None:
            weights["params_init"] = list(self.params_init)
        return {"weights": weights}

    def _softmax_spec(self) -> dict[str, Any]:
        return {"name": "gaussian_softmax", "point_adaptive": self.point_adapt_lambda,
                "lambda_factor": self.lambda_factor}

    def default_phases(self) -> list[dict[str, Any]]:
        sampler: dict[str, Any] = {"name": "rows_columns",
                                   "batches_per_epoch": self.batches_per_epoch}
        if self.num_points_rows is not None:
            sampler["num_points_rows"] = self.num_points_rows
        loss: dict[str, Any] = {
            "name": "dii", "model": "weights", "input": "data_A", "target": "data_B",
            "distance_A": _with_periods(self.distance_A, self.periods_A, "periods_A"),
            "distance_B": _with_periods(self.distance_B, self.periods_B, "periods_B"),
            "softmax": self._softmax_spec(), "ranks": "ranks",
            "k_init": self.k_init, "k_final": self.k_final}
        if self.lambda_init is not None:
            loss["lambda_init"] = self.lambda_init
        if self.lambda_final is not None:
            loss["lambda_final"] = self.lambda_final
        return [{"name": "dii", "epochs": self.epochs, "sampler": sampler, "loss": loss,
                 "optimizer": self.optimizer, "learning_rate": self.learning_rate,
                 "lr_schedule": self.lr_schedule,
                 "lr_decay_rate": EXP_DECAY_RATE, "lr_decay_steps": EXP_DECAY_STEPS,
                 "lr_decay_staircase": False, "trainable": ["weights"]}]

    def default_evaluation(self) -> dict[str, Any]:
        return {"distance_A": _with_periods(self.distance_A, self.periods_A, "periods_A"),
                "distance_B": _with_periods(self.distance_B, self.periods_B, "periods_B"),
                "softmax": self._softmax_spec()}

    # ------------------------------------------------------------------ input checks

    def _validate(self, data_A: Any, data_B: Any, distances_B: Any) -> dict[str, torch.Tensor]:
        a = as_rows(data_A, "data_A", ndim=2)  # memory-mapped / torch Dataset: read by rows
        if (data_B is None) == (distances_B is None):
            raise ValidationError(
                "Pass exactly one of `data_B` (features of space B, shape (N, D_B)) and "
                "`distances_B` (an (N, N) distance matrix of space B)."
            )
        data: dict[str, torch.Tensor] = {"data_A": a}
        if data_B is not None:
            data["data_B"] = as_rows(data_B, "data_B", ndim=2)
            check_same_length(data_A=a, data_B=data["data_B"])
            _check_varies(data["data_B"])
            periods_tensor(self.periods_B, data["data_B"].shape[1], "periods_B")
        else:
            dist = as_tensor(distances_B, "distances_B", ndim=2)
            if dist.shape[0] != dist.shape[1]:
                raise ValidationError(
                    f"`distances_B` must be a square (N, N) matrix, got shape {tuple(dist.shape)}."
                )
            check_same_length(data_A=a, distances_B=dist)
            _check_distance_matrix(dist)
            _check_varies(dist, distances=True)
            if self.periods_B is not None:
                raise ValidationError(
                    "`periods_B` has no effect with `distances_B`; set it to None.")
            data["distances_B"] = dist
        n, d = a.shape
        periods_tensor(self.periods_A, d, "periods_A")
        n_params = d if self.params_groups is None else len(self.params_groups)
        if self.params_groups is not None and sum(self.params_groups) != d:
            raise ValidationError(
                f"`params_groups` {self.params_groups} covers {sum(self.params_groups)} features "
                f"but data_A has {d}; the group sizes must add up to the number of features."
            )
        if self.params_init is not None and len(self.params_init) != n_params:
            raise ValidationError(
                f"`params_init` has {len(self.params_init)} entries but {n_params} weights are "
                "learned (one per feature of data_A, or one per group of `params_groups`)."
            )
        pool = n if self.num_points_rows is None else self.num_points_rows
        if self.num_points_rows is not None and self.num_points_rows >= n:
            raise ValidationError(
                f"`num_points_rows` = {self.num_points_rows} must be smaller than the {n} points "
                "(or None to use all rows)."
            )
        if self.batches_per_epoch > pool:
            raise ValidationError(
                f"`batches_per_epoch` = {self.batches_per_epoch} exceeds the {pool} points "
                "available; use fewer mini-batches."
            )
        per_batch = pool // self.batches_per_epoch
        if per_batch < 3:  # (with lambda_init the k check below is skipped)
            # (two points: each one's only neighbour is the other, its rank always 1, so the
            # weights did not move and the DII was 1, silently)
            raise ValidationError(
                f"Each step sees only {per_batch} point{'s' if per_batch > 1 else ''} ({pool} "
                f"points / {self.batches_per_epoch} batches): a point needs at least two "
                "neighbours to rank, so the weights would not move; use fewer, larger batches "
                "(`batches_per_epoch`) or more points."
            )
        check_k_below_points(self.k_init, self.k_final, self.lambda_init, per_batch,
                             "each step sees only",
                             f" ({pool} points / {self.batches_per_epoch} batches)")
        _check_duplicates(data["data_A"])
        return data

    # ------------------------------------------------------------------ building

    def build(self, data_A: Any, data_B: Any = None, distances_B: Any = None) -> Routine:
        """The Routine of :meth:`routine_spec`: Dataset(data_A[, data_B]), model "weights",
        phase "dii" — every block built through the registry."""
        data = self._validate(data_A, data_B, distances_B)
        return self._build(data)

    def _build(self, data: dict[str, torch.Tensor], l1_strength: float | None = None,
               params_init: list[float] | None = None) -> Routine:
        spec = self.routine_spec()
        self._evaluation_blocks()  # a misspelt key of an evaluation block: now, not after fit
        weights = spec["models"].get("weights")
        if isinstance(weights, (str, dict)) and (l1_strength is not None
                                                 or params_init is not None):
            weights = {"name": weights} if isinstance(weights, str) else dict(weights)
            if l1_strength is not None:
                weights["l1_strength"] = l1_strength
            if params_init is not None:
                weights["params_init"] = list(params_init)
            spec["models"]["weights"] = weights
        uses_distances = "distances_B" in data
        if uses_distances:  # rank B from the user's matrix, in every phase whose loss can
            for phase in spec["phases"]:
                if "loss" in phase:
                    phase["loss"] = _fill(phase["loss"], "loss", f"{self.name}.phases",
                                          distances_key=DISTANCES_B_KEY)
        # distances in the data's own unit (a power of two): the same weights and DII
        # whether A came in metres or nanometres (the λ floor, the self-distance sentinel
        # and float32's range are then never reached by the data's scale)
        d = data["data_A"].shape[1]
        models = {name: self.build_model(name, spec, n_features=d) for name in spec["models"]}
        # ... and, A's weights entering only up to a common factor, in the unit of the
        # initial weights too (params_init = 1e-8 trains as 0.1 does)
        units = {key: data_unit(value) for key, value in data.items() if key != "distances_B"}
        weights = models.get("weights")
        initial = weights.initial_weights() if callable(
            getattr(weights, "initial_weights", None)) else getattr(weights, "weights", None)
        units["data_A"] *= weights_unit(initial if isinstance(initial, torch.Tensor) else None)
        for phase in spec["phases"]:
            if "loss" in phase:
                phase["loss"] = _loss_in_units(phase["loss"], units)
        dataset = {k: v for k, v in data.items() if k != "distances_B"}
        constants = {DISTANCES_B_KEY: data["distances_B"]} if uses_distances else None
        return Routine(dataset=dataset, models=models, global_relations=self.build_globals(spec),
                       phases=self.build_phases(spec), constants=constants, device=self.device,
                       seed=int(self.seed), verbose=self.verbose)

    def _evaluation_blocks(self, data: dict[str, torch.Tensor] | None = None,
                           with_weights: bool = True) -> dict[str, Any]:
        """The evaluation section's blocks; with ``data``, the distances measure A and B in
        their units (as in training; A's with the learnt weights' unit ``with_weights``) and
        ``"lambda_factor"`` is the factor that converts a fixed λ in the data's units into the
        distance's."""
        spec = self.routine_spec()
        factor = 1.0
        evaluation = spec["evaluation"]
        if data is not None:
            if "distance_A" in evaluation:
                unit = data_unit(data["data_A"]) * (
                    weights_unit(self._signed_feature_weights()) if with_weights else 1.0)
                evaluation["distance_A"], factor = _in_unit(evaluation["distance_A"],
                                                            "distance", unit)
            if "distance_B" in evaluation and "data_B" in data:
                evaluation["distance_B"], _ = _in_unit(
                    evaluation["distance_B"], "distance", data_unit(data["data_B"]))
            if "softmax" in evaluation:
                evaluation["softmax"] = _softmax_in_unit(evaluation["softmax"], factor)
        blocks = {slot: self.build_evaluation(slot, spec) for slot in self.evaluation_kinds
                  if slot in evaluation}
        blocks["lambda_factor"] = factor
        return blocks

    # ------------------------------------------------------------------ training

    def fit(self, data_A: Any, data_B: Any = None, *, distances_B: Any = None,
            checkpoint: str | Path | None = None, resume: bool | str | Path = False) -> DII:
        """Learn the weights; sets ``weights_`` (|w|, (n_params,)), ``weights_history_``
        ((epochs + 1, n_params), the initial weights first) and ``dii_history_``
        ((epochs + 1,), the DII at the initial weights, then each epoch's, see
        ``dii_per_epoch``).  ``data_A`` / ``data_B`` may be memory-mapped ``.npy`` arrays or
        torch Datasets (rows read per batch).  ``checkpoint=DIR`` writes the whole training
        state every epoch; ``resume=True`` (or ``resume=DIR``) continues a killed run from it.
        With ``warm_start`` a second fit continues from the current weights and optimizer
        state for ``epochs`` more epochs (histories appended)."""
        data = self._validate(data_A, data_B, distances_B)
        warm = self.warm_start and self.routine_ is not None
        if warm and self._data is not None:
            check_warm_start_shapes(self._data, data)
        if not warm:  # (a warm start continues weights already fitted to these units)
            _warn_feature_spread(data["data_A"])
            initial = torch.tensor(self.params_init) if self.params_init is not None else None
            _warn_unitless(self.routine_spec(), data_unit(data["data_A"]) * weights_unit(initial))
        self._fit(data, checkpoint=checkpoint, resume=resume, warm=warm)
        _warn_if_weights_moving(self.weights_history_, self.dii_history_)
        return self

    def _fit(self, data: dict[str, torch.Tensor], l1_strength: float | None = None,
             params_init: list[float] | None = None, *, checkpoint: Any = None,
             resume: Any = False, warm: bool = False) -> DII:
        start = time.perf_counter()
        with intra_op_threads(self.threads):
            routine = self._build(data, l1_strength, params_init)
            if warm:  # the fitted routine, with this fit's phases and data
                routine = continue_routine(self.routine_, routine)
            recorder = FeatureWeightsHistory("weights")
            routine.callbacks = [cb for cb in routine.callbacks
                                 if not isinstance(cb, FeatureWeightsHistory)] + [recorder]
            routine.check()  # declared contracts, before the first loss call
            initial = float(self.dii_history_[0]) if warm and self.dii_history_ is not None \
                else self._initial_dii(routine)
            try:
                self.train_routine(routine, checkpoint=checkpoint, resume=resume,
                                   warm_start=warm)
            except NumericalError as exc:
                self._raise_if_zero_weights(routine, exc)
                raise
            self._raise_if_zero_weights(routine, None)
        self.routine_ = routine
        self._data = data
        metric = "dii" if self.dii_per_epoch == "mean" else "dii_last_batch"
        keys = dict.fromkeys(k for row in routine.history.rows for k in row)
        column = _dii_key(keys, metric)  # (a compound's part: "0.dii.dii", author26-2)
        if column is None:
            raise _no_dii_metric(routine.phases[0].loss, metric)
        self.dii_history_ = np.array([initial, *routine.history.column(column)])
        self.weights_history_ = weights_history(
            recorder.rows, len(self.dii_history_),
            recorded_weights(routine.models["weights"]).cpu().numpy(),
            self.weights_history_ if warm and self.weights_history_ is not None else None)
        self.weights_ = self.weights_history_[-1]
        self.final_dii_ = self.final_dii_error_ = None
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _initial_dii(self, routine: Routine) -> float:
        """DII at the initial weights on the first N / batches points (DADApy's first entry)."""
        routine.compute_global_relations()
        state = routine.state
        phase = routine.phases[0]
        # the built sampler's batches: set in its own table they differ from the shortcuts'
        batches, rows = (getattr(phase.sampler, key, None)
                         for key in ("batches_per_epoch", "num_points_rows"))
        batches = batches if _is_count(batches) else self.batches_per_epoch
        pool = rows if _is_count(rows) else routine.dataset.n_items
        idx = torch.arange(max(pool // batches, 1), device=routine.device)
        state.step, state.n_epochs = 0, phase.epochs
        with torch.no_grad(), naming_blocks(f"phase {phase.name!r}"):  # (tables reset at start)
            out = phase.loss({"rows": idx, "cols": idx}, routine.models, state)
        # the DII part's value: a compound's total adds its other terms (author26-2)
        key = _dii_key(out.metrics, "dii")
        if key is None or (self.dii_per_epoch != "mean"
                           and _dii_key(out.metrics, "dii_last_batch") is None):
            raise _no_dii_metric(phase.loss, "dii" if key is None else "dii_last_batch")
        return float(out.metrics[key])

    def _raise_if_zero_weights(self, routine: Routine, cause: Exception | None) -> None:
        w = recorded_weights(routine.models["weights"])
        if bool(torch.isfinite(w).all()) and bool((w != 0).any()):
            return
        if self.l1_strength > 0:
            raise NumericalError(
                f"All weights were set to zero during training (l1_strength = "
                f"{self.l1_strength}); lower `l1_strength` or `learning_rate`."
            ) from cause
        dataset = routine.dataset
        scale = (f" data_A's typical spread is about {data_unit(dataset['data_A']):.3g};"
                 if dataset is not None and "data_A" in dataset else "")
        raise NumericalError(
            f"The weights became non-finite or all zero during training (l1_strength = 0):"
            f"{scale} lower `learning_rate`, or check `params_init` and the data."
        ) from cause

    def _check_selectable(self, method: str) -> None:
        """``select_features`` retrains the weights model with ``params_init`` (backward,
        forward: each candidate's start, the features left out at 0) and ``l1_strength``: a
        model block without those fields is refused naming them and why (author26-11: before,
        "Invalid dii.models.weights ...: extra fields found (l1_strength, params_init)", which
        did not say what asked for them; the l1 path trained without l1, with a
        ShortcutWarning)."""
        distance = getattr(self.routine_.phases[0].loss, "distance_A", None)
        if not getattr(distance, "per_feature_weights", True):
            raise ConfigError(
                f"select_features({method!r}) keeps or drops features through one weight per "
                f"feature of A, but distance_A {distance.name!r} takes the weights model's "
                "output as a whole (`per_feature_weights = False`: a learnt map). Compare "
                "subsets by hand: a DII fit on each subset of data_A's columns.")
        name = _block_name_of(self.routine_spec()["models"].get("weights"))
        fields = block_fields("model", name)
        if fields is None:  # (not an attrs block: its build says what it refuses)
            return
        needed = ["l1_strength"] if method == "l1" else ["params_init", "l1_strength"]
        missing = [f"`{key}`" for key in needed if key not in fields]
        if missing:
            raise ConfigError(
                f"select_features({method!r}) retrains the weights model with "
                + ("`l1_strength` = each strength of the path" if method == "l1" else
                   "`params_init` (each candidate's start: the features left out at 0) and "
                   "`l1_strength` = 0")
                + f", but models.weights ({name!r}) has no field {' or '.join(missing)}. Give "
                "the model block these fields (docs/plugins.md, the DII slots), or compare "
                "subsets by hand: a DII fit on each subset of data_A's columns.")

    def _require_fitted(self, data: bool = True) -> None:
        if self.routine_ is None:
            raise NotFittedError("This DII is not fitted yet; call fit(data_A, data_B) first.")
        if data and self._data is None:
            why = self._data_missing or "saved with data=False; fit it again to evaluate"
            raise NotFittedError(f"This DII was loaded without its data ({why}).")

    def feature_weights(self) -> torch.Tensor:
        """The learned weight of every feature of A (groups expanded): (D_A,) tensor."""
        self._require_fitted()
        with torch.no_grad():
            return self.routine_.models["weights"].feature_weights().detach().abs()

    def _per_feature_weights(self, weighted: bool = True) -> Any:
        """:meth:`feature_weights` as numpy (1.0 unless ``weighted``) for a distance of A
        that takes one weight per feature; refused for a learnt map (a distance_A that
        declares ``per_feature_weights = False``), which a feature subset does not apply to."""
        blocks = self._evaluation_blocks()
        distance = blocks.get("distance_A")
        if not getattr(distance, "per_feature_weights", True):
            raise ValidationError(
                f"information_imbalance weighs A's features one by one (a subset: the others "
                f"at weight 0), but distance_A {distance.name!r} takes the weights model's "
                "output as a whole (`per_feature_weights = False`: a learnt map); use "
                "final_dii() for this model.")
        return self.feature_weights().cpu().numpy() if weighted else 1.0

    def _signed_feature_weights(self) -> torch.Tensor:
        with torch.no_grad():
            return self.routine_.models["weights"].feature_weights().detach()

    # ------------------------------------------------------------------ command line

    def run(self, data: list[np.ndarray], out_dir: Path, **fit_options: Any) -> dict[str, Any]:
        """``infoblocks run``: data = [data_A, data_B]; saves the routine, weights.npy,
        histories and the figure into ``out_dir``; returns the weights and final DII.
        ``fit_options`` go to :meth:`fit` (the CLI's ``--resume``: ``checkpoint``, ``resume``)."""
        if len(data) != 2:
            raise ValidationError(
                f"The dii recipe needs two arrays (--data A.npy --data B.npy), got {len(data)}.")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.fit(data[0], data[1], **fit_options)
        dii, _ = self.final_dii(compute_error=False)
        self.save(out_dir / "routine")
        np.save(out_dir / "weights.npy", self.weights_)
        np.save(out_dir / "weights_history.npy", self.weights_history_)
        np.save(out_dir / "dii_history.npy", self.dii_history_)
        self.plot(out_dir / "dii.png")
        return {"weights": self.weights_.tolist(),
                "weights_relative": (self.weights_ / self.weights_.max()).tolist(),
                "final_dii": dii, "epochs": self.epochs,
                "fit_seconds": round(self.fit_seconds_, 3), "figure": str(out_dir / "dii.png")}

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """The DADApy tutorial: B = [10, 3, 1, 30, 7.3] ⊙ A, A ~ N(0, 1)^5, N = 500, seed 0.
        (a) 500 epochs full-batch SGD, k = 1; (b) 5 mini-batches, k = 5, Adam with cos decay
        (skipped when ``quick``).  Weights are reported rescaled so that the largest is 30."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        data_A, data_B = demo_data()
        configs = {"a": demo_config("a")} if quick else {c: demo_config(c) for c in "ab"}
        results: dict[str, Any] = {}
        for label, model in configs.items():
            model.fit(data_A, data_B)
            dii, _ = model.final_dii(compute_error=False)
            w = model.weights_ / model.weights_.max() * 30.0
            results[f"config_{label}"] = {
                "weights_max30": [round(float(v), 3) for v in w],
                "target_weights": list(DEMO_TARGETS[label]["weights"]),
                "final_dii": round(dii, 5), "target_final_dii": DEMO_TARGETS[label]["final_dii"],
                "fit_seconds": round(model.fit_seconds_, 2),
            }
        shown = configs["b" if "b" in configs else "a"]
        path = out_dir / "dii_demo.png"
        shown.plot(path, feature_names=[f"x{i} (×{s:g})" for i, s in enumerate(DEMO_SCALES)])
        results["figure"] = str(path)
        return results


def demo_data(n: int = DEMO_POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ~ N(0, 1) (n, 5) from numpy's legacy stream ``np.random.seed(seed)`` (without touching
    the global state) and B = DEMO_SCALES ⊙ A."""
    data_A = np.random.RandomState(seed).normal(size=(n, len(DEMO_SCALES)))
    return data_A, data_A * np.asarray(DEMO_SCALES)


def demo_config(label: str, **overrides: Any) -> DII:
    """The tutorial's configurations "a" (preset ``full_batch``: full-batch SGD, k = 1) and
    "b" (preset ``mini_batch``: 5 mini-batches, k = 5, Adam, cos decay), 500 epochs each."""
    presets = {"a": "full_batch", "b": "mini_batch"}
    if label not in presets:
        raise ValidationError(f"Demo configurations are 'a' and 'b', got {label!r}.")
    return DII.preset(presets[label], **overrides)


__all__ = ["DII", "demo_config", "demo_data", "DEMO_SCALES", "DEMO_TARGETS"]
