"""What the MI recipes do after training: the final estimate (through the evaluation bound
block's own ``bound``), its half-sampling interval, convergence diagnostics, the training plot,
save / load, and the seed problem.  No recipe classes here (see :mod:`infoblocks.recipes.mi`).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import torch

from infoblocks.blocks.assembly import as_declared, block_fields
from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.figures import save_figure
from infoblocks.blocks.recipe import check_saved_recipe
from infoblocks.blocks.mutual_information import (ReferenceScores, centred_interval,
                                                  default_max_pairs, pair_scores,
                                                  reference_scores, scalar_output)
from infoblocks.plugins.registry import get_registry

from .mi_inputs import _as_columns

if TYPE_CHECKING:  # pragma: no cover
    from .mi import MINEE, NeuralMIEstimator

#: the seed problem's sample size (docs/mi.md, issue 5)
SEED_PROBLEM_N = 1000
#: reference draws per evaluation item for MI-NEE's final divergences (at least 20,000)
FINAL_REFERENCE_FACTOR = 20
MIN_FINAL_REFERENCE = 20_000
#: the held-out estimate counts as "still rising" when its best is in the last 10 % of epochs
RISING_TAIL = 0.1
#: a final estimate below −this (nats), its whole 95 % interval below zero, is reported as
#: divergence (MI >= 0; on independent data an overfitted critic gives a few hundredths below)
NEGATIVE_ESTIMATE = 0.1
#: a final estimate within this many nats of its cap (what its evaluation items can show: log
#: n_eval, or for a row bound log of the items in a row) is reported as near it: with K + 1
#: items a row the optimal critic's InfoNCE value is about log(K + 1) − log(1 + K e^{−I}), so
#: 1.5 nats below the cap it is still ~0.25 nats below the truth I, and a trained critic lies
#: lower. Measured (geninf22, n = 1000, cap log 500 = 6.215): 5-D / 20-D Gaussians with truth
#: 9.8 / 16.6 nats gave 5.1-6.2 with MINE, NWJ and InfoNCE (all within 1.1 of the cap, none
#: warned); truth 4.15 gave at most 4.35 (1.87 below the cap); the docs' problems lie 2.7
#: nats or more below theirs
NEAR_CAP_NATS = 1.5
#: the file beside the routine that keeps the final scores (intervals after load)
SCORES_FILE = "mi_scores.pt"


class MIConvergenceWarning(UserWarning):
    """Training ended while the estimate was still rising, or it fell from its best."""


class MIEstimate(float):
    """What ``estimate()`` always returns: the estimate as a ``float`` (arithmetic, ``float()``,
    JSON and comparisons see the value) carrying its interval ``low``, ``high`` at ``level``
    (half-sampling, see :meth:`PairScores.interval`), and its ``units`` ("nats" or "bits")."""

    def __new__(cls, value: float, low: float, high: float, level: float, units: str
                ) -> MIEstimate:
        self = super().__new__(cls, value)
        self.low, self.high, self.level, self.units = float(low), float(high), level, units
        return self

    @property
    def value(self) -> float:
        return float(self)

    def __repr__(self) -> str:
        return (f"MIEstimate({float(self):.4f} {self.units}, {self.level:.0%} interval "
                f"[{self.low:.4f}, {self.high:.4f}])")

    def __reduce__(self):
        return MIEstimate, (float(self), self.low, self.high, self.level, self.units)


def seed_problem(seed: int, n: int = SEED_PROBLEM_N) -> tuple[np.ndarray, np.ndarray, float]:
    """The seed problem: ρ = 1 − 0.19·U(0, 1) from ``default_rng(seed)``, then n draws of a
    2-D Gaussian with correlation ρ from the same generator.  Returns x (n, 1), y (n, 1) and
    the true MI −½ ln(1 − ρ²) in nats."""
    rng = np.random.default_rng(seed)
    rho = 1.0 - 0.19 * rng.uniform()
    data = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=n)
    return data[:, :1], data[:, 1:], float(-0.5 * np.log(1.0 - rho ** 2))


# ---------------------------------------------------------------------------- inputs, slots


def _sampler_name(instance, attribute, value) -> None:
    name = value.get("name") if isinstance(value, dict) else value
    if not isinstance(name, str) or ("sampler", name) not in get_registry():
        raise ValidationError(
            f"`{attribute.name}` must name a registered negative sampler ('marginal_pairs', "
            f"'all_pairs', 'reference' or a plugin's), or be a table of one with its options "
            f"({{name = \"...\", option = ...}}), got {value!r}.")


def sampler_name(spec: Any) -> str:
    """The name of a ``negatives`` value: a sampler's name or a table ``{name = ..., ...}``."""
    return spec["name"] if isinstance(spec, dict) else spec


def negative_sampler(spec: Any, recipe: Any = None, **settings: Any) -> dict[str, Any]:
    """The sampler a ``negatives`` value names, with the recipe's ``settings`` that it has
    (shortcuts shared by samplers) under the table's own options (which win).  A table option
    and a shortcut of ``recipe`` that the user set, with different values, is a conflict."""
    options = {k: v for k, v in spec.items() if k != "name"} if isinstance(spec, dict) else {}
    fields = attrs.fields_dict(type(recipe)) if attrs.has(type(recipe)) else {}
    for key in sorted(set(options) & set(settings) & set(fields)):
        default = fields[key].default
        if settings[key] != default and options[key] != settings[key]:
            raise ConfigError(
                f"{recipe.name}: `negatives.{key}` = {options[key]!r} and the shortcut "
                f"`{key}` = {settings[key]!r} disagree; set one of them.")
    return {**_only_fields("sampler", {"name": sampler_name(spec), **settings}), **options}


def _fields_of(kind: str, name: Any) -> set[str] | None:
    """Init fields of the registered block ``name`` (None: not an attrs block / unknown)."""
    fields = block_fields(kind, name)
    return None if fields is None else set(fields)


def _only_fields(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` without the keys its block does not have (shortcuts shared by samplers)."""
    fields = block_fields(kind, spec["name"])
    return spec if fields is None else {k: v if k == "name" else as_declared(fields[k], v)
                                        for k, v in spec.items() if k == "name" or k in fields}


def _complete(spec: Any, context: dict[str, Any], kind: str = "sampler") -> Any:
    """``spec`` with the ``context`` keys its block has and the spec leaves out (a sampler a
    user put in a slot by name still draws from the right split)."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, dict):
        return spec
    fields = block_fields(kind, spec.get("name")) or {}
    return {**{k: as_declared(fields[k], v) for k, v in context.items() if k in fields}, **spec}


def check_critic_module(module: Any, x: torch.Tensor, y: torch.Tensor) -> None:
    """A custom critic (``critic_module``), called once on three items before training: it
    must be a torch module with trainable parameters mapping x (b, d_x), y (b, d_y) to scores
    (b,) or (b, 1) (and, when it has them, ``pairwise`` -> (b, b), ``embed`` -> two (b, k)).
    Anything else is a ValidationError naming ``critic_module`` and the shapes."""
    if not isinstance(module, torch.nn.Module):
        raise ValidationError(f"`critic_module` must be a torch.nn.Module t(x, y) -> scores, got "
                              f"{type(module).__name__}.")
    b = min(3, len(x))
    dx, dy = x.shape[1], y.shape[1]
    expected = (f"it must map x ({b}, {dx}) and y ({b}, {dy}) (the standardised columns of "
                f"fit's x and y) to scores ({b},) or ({b}, 1)")
    params = list(module.parameters())
    if not any(p.requires_grad for p in params):
        raise ValidationError(f"`critic_module` has no trainable parameters; {expected}.")
    device = params[0].device
    xb, yb = x[:b].to(device), y[:b].to(device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            checks = [("critic_module(x, y)", module(xb, yb), (b,))]
            if callable(getattr(module, "pairwise", None)):
                checks.append(("critic_module.pairwise(x, y)", module.pairwise(xb, yb), (b, b)))
            if callable(getattr(module, "embed", None)):
                hx, gy = module.embed(xb, yb)
                k = hx.shape[-1] if isinstance(hx, torch.Tensor) else None
                checks += [("critic_module.embed(x, y)[0]", hx, (b, k)),
                           ("critic_module.embed(x, y)[1]", gy, (b, k))]
    except Exception as error:  # noqa: BLE001 - reported with the shapes, chained
        raise ValidationError(f"`critic_module` failed on x of shape ({b}, {dx}) and y of shape "
                              f"({b}, {dy}) ({type(error).__name__}: {error}); {expected}."
                              ) from error
    finally:
        module.train(was_training)
    for call, out, shape in checks:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if call == "critic_module(x, y)" and isinstance(out, torch.Tensor):
            out = scalar_output(out)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape \
                or not out.is_floating_point():
            dtype = f" of dtype {out.dtype}" if isinstance(out, torch.Tensor) \
                and not out.is_floating_point() else ""
            raise ValidationError(f"`critic_module`: {call} returned {got}{dtype} for {b} "
                                  f"items; {expected}" + ("" if len(shape) == 1 else
                                                          f", and {call} must be {shape}") + ".")


# ---------------------------------------------------------------------------- assembly


def block_label(kind: str, block: Any) -> str:
    """``'name'`` of a built block (or of a block's name), with `` (plugin 'p')`` where a
    plugin registered it."""
    name = block if isinstance(block, str) else getattr(block, "name", type(block).__name__)
    try:
        plugin = get_registry().entry(kind, name).plugin
    except Exception:  # noqa: BLE001 - informative only (a block built outside the registry)
        plugin = "builtin"
    return f"{name!r}" + ("" if plugin == "builtin" else f" (plugin {plugin!r})")


def refuse_ignored_negatives(recipe: str, phase: Any, negatives: str) -> None:
    """A bound with ``rows = True`` (InfoNCE's: each item scored against the other items of its
    batch) under a sampler yielding explicit negative pairs (``x_marginal``, ``y_marginal``):
    the bound scores the in-batch pairs and drops the sampler's negatives, so its options
    (``marginal_factor``, a plugin's ``k``) change nothing (author24-1: k = 1 and k = 8 gave the
    same bits). A :class:`ConfigError` naming the slot, the bound, the sampler and the fix.
    ``negatives`` is the name the recipe's ``negatives`` shortcut gives the sampler. The
    bound is the loss itself or its ``bound`` (InfoMax's ``infomax`` loss)."""
    slots = [(f"phases.{phase.name}", phase.sampler, phase.loss)]
    if phase.validation is not None:
        slots.append((f"phases.{phase.name}.validation", phase.validation.sampler,
                      phase.validation.loss))
    for where, sampler, loss in slots:
        inner = getattr(loss, "bound", None)  # (a bound's own `bound` is its method)
        bound = inner if getattr(inner, "kind", None) == "loss" else loss
        fields = getattr(getattr(sampler, "batch_type", None), "fields", ())
        if not getattr(bound, "rows", False) or "x_marginal" not in fields:
            continue
        name = getattr(sampler, "name", type(sampler).__name__)
        source = f"`negatives` = {block_label('sampler', sampler)}" if name == negatives \
            else f"the sampler {block_label('sampler', sampler)}"
        raise ConfigError(
            f"{recipe}.{where}: the bound {block_label('loss', bound)} has `rows = True` (each "
            "item scored against the other items of its batch), so it would ignore the explicit "
            f"negative pairs (x_marginal, y_marginal) that {source} yields: its options would "
            "change nothing. Use an in-batch sampler with this bound (negatives = "
            f"\"all_pairs\", or sampler = \"all_pairs\" in {where}), or a bound without `rows` "
            "with this sampler (\"dv\", \"nwj_loss\", \"smile_loss\", \"mine_loss\", or one "
            "of yours).")


def build_phases(recipe: NeuralMIEstimator, spec: dict[str, Any]) -> list[Any]:
    """The phases of ``spec`` (validation included), through the base's builders."""
    return recipe.build_phases(spec)


# ---------------------------------------------------------------------------- pair sets


def check_pairs(recipe: NeuralMIEstimator, pairs: Any, known: tuple[str, ...]) -> dict:
    """The ``evaluation.pairs`` table, its keys checked (path in the error)."""
    path = f"{recipe.name}.evaluation.pairs"
    if not isinstance(pairs, dict):
        raise ConfigError(f"{path} must be a table with keys {list(known)}, got {pairs!r}.")
    extra = sorted(set(pairs) - set(known))
    if extra:
        raise ConfigError(f"Invalid {path}: unknown key(s) {extra}; the keys are {list(known)}.")
    index = pairs.get("index")
    if not isinstance(index, str):
        raise ConfigError(f"Invalid {path}.index: name the global of the evaluation items "
                          f"(e.g. \"test_index\"), got {index!r}.")
    for key in known:
        value = pairs.get(key)
        if key != "index" and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"Invalid {path}.{key}: expected a positive number, got {value!r}.")
    return pairs


def evaluation_index(routine: Any, pairs: dict, fallback: str = "train_index") -> torch.Tensor:
    """The evaluation items: global ``pairs["index"]`` (the training items when it is empty,
    i.e. without a held-out set)."""
    found = routine.state.globals
    if pairs["index"] not in found:
        raise ConfigError(f"evaluation.pairs.index = {pairs['index']!r} is not a global of the "
                          f"routine; it has {sorted(found)}.")
    index = torch.as_tensor(found[pairs["index"]]).long()
    if index.numel() == 0 and fallback in found:
        index = torch.as_tensor(found[fallback]).long()
    return index


# ---------------------------------------------------------------------------- final estimates


def pair_estimate(recipe: NeuralMIEstimator, critic: torch.nn.Module, x: torch.Tensor,
                  y: torch.Tensor, pairs: dict, dist: Any = None) -> None:
    """All-pairs final estimate with the evaluation bound block (``recipe.bound_``); under
    torch.distributed the scores are computed in row blocks across the ranks and summed."""
    budget = pairs.get("max_pairs") or default_max_pairs(critic)  # None: by the critic's cost
    recipe.scores_ = pair_scores(critic, x, y, max_pairs=int(budget), dist=dist)
    recipe.estimate_nats_ = recipe.scores_.bound(recipe.bound_)


def pair_interval(recipe: NeuralMIEstimator, level: float) -> tuple[float, float]:
    """Half-sampling interval of the all-pairs estimate (:meth:`PairScores.interval`)."""
    return recipe.scores_.interval(recipe.bound_, level=level,
                                   n_subsamples=recipe.n_subsamples, seed=recipe.seed)


#: a final MI-NEE divergence below −this (nats), and below its small-sample bias (next), is
#: reported: its critic did not converge
NEGATIVE_DIVERGENCE = 0.02
#: a critic that has learnt noise scores a held-out divergence below zero by about this many
#: nats × the divergence's input dimensions / training rows: measured (geninf22-9, fix23a) on
#: Gaussians ρ = 0.9 whose d_x = d_y = 0 exactly, 500 training rows: 1-D −0.002 … −0.008
#: (4.0 × 1 / 500 at most), 5-D −0.04 … −0.08 (7.8 × 5 / 500), 20-D −0.23 … −0.35
#: (8.7 × 20 / 500), 5-D on 2,500 rows −0.006 (3.1 × 5 / 2500); seeds 0-2.  The old −0.02
#: flagged every 5-D and 20-D fit; a learning rate of 1.0 (5-D) gave d_xy −155, d_x −21
DIVERGENCE_BIAS_PER_DIM = 8.0
#: a divergence is reported only below this many times that bias
DIVERGENCE_BIAS_MARGIN = 2.0
#: the critic of each MI-NEE divergence
CRITICS_OF = {"d_xy": "main", "d_x": "critic_x", "d_y": "critic_y"}


def minee_estimate(recipe: MINEE, routine: Any, x: torch.Tensor, y: torch.Tensor,
                   pairs: dict) -> None:
    """MI-NEE's three divergences on the evaluation items against fixed reference draws, each
    by the evaluation bound block; entropies where the reference's entropy is known."""
    sampler = routine.phases[0].sampler
    generator = torch.Generator(device=routine.device).manual_seed(recipe.seed + 1)
    factor = pairs.get("reference_factor") or FINAL_REFERENCE_FACTOR
    m = max(int(round(factor * len(x))), int(pairs.get("min_reference") or MIN_FINAL_REFERENCE))
    xr, yr = sampler.draw(m, generator, routine.device)
    models = routine.models
    dist = routine.dist  # (torch.distributed: row blocks across the ranks, summed)
    recipe.scores_ = {
        "d_xy": reference_scores(models["main"], (x, y), (xr, yr), dist=dist),
        "d_x": reference_scores(models["critic_x"], (x,), (xr,), dist=dist),
        "d_y": reference_scores(models["critic_y"], (y,), (yr,), dist=dist),
    }
    d = {k: s.divergence(recipe.bound_) for k, s in recipe.scores_.items()}
    recipe.divergences_ = d
    recipe.estimate_nats_ = d["d_xy"] - d["d_x"] - d["d_y"]
    dims = {"d_x": x.shape[1], "d_y": y.shape[1], "d_xy": x.shape[1] + y.shape[1]}
    n_all = getattr(routine.dataset, "n_items", None) or len(x)
    n_train = n_all - len(x) if n_all > len(x) else n_all  # (held out: the rest trained)
    negative, allowed = negative_divergences(d, dims, n_train)
    if negative:  # a KL divergence is >= 0: that critic did not converge
        warnings.warn(
            f"MI-NEE: the divergence estimate(s) {negative} are negative, which a divergence "
            f"cannot be, and beyond the small-sample bias of a fit on {n_train} rows (a critic "
            f"that learnt noise scores about −{DIVERGENCE_BIAS_PER_DIM:g} × dimensions / rows: "
            f"down to {allowed} here): the critic(s) {[CRITICS_OF[k] for k in negative]} did "
            f"not converge, and the estimate {recipe.estimate_nats_:.4f} nats is unreliable (a "
            "negative d_x or d_y raises it, a negative d_xy lowers it). Lower `learning_rate`, "
            "train longer, or try standardize=\"rank\" for skewed or heavy-tailed data.",
            MIConvergenceWarning, stacklevel=4)
    log_scale_x = float(torch.log(recipe.x_scale_.double()).sum())
    log_scale_y = float(torch.log(recipe.y_scale_.double()).sum())
    hx_ref, hy_ref = sampler.reference_entropies()
    ent: dict[str, float | None] = {"h_x": None, "h_y": None, "h_xy": None}
    # (after the rank-Gaussian map the entropies are those of the mapped variables: unknown)
    if hx_ref is not None and hy_ref is not None and recipe.standardize != "rank":
        ent["h_x"] = hx_ref - d["d_x"] + log_scale_x
        ent["h_y"] = hy_ref - d["d_y"] + log_scale_y
        ent["h_xy"] = hx_ref + hy_ref - d["d_xy"] + log_scale_x + log_scale_y
    recipe.entropies_ = ent


def negative_divergences(d: dict[str, float], dims: dict[str, int], n_train: int
                         ) -> tuple[dict[str, float], dict[str, float]]:
    """The MI-NEE divergences ``d`` below zero beyond what a fit on ``n_train`` rows gives a
    critic that learnt noise — below −max(:data:`NEGATIVE_DIVERGENCE`,
    :data:`DIVERGENCE_BIAS_MARGIN` × :data:`DIVERGENCE_BIAS_PER_DIM` × dims / n_train) — and
    those limits of the negative ones (both rounded, by name)."""
    limit = {k: max(NEGATIVE_DIVERGENCE, DIVERGENCE_BIAS_MARGIN * DIVERGENCE_BIAS_PER_DIM
                    * dims[k] / max(n_train, 1)) for k in d}
    negative = {k: round(v, 4) for k, v in d.items() if v < -limit[k]}
    return negative, {k: round(-limit[k], 4) for k in negative}


def minee_interval(recipe: MINEE, level: float) -> tuple[float, float]:
    """Half-sampling interval of I = D_xy − D_x − D_y: half of the data rows and half of the
    reference rows, drawn without replacement, the same rows for the three divergences; the
    spread of the subsample values placed around the estimate (:func:`centred_interval`)."""
    generator = torch.Generator().manual_seed(recipe.seed)
    s = recipe.scores_
    n, m = s["d_x"].data.numel(), s["d_x"].reference.numel()
    if n < 4 or m < 4:
        return math.nan, math.nan
    b = recipe.n_subsamples
    i = torch.rand(b, n, generator=generator).argsort(1)[:, :n // 2]
    j = torch.rand(b, m, generator=generator).argsort(1)[:, :m // 2]
    values = sum(sign * recipe.bound_.bound(s[key].scores(i, j))
                 for sign, key in ((1, "d_xy"), (-1, "d_x"), (-1, "d_y")))
    half = n // 2
    return centred_interval(values, recipe.estimate_nats_, level,
                            scale=math.sqrt(half / (n - half)))


# ---------------------------------------------------------------------------- diagnostics, plot


def diagnose(recipe: NeuralMIEstimator) -> None:
    """Convergence warnings from the held-out (else training) estimate per epoch, and from
    the final estimate: one that mutual information cannot be (its whole interval below zero)
    or that its evaluation items cannot show (above log n_eval)."""
    check_final_estimate(recipe)
    check_clip(recipe)
    history = recipe.history_
    # the epoch kept is the one the phase's early stopping restored: its validation metric in
    # its direction (MI-NEE: val_d_sum; a plugin's phase may monitor another metric)
    validation = ((getattr(recipe, "spec_", None) or {}).get("phases") or [{}])[0] \
        .get("validation") or {}
    key, mode = f"val_{validation.get('metric') or 'mi'}", validation.get("mode") or "max"
    if not any(key in r for r in history):
        key, mode = "mi", "max"
    values = [r[key] for r in history if key in r]
    epochs = [r["epoch"] for r in history if key in r]
    if not values or all(math.isnan(v) for v in values):
        return
    best = int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))
    recipe.best_epoch_ = epochs[best]
    if len(values) < 5:
        return
    ran_out = len(history) >= recipe.epochs
    name = type(recipe).__name__
    what = ("held-out estimate" if key == "val_mi" else "training estimate" if key == "mi"
            else f"held-out {key[4:]}")
    if ran_out and best >= (1 - RISING_TAIL) * (len(values) - 1) and \
            (key not in ("val_mi", "mi") or values[best] >= 0):
        # (a negative best is divergence, reported by check_final_estimate: more epochs or a
        # larger learning rate would not help it)
        warnings.warn(
            f"{name}: the {what} was still {'rising' if mode == 'max' else 'falling'} at the "
            f"last epoch ({recipe.epochs}); increase `epochs` (or the learning rate) for a "
            "converged estimate.", MIConvergenceWarning, stacklevel=4)
    tail = float(np.mean(values[-max(1, len(values) // 10):]))
    if key == "mi" and values[best] - tail > max(0.1, 0.1 * abs(values[best])):
        warnings.warn(
            f"{name}: the training estimate fell from its best {values[best]:.3f} to "
            f"{tail:.3f} nats; training is unstable: lower `learning_rate` or keep a held-out "
            "set (test_fraction > 0).", MIConvergenceWarning, stacklevel=4)


#: a SMILE estimate more than this many nats above DV on the same critic and pairs is
#: reported: the clip τ cut the e^t of negatives scoring above τ out of the partition term, so
#: the number is no longer a lower bound. Measured (author24-4, 5 + 5-D Gaussians, n 5,000,
#: 1,000 evaluation items): ρ = 0.5, SMILE − DV = −0.00001 (no negative above τ = 5); ρ = 0.9
#: (truth 4.152), +0.383: SMILE 4.311 [4.17, 4.455], DV 3.928, 0.24 % of the negatives above τ
CLIP_EXCESS_NATS = 0.05


def check_clip(recipe: NeuralMIEstimator) -> None:
    """Warn where SMILE's clip lifted the final estimate above the unclipped DV bound of the
    same critic on the same pairs by more than :data:`CLIP_EXCESS_NATS`."""
    from infoblocks.blocks.mutual_information.bounds import SMILELoss

    bound, scores, value = recipe.bound_, recipe.scores_, recipe.estimate_nats_
    clip = getattr(bound, "clip", None)
    if not isinstance(bound, SMILELoss) or not callable(getattr(scores, "bound", None)) or \
            not isinstance(clip, (int, float)) or value is None or not math.isfinite(value):
        return
    dv = float(scores.bound("dv"))
    if not value - dv > CLIP_EXCESS_NATS:
        return
    above = float(scores.mean_negatives(lambda t: (t > clip).to(t.dtype)))
    warnings.warn(
        f"{type(recipe).__name__}: the clip τ = {clip:g} is active: {above:.2%} of the "
        f"evaluation's negative pairs score above τ, and clipping their e^t lowers the "
        f"partition term, so the estimate {value:.4g} nats lies {value - dv:.3g} above the "
        f"unclipped DV bound of the same critic on the same pairs ({dv:.4g}): it is no longer "
        f"a lower bound and may exceed the MI. Raise `clip` (now {clip:g}), or set "
        "evaluation.bound = \"dv\" for this critic's DV estimate.",
        MIConvergenceWarning, stacklevel=5)


def check_final_estimate(recipe: NeuralMIEstimator) -> None:
    """Warn about a final estimate that is not a measurement: non-finite, below zero over its
    whole 95 % interval (MI >= 0: the critic diverged or learnt nothing), or above log n_eval
    (no lower bound computed from n evaluation items can show more than about log n —
    McAllester & Stratos 2020 —: the critic overfits its evaluation pairs or diverged)."""
    name, value = type(recipe).__name__, recipe.estimate_nats_
    lr = getattr(recipe, "learning_rate", None)
    fix = (f"lower `learning_rate` (now {lr:g}) or set `grad_clip`, and check the data "
           "(`standardize`)" if isinstance(lr, (int, float)) else
           "lower the learning rate or clip the gradients, and check the data")
    standardize = getattr(recipe, "standardize", "rank")
    if standardize != "rank":  # (geninf22-8: MI-NEE's moments on heavy tails)
        fix += (f"; for heavy-tailed or skewed columns set standardize=\"rank\" (now "
                f"{standardize!r}): MI-NEE with the moments gave −4.33 nats on exp-transformed "
                "Gaussians with truth 4.15, with ranks 4.04")
    if value is None:
        return
    if not math.isfinite(value):
        warnings.warn(f"{name}: the final estimate is {value}: training diverged; {fix}.",
                      MIConvergenceWarning, stacklevel=5)
        return
    if value < -NEGATIVE_ESTIMATE:  # (a few hundredths below zero: MI ~ 0, a critic fitting noise)
        low, high = recipe.estimate(ci=0.95).low, recipe.estimate(ci=0.95).high
        if high < 0:
            warnings.warn(
                f"{name}: the estimate {value:.4g} nats (95 % interval [{low:.4g}, "
                f"{high:.4g}]) is below zero, which mutual information cannot be: the critic "
                f"diverged or learnt nothing, and the number is not an estimate; {fix}.",
                MIConvergenceWarning, stacklevel=5)
        return
    n = recipe.n_eval_
    if n is not None and n > 1 and value > math.log(n):
        warnings.warn(
            f"{name}: the estimate {value:.4g} nats is above log(n_eval) = {math.log(n):.3f}, "
            f"more than {n} evaluation items can show for any lower bound: the critic overfits "
            f"or diverged, or the true MI is beyond what this sample size can measure; {fix}, "
            "or use more data / a larger evaluation set (test_fraction).",
            MIConvergenceWarning, stacklevel=5)
    elif near_cap(recipe):
        cap, what = estimate_cap(recipe)
        warnings.warn(
            f"{name}: the estimate {value:.4g} nats is within {NEAR_CAP_NATS:g} nats of "
            f"{what}: this close to that cap a lower bound falls short of the true MI, which "
            f"may be much larger (the estimate is a lower bound only). For a higher cap, "
            f"evaluate on more items: {_more_items(recipe)}.",
            MIConvergenceWarning, stacklevel=5)


def estimate_cap(recipe: NeuralMIEstimator) -> tuple[float, str]:
    """The most the final estimate can show, in nats, and its description: a row bound
    (InfoNCE: each item against its K partners) never exceeds log(K + 1); a pair bound from
    n_eval items shows no more than about log n_eval (McAllester & Stratos 2020)."""
    shifts = getattr(recipe.scores_, "shifts", None)
    if getattr(recipe.bound_, "rows", False) and shifts is not None:
        k = len(shifts) + 1
        return math.log(k), (f"its cap log({k}) = {math.log(k):.3f}, the log of the items in a "
                             f"row (each evaluation item and its {k - 1} partners)")
    n = recipe.n_eval_
    return math.log(n), (f"log(n_eval) = {math.log(n):.3f}, the most {n} evaluation items "
                         "can show for a lower bound")


def near_cap(recipe: NeuralMIEstimator) -> bool:
    """Whether the (finite) final estimate lies within :data:`NEAR_CAP_NATS` of
    :func:`estimate_cap` (or in its upper half, for a cap below 3 nats: 20 items or fewer)."""
    value, n = recipe.estimate_nats_, recipe.n_eval_
    if value is None or not math.isfinite(value) or n is None or n < 2:
        return False
    cap = estimate_cap(recipe)[0]
    return value > max(cap - NEAR_CAP_NATS, cap / 2)


def _more_items(recipe: NeuralMIEstimator) -> str:
    """How this fit evaluates on more items (the fix of a near-cap estimate)."""
    fresh = getattr(recipe, "fresh_n_eval_", None)
    ways = [f"a larger `n_eval` (now {fresh})" if fresh is not None else
            f"more data or a larger `test_fraction` (now {recipe.test_fraction:g})"]
    shifts = getattr(recipe.scores_, "shifts", None)
    if getattr(recipe.bound_, "rows", False) and shifts is not None and \
            len(shifts) < recipe.n_eval_ - 1:
        ways.append(f"a larger `max_pairs` (now {len(shifts) * recipe.n_eval_} pairs: "
                    f"{len(shifts)} partners per item of {recipe.n_eval_ - 1})")
    return " or ".join(ways)


def plot_training(recipe: NeuralMIEstimator, truth: float | None = None,
                  path: str | Path | None = None) -> Any:
    """Training curve (batch and held-out bound per epoch), final estimate, optional truth."""
    if truth is not None and (isinstance(truth, bool) or not isinstance(
            truth, (int, float, np.integer, np.floating)) or not math.isfinite(truth)):
        raise ValidationError(f"`truth` must be the true mutual information in nats (a finite "
                              f"number) or None, got {truth!r}.")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    rows = recipe.history_
    ax.plot([r["epoch"] for r in rows], [r["mi"] for r in rows], lw=0.8, alpha=0.6,
            label="training batches")
    val = [(r["epoch"], r["val_mi"]) for r in rows if "val_mi" in r]
    if val:
        ax.plot(*zip(*val), lw=1.2, label="held-out")
    ax.axhline(recipe.estimate_nats_, color="C2", ls="-", lw=1.2,
               label=f"final estimate {recipe.estimate_nats_:.3f}")
    if truth is not None:
        ax.axhline(truth, color="k", ls="--", lw=1.0, label=f"truth {truth:.3f}")
    if recipe.best_epoch_ is not None:
        ax.axvline(recipe.best_epoch_, color="0.6", ls=":", lw=1.0, label="restored epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mutual information (nats)")
    ax.set_title(f"{type(recipe).__name__} ({getattr(recipe.bound_, 'name', '?')} bound)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _plot_count(value: Any, name: str, least: int) -> None:
    """A plot's count argument (``resolution``, ``max_points``) is an integer ≥ ``least``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValidationError(f"`{name}` must be an integer of at least {least}, got {value!r}.")


def _two_d_samples(recipe: NeuralMIEstimator, max_points: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``max_points`` fitted pairs in the data's units (1-D x and y only)."""
    _plot_count(max_points, "max_points", 1)  # (-1 dropped a point, silently)
    dataset = recipe.routine_.dataset if recipe.routine_ is not None else None
    if dataset is None:
        raise ValidationError("The fitted data are not available (a loaded estimator keeps no "
                              "data); fit it again to plot.")
    dims = (dataset["x"].shape[1], dataset["y"].shape[1])
    if dims != (1, 1):
        raise ValidationError(f"plot_critic / plot_samples draw 2-D problems (x and y with one "
                              f"column each); this fit has {dims[0]} and {dims[1]} columns.")
    n = len(dataset["x"])
    generator = torch.Generator().manual_seed(recipe.seed)
    index = torch.randperm(n, generator=generator)[:max_points].sort().values
    rows = dataset.take(index, ("x", "y"))
    x = recipe.x_transform_.inverse(rows["x"].cpu())
    y = recipe.y_transform_.inverse(rows["y"].cpu())
    return x.reshape(-1), y.reshape(-1)


def plot_critic(recipe: NeuralMIEstimator, path: str | Path | None, resolution: int,
                max_points: int) -> Any:
    """The critic t(x, y) on a grid over the samples' range, samples on top (1-D x and y)."""
    from matplotlib.figure import Figure

    _plot_count(resolution, "resolution", 2)  # (0: matplotlib's shape error)
    x, y = _two_d_samples(recipe, max_points)
    pad_x, pad_y = 0.05 * float(x.max() - x.min()), 0.05 * float(y.max() - y.min())
    gx = torch.linspace(float(x.min()) - pad_x, float(x.max()) + pad_x, resolution)
    gy = torch.linspace(float(y.min()) - pad_y, float(y.max()) + pad_y, resolution)
    mx, my = torch.meshgrid(gx, gy, indexing="xy")
    critic = recipe.routine_.models["main"]
    device = next(critic.parameters()).device
    sx = recipe.x_transform_(mx.reshape(-1, 1)).to(device)
    sy = recipe.y_transform_(my.reshape(-1, 1)).to(device)
    was_training = critic.training
    critic.eval()
    with torch.no_grad():
        t = scalar_output(critic(sx.float(), sy.float())).reshape(resolution, resolution).cpu()
    critic.train(was_training)
    fig = Figure(figsize=(5.6, 4.6), dpi=100)
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(gx.numpy(), gy.numpy(), t.numpy(), shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="critic t(x, y)")
    ax.scatter(x.numpy(), y.numpy(), s=4, c="w", alpha=0.5, lw=0, label="samples")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{type(recipe).__name__} critic (estimate {recipe.estimate_nats_:.3f} nats)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_samples(recipe: NeuralMIEstimator, path: str | Path | None, max_points: int) -> Any:
    """The joint sample beside the resampled product-of-marginals sample (1-D x and y)."""
    from matplotlib.figure import Figure

    x, y = _two_d_samples(recipe, max_points)
    generator = torch.Generator().manual_seed(recipe.seed + 1)
    shuffled = y[torch.randperm(len(y), generator=generator)]
    fig = Figure(figsize=(8.4, 4.0), dpi=100)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, ys, title in ((axes[0], y, "joint P_XY: (x_i, y_i)"),
                          (axes[1], shuffled, "product P_X × P_Y: (x_i, y_π(i))")):
        ax.scatter(x.numpy(), ys.numpy(), s=4, alpha=0.5, lw=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------------------- save / load

_RESULTS = ("estimate_nats_", "best_epoch_", "n_train_", "n_eval_", "divergences_",
            "entropies_")


def save_estimator(recipe: NeuralMIEstimator, path: str | Path) -> Path:
    """The routine (weights, history) with ``recipe.to_dict(full=True)`` and the results in
    ``routine.json``; the final scores in ``mi_scores.pt`` (so a loaded estimator gives intervals)."""
    path = Path(path)
    extra = {"recipe_config": recipe.to_dict(full=True),
             "results": {k: getattr(recipe, k, None) for k in _RESULTS}}
    recipe.routine_.save(path, extra=extra)
    if not recipe.routine_.dist.is_main:  # under torchrun rank 0 writes (routine.save did not)
        return path
    scores = recipe.scores_
    if isinstance(scores, dict):  # MI-NEE
        tensors = {f"{k}.{part}": getattr(s, part) for k, s in scores.items()
                   for part in ("data", "reference")}
    else:
        tensors = {"joint": scores.joint, "marginal": scores.marginal, "shifts": scores.shifts}
    tensors.update(x_scale=recipe.x_scale_, y_scale=recipe.y_scale_)
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, path / SCORES_FILE)
    return path


def load_estimator(cls: type, path: str | Path, critic_module: torch.nn.Module | None = None,
                   device: str = "cpu") -> Any:
    """A fitted estimator from :func:`save_estimator`: ``estimate()`` (with intervals),
    ``history_``, ``plot()`` and ``routine_`` (the critic) work."""
    from infoblocks.blocks.mutual_information import PairScores
    from infoblocks.blocks.routine import Routine
    from infoblocks.plugins.registry import recipe_from_dict

    path = Path(path)
    check_saved_recipe(cls, path)  # another recipe's save: named, with its loader
    models = {"main": critic_module} if critic_module is not None else None
    routine = Routine.load(path, models=models, device=device)
    extra = routine.saved_extra
    if "recipe_config" not in extra or not (path / SCORES_FILE).exists():
        raise ValidationError(f"{path} is not a saved MI estimator (no recipe config or "
                              f"{SCORES_FILE}); save one with estimator.save(path).")
    recipe = recipe_from_dict(extra["recipe_config"])
    if not isinstance(recipe, cls):
        raise ValidationError(f"{path} holds a {type(recipe).__name__}, not a {cls.__name__}.")
    if critic_module is not None:
        recipe.critic_module = critic_module
    for key, value in extra["results"].items():
        setattr(recipe, key, value)
    tensors = torch.load(path / SCORES_FILE, weights_only=True)
    recipe.x_scale_, recipe.y_scale_ = tensors.pop("x_scale"), tensors.pop("y_scale")
    if "joint" in tensors:
        recipe.scores_ = PairScores(tensors["joint"], tensors["marginal"], tensors["shifts"])
    else:
        recipe.scores_ = {k: ReferenceScores(tensors[f"{k}.data"], tensors[f"{k}.reference"])
                          for k in ("d_xy", "d_x", "d_y")}
    recipe.bound_ = recipe.build_evaluation("bound")
    recipe.routine_ = routine
    recipe.history_ = [dict(row) for row in routine.history.rows]
    return recipe


#: the saved estimator's folder inside ``infoblocks run``'s ``--out``
MODEL_DIR = "model"


def run_cli(recipe: NeuralMIEstimator, data: list[np.ndarray], out_dir: Path,
            **fit_options: Any) -> dict[str, Any]:
    """``infoblocks run``: two arrays, or one split at column ``split_at``; saves the fitted
    estimator in ``out_dir/model``, ``mi_training.png`` and ``estimate.json``; returns the
    summary."""
    if len(data) == 2:
        x, y = data
    elif len(data) == 1 and recipe.split_at is not None:
        arr = data[0]
        if not isinstance(arr, np.ndarray) or arr.ndim != 2:  # (a memory-mapped .npy stays one:
            arr = _as_columns(arr, "data")                   # its column slices stay on disk)
        if not 0 < recipe.split_at < arr.shape[1]:
            raise ValidationError(f"`split_at` = {recipe.split_at} must lie inside the "
                                  f"{arr.shape[1]} columns of the data.")
        x, y = arr[:, :recipe.split_at], arr[:, recipe.split_at:]
    else:
        raise ValidationError(
            f"{recipe.name} needs two arrays (--data X.npy --data Y.npy), or one array and "
            f"`split_at` (the first column of Y); got {len(data)} array(s).")
    recipe.fit(x, y, **fit_options)
    out_dir = Path(out_dir)
    # a folder of its own: a save replaces its folder whole, and out_dir also holds the
    # CLI's checkpoint (--resume) and whatever else the user keeps there
    recipe.save(out_dir / MODEL_DIR)
    recipe.plot(path=out_dir / "mi_training.png")
    summary = {**recipe.summary_dict(), "model": str(out_dir / MODEL_DIR)}
    (out_dir / "estimate.json").write_text(json.dumps(summary, indent=2))
    return summary


def demo_runs(cls: type, out_dir: Path, quick: bool) -> dict[str, Any]:
    """The seed problem for seeds 0, 1, 2 (seed 0 only when ``quick``); for seed 0 the training
    curve, the learned critic (``mi_<name>_critic.png``) and the samples
    (``mi_<name>_samples.png``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    figure = out_dir / f"mi_{cls.name}_demo.png"
    for seed in ((0,) if quick else (0, 1, 2)):
        x, y, truth = seed_problem(seed)
        est = cls(seed=seed).fit(x, y)
        rows.append({"seed": seed, "truth": truth, "estimate": float(est.estimate())})
        if seed == 0:
            est.plot(truth=truth, path=figure)
            est.plot_critic(path=out_dir / f"mi_{cls.name}_critic.png")
            est.plot_samples(path=out_dir / f"mi_{cls.name}_samples.png")
    bias = [r["estimate"] - r["truth"] for r in rows]
    return {"problem": "2-D Gaussian, rho = 1 - 0.19 U, n = 1000", "runs": rows,
            "mean_bias_nats": float(np.mean(bias)), "figure": str(figure)}


def units_scale(units: str) -> float:
    if units not in ("nats", "bits"):
        raise ValidationError(f"`units` must be 'nats' or 'bits', got {units!r}.")
    return 1.0 if units == "nats" else 1.0 / math.log(2.0)


__all__ = ["MIEstimate", "MIConvergenceWarning", "seed_problem", "SEED_PROBLEM_N",
           "save_estimator", "load_estimator", "plot_training", "diagnose"]
