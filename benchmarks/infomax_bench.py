"""InfoMax (issue 14) beside the reference form and PCA: the issue's experiments, 5 seeds.

    python benchmarks/infomax_bench.py                      # every table (long: ~1 h on 1 core)
    python benchmarks/infomax_bench.py --tables rows --seeds 2 --quick
    python benchmarks/infomax_bench.py --tables bounds      # InfoNCE vs JSD vs DV (our channel)
    python benchmarks/infomax_bench.py --tables digits      # linear probe, 10 % labels
    python benchmarks/infomax_bench.py --tables sd --seeds 3  # sd: data draw vs initialisation
    python benchmarks/infomax_bench.py --tables chaos --seeds 5  # inputs perturbed at 1e-7
    python benchmarks/infomax_bench.py --tables rows --systems InfoMax --first-seed 2 --seeds 3
    python benchmarks/infomax_bench.py --tables rows --systems InfoMax --options '{"n_init": 2}'
    python benchmarks/infomax_bench.py --tables rows digits --systems InfoMax --options linsker
    python benchmarks/infomax_bench.py --tables rows digits --systems InfoMax --options pca_start
    python benchmarks/infomax_bench.py --tables rows digits --systems InfoMax --options mlp
    python benchmarks/infomax_bench.py --tables digits --options '{"linear_lr": 0}'
    python benchmarks/infomax_bench.py --tables rows digits --systems InfoMax \
        --options '{"reconstruction": 0.1, "reconstruction_scale": "log"}'

Data (the issue's): x ~ U(−1, 1), x̃ = g(x) (+ Gaussian noise); the task is to recover x from
the code y by linear regression (var x = 1/3).  Rows:

* ``sanity``: x̃ = [x − x², …, x⁵ − x⁶, x⁶], 3,000 points, dim 1, in-sample LR-MSE;
* ``ten dK``: x̃ = [x^k − x^{k+1}], k = 1..10, 3,000 points, dim K = 1, 2, 3, 5, LR-MSE;
* ``semi F/σ``: 1,000 points, 90 % unlabelled (the encoder / PCA are fitted on them), 5 %
  labelled (the regression), 5 % test (the MSE); F = 19 functions x^{i−1} − x^i or those and
  28 more (sign(f)·|f|^{1/(i+1)}, i = 1..4, f in sin, cos, log(2+x), x², sinh, cosh, tanh);
  noise σ = 0.05 / 0.2; dim 3;
* ``shift F/σ``: the same, each unlabelled row scaled by U(1, 1.5) and shifted by 0.5 ± 0.05.

Systems: the reference form (encoder and DV critic both 2×10 ReLU MLPs on the raw inputs, the
critic on (x̃, y) against in-batch shuffled y, full batch, Adam 0.01, 2,000 steps), PCA with
the same dimension (on the raw inputs, as the issue measured it), and ``InfoMax()`` with its
defaults (the PCA-started encoder, 200 epochs; ``--options mlp`` for the previous ones).
Every cell is the mean ± sd over seeds 0..4 (data and initialisation); ``--tables sd`` takes
the two apart (data seeds × initialisation seeds) on the rows where the sd limits bind.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from infoblocks.recipes.infomax import InfoMax, linear_regression_mse, sanity_problem

#: the issue's reference numbers (mean of 3 seeds, measured by its author) per row
ISSUE_REFERENCE = {"sanity": 0.083, "ten d1": 0.145, "ten d2": 0.050, "ten d3": 0.045,
                   "ten d5": 0.069, "semi 19/0.05": 0.237, "semi 19/0.2": 0.143,
                   "semi 47/0.05": 0.019, "semi 47/0.2": 0.019}


# ---------------------------------------------------------------------------- the data


def ten_functions(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).uniform(-1, 1, n)
    return x, np.stack([x ** k - x ** (k + 1) for k in range(1, 11)], 1)


def functions(x: np.ndarray, many: bool) -> np.ndarray:
    out = [x ** (i - 1) - x ** i for i in range(1, 20)]
    if many:
        for f in (np.sin, np.cos, lambda t: np.log(2 + t), np.square, np.sinh, np.cosh,
                  np.tanh):
            v = f(x)
            out += [np.sign(v) * np.abs(v) ** (1 / (i + 1)) for i in range(1, 5)]
    return np.stack(out, 1)


def semi_supervised(seed: int, many: bool, noise: float, shift: bool = False, n: int = 1000):
    """x, x̃, and the unlabelled / labelled / test indices (90 / 5 / 5 %)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    features = functions(x, many)
    features = features + noise * rng.standard_normal(features.shape)
    order = rng.permutation(n)
    parts = order[:int(0.9 * n)], order[int(0.9 * n):int(0.95 * n)], order[int(0.95 * n):]
    if shift:
        u = parts[0]
        features[u] = features[u] * rng.uniform(1, 1.5, (len(u), 1)) \
            + rng.uniform(0.45, 0.55, (len(u), 1))
    return x, features, parts


# ---------------------------------------------------------------------------- the systems


def reference_form(features: np.ndarray, dim: int, seed: int, steps: int = 2000
                   ) -> np.ndarray:
    """The issue's reference: 2×10 ReLU encoder and DV critic, full batch, Adam 0.01."""
    torch.manual_seed(seed)
    x = torch.as_tensor(features, dtype=torch.float32)

    def mlp(i, o):
        return torch.nn.Sequential(torch.nn.Linear(i, 10), torch.nn.ReLU(),
                                   torch.nn.Linear(10, 10), torch.nn.ReLU(),
                                   torch.nn.Linear(10, o))

    encoder, critic = mlp(x.shape[1], dim), mlp(x.shape[1] + dim, 1)
    opt = torch.optim.Adam([*encoder.parameters(), *critic.parameters()], lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        y = encoder(x)
        joint = critic(torch.cat([x, y], 1)).squeeze(1)
        marginal = critic(torch.cat([x, y[torch.randperm(len(y), generator=gen)]], 1)).squeeze(1)
        dv = joint.mean() - (torch.logsumexp(marginal, 0) - math.log(len(marginal)))
        opt.zero_grad()
        (-dv).backward()
        opt.step()
    return lambda a: encoder(torch.as_tensor(a, dtype=torch.float32)).detach().numpy()


def pca_form(features: np.ndarray, dim: int, seed: int):
    mean = features.mean(0)
    _, _, vt = np.linalg.svd(features - mean, full_matrices=False)
    return lambda a: (a - mean) @ vt[:dim].T


def infomax_form(features: np.ndarray, dim: int, seed: int, **options):
    model = InfoMax(n_components=dim, seed=seed, **options).fit(features)
    return model.transform


# ---------------------------------------------------------------------------- the rows


def rows(quick: bool):
    out = [("sanity", None), *[(f"ten d{d}", d) for d in (1, 2, 3, 5)]]
    for kind in ("semi", "shift"):
        out += [(f"{kind} {f}/{s}", None) for f in (19, 47) for s in (0.05, 0.2)]
    return out[:3] + out[5:7] if quick else out


def score(row: str, system, seed: int, init_seed: int | None = None) -> float:
    """The row's LR-MSE / test MSE of ``system`` on the data drawn with ``seed``; the system
    is initialised with ``init_seed`` (the same as ``seed`` unless given: the main table)."""
    init = seed if init_seed is None else init_seed
    if row == "sanity":
        x, feats = sanity_problem(seed)
        return linear_regression_mse(system(feats, 1, init)(feats), x)
    if row.startswith("ten"):
        x, feats = ten_functions(seed)
        dim = int(row.split("d")[1])
        return linear_regression_mse(system(feats, dim, init)(feats), x)
    kind, spec = row.split()
    many, noise = spec.split("/")
    x, feats, (u, lab, test) = semi_supervised(seed, many == "47", float(noise), kind == "shift")
    encode = system(feats[u], 3, init)
    return linear_regression_mse(encode(feats[lab]), x[lab], encode(feats[test]), x[test])


def _systems(options: dict, only=None) -> dict:
    """The reference form, PCA and InfoMax (with ``options``), or those of them in ``only``."""
    systems = {"reference": reference_form, "PCA": pca_form,
               "InfoMax": lambda f, d, s: infomax_form(f, d, s, **options)}
    return {k: v for k, v in systems.items() if not only or k in only}


def table_rows(seeds: int, quick: bool, options: dict, only_rows=None, only_systems=None,
               first_seed: int = 0) -> dict:
    systems = _systems(options, only_systems)
    results = {}
    print("| experiment | " + " | ".join(systems) + " | issue's reference |")
    print("|---|" + "---|" * len(systems) + "---|")
    for row, _ in rows(quick):
        if only_rows and row not in only_rows:
            continue
        cells = {}
        for name, system in systems.items():
            values = [score(row, system, s) for s in range(first_seed, first_seed + seeds)]
            cells[name] = (float(np.mean(values)), float(np.std(values)), values)
        results[row] = cells
        fmt = " | ".join(f"{cells[k][0]:.4f} ± {cells[k][1]:.4f}" for k in systems)
        print(f"| {row} | {fmt} | {ISSUE_REFERENCE.get(row, '—')} |", flush=True)
    return results


#: the rows of the sd decomposition: the four whose mean is met but not the sd, the two unmet
SD_ROWS = ["ten d1", "semi 47/0.05", "semi 47/0.2", "shift 47/0.2", "ten d5", "shift 19/0.05"]


def sd_components(values: np.ndarray) -> dict:
    """One-way random-effects decomposition of ``values`` (data draws × initialisations):
    ``within`` = the pooled sd over initialisations for a fixed data draw; ``between`` = the
    sd of the per-draw means; ``data`` = the data draw's own sd component, √(var of the
    means − within² / n_init) (0 when negative); ``total`` = the sd of all cells (ddof 1)."""
    values = np.asarray(values, float)
    n_init = values.shape[1]
    within = float(np.sqrt(values.var(1, ddof=1).mean())) if n_init > 1 else 0.0
    means = values.mean(1)
    between = float(means.std(ddof=1))
    data = float(np.sqrt(max(0.0, between ** 2 - within ** 2 / n_init)))
    return {"within": within, "between": between, "data": data,
            "total": float(values.std(ddof=1)), "mean": float(values.mean()),
            "values": values.tolist()}


def table_sd(seeds: int, quick: bool, options: dict, only_rows=None, only_systems=None
             ) -> dict:
    """How much of each system's sd over seeds is the data draw: data seeds × init seeds
    (``seeds`` of each; the main table moves both together), for the sd rows."""
    systems = _systems(options, only_systems)
    chosen = [r for r in SD_ROWS if not only_rows or r in only_rows]
    results = {}
    print("| experiment | system | mean | sd within data (init) | sd between data (means) "
          "| data component | total sd |")
    print("|---|---|---|---|---|---|---|")
    for row in chosen[:2] if quick else chosen:
        results[row] = {}
        for name, system in systems.items():
            inits = 1 if name == "PCA" else seeds  # PCA has no initialisation
            values = [[score(row, system, d, i) for i in range(inits)] for d in range(seeds)]
            if name == "PCA":
                values = [v * seeds for v in values]
            c = sd_components(values)
            results[row][name] = c
            print(f"| {row} | {name} | {c['mean']:.4f} | {c['within']:.4f} | "
                  f"{c['between']:.4f} | {c['data']:.4f} | {c['total']:.4f} |", flush=True)
    return results


#: the rows of the perturbation table: those whose sd limit binds (the reference's sd / 2)
CHAOS_ROWS = ["ten d1", "semi 47/0.05", "semi 47/0.2", "shift 47/0.2"]


def perturbed(system, eps: float = 1e-7):
    """``system`` fitted on its inputs plus N(0, (eps · their std)²) noise (a fixed draw per
    seed): a change at float32's rounding level (2⁻²⁴ ≈ 6·10⁻⁸ relative), which a method whose
    result is a property of the data should not see."""
    def fit(features: np.ndarray, dim: int, seed: int):
        rng = np.random.default_rng(10_000 + seed)
        noise = rng.standard_normal(features.shape) * (eps * float(features.std()))
        return system((features + noise).astype(features.dtype), dim, seed)
    return fit


def table_chaos(seeds: int, quick: bool, options: dict, only_rows=None, only_systems=None
                ) -> dict:
    """Each system's score with its fitting inputs as drawn and perturbed at float32's rounding
    level (:func:`perturbed`), per seed: how much of a 5-seed sd is the method's own chaos."""
    systems = _systems(options, only_systems)
    chosen = [r for r in CHAOS_ROWS if not only_rows or r in only_rows]
    results = {}
    print("| experiment | system | per seed: as drawn → perturbed | mean \\|change\\| | "
          "sd over seeds (as drawn) |")
    print("|---|---|---|---|---|")
    for row in chosen[:1] if quick else chosen:
        results[row] = {}
        for name, system in systems.items():
            pairs = [(score(row, system, s), score(row, perturbed(system), s))
                     for s in range(seeds)]
            change = float(np.mean([abs(a - b) for a, b in pairs]))
            sd = float(np.std([a for a, _ in pairs]))
            results[row][name] = {"pairs": pairs, "mean_change": change, "sd": sd}
            cells = " / ".join(f"{a:.4f} → {b:.4f}" for a, b in pairs)
            print(f"| {row} | {name} | {cells} | {change:.4f} | {sd:.4f} |", flush=True)
    return results


def table_bounds(seeds: int, quick: bool, options: dict) -> dict:
    """Our channel with each bound (and the learnt joint critic with JSD, Deep InfoMax's form)."""
    variants = {"InfoNCE": {"bound": "infonce"}, "JSD": {"bound": "jsd"},
                "DV (MINE)": {"bound": "dv"},
                "JSD, joint critic": {"bound": "jsd", "critic": "joint"}}
    chosen = ["sanity", "ten d2", "semi 19/0.05", "semi 47/0.2"]
    results = {}
    print("| bound | " + " | ".join(chosen) + " |")
    print("|---|" + "---|" * len(chosen))
    for label, extra in variants.items():
        cells = []
        for row in chosen[:2] if quick else chosen:
            system = lambda f, d, s: infomax_form(f, d, s, **{**options, **extra})  # noqa: E731
            values = [score(row, system, s) for s in range(seeds)]
            cells.append((float(np.mean(values)), float(np.std(values))))
        results[label] = cells
        print(f"| {label} | " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in cells) + " |",
              flush=True)
    return results


def table_digits(seeds: int, quick: bool, options: dict) -> dict:
    """Logistic-regression probe on 16-D codes, 10 % labels, against PCA-16 and raw pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from infoblocks.plugins.registry import get_registry

    data = get_registry().build("dataset", "digits").load()
    pixels, labels = data["data"], data["target"]
    results = {"raw pixels": [], "PCA-16": [], "InfoMax-16": []}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(labels))
        lab, test = order[:len(labels) // 10], order[len(labels) // 10:]
        features = {"raw pixels": pixels, "PCA-16": pca_form(pixels, 16, seed)(pixels),
                    "InfoMax-16": infomax_form(pixels, 16, seed, **options)(pixels)}
        for name, f in features.items():
            scaler = StandardScaler().fit(f[lab])
            probe = LogisticRegression(max_iter=5000).fit(scaler.transform(f[lab]), labels[lab])
            results[name].append(float(probe.score(scaler.transform(f[test]), labels[test])))
        if quick:
            break
    print("| features | probe accuracy (10 % labels) |")
    print("|---|---|")
    for name, values in results.items():
        print(f"| {name} | {np.mean(values):.4f} ± {np.std(values):.4f} |")
    return results


def figure(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(results)
    fig = Figure(figsize=(10, 4), dpi=100)
    ax = fig.add_subplot()
    width = 0.27
    for k, system in enumerate(("reference", "PCA", "InfoMax")):
        means = [results[r].get(system, (np.nan,))[0] for r in names]
        sds = [results[r].get(system, (0, 0))[1] for r in names]
        ax.bar(np.arange(len(names)) + (k - 1) * width, means, width, yerr=sds, capsize=2,
               label=system)
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("LR-MSE / test MSE (log)")
    ax.set_title("InfoMax vs the reference form and PCA (mean ± sd, 5 seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["rows", "bounds", "digits"],
                        choices=["rows", "bounds", "digits", "sd", "chaos"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="rows: seeds first..first+seeds-1 (to extend a run)")
    parser.add_argument("--quick", action="store_true", help="fewer rows, one digits split")
    parser.add_argument("--options", default="{}",
                        help="InfoMax keyword arguments as JSON, or a preset's name "
                             "('linsker', 'pca_start', 'mlp')")
    parser.add_argument("--rows", nargs="+", help="only these rows (e.g. 'ten d5')")
    parser.add_argument("--systems", nargs="+", choices=["reference", "PCA", "InfoMax"],
                        help="only these systems")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--figure", help="write the rows figure here (PNG)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    options = dict(InfoMax.presets[args.options]) if args.options in InfoMax.presets \
        else json.loads(args.options)
    out = {}
    start = time.perf_counter()
    for table in args.tables:
        print(f"\n## {table}\n")
        if table == "rows":
            out[table] = table_rows(args.seeds, args.quick, options, args.rows, args.systems,
                                    args.first_seed)
        elif table == "sd":
            out[table] = table_sd(args.seeds, args.quick, options, args.rows, args.systems)
        elif table == "chaos":
            out[table] = table_chaos(args.seeds, args.quick, options, args.rows, args.systems)
        else:
            out[table] = {"bounds": table_bounds, "digits": table_digits}[table](
                args.seeds, args.quick, options)
    print(f"\n{time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.figure and "rows" in out:
        figure(out["rows"], Path(args.figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
