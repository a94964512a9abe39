"""Past one process: time per epoch at world size 1 and 2 for every recipe family (issue 12).

    python benchmarks/scaling_bench.py                     # every family, world sizes 1 and 2
    python benchmarks/scaling_bench.py --cases mine umap   # some of them
    python benchmarks/scaling_bench.py --device cuda --world-sizes 1   # one GPU

Every run is a fresh process tree — ``python -m torch.distributed.run --standalone
--nproc_per_node=W`` (gloo on the CPU, one intra-op thread per rank) — that fits the recipe
with the ``epoch_timer`` callback, so the figures are the engine's own per-epoch wall times
(the first epoch of a phase, which warms allocators up, is left out) and every rank's peak
resident memory.  The compute-bound cases use batches large enough that a step is arithmetic,
not per-step overhead: with the same total batch, 2 ranks each compute half of every batch.

Cases:

- ``dii``: N = 50,000 memory-mapped points, 2,000-point mini-batches whose rows the ranks
  split (``benchmarks/dii_scaling.py``; ``--dii-n 200000`` for the bounded-memory run);
- ``mine``: 10⁶ memory-mapped (x, y) pairs (5-D correlated Gaussians), batches of 4,096
  joint pairs and their marginal pairs split over the ranks;
- ``umap``: 70,000 × 784 (synthetic: 10 clusters on a 16-D manifold, mapped to 784-D), the
  main phase's edge batches (4,096 edges and their negatives) split over the ranks;
- ``imnn``: the tutorial problem with 1,000 fresh simulations (and their derivatives) per
  step, split over the ranks, the Fisher statistics summed before the loss.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: the phase whose epochs are timed, per case
TIMED_PHASE = {"mine": None, "umap": "main", "imnn": None}


# ---------------------------------------------------------------------------- data


def _mine_data(directory: Path, n: int = 1_000_000, dim: int = 5, rho: float = 0.5,
               seed: int = 0) -> tuple[Path, Path]:
    """x, y with y = ρ x + √(1−ρ²) ε per dimension, written in chunks as .npy files."""
    rng = np.random.default_rng(seed)
    paths = directory / "x.npy", directory / "y.npy"
    x = np.lib.format.open_memmap(paths[0], mode="w+", dtype=np.float32, shape=(n, dim))
    y = np.lib.format.open_memmap(paths[1], mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, 200_000):
        m = min(200_000, n - start)
        a = rng.normal(size=(m, dim))
        x[start:start + m] = a
        y[start:start + m] = rho * a + np.sqrt(1 - rho ** 2) * rng.normal(size=(m, dim))
    x.flush(), y.flush()
    return paths


def _umap_data(directory: Path, n: int = 70_000, dim: int = 784, seed: int = 0) -> Path:
    """10 Gaussian clusters on a 16-D latent space, mapped to ``dim`` by a random linear map
    and a tanh (a curved manifold), plus pixel noise — MNIST's size, not its content."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(10, 16))
    labels = rng.integers(10, size=n)
    latent = centres[labels] + rng.normal(size=(n, 16))
    mixing = rng.normal(size=(16, dim)) / 4.0
    path = directory / "x.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, 10_000):
        chunk = np.tanh(latent[start:start + 10_000] @ mixing)
        out[start:start + len(chunk)] = chunk + 0.05 * rng.normal(size=chunk.shape)
    out.flush()
    return path


# ---------------------------------------------------------------------------- one rank


def _worker(case: str, data: list[str], timer: str, device: str, epochs: int) -> None:
    import torch

    torch.set_num_threads(1)
    callbacks = [{"name": "epoch_timer", "path": timer, "all_ranks": True}]
    if case == "mine":
        from infoblocks.recipes import MINE

        x, y = (np.load(p, mmap_mode="r") for p in data)
        MINE(batch_size=4096, epochs=epochs, test_fraction=0.02, patience=epochs,
             device=device, callbacks=callbacks).fit(x, y)
    elif case == "umap":
        from infoblocks.recipes import ParametricUMAP

        x = np.load(data[0], mmap_mode="r")
        # the network's main phase alone (layout_epochs=0), as the table in docs/scaling.md
        # measured it before the default gained its layout phase on free coordinates
        ParametricUMAP(epochs=epochs, batch_size=4096, batches_per_epoch=10, init_epochs=2,
                       layout_epochs=0, device=device, callbacks=callbacks).fit(x)
    elif case == "imnn":
        from infoblocks.recipes import IMNN
        from infoblocks.recipes.imnn import DEMO_THETA_FID, gaussian_simulator

        epochs = max(epochs, 12)  # validation (det F of fresh simulations) every 10 epochs
        IMNN(n_summaries=2, theta_fid=DEMO_THETA_FID, epochs=epochs, min_epochs=epochs,
             device=device, callbacks=callbacks).fit(simulator=gaussian_simulator)
    else:
        raise SystemExit(f"unknown case {case!r}")


# ---------------------------------------------------------------------------- the driver


def _run(case: str, world: int, data: list[Path], device: str, epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        timer = Path(tmp) / "times.jsonl"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={world}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([*launcher, __file__, "--worker", case, "--timer", str(timer),
                               "--device", device, "--epochs", str(epochs), "--data",
                               *map(str, data)], capture_output=True, text=True, env=env,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{case} at world size {world} failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for f in sorted(Path(tmp).glob("times*.jsonl"))
                for line in f.read_text().splitlines()]
    phase = TIMED_PHASE[case] or rows[0]["phase"]
    mine = [r for r in rows if r["rank"] == 0 and r["phase"] == phase]
    seconds = [r["seconds"] for r in mine[1:]] or [r["seconds"] for r in mine]
    peaks = {}
    for r in rows:
        peaks[r["rank"]] = max(peaks.get(r["rank"], 0.0), r["peak_rss_mib"])
    return {"case": case, "world_size": world, "phase": phase,
            "s_per_epoch": statistics.median(seconds), "epochs_timed": len(seconds),
            "peak_rss_mib_per_rank": [round(peaks[k]) for k in sorted(peaks)]}


def _dii(world: int, device: str, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from dii_scaling import epoch_seconds

    out = epoch_seconds(n=n, world_size=world, device=device)
    return {"case": "dii", "world_size": world, "phase": f"train (N = {n})",
            "s_per_epoch": out["s_per_epoch"], "epochs_timed": out.get("epochs", 2),
            "peak_rss_mib_per_rank": out.get("peak_rss_mb_per_rank")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["dii", "mine", "umap", "imnn"])
    parser.add_argument("--world-sizes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dii-n", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (first untimed)")
    parser.add_argument("--worker")
    parser.add_argument("--timer")
    parser.add_argument("--data", nargs="*", default=[])
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.data, args.timer, args.device, args.epochs)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in args.cases:
            if case == "mine":
                data = list(_mine_data(tmp))
            elif case == "umap":
                data = [_umap_data(tmp)]
            else:
                data = []
            for world in args.world_sizes:
                result = _dii(world, args.device, args.dii_n) if case == "dii" else \
                    _run(case, world, data, args.device, args.epochs)
                results.append(result)
                print(json.dumps(result), flush=True)
    print(f"\n| case | phase | world size | s / epoch | speed-up | peak RSS per rank (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        base = next(b for b in results if b["case"] == r["case"] and b["world_size"] ==
                    min(args.world_sizes))
        print(f"| {r['case']} | {r['phase']} | {r['world_size']} | {r['s_per_epoch']:.3g} | "
              f"{base['s_per_epoch'] / r['s_per_epoch']:.2f}× | {r['peak_rss_mib_per_rank']} |")


if __name__ == "__main__":
    main()
