"""IMNN benchmark: the imnn tutorial at its full budget, 3 seeds, and a straight-line model.

    python benchmarks/imnn_bench.py [--seeds 0 1 2] [--quick] [--variants fresh-cos-softplus]
    IMNN_PYTHON=/path/to/jax-env/bin/python python benchmarks/imnn_bench.py   # + imnn itself

Reference problem: 10 points d_i ~ N(μ, Σ), θ = (μ, Σ), fiducial (0, 1), exact det F = 50;
n_s = n_d = 1000 training and 1000 validation simulations (drawn per seed), network 3×128
LeakyReLU -> 2 summaries, Adam 1e-3, λ = 10, ε = 0.1, patience 10, min 100 / max 1000
epochs (one epoch = one step on all training simulations).  Reported per run: best validation det F, its ratio to 50 and to the oracle (the
exact sufficient statistics Σd, Σd² on the same validation simulations, ≈ 50 ± 3.3), the
iterations until the early stop, wall time and time per iteration, and det F of the trained
summaries on 100 000 independent simulations ("det 100k": the information the network really
holds, free of the validation set's scatter; the exact statistics score 50 ± 0.3 there).

Variants (``--variants``): ``fixed`` arrays with exact derivatives (imnn's GradientIMNN),
``numerical`` seed-matched derivatives (NumericalGradientIMNN), ``fresh`` simulations from the
simulator every iteration with patience 10 (SimulatorIMNN), ``softplus`` (fixed arrays, softplus
units), ``preset``: ``IMNN.preset("fresh")`` (fresh simulations, SiLU units, cosine
learning-rate decay, no early stop; the target configuration), and for comparison
``fresh-cos`` / ``fresh-cos-softplus``: the same with LeakyReLU / softplus units over 3000
epochs (softplus: the earlier preset); ``preset-2k``: ``IMNN.preset("fresh_2k")``, the
preset with 2000 fresh training simulations per iteration.  Every variant is validated on the
same fixed 1000 validation simulations.  ``load`` is the 1-minute load average when the run
ended (the timings depend on it on a shared machine).

    python benchmarks/imnn_bench.py --variants preset preset-2k --no-line   # the presets
    python benchmarks/imnn_bench.py --variants default --no-line   # issue 13: the defaults

``default``: ``IMNN(n_summaries=2, theta_fid=(0, 1), seed=seed).fit(simulator=...)`` with
nothing else set (SiLU, cosine decay over 3000 epochs, 50,000 validation simulations drawn by
the simulator every 50 epochs); its oracle is that validation set's, and ``s→imnn`` the
seconds until its validation det F first reached imnn's best on the seed (imnn's own run when
IMNN_PYTHON runs it, else the issue's 36.0 / 33.2 / 44.7).

The ``imnn`` package (JAX) is run, when ``IMNN_PYTHON`` names an interpreter that has it, in
that separate process on the very same simulations, back to back with ours; otherwise it is
skipped with a note.  Second model: y_i = m x_i + c + ε_i at 10 fixed x in [−1, 1],
ε ~ N(0, σ² = 0.25), θ = (m, c) at (1, 0): F = Σ_i (x_i, 1)ᵀ(x_i, 1)/σ² exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from infoblocks.blocks.fisher import fisher_statistics, network_summaries
from infoblocks.recipes.imnn import (DEMO_EXACT_DET_F, IMNN, OracleSummaries,
                                     gaussian_simulations, gaussian_simulator, oracle_det_F)

#: speed to a common level: iterations until the validation det F first reaches 0.7 × 50 = 35
#: (imnn's tutorial reaches 33–45 at its early stop)
REACH_FRACTION = 0.7

#: fresh simulations (n_s = n_d = 1000 new ones every iteration, the tutorial's 3×128 network
#: and Adam 1e-3) with a cosine learning-rate decay over 3000 iterations and no early stop
#: (best validation weights kept): IMNN.preset("fresh") (SiLU units; PRESET),
#: and for comparison the same budget with LeakyReLU (the tutorial's units) and softplus (the
#: earlier preset's) (FRESH_COS).  See docs/imnn.md.
FRESH_COS = {"lr_schedule": "cos", "epochs": 3000, "patience": 3000, "min_epochs": 100}
PRESET = {k: v for k, v in IMNN.presets["fresh"].items() if k != "activation"}
PRESET_2K = {k: v for k, v in IMNN.presets["fresh_2k"].items() if k != "activation"}

TUTORIAL = dict(n_summaries=2, theta_fid=(0.0, 1.0), hidden_dims=(128, 128, 128),
                activation="leaky_relu", learning_rate=1e-3, lambda_reg=10.0, epsilon=0.1,
                patience=10, min_epochs=100, epochs=1000, validation_every=1)

#: imnn's GradientIMNN best validation det F per seed, from issue 13 (imnn 0.3.2, JAX 0.4.13,
#: 2 loaded cores; 11-15 s): the level whose wall time the ``s→imnn`` column reports when
#: IMNN_PYTHON does not run imnn here
IMNN_ISSUE_BEST = {0: 36.0, 1: 33.2, 2: 44.7}

#: straight line: 10 fixed abscissae, noise variance 0.25, fiducial (m, c) = (1, 0)
LINE_X = np.linspace(-1.0, 1.0, 10)
LINE_SIGMA2 = 0.25
LINE_THETA = (1.0, 0.0)


def line_exact_det_F() -> float:
    design = np.stack([LINE_X, np.ones_like(LINE_X)], 1)
    return float(np.linalg.det(design.T @ design / LINE_SIGMA2))


def line_simulations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fiducial (n, 10) and ∂y/∂(m, c) (n, 2, 10) = (x, 1), constant."""
    rng = np.random.default_rng(seed)
    m, c = LINE_THETA
    y = m * LINE_X + c + np.sqrt(LINE_SIGMA2) * rng.standard_normal((n, LINE_X.size))
    der = np.broadcast_to(np.stack([LINE_X, np.ones_like(LINE_X)]), (n, 2, LINE_X.size))
    return y.astype(np.float32), np.ascontiguousarray(der, dtype=np.float32)


class LineOracle(torch.nn.Module):
    """Sufficient statistics of the line: (Σ x_i y_i, Σ y_i)."""

    def forward(self, y):
        x = torch.as_tensor(LINE_X, dtype=y.dtype)
        return torch.stack([(y * x).sum(-1), y.sum(-1)], -1)


def line_oracle_det_F(fid, der) -> float:
    s, ds = network_summaries(LineOracle(), {"fiducial": torch.as_tensor(fid, dtype=torch.float64),
                                             "derivative": torch.as_tensor(der, dtype=torch.float64)})
    return float(torch.linalg.det(fisher_statistics(s, ds).F))


def numerical_from_gaussian(fid: np.ndarray, delta=(0.1, 0.1)) -> np.ndarray:
    """Seed-matched simulations at θ ∓ δθ/2 from the same noise (fid = noise at (0, 1))."""
    minus = np.stack([fid - delta[0] / 2, np.sqrt(1 - delta[1] / 2) * fid], 1)
    plus = np.stack([fid + delta[0] / 2, np.sqrt(1 + delta[1] / 2) * fid], 1)
    return np.stack([minus, plus], 1).astype(np.float32)


#: name -> (label, data mode, budget overrides, activation)
VARIANTS = {
    "fixed": ("fixed, exact derivatives", "fixed", {}, "leaky_relu"),
    "numerical": ("fixed, numerical derivatives", "numerical", {}, "leaky_relu"),
    "fresh": ("fresh simulations, patience 10", "fresh", {}, "leaky_relu"),
    "softplus": ("fixed, exact derivatives", "fixed", {}, "softplus"),
    "fresh-cos": ("fresh, cos 3000", "fresh", FRESH_COS, "leaky_relu"),
    "fresh-cos-softplus": ("fresh, cos 3000", "fresh", FRESH_COS, "softplus"),
    "preset": (f"preset: fresh, cos {PRESET['epochs']}", "fresh", PRESET,
               IMNN.presets["fresh"]["activation"]),
    "preset-2k": (f"preset, n_s = n_d = {PRESET_2K['n_s']}", "fresh", PRESET_2K,
                  IMNN.presets["fresh_2k"]["activation"]),
    # IMNN(n_summaries=2, theta_fid=(0, 1), seed=seed).fit(simulator=...): nothing else set;
    # validated on its own 50,000 simulations (its oracle is that set's)
    "default": ("defaults, simulator", "default", {}, None),
}


def ours(variant: str, seed: int, budget: dict, activation: str = "leaky_relu",
         imnn_best: float | None = None) -> dict:
    label, mode, overrides, _ = VARIANTS[variant]
    if mode == "default":
        level = imnn_best if imnn_best is not None else IMNN_ISSUE_BEST.get(seed, 50.0)
        return default_run(label, seed, budget.get("device", "cpu"), budget.get("max_cap"),
                           level)
    budget = {**budget, **overrides, "activation": activation}
    if "max_cap" in budget:  # --quick
        budget["epochs"] = min(budget["epochs"], budget.pop("max_cap"))
        budget["patience"] = min(budget["patience"], budget["epochs"])
    variant = label
    fid, der = gaussian_simulations(1000, seed=2 * seed)
    val_fid, val_der = gaussian_simulations(1000, seed=2 * seed + 1)
    oracle = oracle_det_F(val_fid, val_der)
    if mode == "fixed":
        imnn = IMNN(seed=seed, **budget).fit(fid, der, validation_fiducial=val_fid,
                                             validation_derivative=val_der)
    elif mode == "numerical":
        imnn = IMNN(delta_theta=(0.1, 0.1), seed=seed, **budget).fit(
            fid, numerical_derivative=numerical_from_gaussian(fid), validation_fiducial=val_fid,
            validation_numerical_derivative=numerical_from_gaussian(val_fid))
    else:  # fresh simulations each epoch, validated on the same fixed arrays as above
        imnn = IMNN(seed=seed, **budget).fit(simulator=gaussian_simulator,
                                             validation_fiducial=val_fid,
                                             validation_derivative=val_der)
    reach = _first_reach(imnn.history_["val_det_F"], REACH_FRACTION * DEMO_EXACT_DET_F)
    if activation != "leaky_relu":
        variant = f"{variant}, {activation}"
    return {"variant": variant, "seed": seed, "best_val_det_F": imnn.best_val_det_F_,
            "oracle": oracle, "iterations": imnn.n_epochs_,
            "best_iteration": imnn.best_epoch_, "seconds": imnn.fit_seconds_,
            "reach_iterations": reach, "independent_det_F": independent_det_F(imnn, seed),
            "load": os.getloadavg()[0]}


def default_run(label: str, seed: int, device: str, cap: int | None, level: float) -> dict:
    """The defaults with the simulator; ``s→imnn``: seconds until the validation det F first
    reached ``level``, imnn's best on that seed (at the validations, every 50 epochs)."""
    options = {} if cap is None else {"epochs": cap}
    imnn = IMNN(n_summaries=2, theta_fid=(0.0, 1.0), seed=seed, device=device,
                **options).fit(simulator=gaussian_simulator)
    validation = imnn.routine_.phases[0].validation.sampler
    batch = next(iter(validation.batches(imnn.routine_.state)))
    s, ds = network_summaries(OracleSummaries(), {k: v.double().cpu() for k, v in batch.items()})
    oracle = float(torch.linalg.det(fisher_statistics(s, ds).F))
    values = imnn.history_["val_det_F"]
    reach = _first_reach([v if v == v else -1.0 for v in values], level)
    seconds_per_epoch = imnn.fit_seconds_ / max(imnn.n_epochs_, 1)
    return {"variant": label, "seed": seed, "best_val_det_F": imnn.best_val_det_F_,
            "oracle": oracle, "iterations": imnn.n_epochs_,
            "best_iteration": imnn.best_epoch_, "seconds": imnn.fit_seconds_,
            "reach_iterations": None, "independent_det_F": independent_det_F(imnn, seed),
            "seconds_to_imnn_best": None if reach is None else round(reach * seconds_per_epoch, 1),
            "load": os.getloadavg()[0]}


def independent_det_F(imnn: IMNN, seed: int, n: int = 100_000) -> float:
    """det F of the trained summaries on n fresh simulations (never seen in training or
    validation): the information the network really holds; ≈ 50 ± 0.3 for the exact
    statistics, free of the ±3.3 scatter of a 1000-simulation validation set."""
    fid, der = gaussian_simulations(n, seed=10 ** 6 + seed)
    model, device = imnn.routine_.models["main"], imnn.routine_.device
    batch = {"fiducial": torch.as_tensor(fid, device=device),
             "derivative": torch.as_tensor(der, device=device)}
    with torch.no_grad():
        s, ds = network_summaries(model, batch)
    return float(torch.linalg.det(fisher_statistics(s.double(), ds.double()).F))


def _first_reach(values: list[float], level: float) -> int | None:
    """1-based number of iterations until ``values`` first reaches ``level`` (None: never)."""
    hits = [i for i, v in enumerate(values) if v >= level]
    return hits[0] + 1 if hits else None


IMNN_SCRIPT = r"""
import json, sys, time
import numpy as onp
import jax, jax.numpy as np
try:
    from jax.example_libraries import stax, optimizers
except ImportError:
    from jax.experimental import stax, optimizers
import jax._src.api as jax_api
if not hasattr(jax_api, "_check_callable"):
    # imnn 0.3.2 uses jax names that jax 0.4.13+ moved or removed; the only jax on the package
    # index for Python 3.11 is that new, so put them back where imnn looks
    import jax.experimental, jax.interpreters.xla, jax.example_libraries
    from jax._src import api_util, dispatch
    jax_api._check_callable = api_util.check_callable
    jax_api._check_arg = dispatch.check_arg
    jax.interpreters.xla.device_array = jax.Array
    jax.experimental.optimizers = optimizers
    jax.experimental.stax = stax

    class _Index:  # jax.ops.index[...] -> the index itself
        def __getitem__(self, index):
            return index

    jax.ops.index = _Index()
    jax.ops.index_update = lambda x, index, y: x.at[index].set(y)
    jax.ops.index_add = lambda x, index, y: x.at[index].add(y)
from imnn import GradientIMNN
args = json.loads(sys.argv[1])
d = onp.load(args["file"])
model = stax.serial(stax.Dense(128), stax.LeakyRelu, stax.Dense(128), stax.LeakyRelu,
                    stax.Dense(128), stax.LeakyRelu, stax.Dense(2))
imnn = GradientIMNN(n_s=1000, n_d=1000, n_params=2, n_summaries=2, input_shape=(10,),
                    θ_fid=np.array([0.0, 1.0]), model=model,
                    optimiser=optimizers.adam(step_size=1e-3),
                    key_or_state=jax.random.PRNGKey(args["seed"]),
                    fiducial=d["fid"], derivative=d["der"].transpose(0, 2, 1),
                    validation_fiducial=d["vfid"], validation_derivative=d["vder"].transpose(0, 2, 1))
start = time.perf_counter()
imnn.fit(λ=10.0, ϵ=0.1, patience=10, min_iterations=100, max_iterations=1000, print_rate=None)
seconds = time.perf_counter() - start
val = onp.asarray(imnn.history["val_detF"])
hits = onp.nonzero(val >= args["reach"])[0]
print(json.dumps({"best_val_det_F": float(val.max()), "iterations": int(len(val)),
                  "seconds": seconds, "reach_iterations": int(hits[0]) + 1 if len(hits) else None}))
"""


def reference_imnn(seed: int) -> dict | None:
    python = os.environ.get("IMNN_PYTHON")
    if not python:
        return None
    fid, der = gaussian_simulations(1000, seed=2 * seed)
    val_fid, val_der = gaussian_simulations(1000, seed=2 * seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sims.npz"
        np.savez(path, fid=fid, der=der, vfid=val_fid, vder=val_der)
        try:
            out = subprocess.run([python, "-c", IMNN_SCRIPT, json.dumps({"file": str(path),
                                                                         "seed": seed,
                                                                         "reach": REACH_FRACTION
                                                                         * DEMO_EXACT_DET_F})],
                                 capture_output=True, text=True, timeout=1800, check=True)
        except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
            print(f"  note: imnn reference failed ({type(exc).__name__}): "
                  f"{getattr(exc, 'stderr', '')[-300:]}")
            return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(variant="imnn GradientIMNN", seed=seed,
                  oracle=oracle_det_F(val_fid, val_der), best_iteration=None)
    return result


def line_model(seed: int, budget: dict) -> dict:
    fid, der = line_simulations(1000, 2 * seed)
    val_fid, val_der = line_simulations(1000, 2 * seed + 1)
    imnn = IMNN(seed=seed, **{**budget, "theta_fid": LINE_THETA}).fit(
        fid, der, validation_fiducial=val_fid, validation_derivative=val_der)
    return {"variant": "line y = m x + c", "seed": seed, "best_val_det_F": imnn.best_val_det_F_,
            "oracle": line_oracle_det_F(val_fid, val_der), "exact": line_exact_det_F(),
            "iterations": imnn.n_epochs_, "best_iteration": imnn.best_epoch_,
            "seconds": imnn.fit_seconds_, "load": os.getloadavg()[0]}


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def show(row: dict, exact: float) -> None:
    per_it = 1000 * row["seconds"] / max(row["iterations"], 1)
    oracle = row["oracle"]
    ratio = row["best_val_det_F"] / oracle if oracle == oracle else float("nan")
    reach = row.get("reach_iterations")
    independent = row.get("independent_det_F", float("nan"))
    print(f"{row['variant']:<36} {row['seed']:>4} {row['best_val_det_F']:>8.2f} "
          f"{row['best_val_det_F'] / exact:>7.3f} {oracle:>8.2f} {ratio:>7.3f} "
          f"{row['iterations']:>6} {_or_dash(row.get('best_iteration')):>6} "
          f"{row['seconds']:>7.1f} {per_it:>7.1f} "
          f"{'-' if reach is None else reach:>6} {independent:>8.2f} "
          f"{_or_dash(row.get('seconds_to_imnn_best')):>7} "
          f"{row.get('load', float('nan')):>5.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="max 200 epochs (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=list(VARIANTS), help="which of our variants to run")
    parser.add_argument("--no-line", action="store_true", help="skip the straight-line model")
    args = parser.parse_args()
    budget = dict(TUTORIAL, device=args.device, **({"max_cap": 200} if args.quick else {}))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available; the "
          "recipe runs with threads=1 (see docs/imnn.md)")
    # warm-up: the first fit in a process pays torch's one-off initialisation (~6 s here)
    warm_fid, warm_der = gaussian_simulations(100, seed=99)
    IMNN(**{k: v for k, v in dict(budget, epochs=3, min_epochs=0).items()
            if k != "max_cap"}).fit(warm_fid, warm_der)
    header = (f"{'variant':<36} {'seed':>4} {'best det':>8} {'/50':>7} {'oracle':>8} "
              f"{'/oracle':>7} {'iters':>6} {'best':>6} {'wall s':>7} {'ms/it':>7} {'it→35':>6} "
              f"{'det 100k':>8} {'s→imnn':>7} {'load':>5}")
    print(header)
    rows = []
    if not os.environ.get("IMNN_PYTHON"):
        print("  note: IMNN_PYTHON not set; the imnn (JAX) reference is skipped")
    for seed in args.seeds:
        reference = reference_imnn(seed)
        if reference is not None:
            rows.append(reference)
            show(reference, DEMO_EXACT_DET_F)
        for variant in args.variants:
            rows.append(ours(variant, seed, budget, VARIANTS[variant][3],
                             None if reference is None else reference["best_val_det_F"]))
            show(rows[-1], DEMO_EXACT_DET_F)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.no_line:
        return
    print(f"\nstraight line, exact det F = {line_exact_det_F():.2f}")
    print(header)
    line_budget = {k: v for k, v in budget.items() if k != "max_cap"}
    if args.quick:
        line_budget["epochs"] = 200
    for seed in args.seeds:
        rows.append(line_model(seed, line_budget))
        show(rows[-1], rows[-1]["exact"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
