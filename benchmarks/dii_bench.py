"""DII benchmark: infoblocks vs DADApy's DiffImbalance (JAX, CPU) in one run, plus a scale run.

    python benchmarks/dii_bench.py                 # tutorial configs (a), (b) + scale run
    python benchmarks/dii_bench.py --no-scale      # tutorial configs only
    python benchmarks/dii_bench.py --scale-only 20000 50000
    python benchmarks/dii_bench.py --no-scale --no-reference --distance weighted_l1
                                                   # another registered distance of space A

Tutorial problem: N = 500 from np.random.seed(0), standard normal 5-D, B = [10, 3, 1, 30, 7.3] ⊙ A.
(a) 500 epochs full-batch SGD lr 1e-2, k = 1; (b) 5 mini-batches, k = 5, Adam lr 1e-2, cos decay.
Both implementations run back to back in this process on the same cores (ours first: JAX's
thread pool keeps spinning after its work and would slow a run that follows it; both
libraries are imported before timing).  DADApy re-jits its functions for every instance: its
wall time is reported with compile, and the compile share is estimated by a fresh instance
trained for one epoch.  Ours has
no compile step.  The ratio is ours / DADApy wall time, compile included on both sides.

The scale run (5-D problem, Adam, cos decay, mini-batches of 500 points) runs each N in a
fresh subprocess and reports time per epoch, peak resident memory and the final DII in chunks.
DADApy is not run there: it keeps the N × N rank matrix of B (N = 20,000: 6.6 GB measured in
issue 4; N = 50,000: ~40 GB).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = {"a": ([9.99, 2.95, 0.89, 30.0, 7.31], 0.0047),
           "b": ([10.04, 2.86, 0.57, 30.0, 7.3], 0.0112)}
SCALE_BATCH_POINTS = 500
SCALE_EPOCHS = 3


def load_dadapy_diff_imbalance():
    """DADApy's diff_imbalance module, or None with a printed note.

    ``import dadapy`` also loads its Cython extensions, which may be built against another
    numpy; diff_imbalance.py itself needs only jax / optax / flax, so it is loaded from its
    file when the package import fails.
    """
    try:
        return importlib.import_module("dadapy.diff_imbalance")
    except Exception as exc:  # noqa: BLE001 - any import problem means "skip or fall back"
        first_error = exc
    try:
        spec = importlib.util.find_spec("dadapy")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("dadapy is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / "diff_imbalance.py"
        mod_spec = importlib.util.spec_from_file_location("dadapy_diff_imbalance", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module
    except Exception as exc:  # noqa: BLE001
        print(f"note: DADApy reference skipped ({first_error!r}; {exc!r}). "
              "Install the `bench` extra (dadapy, jax) to compare.")
        return None


def tutorial_data():
    data_a = np.random.RandomState(0).normal(size=(500, 5))
    return data_a, data_a * np.array([10.0, 3.0, 1.0, 30.0, 7.3])


def rescale(w) -> list[float]:
    w = np.abs(np.asarray(w, dtype=float))
    return [round(float(v), 3) for v in w / w.max() * 30.0]


def warm_up_ours() -> None:
    """One tiny fit, so that torch's lazily imported modules (the optimizer pulls in
    torch._dynamo, ~2 s here) are loaded before timing — as JAX is imported before its
    timing.  Nothing is compiled or cached for the timed runs: each builds a new routine."""
    from infoblocks.recipes.dii import DII

    data_a, data_b = tutorial_data()
    for optimizer in ("sgd", "adam"):
        DII(epochs=1, optimizer=optimizer).fit(data_a[:50], data_b[:50])


def run_ours(label: str, data_a, data_b, distance: str | None = None) -> dict:
    from infoblocks.recipes.dii import demo_config

    # a registry name fills the distance_A slots of training and final_dii alike
    model = demo_config(label) if distance is None else demo_config(label, distance_A=distance)
    start = time.perf_counter()
    model.fit(data_a, data_b)
    train = time.perf_counter() - start
    start = time.perf_counter()
    final, _ = model.final_dii(compute_error=False)
    final_time = time.perf_counter() - start
    start = time.perf_counter()
    final_err, err = model.final_dii(compute_error=True, ratio_rows_columns=1.0)
    final_err_time = time.perf_counter() - start
    return {"weights": rescale(model.weights_), "train_s": train, "compile_s": 0.0,
            "wall_s": train, "final_dii": final, "final_s": final_time,
            "final_dii_err": final_err, "err": err, "final_err_s": final_err_time}


def run_dadapy(module, label: str, data_a, data_b) -> dict:
    options = dict(num_epochs=500, point_adapt_lambda=True, learning_rate=1e-2)
    if label == "a":
        options.update(batches_per_epoch=1, k_init=1, k_final=1, optimizer_name="sgd",
                       lr_schedule="none")
    else:
        options.update(batches_per_epoch=5, k_init=5, k_final=5, optimizer_name="adam",
                       lr_schedule="cos")
    # compile estimate: a fresh instance (DADApy jits per instance) trained for one epoch
    start = time.perf_counter()
    module.DiffImbalance(data_a, data_b, **{**options, "num_epochs": 1}).train(
        bar_label=f"dadapy {label} (1 epoch: compile)")
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    dii = module.DiffImbalance(data_a, data_b, **options)
    weights, _ = dii.train(bar_label=f"dadapy {label}")
    wall = time.perf_counter() - start
    start = time.perf_counter()
    final, _ = dii.return_final_dii(compute_error=False, ratio_rows_columns=None)
    final = float(final)
    final_time = time.perf_counter() - start
    start = time.perf_counter()
    final_err, err = dii.return_final_dii(compute_error=True, ratio_rows_columns=1)
    final_err_time = time.perf_counter() - start
    return {"weights": rescale(weights[-1]), "train_s": max(wall - compile_s, 1e-9),
            "compile_s": compile_s, "wall_s": wall, "final_dii": final, "final_s": final_time,
            "final_dii_err": float(final_err), "err": float(err),
            "final_err_s": final_err_time}


def tutorial(skip_reference: bool, distance: str | None = None) -> list[dict]:
    import torch

    data_a, data_b = tutorial_data()
    warm_up_ours()
    # ours first, then DADApy: JAX's CPU thread pool keeps spinning for a while after its
    # work and would slow a single-threaded run that follows it
    ours = {label: run_ours(label, data_a, data_b, distance) for label in ("a", "b")}
    module = None if skip_reference else load_dadapy_diff_imbalance()
    rows = []
    for label in ("a", "b"):
        ref = run_dadapy(module, label, data_a, data_b) if module is not None else None
        rows.append({"config": label, "ours": ours[label], "dadapy": ref})
    print(f"\nTutorial configurations (N = 500, 500 epochs; torch {torch.__version__}, "
          f"1 intra-op thread; same process, back to back; distance of A: "
          f"{distance or 'weighted_sqeuclidean'})")
    header = (f"{'config':<7}{'impl':<9}{'weights (max = 30)':<44}{'final DII':>10}"
              f"{'±err (halves)':>22}{'compile s':>10}{'train s':>9}{'wall s':>8}{'ratio':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        target_w, target_dii = TARGETS[row["config"]]
        print(f"{row['config']:<7}{'target':<9}{str(target_w):<44}{target_dii:>10.4f}")
        for impl in ("ours", "dadapy"):
            r = row[impl]
            if r is None:
                continue
            ratio = ""
            if impl == "ours" and row["dadapy"] is not None:
                ratio = f"{r['wall_s'] / row['dadapy']['wall_s']:.2f}"
            err = f"{r['final_dii_err']:.5f}±{r['err']:.5f}"
            print(f"{'':<7}{impl:<9}{str(r['weights']):<44}{r['final_dii']:>10.5f}{err:>22}"
                  f"{r['compile_s']:>10.2f}{r['train_s']:>9.2f}{r['wall_s']:>8.2f}{ratio:>7}")
        if row["dadapy"] is not None:
            o, d = row["ours"], row["dadapy"]
            print(f"{'':<7}{'':<9}final DII time: ours {o['final_s']:.3f} s (+ error "
                  f"{o['final_err_s']:.3f} s), DADApy {d['final_s']:.3f} s (+ error "
                  f"{d['final_err_s']:.3f} s); ours / DADApy train without compile "
                  f"{o['train_s'] / d['train_s']:.2f}")
    return rows


def scale_child(n: int) -> dict:
    """One scale point, run in its own process so that the peak RSS is this run's."""
    from infoblocks.recipes.dii import DII

    rng = np.random.default_rng(0)
    data_a = rng.normal(size=(n, 5))
    data_b = data_a * np.array([10.0, 3.0, 1.0, 30.0, 7.3])
    batches = n // SCALE_BATCH_POINTS
    model = DII(epochs=SCALE_EPOCHS, batches_per_epoch=batches, k_init=5, k_final=5,
                optimizer="adam", learning_rate=1e-2, lr_schedule="cos")
    start = time.perf_counter()
    model.fit(data_a, data_b)
    train = time.perf_counter() - start
    rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = 2000
    start = time.perf_counter()
    dii_rows, _ = model.final_dii(compute_error=False, num_points_rows=rows)
    final_rows_s = time.perf_counter() - start
    out = {"n": n, "batches": batches, "epochs": SCALE_EPOCHS,
           "s_per_epoch": train / SCALE_EPOCHS, "peak_rss_mb_train": rss_train,
           "final_dii_rows": dii_rows, "final_rows": rows, "final_rows_s": final_rows_s,
           "weights": rescale(model.weights_)}
    if n <= 20_000:
        start = time.perf_counter()
        out["final_dii_full"], _ = model.final_dii(compute_error=False)
        out["final_full_s"] = time.perf_counter() - start
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def scale(sizes: list[int]) -> list[dict]:
    results = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--scale-child", str(n)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"scale run N = {n} failed:\n{proc.stderr[-2000:]}")
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\nScale run (5-D, Adam + cos, mini-batches of {SCALE_BATCH_POINTS} points, "
          f"{SCALE_EPOCHS} epochs; peak RSS of a fresh process incl. torch ≈ 300 MB)")
    header = (f"{'N':>8}{'batches':>9}{'s/epoch':>9}{'peak MB train':>15}{'N² float32 MB':>15}"
              f"{'final DII (2000 rows)':>23}{'s':>7}{'final DII (all)':>17}{'s':>8}"
              f"{'peak MB':>9}")
    print(header)
    print("-" * len(header))
    for r in results:
        full = f"{r['final_dii_full']:.5f}" if "final_dii_full" in r else "-"
        full_s = f"{r['final_full_s']:.1f}" if "final_full_s" in r else "-"
        print(f"{r['n']:>8}{r['batches']:>9}{r['s_per_epoch']:>9.2f}{r['peak_rss_mb_train']:>15.0f}"
              f"{r['n'] ** 2 * 4 / 2 ** 20:>15.0f}{r['final_dii_rows']:>23.5f}"
              f"{r['final_rows_s']:>7.1f}{full:>17}{full_s:>8}{r['peak_rss_mb']:>9.0f}")
    return results


def units(scales: list[float]) -> list[dict]:
    """The tutorial's configurations with A in other units (A × scale): the relative weights
    and the final DII must not move (issue 11: 1e-6 gave near-uniform weights, 1e12 never
    moved, 1e30 overflowed)."""
    from infoblocks.recipes.dii import demo_config

    data_a, data_b = tutorial_data()
    rows = []
    print(f"{'config':>6} {'A ×':>8} {'weights (max 30)':>44} {'final DII':>10}")
    for label in ("a", "b"):
        for factor in scales:
            model = demo_config(label).fit(data_a * factor, data_b)
            row = {"config": label, "scale": factor, "weights": rescale(model.weights_),
                   "final_dii": model.final_dii()[0]}
            rows.append(row)
            print(f"{label:>6} {factor:>8.0e} {str(row['weights']):>44} {row['final_dii']:>10.5f}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-scale", action="store_true", help="skip the scale run")
    parser.add_argument("--no-reference", action="store_true", help="skip DADApy")
    parser.add_argument("--scale-only", type=int, nargs="*", help="only the scale run, these N")
    parser.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--distance", default=None,
                        help="registry name of the distance of space A (default: "
                             "weighted_sqeuclidean), e.g. a plugin's")
    parser.add_argument("--units", type=float, nargs="*",
                        help="only the unit check: the tutorial with A × each factor "
                             "(default 1e-6 1 1e12 1e30)")
    args = parser.parse_args(argv)
    if args.units is not None:
        units(args.units or [1e-6, 1.0, 1e12, 1e30])
        return
    if args.scale_child:
        print(json.dumps(scale_child(args.scale_child)))
        return
    if args.scale_only is not None:
        scale(args.scale_only or [20_000, 50_000])
        return
    tutorial(args.no_reference, args.distance)
    if not args.no_scale:
        scale([20_000, 50_000])


if __name__ == "__main__":
    main()
