"""DII past one process: time per epoch at world size 1 and 2, and a run at N = 200,000 in
bounded memory with its peak resident size per rank (issue 12).

    python benchmarks/dii_scaling.py                 # N = 50,000 at 1 and 2 processes
    python benchmarks/dii_scaling.py --n 200000 --world-sizes 2 --final-rows 1000

Each run is a fresh process (``torch.distributed.run --standalone`` for world size > 1, gloo,
one intra-op thread per rank), so the peak RSS (``getrusage``) is that run's own, torch
included (~300 MB).  The data (5-D, B = [10, 3, 1, 30, 7.3] ⊙ A, the tutorial problem) is
written to ``.npy`` files and read memory-mapped: each step reads only its batch's rows.

Called from ``benchmarks/scaling_bench.py`` through :func:`epoch_seconds`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: points per mini-batch: the batch is the unit of work that the ranks split (rows), large
#: enough that a step is compute-bound (2000 × 2000 tables) rather than per-step overhead
BATCH_POINTS = 2000
#: the tutorial's scales of B = SCALES ⊙ A
SCALES = (10.0, 3.0, 1.0, 30.0, 7.3)


def _write_data(n: int, directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """A ~ N(0, 1) (n, 5) and B = SCALES ⊙ A as float32 .npy files, written in chunks."""
    rng = np.random.default_rng(seed)
    paths = directory / "a.npy", directory / "b.npy"
    a = np.lib.format.open_memmap(paths[0], mode="w+", dtype=np.float32, shape=(n, 5))
    b = np.lib.format.open_memmap(paths[1], mode="w+", dtype=np.float32, shape=(n, 5))
    for start in range(0, n, 100_000):
        chunk = rng.normal(size=(min(100_000, n - start), 5)).astype(np.float32)
        a[start:start + len(chunk)] = chunk
        b[start:start + len(chunk)] = chunk * np.asarray(SCALES, dtype=np.float32)
    a.flush(), b.flush()
    del a, b
    return paths


def _child(path_a: str, path_b: str, epochs: int, device: str, final_rows: int) -> dict:
    """One rank's run: a one-epoch fit (setup, warm-up), then ``epochs`` more epochs timed
    (a warm start: the same routine goes on), then the final DII on ``final_rows`` rows."""
    import torch

    from infoblocks.recipes.dii import DII

    torch.set_num_threads(1)
    a = np.load(path_a, mmap_mode="r")
    b = np.load(path_b, mmap_mode="r")
    batches = max(1, a.shape[0] // BATCH_POINTS)
    model = DII(epochs=1, batches_per_epoch=batches, k_init=5, k_final=5, optimizer="adam",
                learning_rate=1e-2, device=device, threads=1)
    model.fit(a, b)
    model.set_params(warm_start=True, epochs=epochs)
    start = time.perf_counter()
    model.fit(a, b)
    seconds = (time.perf_counter() - start) / epochs
    rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"rank": model.routine_.dist.rank, "world_size": model.routine_.dist.world_size,
           "n": int(a.shape[0]), "batches": batches, "batch_points": a.shape[0] // batches,
           "s_per_epoch": seconds, "peak_rss_mb_train": rss_train,
           "weights_max30": [round(float(w), 2)
                             for w in model.weights_ / model.weights_.max() * 30]}
    if final_rows:
        start = time.perf_counter()
        out["final_dii"] = model.final_dii(num_points_rows=final_rows)[0]
        out["final_rows"], out["final_s"] = final_rows, time.perf_counter() - start
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def epoch_seconds(n: int = 50_000, world_size: int = 1, epochs: int = 2,
                  device: str = "cpu", final_rows: int = 0, timeout: float = 3600.0
                  ) -> dict[str, Any]:
    """Time per DII training epoch at ``n`` points and ``world_size`` processes.

    Mini-batches of :data:`BATCH_POINTS` points (``n // 2000`` per epoch), Adam, k = 5; the
    rows of each batch are split over the ranks.  Returns rank 0's record — ``n``,
    ``world_size``, ``batches``, ``s_per_epoch`` (mean of ``epochs`` epochs after a warm-up
    epoch), ``weights_max30``, and with ``final_rows`` the final DII on that many rows
    against all n columns (``final_dii``, ``final_s``) — plus ``peak_rss_mb_per_rank``
    (training and overall).  Raises RuntimeError when the run fails."""
    with tempfile.TemporaryDirectory() as tmp:
        path_a, path_b = _write_data(n, Path(tmp))
        args = [str(path_a), str(path_b), str(epochs), device, str(final_rows), tmp]
        launcher = [sys.executable] if world_size == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={world_size}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([*launcher, __file__, "--child", *args], capture_output=True,
                              text=True, env=env, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"DII scaling run (n = {n}, world size {world_size}) failed:\n"
                               f"{proc.stderr[-3000:]}")
        # one file per rank (the ranks' lines on a shared stdout can interleave)
        records = sorted((json.loads(f.read_text()) for f in Path(tmp).glob("rank*.json")),
                         key=lambda r: r["rank"])
    result = dict(records[0])
    result.pop("rank")
    result["peak_rss_mb_per_rank"] = [round(r["peak_rss_mb"]) for r in records]
    result["peak_rss_mb_train_per_rank"] = [round(r["peak_rss_mb_train"]) for r in records]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--final-rows", type=int, default=0)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        path_a, path_b, epochs, device, final_rows, out = args.child
        record = _child(path_a, path_b, int(epochs), device, int(final_rows))
        (Path(out) / f"rank{record['rank']}.json").write_text(json.dumps(record))
        return
    results = [epoch_seconds(args.n, w, args.epochs, args.device, args.final_rows)
               for w in args.world_sizes]
    base = results[0]["s_per_epoch"]
    print(f"{'N':>8}{'world':>6}{'batches':>8}{'s/epoch':>9}{'speed-up':>9}"
          f"{'peak MB/rank (train)':>22}{'peak MB/rank':>14}  weights (max 30)")
    for r in results:
        print(f"{r['n']:>8}{r['world_size']:>6}{r['batches']:>8}{r['s_per_epoch']:>9.2f}"
              f"{base / r['s_per_epoch']:>9.2f}{str(r['peak_rss_mb_train_per_rank']):>22}"
              f"{str(r['peak_rss_mb_per_rank']):>14}  {r['weights_max30']}"
              + (f"  final DII ({r['final_rows']} rows) {r['final_dii']:.5f} in "
                 f"{r['final_s']:.1f} s" if "final_dii" in r else ""))


if __name__ == "__main__":
    main()
