"""Check the ``cuda`` path: the engine (and every recipe whose quick demo exists) on a GPU.

Run on a machine with a GPU: ``python benchmarks/cuda_check.py``.  It trains the same small
routine on CPU and CUDA and compares, then fits each recipe family on the GPU with a small
budget and checks the numbers (``--recipes-device cpu`` runs that part on the CPU, to test the
script itself).  On a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.plugins.registry import get_registry


def engine_check() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 5)) * [3.0, 2.0, 1.0, 0.5, 0.1]).astype(np.float32)
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pca = centred @ vt[:2].T
    results = {}
    for device in ("cpu", "cuda"):
        registry = get_registry()
        routine = Routine(
            dataset={"data": x, "positions": pca},
            models={"main": registry.build("model", {"name": "mlp", "in_dim": 5, "out_dim": 2,
                                                     "hidden_dims": [64, 64]})},
            phases=[TrainingPhase(name="fit", epochs=30, sampler={"name": "items",
                                                                  "batch_size": 200},
                                  loss="position", learning_rate=1e-2, lr_schedule="cos")],
            seed=0, device=device)
        start = time.perf_counter()
        routine.train()
        elapsed = time.perf_counter() - start
        out = routine.apply(x).numpy()
        rel = float(((out - pca) ** 2).sum() / (pca ** 2).sum())
        results[device] = (rel, elapsed, str(next(routine.models.parameters()).device))
        print(f"engine on {device}: relative error {rel:.2e}, train {elapsed:.2f} s, "
              f"parameters on {results[device][2]}")
    assert results["cuda"][0] < 0.01, "the CUDA routine did not learn the projection"
    assert results["cuda"][2].startswith("cuda")
    auto = Routine(models={"main": torch.nn.Linear(2, 2)}, device="auto")
    assert auto.device.type == "cuda", "device='auto' must pick the GPU"
    print("device='auto' ->", auto.device)


def recipes_check(device: str) -> None:
    """Each recipe family fitted on ``device`` with a small budget; real numbers asserted."""
    from infoblocks.blocks.digits import Digits
    from infoblocks.blocks.embedding_quality import trustworthiness
    from infoblocks.recipes.dii import demo_config, demo_data
    from infoblocks.recipes.imnn import IMNN, gaussian_simulations
    from infoblocks.recipes.mi import MINE, seed_problem
    from infoblocks.recipes.umap import ParametricUMAP

    def timed(label, fit):
        start = time.perf_counter()
        value = fit()
        print(f"{label:40s} {value:10.4f}   {time.perf_counter() - start:6.1f} s on {device}")
        return value

    digits = Digits().load()
    x = (digits["data"] / 16.0).astype(np.float32)
    trust = timed("parametric UMAP, digits: trust@15", lambda: trustworthiness(
        x, ParametricUMAP(device=device).fit(x).embedding_, k=15))
    assert trust > 0.95, trust

    data_A, data_B = demo_data()
    weights = [0.0]

    def dii_fit():
        weights[0] = demo_config("a", device=device).fit(data_A, data_B).weights_
        return float(weights[0][0] / weights[0][3] * 30)
    w0 = timed("DII tutorial (a): weight of x0 (9.99)", dii_fit)
    assert abs(w0 - 9.99) < 0.5, weights[0]

    xs, ys, truth = seed_problem(0)
    mi = timed(f"MINE seed problem (truth {truth:.3f})",
               lambda: MINE(seed=0, device=device).fit(xs, ys).estimate())
    assert abs(mi - truth) < 0.1, mi

    fid, der = gaussian_simulations(1000, seed=0)
    vfid, vder = gaussian_simulations(1000, seed=1)
    det = timed("IMNN tutorial, 300 epochs: det F (50)", lambda: IMNN(
        n_summaries=2, theta_fid=(0.0, 1.0), epochs=300, device=device).fit(
        fid, der, validation_fiducial=vfid, validation_derivative=vder).best_val_det_F_)
    assert det > 0.7 * 50, det


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes-device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args(argv)
    if args.recipes_device == "cpu":
        recipes_check("cpu")
        return 0
    if not torch.cuda.is_available():
        print("No CUDA device here; nothing to check.")
        return 0
    print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    engine_check()
    print("recipes:", ", ".join(get_registry().names("recipe")))
    recipes_check("cuda")
    return 0


if __name__ == "__main__":
    sys.exit(main())
