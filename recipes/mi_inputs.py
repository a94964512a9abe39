"""What the MI recipes do with their inputs before training: checks (shapes, constant columns,
the split), the standardisation (moments, or the rank-Gaussian map that makes an estimate
invariant to monotone maps of the marginals), memory-mapped / torch-Dataset inputs read by rows,
fresh-sample sources (``fit(sampler=fn)``) and warm starts.  No recipe classes here (see
:mod:`infoblocks.recipes.mi`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from infoblocks.blocks.data import (LazyRows, as_rows, as_tensor, check_same_length,
                                    is_lazy)
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.mutual_information import split_sizes

if TYPE_CHECKING:  # pragma: no cover
    from .mi import NeuralMIEstimator

#: fresh samples (``fit(sampler=fn)``): pairs of the fixed evaluation draw by default — its
#: sampling error is ~σ(pointwise MI)/√n, 0.004 nats at ρ = 0.8 (σ = ρ) for 40,000 pairs
FRESH_EVAL_N = 40_000
#: ... scored against this many shifted partners each (the draw's size, not the number of
#: negative pairs, sets the precision: 4·10⁵ pairs instead of the 4·10⁶ default, 10× faster)
FRESH_PAIRS_PER_ITEM = 10
#: ... and of the fixed validation draw that early stopping watches (its marginal pairs are
#: capped at 10,000: 10,000 joint pairs cost little more than 1,000, and a noisy held-out
#: curve picks an epoch by its noise: 1,000 pairs gave −0.009 at ρ = 0.8)
FRESH_VALIDATION_N = 10_000
#: fresh samples: batches per epoch when ``batches_per_epoch`` is not set (an epoch is one
#: validation; fresh pairs cost nothing, so epochs are longer than one pass over a data set)
FRESH_BATCHES_PER_EPOCH = 20
#: the evaluation draw's generator is seeded ``seed + FRESH_SEED_OFFSET`` (apart from training)
FRESH_SEED_OFFSET = 7_777
#: rows of a memory-mapped input used to fit MI-NEE's reference distributions
REFERENCE_SAMPLE_ROWS = 100_000


def _as_columns(a: Any, name: str) -> torch.Tensor | LazyRows:
    """A ``(n, d)`` float tensor; 1-D input is one feature (n,) -> (n, 1).  A memory-mapped
    array or torch ``Dataset`` (2-D) stays on disk as :class:`LazyRows`."""
    if isinstance(a, np.memmap) and a.ndim == 1:  # one feature, as in memory (a view: lazy)
        a = a.reshape(-1, 1)
    if is_lazy(a):
        return as_rows(a, name, ndim=2)
    t = as_tensor(a, name, ndim=(1, 2))
    return t.reshape(-1, 1) if t.ndim == 1 else t


def _check_scale(mean: torch.Tensor, std: torch.Tensor, name: str) -> None:
    constant = (std <= 1e-12 * (1 + mean.abs())).nonzero().flatten().tolist()
    if constant:
        raise ValidationError(
            f"`{name}` column(s) {constant} are constant; a constant carries no information and "
            "cannot be standardised. Drop those columns.")


def _standardize(t: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, std = t.mean(0), t.std(0)
    _check_scale(mean, std, name)
    return (t - mean) / std, mean, std


def _moments(t: torch.Tensor | LazyRows) -> tuple[torch.Tensor, torch.Tensor]:
    """Column mean and standard deviation (lazy rows: one chunked scan)."""
    return t.moments() if isinstance(t, LazyRows) else (t.mean(0), t.std(0))


class Moments:
    """The standardisation (v − mean) / scale per column."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        self.mean, self.scale = mean.float(), scale.float()

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return (t - self.mean.to(t.device)) / self.scale.to(t.device)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale.to(z.device) + self.mean.to(z.device)


class RankGaussian:
    """The rank-Gaussian (copula) map of each column, fitted on a sample: v ↦ Φ⁻¹(F̂(v)), F̂
    the sample's CDF with ties averaged — the k-th smallest of n values maps to Φ⁻¹((k + ½)/n),
    a new value to the rank it would take (clipped to the sample's range).  Monotone per
    column, so it leaves I(X; Y) unchanged and makes every marginal ≈ N(0, 1): an estimate that
    no longer depends on monotone transforms of the marginals (y or y³ give the same)."""

    def __init__(self, sample: torch.Tensor) -> None:
        self.sorted = sample.double().sort(0).values.T.contiguous().cpu()  # (d, n)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        n = self.sorted.shape[1]
        values = t.double().T.contiguous().cpu()
        left = torch.searchsorted(self.sorted, values, right=False)
        right = torch.searchsorted(self.sorted, values, right=True)
        u = ((left + right).double() / (2 * n)).clamp(0.5 / n, 1 - 0.5 / n)
        z = math.sqrt(2.0) * torch.special.erfinv(2 * u - 1)
        return z.T.to(t.device, torch.float32)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Back to the data's units (linear between the sample's order statistics)."""
        n = self.sorted.shape[1]
        u = 0.5 * (1 + torch.special.erf(z.double().T.cpu() / math.sqrt(2.0)))
        position = (u * n - 0.5).clamp(0, n - 1)
        low = position.floor().long().clamp(max=n - 1)
        high = (low + 1).clamp(max=n - 1)
        frac = position - low
        out = torch.gather(self.sorted, 1, low) * (1 - frac) + \
            torch.gather(self.sorted, 1, high) * frac
        return out.T.to(z.device, torch.float32)


#: rows of lazy input sampled to fit the rank-Gaussian map (its quantiles to ~1/√10,000)
RANK_SAMPLE_ROWS = 10_000


def scaling(t: torch.Tensor | LazyRows, name: str, standardize: bool | str, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``(mean, scale, transform)`` of the columns: the standardisation's moments (zeros and
    ones when not standardising or with ``"rank"``) and the map applied to the data."""
    if not standardize:
        ones = torch.ones(t.shape[1])
        return ones - 1, ones, Moments(ones - 1, ones)
    mean, std = _moments(t)
    _check_scale(mean, std, name)
    if standardize == "rank":
        sample = t if not isinstance(t, LazyRows) else t.sample(RANK_SAMPLE_ROWS, seed)
        ones = torch.ones(t.shape[1])
        return ones - 1, ones, RankGaussian(sample)
    return mean, std, Moments(mean, std)


def check_standardize(instance: Any, attribute: Any, value: Any) -> None:
    if value not in (True, False, "rank") or (value == 1 and not isinstance(value, bool)):
        raise ValidationError(f"`standardize` must be True (zero mean, unit variance), \"rank\" "
                              f"(rank-Gaussian / copula: invariant to monotone transforms) or "
                              f"False, got {value!r}.")


class StandardizedRows(LazyRows):
    """Lazy rows transformed as they are read (``transform(rows)``; nothing is loaded)."""

    @classmethod
    def of(cls, rows: LazyRows, transform: Any) -> StandardizedRows:
        out = object.__new__(cls)
        out.__dict__.update(rows.__dict__)  # shares the source and its rows-read counter
        out.transform = transform
        return out

    def take(self, index: Any) -> torch.Tensor:
        rows = super().take(index)
        return self.transform(rows).to(rows.device)

    __getitem__ = take

    def to(self, device: torch.device | str) -> StandardizedRows:
        return StandardizedRows.of(super().to(device), self.transform)


def standardized(t: torch.Tensor | LazyRows, transform: Any) -> torch.Tensor | LazyRows:
    """``transform(t)``; lazy rows are transformed when read."""
    if isinstance(t, LazyRows):
        return StandardizedRows.of(t, transform)
    return transform(t)


def in_memory_sample(x: Any, y: Any, seed: int, rows: int = REFERENCE_SAMPLE_ROWS
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``x``, ``y`` as tensors; lazy rows: the same ``rows`` random rows of each."""
    if not isinstance(x, LazyRows) and not isinstance(y, LazyRows):
        return x, y
    n = len(x)
    index = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(
        n, min(n, rows), replace=False)))
    return x[index], y[index]


def fresh_draw(recipe: NeuralMIEstimator, fn: Any, n_eval: int | None
               ) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Fresh-sample mode: one fixed draw of ``n_eval`` evaluation pairs plus (with a held-out
    share) ``FRESH_VALIDATION_N`` validation pairs from ``fn(generator, n)``, with a generator
    seeded apart from training.  Returns x, y, the validation share of the draw (the split
    is random, and every row is an independent draw, so any split is a valid one) and
    ``n_eval``."""
    if not callable(fn):
        raise ValidationError(f"`sampler` must be a callable fn(generator, n) -> (x, y), got "
                              f"{type(fn).__name__}.")
    n_eval = FRESH_EVAL_N if n_eval is None else n_eval
    if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 4:
        raise ValidationError(f"`n_eval` must be an integer of at least 4 (the pairs of the "
                              f"fixed evaluation draw), got {n_eval!r}.")
    n_val = min(n_eval, FRESH_VALIDATION_N) if recipe.test_fraction > 0 else 0
    generator = torch.Generator().manual_seed(recipe.seed + FRESH_SEED_OFFSET)
    try:
        out = fn(generator, n_eval + n_val)
    except ValidationError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user function; named with its call
        raise ValidationError(
            f"`sampler` failed when called as fn(generator, n) for the evaluation draw (n = "
            f"{n_eval + n_val}): {type(exc).__name__}: {exc}.") from exc
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValidationError(f"`sampler` must return a pair (x, y) of arrays with n rows, got "
                              f"{type(out).__name__}.")
    x, y = (_as_columns(torch.as_tensor(v).float() if not isinstance(v, np.ndarray) else v, k)
            for k, v in zip(("x", "y"), out))
    for name, t in (("x", x), ("y", y)):
        if len(t) != n_eval + n_val:
            raise ValidationError(f"`sampler` returned {len(t)} rows of {name} when asked for "
                                  f"n = {n_eval + n_val}; fn(generator, n) must return n pairs.")
    return x, y, n_val / (n_eval + n_val), n_eval


def fresh_batches(fn: Any, transform_x: Any, transform_y: Any,
                  widths: tuple[int, int] | None = None) -> Any:
    """``fn`` with its output standardised like the evaluation draw, after checking it as
    that draw was: a pair of finite (n, d) arrays, ``widths`` = (d_x, d_y) the evaluation
    draw's (the rank-Gaussian map turned NaN into finite values and a standardisation
    broadcast a narrower x: a training draw's NaN or wrong width gave an estimate silently)."""
    def draw(generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = fn(generator, n)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValidationError(f"The fresh-sample `sampler` must return a pair (x, y) of "
                                  f"arrays with {n} rows, got {type(out).__name__}.")
        x, y = (torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v
                                ).float() for v in out)
        x, y = (v.reshape(-1, 1) if v.ndim == 1 else v for v in (x, y))
        for name, t, width in zip(("x", "y"), (x, y), widths or (None, None)):
            if t.ndim != 2 or len(t) != n or (width is not None and t.shape[1] != width):
                shape = f"({n}, {width})" if width is not None else f"({n}, d)"
                raise ValidationError(
                    f"The fresh-sample `sampler` must return {name} of shape {shape} for every "
                    f"n, as in its evaluation draw (1-D: one feature); a training draw's {name} "
                    f"has shape {tuple(t.shape)}.")
            if not bool(torch.isfinite(t).all()):
                raise ValidationError(
                    f"The fresh-sample `sampler` returned {int((~torch.isfinite(t)).sum())} "
                    f"non-finite value(s) (NaN or inf) in {name} in a training draw of n = {n}; "
                    "every draw must be finite.")
        return transform_x(x), transform_y(y)
    return draw


def fresh_sampler_spec(recipe: NeuralMIEstimator, spec: dict[str, Any], fn: Any) -> None:
    """The training sampler's spec with the standardised fresh-sample source ``simulator``
    (and ``batch_size`` / ``batches_per_epoch`` where it leaves them unset), before the build:
    a plugin's sampler with a ``simulator`` field gets it as the built-in does."""
    from .mi_evaluation import _fields_of  # (mi_evaluation imports this module)

    phase = spec["phases"][0]
    sampler = phase.get("sampler")
    sampler = {"name": sampler} if isinstance(sampler, str) else dict(sampler or {})
    fields = _fields_of("sampler", sampler.get("name")) or set()
    if "simulator" not in fields:
        raise ValidationError(
            f"The training sampler {sampler.get('name')!r} cannot draw fresh samples (it has no "
            "`simulator` field); use a built-in negative sampler with fit(sampler=...), or "
            "derive yours from PairSampler (docs/plugins.md).")
    sampler["simulator"] = fresh_batches(fn, recipe.x_transform_, recipe.y_transform_,
                                         (len(recipe.x_mean_), len(recipe.y_mean_)))
    if sampler.get("batch_size") is None and "batch_size" in fields:
        sampler["batch_size"] = recipe.batch_size
    if sampler.get("batches_per_epoch") is None and "batches_per_epoch" in fields:
        sampler["batches_per_epoch"] = FRESH_BATCHES_PER_EPOCH
    phase["sampler"] = sampler


def check_warm_start(recipe: NeuralMIEstimator, x: Any, y: Any, fresh: bool) -> None:
    """A warm start continues on data of the fitted shapes, in the same mode."""
    dataset = recipe.routine_.dataset
    if dataset is None or (recipe.sampler_ is not None) != fresh:
        raise ValidationError(
            "warm_start=True continues a fit in the same mode: pass "
            + ("a fresh-sample `sampler` again." if recipe.sampler_ is not None
               else "the data `x`, `y` again (not a `sampler`)."))
    before = (tuple(dataset["x"].shape), tuple(dataset["y"].shape))
    now = (tuple(x.shape), tuple(y.shape))
    if before != now:
        raise ValidationError(
            f"warm_start=True continues the fitted critic on data of the same shape: it was "
            f"fitted on x {before[0]}, y {before[1]}, now x {now[0]}, y {now[1]}. Set "
            "warm_start=False for a new fit.")


def validate_input(recipe: NeuralMIEstimator, x: Any, y: Any, fresh: bool = False
                   ) -> tuple[torch.Tensor | LazyRows, torch.Tensor | LazyRows]:
    """``x``, ``y`` as ``(n, d)`` tensors (or lazy rows), checked against the split and the
    batch size (not in fresh-sample mode: training draws its own pairs)."""
    x, y = _as_columns(x, "x"), _as_columns(y, "y")
    n = check_same_length(x=x, y=y)
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, LazyRows):  # (lazy rows: checked by the one scan of `scaling`)
            _check_scale(*_moments(t), name)  # constant columns: a data error, reported first
    if fresh:
        return x, y
    n_train, n_test = split_sizes(n, recipe.test_fraction)
    if n_train < 2 or (recipe.test_fraction > 0 and n_test < 2):
        raise ValidationError(
            f"`x` and `y` have {n} samples: too few for a training set of {n_train} and a "
            f"held-out set of {n_test} (test_fraction={recipe.test_fraction}); pass more "
            "samples or lower test_fraction.")
    if recipe.batch_size > n_train and not recipe.replacement:
        raise ValidationError(
            f"`batch_size` = {recipe.batch_size} exceeds the {n_train} training samples "
            f"({n} samples × (1 − test_fraction={recipe.test_fraction})); lower batch_size.")
    return x, y


__all__ = ["Moments", "RankGaussian", "StandardizedRows", "scaling", "standardized",
           "validate_input", "fresh_draw", "fresh_batches", "fresh_sampler_spec",
           "check_warm_start", "check_standardize", "in_memory_sample"]
