"""Problems with a known mutual information, for the MI recipes' demos, tests and users.

* :class:`CorrelatedGaussian` — a fresh-sample source ``fn(generator, n) -> (x, y)`` for
  ``fit(sampler=fn)``: each coordinate pair (x_k, y_k) a standard 2-D Gaussian with correlation
  ρ, pairs independent across k, so I(X; Y) = −(d/2) ln(1 − ρ²) nats;
* :func:`correlated_gaussian` — one draw of it as arrays, with the true MI;
* :func:`dense_gaussian` — benchmark-mi's ``multinormal-dense`` task (every pair of the
  2·dim coordinates correlated alike), as arrays with the true MI;
* :func:`mi_sweep` — every estimator against the truth over ρ, from fresh samples
  (``infoblocks demo mi-sweep``: a figure with a panel per estimator and a table).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.figures import save_figure
from infoblocks.blocks.validators import positive_int

#: ρ of the sweep: the blog's grid, then where the bounds differ most (I = 0.83, 1.96 nats)
SWEEP_RHOS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.99)
#: ρ of the quick sweep (``--quick``) and its budget (a smoke run, not converged estimates)
QUICK_RHOS = (0.0, 0.4, 0.8)
QUICK_OPTIONS = {"epochs": 15}
QUICK_EVAL_N = 4_000


def _rho(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 < value < 1:
        raise ValidationError(f"`rho` must be a correlation strictly between -1 and 1 (the MI "
                              f"of |rho| = 1 is infinite), got {value!r}.")


@attrs.define(frozen=True)
class CorrelatedGaussian:
    """Fresh pairs of a correlated Gaussian: x ~ N(0, I_d), y = ρ x + √(1 − ρ²) ε, ε ~ N(0, I_d).

    ``CorrelatedGaussian(rho, dim)(generator, n) -> (x, y)``, float32 tensors ``(n, dim)``
    drawn with the torch ``generator`` (what ``fit(sampler=...)`` calls);
    :attr:`mi` = −(dim/2) ln(1 − ρ²) nats."""

    rho: float = attrs.field(validator=_rho)
    dim: int = attrs.field(default=1, validator=positive_int)

    @property
    def mi(self) -> float:
        """The true I(X; Y) in nats."""
        return -0.5 * self.dim * math.log1p(-self.rho ** 2)

    def __call__(self, generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        device = generator.device
        z = torch.randn(2, n, self.dim, generator=generator, device=device)
        return z[0], self.rho * z[0] + math.sqrt(1.0 - self.rho ** 2) * z[1]


def correlated_gaussian(rho: float, n: int, seed: int = 0, dim: int = 1
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` pairs of :class:`CorrelatedGaussian` ``(rho, dim)`` drawn with ``seed``: x, y as
    ``(n, dim)`` float32 arrays and the true MI −(dim/2) ln(1 − ρ²) in nats."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValidationError(f"`n` must be a positive integer (the number of pairs), got {n!r}.")
    source = CorrelatedGaussian(rho, dim)
    x, y = source(torch.Generator().manual_seed(int(seed)), n)
    return x.numpy(), y.numpy(), source.mi


def dense_gaussian(dim: int = 25, correlation: float = 0.5, n: int = 5000, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """benchmark-mi's ``multinormal-dense-{dim}-{dim}-{correlation}`` task: (x, y) ∈ R^dim ×
    R^dim jointly Gaussian with unit variances and every off-diagonal correlation equal to
    ``correlation``; ``n`` pairs drawn with numpy's ``default_rng(seed)`` (not benchmark-mi's
    JAX draws), as float64 arrays ``(n, dim)``, and the true MI ½ (2 ln det Σ_x − ln det Σ)
    nats (1.292 for the default 25 × 25, 0.5)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValidationError(f"`dim` must be a positive integer, got {dim!r}.")
    if not -1 / (2 * dim - 1) < correlation < 1:
        raise ValidationError(f"`correlation` must be in (−1/(2·dim − 1), 1) for a valid "
                              f"covariance, got {correlation!r}.")
    cov = np.full((2 * dim, 2 * dim), float(correlation))
    np.fill_diagonal(cov, 1.0)
    truth = 0.5 * (2 * np.linalg.slogdet(cov[:dim, :dim])[1] - np.linalg.slogdet(cov)[1])
    z = np.random.default_rng(seed).multivariate_normal(np.zeros(2 * dim), cov, size=n)
    return z[:, :dim], z[:, dim:], float(truth)


def mi_sweep(out_dir: str | Path, quick: bool = False, seed: int = 0,
             recipes: tuple[str, ...] = ("mine", "nwj", "infonce", "smile", "minee"),
             rhos: tuple[float, ...] | None = None, n_eval: int | None = None,
             **options: Any) -> dict[str, Any]:
    """Every estimator in ``recipes`` on fresh samples of the 1-D correlated Gaussian for each
    ρ (default :data:`SWEEP_RHOS`; :data:`QUICK_RHOS` with ``quick``), against the truth.

    Writes ``mi_sweep.png`` (one panel per estimator: estimate with its 95 % interval, and the
    truth, against ρ) and ``mi_sweep.json``; returns the rows and the figure's path.
    ``options`` go to every recipe (e.g. ``epochs``); ``n_eval`` sizes the evaluation draw."""
    from infoblocks.plugins.registry import get_registry

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rhos = rhos or (QUICK_RHOS if quick else SWEEP_RHOS)
    if quick:
        options = {**QUICK_OPTIONS, **options}
        n_eval = n_eval or QUICK_EVAL_N
    registry = get_registry()
    rows = []
    for name in recipes:
        cls = registry.get("recipe", name)
        for rho in rhos:
            source = CorrelatedGaussian(rho)
            start = time.perf_counter()
            est = cls(seed=seed, **options).fit(sampler=source, n_eval=n_eval)
            value = est.estimate()
            print(f"   {name:<8} rho = {rho:<5} truth {source.mi:.4f}  estimate "
                  f"{float(value):.4f}  [{value.low:.4f}, {value.high:.4f}]", flush=True)
            rows.append({"recipe": name, "rho": rho, "truth": source.mi,
                         "estimate": float(value), "low": value.low, "high": value.high,
                         "error": float(value) - source.mi, "epochs": len(est.history_),
                         "seconds": time.perf_counter() - start})
    figure = out_dir / "mi_sweep.png"
    plot_sweep(rows, figure)
    result = {"problem": "1-D correlated Gaussian, fresh samples every epoch", "runs": rows,
              "figure": str(figure)}
    (out_dir / "mi_sweep.json").write_text(json.dumps(result, indent=2))
    return result


def plot_sweep(rows: list[dict[str, Any]], path: str | Path | None = None) -> Any:
    """One panel per estimator: estimate (with interval) and truth against ρ."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(r["recipe"] for r in rows))
    fig = Figure(figsize=(3.0 * len(names), 3.2), dpi=100)
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    grid = np.linspace(0, max(r["rho"] for r in rows), 200)
    for ax, name in zip(axes, names):
        mine = [r for r in rows if r["recipe"] == name]
        rho = [r["rho"] for r in mine]
        value = np.array([r["estimate"] for r in mine])
        err = np.array([[v - r["low"] for v, r in zip(value, mine)],
                        [r["high"] - v for v, r in zip(value, mine)]])
        ax.plot(grid, -0.5 * np.log1p(-grid ** 2), color="k", ls="--", lw=1.0, label="truth")
        ax.errorbar(rho, value, yerr=np.abs(err), fmt="o", ms=4, capsize=2, color="C0",
                    label="estimate")
        ax.set_title(name)
        ax.set_xlabel("ρ")
    axes[0].set_ylabel("I(X; Y) (nats)")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


__all__ = ["CorrelatedGaussian", "correlated_gaussian", "dense_gaussian", "mi_sweep", "plot_sweep",
           "SWEEP_RHOS", "QUICK_RHOS"]
