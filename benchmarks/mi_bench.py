"""MI estimators: infoblocks vs the notebook MINE trainer (and benchmark-mi when available).

    python benchmarks/mi_bench.py [--quick] [--benchmark-mi-python PATH] [--no-minee]

1. Time per Adam step on the seed problem at the same batch (100) and network (2→100→100→1
   ELU, weights N(0, 0.02²)): a plain torch loop written like the MINE notebook vs our
   routine, run back-to-back and interleaved in this process (both with 1 torch thread, and the
   notebook also with torch's default thread count), median over repeats; and our routine with
   autograd's step (the bounds' hand-written step switched off: the A/B of that step).
2. Bias on the seed problem (seeds 0, 1, 2): the notebook trainer (100 epochs × 10 batches,
   final value on the whole sample with one random permutation) vs ``MINE`` with defaults.
3. With ``--benchmark-mi-python`` (an interpreter where ``import bmi`` works; it needs
   jax==0.4.30 and numpy<2, so it lives in its own environment: ``python3.11 -m venv bmi-env
   && bmi-env/bin/pip install benchmark-mi==0.1.3 jax==0.4.30 jaxlib==0.4.30``, two
   minutes; XLA is held to one thread like ours): benchmark-mi's MINE, InfoNCE, NWJ and
   Donsker–Varadhan estimators (``--estimators``; critic MLP (10, 5), Adam 0.1, batch 256,
   50/50 split) and ours (DV: ``MINE(ma_rate=1)``, the plain DV gradient) on the same samples
   (n = 5000) of three tasks, draw by draw (``--draws 0,1,2``: ``task.sample(5000, seed=d)``),
   then mean |error| and mean seconds per task; ``--cross-fit`` adds ``cross_fit(MINE(...))``.
   Without it, ours on draws made here of the two tasks we can draw exactly (1v1-normal,
   dense 25 × 25) beside benchmark-mi's recorded figures.
4. MI-NEE on X, Y ∈ R⁶ with 6 independent pairs of ρ = 0.9 (truth 4.982, n = 1000): held-out
   early stopping must keep the estimate below 1.1 × truth (the reference code reaches 8.86).
5. ``--only floor``: where the step time goes — the critic's forward + backward alone, the
   loss, torch's fused Adam, and :class:`~infoblocks.blocks.optim.LeanAdam` (the same kernel
   without ``Optimizer.step``'s wrappers; what the engine uses), in a bare loop beside the
   notebook trainer and our whole in-engine step: the ceiling of the speed-up at equal threads
   through autograd; the hand-written step (forward, bound gradient and backward without
   autograd, what the engine runs) in the same bare loop; then the critic's forward + backward
   as modules, as ``plan_forward`` and as one autograd node (``MLPFunction``).
6. ``--only invariance``: benchmark-mi's dense task (multinormal-dense-25-25-0.5, generated
   here from its covariance) and a 3-D Gaussian with y → y³, MINE / NWJ / InfoNCE with the
   moments (``standardize=True``) and the ranks (``"rank"``, the default).
7. ``--only compile``: ``torch.compile`` of the MINE step (critic + loss in one graph) beside
   eager and the notebook trainer: ms per step, the compile seconds, the drift from eager.

The machine is shared: compare ratios measured in the same run, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from torch import nn

from infoblocks.recipes.mi import (MINE, MINEE, NWJ, InfoNCE, MIConvergenceWarning,
                                   seed_problem)

# ====================================================================== the notebook trainer


class NotebookCritic(nn.Module):
    """The notebook's statistics network: 2 → 100 → 100 → 1 with ELU, N(0, 0.02²) weights."""

    def __init__(self, in_dim: int = 2, hidden: int = 100) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden), \
            nn.Linear(hidden, 1)
        for layer in (self.fc1, self.fc2, self.fc3):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.constant_(layer.bias, 0)

    def forward(self, z):
        return self.fc3(nn.functional.elu(self.fc2(nn.functional.elu(self.fc1(z)))))


def notebook_sample(data: np.ndarray, batch: int, joint: bool) -> np.ndarray:
    if joint:
        return data[np.random.choice(range(len(data)), size=batch, replace=False)]
    a = np.random.choice(range(len(data)), size=batch, replace=False)
    b = np.random.choice(range(len(data)), size=batch, replace=False)
    return np.concatenate([data[a][:, 0:1], data[b][:, 1:2]], axis=1)


def notebook_step(net, optim, data, batch, ma_et, ma_rate=0.01):
    joint = torch.FloatTensor(notebook_sample(data, batch, True))
    marginal = torch.FloatTensor(notebook_sample(data, batch, False))
    t = net(joint)
    et = torch.exp(net(marginal))
    mi_lb = torch.mean(t) - torch.log(torch.mean(et))
    ma_et = (1 - ma_rate) * ma_et + ma_rate * torch.mean(et)
    loss = -(torch.mean(t) - (1 / ma_et.mean()).detach() * torch.mean(et))
    optim.zero_grad()
    loss.backward()
    optim.step()
    return mi_lb.detach().cpu().numpy(), ma_et.detach()


def notebook_train(data: np.ndarray, steps: int, seed: int, batch: int = 100):
    np.random.seed(seed)
    torch.manual_seed(seed)
    net = NotebookCritic()
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    ma_et = 1.0
    start = time.perf_counter()
    for _ in range(steps):
        _, ma_et = notebook_step(net, optim, data, batch, ma_et)
    elapsed = time.perf_counter() - start
    with torch.no_grad():  # the notebook's final value: whole sample, one permutation
        joint = torch.FloatTensor(data)
        marginal = torch.FloatTensor(np.c_[data[:, 0], np.random.permutation(data[:, 1])])
        value = float(net(joint).mean() - torch.log(torch.exp(net(marginal)).mean()))
    return value, elapsed / steps


class autograd_step:
    """Within: the MI bounds take autograd's path (their hand-written step switched off), for
    an A/B of the same routine."""

    def __enter__(self):
        from infoblocks.blocks.mutual_information import bounds

        self._bounds, self._call = bounds, bounds.MIBound._hand_call
        bounds.MIBound._hand_call = lambda self, *args: None
        return self

    def __exit__(self, *exc):
        self._bounds.MIBound._hand_call = self._call


def ours_step_time(x: np.ndarray, y: np.ndarray, epochs: int, hand: bool = True) -> float:
    """ms per step of our routine at the notebook's batch, network, optimiser, 10 batches per
    epoch, no held-out set (so no validation cost); ``hand=False``: autograd's step."""
    est = MINE.preset("notebook", epochs=epochs, threads=None)  # no held-out set, 10 batches
    routine = est.build(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    start = time.perf_counter()
    if hand:
        routine.train()
    else:
        with autograd_step():
            routine.train()
    return (time.perf_counter() - start) / (epochs * routine.phases[0].sampler.num_batches(
        routine.state))


# ====================================================================== sections


def section_speed(repeats: int, steps: int) -> dict:
    x, y, _ = seed_problem(0)
    data = np.c_[x, y]
    default_threads = torch.get_num_threads()
    times = {"notebook (default threads)": [], "notebook (1 thread)": [], "ours (1 thread)": [],
             "ours, autograd's step": []}
    ours_step_time(x, y, 2)  # warm-up (optimizer import, allocator)
    ours_step_time(x, y, 2, hand=False)
    for _ in range(repeats):
        torch.set_num_threads(default_threads)
        # fewer steps: with 2 threads on a loaded 2-core machine a step can take 100 ms
        times["notebook (default threads)"].append(notebook_train(data, steps // 5, 0)[1] * 1e3)
        torch.set_num_threads(1)
        times["notebook (1 thread)"].append(notebook_train(data, steps, 0)[1] * 1e3)
        times["ours (1 thread)"].append(ours_step_time(x, y, steps // 10) * 1e3)
        times["ours, autograd's step"].append(ours_step_time(x, y, steps // 10, False) * 1e3)
    torch.set_num_threads(default_threads)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n## 1. Time per Adam step, seed problem, batch 100, 2-100-100-1 ELU "
          f"(median of {repeats} × {steps} steps, interleaved)")
    print(f"{'trainer':30s} {'ms/step':>8s} {'notebook/this':>14s}")
    base = med["notebook (1 thread)"]
    for k, v in med.items():
        print(f"{k:30s} {v:8.3f} {base / v:14.2f}")
    print(f"speed-up ours vs notebook at equal threads: {base / med['ours (1 thread)']:.2f}x; "
          f"vs notebook at torch's default {default_threads} threads: "
          f"{med['notebook (default threads)'] / med['ours (1 thread)']:.2f}x")
    return med


def section_bias(seeds=(0, 1, 2)) -> dict:
    print("\n## 2. Seed problem (2-D Gaussian, rho = 1 - 0.19 U, n = 1000): estimate vs truth")
    print(f"{'seed':>4s} {'truth':>7s} {'notebook':>9s} {'ours':>7s} {'nb s':>6s} {'ours s':>7s}")
    rows = []
    for seed in seeds:
        x, y, truth = seed_problem(seed)
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        nb, _ = notebook_train(np.c_[x, y], 1000, seed)
        t_nb = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MIConvergenceWarning)
            ours = MINE(seed=seed).fit(x, y).estimate()
        t_ours = time.perf_counter() - t0
        rows.append((truth, nb, ours))
        print(f"{seed:4d} {truth:7.4f} {nb:9.4f} {ours:7.4f} {t_nb:6.1f} {t_ours:7.1f}")
    arr = np.array(rows)
    bias_nb, bias_ours = arr[:, 1] - arr[:, 0], arr[:, 2] - arr[:, 0]
    print(f"bias notebook {bias_nb.mean():+.4f} ± {bias_nb.std():.4f}; "
          f"ours {bias_ours.mean():+.4f} ± {bias_ours.std():.4f} (mean ± sd over seeds)")
    return {"bias_notebook": float(bias_nb.mean()), "bias_ours": float(bias_ours.mean())}


BMI_SCRIPT = r"""
import json, sys, time, numpy as np, bmi
out, draws = sys.argv[1], [int(d) for d in sys.argv[2].split(",")]
labels = sys.argv[3].split(",")
classes = {"MINE": "MINEEstimator", "InfoNCE": "InfoNCEEstimator", "NWJ": "NWJEstimator",
           "DV": "DonskerVaradhanEstimator"}
tasks = ["1v1-normal-0.75", "multinormal-sparse-5-5-2-2.0", "multinormal-dense-25-25-0.5"]
results = []
for name in tasks:
    task = bmi.benchmark.BENCHMARK_TASKS[name]
    truth = task.mutual_information
    truth = float(truth() if callable(truth) else truth)
    for draw in draws:
        x, y = task.sample(5000, seed=draw)
        np.savez(f"{out}/{name}_{draw}.npz", x=np.asarray(x), y=np.asarray(y))
        for label in labels:
            est = getattr(bmi.estimators.neural, classes[label])(
                hidden_layers=(10, 5), learning_rate=0.1, batch_size=256,
                train_test_split=0.5, verbose=False, seed=0)
            t0 = time.perf_counter()
            value = float(est.estimate(x, y))
            results.append({"task": name, "draw": draw, "truth": truth, "estimator": label,
                            "estimate": value, "seconds": time.perf_counter() - t0})
print(json.dumps(results))
"""


#: XLA's flags for one intra-op thread (benchmark-mi runs on JAX)
BMI_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


#: benchmark-mi's estimator (label) -> ours with the same bound and training gradient: DV is
#: MINE without the moving average (``ma_rate=1``: the plain DV gradient)
OURS_FOR_BMI = {"MINE": lambda: MINE(seed=0, batch_size=256),
                "InfoNCE": lambda: InfoNCE(seed=0, batch_size=256),
                "NWJ": lambda: NWJ(seed=0, batch_size=256),
                "DV": lambda: MINE(seed=0, batch_size=256, ma_rate=1.0)}


def section_benchmark_mi(python: str | None, draws=(0, 1, 2), cross: bool = False,
                         estimators=("MINE", "InfoNCE", "NWJ", "DV")) -> list | None:
    """benchmark-mi's MINE, InfoNCE, NWJ and Donsker–Varadhan estimators against ours, draw by
    draw (benchmark-mi's fits of a draw, then ours on the same samples: the load is shared
    alike); with ``cross`` also ``cross_fit(MINE(...))`` beside benchmark-mi's MINE."""
    from infoblocks.recipes.mi import cross_fit

    print("\n## 3. benchmark-mi tasks (n = 5000): estimate (truth) and wall time")
    if not python:
        print("no --benchmark-mi-python PATH (an interpreter with benchmark-mi, jax==0.4.30, "
              "numpy<2): ours on draws made here, beside benchmark-mi's figures recorded on "
              "its own draws (docs/mi.md)")
        return section_benchmark_mi_local()
    print(f"{'task':32s} {'est.':12s} {'draw':>4s} {'truth':>6s} {'bmi':>7s} {'ours':>7s} "
          f"{'bmi s':>6s} {'ours s':>7s}")
    rows = []
    # XLA held to one thread, as ours runs (docs/mi.md); a caller's XLA_FLAGS win
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", BMI_ONE_THREAD)}
    for draw in draws:
        print(f"(draw {draw}: {time.strftime('%H:%M:%S')}, load average "
              f"{os.getloadavg()[0]:.1f})", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([python, "-c", BMI_SCRIPT, tmp, str(draw),
                                   ",".join(estimators)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"skipped: benchmark-mi failed in {python}: {proc.stderr.strip()[-400:]}")
                return None
            theirs = json.loads(proc.stdout.strip().splitlines()[-1])
            for r in theirs:
                data = np.load(f"{tmp}/{r['task']}_{r['draw']}.npz")
                cases = [(r["estimator"], None)]
                if cross and r["estimator"] == "MINE":
                    cases.append(("MINE cross", cross_fit))
                for label, wrap in cases:
                    est = OURS_FOR_BMI[r["estimator"]]()
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", MIConvergenceWarning)
                        fitted = wrap(est, data["x"], data["y"]) if wrap else \
                            est.fit(data["x"], data["y"])
                    ours, secs = float(fitted.estimate_nats_), time.perf_counter() - t0
                    rows.append({**r, "label": label, "ours": ours, "ours_seconds": secs})
                    print(f"{r['task']:32s} {label:12s} {draw:4d} {r['truth']:6.3f} "
                          f"{r['estimate']:7.3f} {ours:7.3f} {r['seconds']:6.1f} {secs:7.1f}",
                          flush=True)
    print(f"(end: {time.strftime('%H:%M:%S')}, load average {os.getloadavg()[0]:.1f})")
    print(f"\nover draws {', '.join(map(str, draws))}: mean |error| (nats) and mean seconds")
    print(f"{'task':32s} {'est.':12s} {'|err| bmi':>9s} {'ours':>7s} {'bmi s':>6s} "
          f"{'ours s':>7s}  closer / faster draws")
    for task in dict.fromkeys(r["task"] for r in rows):
        for label in dict.fromkeys(r["label"] for r in rows):
            sel = [r for r in rows if r["task"] == task and r["label"] == label]
            err_b = [abs(r["estimate"] - r["truth"]) for r in sel]
            err_o = [abs(r["ours"] - r["truth"]) for r in sel]
            closer = sum(o <= b for o, b in zip(err_o, err_b))
            faster = sum(r["ours_seconds"] < r["seconds"] for r in sel)
            print(f"{task:32s} {label:12s} {np.mean(err_b):9.3f} {np.mean(err_o):7.3f} "
                  f"{np.mean([r['seconds'] for r in sel]):6.1f} "
                  f"{np.mean([r['ours_seconds'] for r in sel]):7.1f}  "
                  f"{closer}/{len(sel)} {faster}/{len(sel)}")
    return rows


#: benchmark-mi 0.1.3's estimates and seconds on its own seed-0 draws (n = 5000), recorded with
#: --benchmark-mi-python on this machine (30 Nov 10:41, XLA at one thread, load 2.4-3.0;
#: docs/mi.md)
BMI_RECORDED = {("1v1-normal-0.75", "MINE"): (0.398, 12.8),
                ("1v1-normal-0.75", "InfoNCE"): (0.403, 83.0),
                ("multinormal-dense-25-25-0.5", "MINE"): (1.225, 6.1),
                ("multinormal-dense-25-25-0.5", "InfoNCE"): (1.111, 29.2)}


def gaussian_plugin_mi(x: np.ndarray, y: np.ndarray) -> float:
    """The sample's own Gaussian plug-in MI ½ (ln det S_x + ln det S_y − ln det S), nats: how
    far a draw itself is from the truth (a Gaussian task's estimator cannot know better)."""
    x, y = np.asarray(x, float).reshape(len(x), -1), np.asarray(y, float).reshape(len(y), -1)
    cov, d = np.cov(np.c_[x, y].T), x.shape[1]
    logdet = lambda m: np.linalg.slogdet(np.atleast_2d(m))[1]  # noqa: E731
    return float(0.5 * (logdet(cov[:d, :d]) + logdet(cov[d:, d:]) - logdet(cov)))


def section_benchmark_mi_local(seeds=(0,)) -> list:
    """The two benchmark-mi tasks we can draw exactly (the sparse task's parametrisation is
    benchmark-mi's own): ours with ``batch_size=256`` beside benchmark-mi's recorded figures."""
    from infoblocks.recipes.mi import correlated_gaussian, dense_gaussian

    problems = {"1v1-normal-0.75": lambda s: correlated_gaussian(0.75, 5000, seed=s),
                "multinormal-dense-25-25-0.5": lambda s: dense_gaussian(25, 0.5, 5000, seed=s)}
    print(f"{'task':30s} {'est.':8s} {'seed':>4s} {'truth':>6s} {'plug-in':>7s} {'bmi*':>7s} "
          f"{'ours':>7s} {'bmi s*':>6s} {'ours s':>7s}")
    rows = []
    for (task, label), (theirs, their_s) in BMI_RECORDED.items():
        cls = MINE if label == "MINE" else InfoNCE
        for seed in seeds:
            x, y, truth = problems[task](seed)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MIConvergenceWarning)
                ours = cls(seed=0, batch_size=256).fit(x, y).estimate_nats_
            secs = time.perf_counter() - t0
            plugin = gaussian_plugin_mi(x, y)
            rows.append({"task": task, "estimator": label, "seed": seed, "truth": truth,
                         "plugin": plugin, "bmi_recorded": theirs, "ours": ours,
                         "ours_seconds": secs})
            print(f"{task:30s} {label:8s} {seed:4d} {truth:6.3f} {plugin:7.3f} {theirs:7.3f} "
                  f"{ours:7.3f} {their_s:6.1f} {secs:7.1f}", flush=True)
    print("* benchmark-mi on its own draw (seed 0), recorded; ours on draws made here of the "
          "same distribution (plug-in: that draw's own Gaussian MI)")
    return rows


def section_minee_r6(epochs: int) -> dict:
    print("\n## 4. MI-NEE, X, Y in R^6, 6 independent pairs rho = 0.9, n = 1000")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 6))
    y = 0.9 * x + math.sqrt(1 - 0.81) * rng.standard_normal((1000, 6))
    truth = 6 * -0.5 * math.log(1 - 0.81)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MIConvergenceWarning)
        est = MINEE(seed=0, epochs=epochs).fit(x, y)
    secs = time.perf_counter() - t0
    peak_train = max(r["mi"] for r in est.history_)
    value = est.estimate()
    print(f"truth {truth:.3f}; estimate {value:.3f} ({value / truth:.2f} x truth; "
          f"limit 1.10); highest training-batch value {peak_train:.3f}; "
          f"{len(est.history_)} epochs, best {est.best_epoch_}; {secs:.1f} s")
    return {"truth": truth, "estimate": value, "ratio": value / truth}


def section_floor(steps: int = 500) -> dict:
    """The parts of one MINE step at the notebook's batch and network, in a bare loop; and the
    critic's forward + backward three ways: the modules (``net(z)``), the same ops without
    ``Module.__call__`` (``plan_forward``, what ``JointCriticNet`` runs) and one autograd node
    with a hand-written backward (``MLPFunction``)."""
    from infoblocks.blocks.mutual_information import JointCritic, MINELoss
    from infoblocks.blocks.mutual_information.fast_mlp import (mlp_plan, one_node_forward,
                                                                plan_forward)
    from infoblocks.blocks.mutual_information.scores import BatchScores
    from infoblocks.blocks.optim import LeanAdam

    print("\n## 5. One step's parts (batch 100 + 100 marginal, 2-100-100-1 ELU, 1 thread)")
    torch.set_num_threads(1)
    x, y, _ = seed_problem(0)
    data = np.c_[x, y]
    xa, ya = torch.randn(100, 200, 1), torch.randn(100, 200, 1)

    def loop(lean: bool) -> list[float]:
        critic = JointCritic(x_dim=1, y_dim=1, init_std=0.02).build()
        params = list(critic.parameters())
        optimizer = LeanAdam(params, lr=1e-3) if lean else \
            torch.optim.Adam(params, lr=1e-3, fused=True)
        loss, parts = MINELoss(ma_rate=0.01), [0.0] * 4
        for i in range(steps):
            t0 = time.perf_counter()
            t = critic(xa[i % 100], ya[i % 100])
            t1 = time.perf_counter()
            scores = BatchScores(t[:100], t[100:])
            value = loss.objective(scores, None, None)
            t2 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            t3 = time.perf_counter()
            optimizer.step()
            t4 = time.perf_counter()
            for k, d in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[k] += d * 1e3 / steps
        return parts

    def critic_ways(repeats: int = 5) -> dict[str, tuple[float, float]]:
        """ms of forward and backward (of t.sum()) per way, interleaved, median of repeats."""
        net = JointCritic(x_dim=1, y_dim=1, init_std=0.02).build().net
        plan, params = mlp_plan(net), list(net.parameters())
        ways = {"modules": net, "plan_forward": lambda z: plan_forward(plan, z),
                "one node": lambda z: one_node_forward(plan, z)}
        zs = torch.cat([xa, ya], -1)
        times: dict[str, list] = {k: [] for k in ways}
        for _ in range(repeats):
            for name, fn in ways.items():
                fwd = bwd = 0.0
                for i in range(steps):
                    t0 = time.perf_counter()
                    out = fn(zs[i % 100]).sum()
                    t1 = time.perf_counter()
                    for p in params:
                        p.grad = None
                    out.backward()
                    fwd, bwd = fwd + t1 - t0, bwd + time.perf_counter() - t1
                times[name].append((fwd * 1e3 / steps, bwd * 1e3 / steps))
        return {k: (statistics.median(f for f, _ in v), statistics.median(b for _, b in v))
                for k, v in times.items()}

    def hand_loop() -> list[float]:
        """The bound's hand-written step (forward, gradient, backward; no autograd) and
        LeanAdam on the gradients it hands over, as the engine runs them."""
        critic = JointCritic(x_dim=1, y_dim=1, init_std=0.02).build()
        models = nn.ModuleDict({"main": critic})
        optimizer = LeanAdam(list(critic.parameters()), lr=1e-3)
        loss, parts = MINELoss(ma_rate=0.01), [0.0] * 2
        for i in range(steps):
            batch = {"x": xa[i % 100][:100], "y": ya[i % 100][:100],
                     "x_marginal": xa[i % 100][100:], "y_marginal": ya[i % 100][100:],
                     "x_all": xa[i % 100], "y_all": ya[i % 100]}
            t0 = time.perf_counter()
            out = loss(batch, models, None)
            optimizer.zero_grad(set_to_none=True)
            for p, g in out.gradients:
                p.grad = g
            t1 = time.perf_counter()
            optimizer.step()
            t2 = time.perf_counter()
            parts[0] += (t1 - t0) * 1e3 / steps
            parts[1] += (t2 - t1) * 1e3 / steps
        return parts

    notebook = notebook_train(data, steps, 0)[1] * 1e3
    fused, lean, hand = loop(False), loop(True), hand_loop()
    ours = ours_step_time(x, y, steps // 10) * 1e3
    ours_autograd = ours_step_time(x, y, steps // 10, hand=False) * 1e3
    print(f"notebook step {notebook:.3f} ms; bare loop: forward {fused[0]:.3f}, loss "
          f"{fused[1]:.3f}, backward {fused[2]:.3f}, torch fused Adam {fused[3]:.3f}, "
          f"LeanAdam {lean[3]:.3f} ms; ours in the engine {ours:.3f} ms (autograd's step "
          f"{ours_autograd:.3f})")
    floor = fused[0] + fused[1] + fused[2]
    print(f"critic + loss + backward through autograd: {floor:.3f} ms = {notebook / floor:.2f}x "
          f"below the notebook step (the ceiling through autograd); with torch's Adam "
          f"{notebook / (floor + fused[3]):.2f}x, LeanAdam {notebook / (floor + lean[3]):.2f}x")
    print(f"hand-written step (forward + bound gradient + backward, no autograd) {hand[0]:.3f} "
          f"ms + LeanAdam {hand[1]:.3f} = {notebook / sum(hand):.2f}x; ours in the engine "
          f"{notebook / ours:.2f}x (autograd's step {notebook / ours_autograd:.2f}x)")
    ways = critic_ways()
    print("critic forward + backward on 200 rows (ms, interleaved, median of 5): " + "; ".join(
        f"{k} {f:.3f} + {b:.3f} = {f + b:.3f}" for k, (f, b) in ways.items()))
    return {"notebook": notebook, "fused": fused, "lean": lean, "hand": hand, "ours": ours,
            "ours_autograd": ours_autograd, "critic_ways": ways}


def section_compile(steps: int = 500, repeats: int = 5) -> dict:
    """``torch.compile`` (inductor's C++ backend) of the MINE critic forward + loss as one
    graph, the backward compiled by AOTAutograd, ``LeanAdam`` after it; beside the same step in
    eager mode and the notebook trainer, interleaved, 1 thread; the one-off compile seconds
    (the first two steps: cold, or from inductor's on-disk cache when a previous process
    compiled the same graph) and how far the weights drift from eager after 200 steps."""
    from infoblocks.blocks.mutual_information import JointCritic
    from infoblocks.blocks.optim import LeanAdam

    print("\n## 7. torch.compile of the MINE step (batch 100 + 100, 2-100-100-1 ELU, 1 thread)")
    torch.set_num_threads(1)
    x, y, _ = seed_problem(0)
    data = np.c_[x, y]
    gen = torch.Generator().manual_seed(0)
    xa, ya = torch.randn(100, 200, 1, generator=gen), torch.randn(100, 200, 1, generator=gen)
    rate = 0.01

    def step(critic, xb, yb, log_ma):  # MINE's loss as mine_loss computes it
        t = critic(xb, yb)
        current = torch.logsumexp(t[100:], 0) - math.log(100)
        log_ma = torch.logaddexp(log_ma + math.log1p(-rate), current.detach() + math.log(rate))
        return torch.exp(current - log_ma) - t[:100].mean(), log_ma

    def make(compiled: bool):
        torch.manual_seed(0)
        critic = JointCritic(x_dim=1, y_dim=1, init_std=0.02).build()
        return critic, LeanAdam(list(critic.parameters()), lr=1e-3), \
            torch.compile(step, dynamic=False) if compiled else step

    def loop(critic, optimizer, fn, n):
        log_ma, params = torch.tensor(0.0), list(critic.parameters())
        start = time.perf_counter()
        for i in range(n):
            loss, log_ma = fn(critic, xa[i % 100], ya[i % 100], log_ma)
            for p in params:
                p.grad = None
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) * 1e3 / n

    try:
        start = time.perf_counter()
        compiled = make(True)
        loop(*compiled, 2)
        compile_s = time.perf_counter() - start
    except Exception as exc:  # no C++ compiler, no inductor: nothing to compare
        print(f"skipped: torch.compile failed ({type(exc).__name__}: {str(exc)[:200]})")
        return {}
    a, b = make(False), make(True)
    loop(*a, 200)
    loop(*b, 200)
    drift = max(float((p - q).detach().abs().max()) for p, q in zip(a[0].parameters(),
                                                            b[0].parameters()))
    eager = make(False)
    times: dict[str, list] = {"notebook": [], "eager": [], "compiled": []}
    for _ in range(repeats):
        times["notebook"].append(notebook_train(data, steps, 0)[1] * 1e3)
        times["eager"].append(loop(*eager, steps))
        times["compiled"].append(loop(*compiled, steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"compile (first two steps, incl. importing dynamo) {compile_s:.1f} s; ms/step "
          f"(median of {repeats} x {steps}): notebook {med['notebook']:.3f}, eager "
          f"{med['eager']:.3f} ({med['notebook'] / med['eager']:.2f}x), compiled "
          f"{med['compiled']:.3f} ({med['notebook'] / med['compiled']:.2f}x); max |w_eager - "
          f"w_compiled| after 200 steps {drift:.1e}; compile repaid after "
          f"{compile_s / max(med['eager'] - med['compiled'], 1e-9) * 1e3:,.0f} steps")
    return {**med, "compile_s": compile_s, "drift": drift}


def section_invariance() -> dict:
    """Ranks vs moments on benchmark-mi's dense task and on y -> y³."""
    from infoblocks.recipes.mi import NWJ, correlated_gaussian, dense_gaussian

    print("\n## 6. Standardisation: moments vs ranks (rank-Gaussian, the default)")
    xd, yd, dense_truth = dense_gaussian(25, 0.5, 5000, seed=0)
    x3, y3, truth3 = correlated_gaussian(0.8, 2000, seed=0, dim=3)
    cases = [("dense 25x25 (MINE, batch 256)", MINE, dict(batch_size=256), xd, yd,
              dense_truth)]
    cases += [(f"3-D Gaussian, y^3 ({cls.name})", cls, {}, x3, y3 ** 3, truth3)
              for cls in (MINE, NWJ, InfoNCE)]
    out = {}
    for label, cls, options, x, y, truth in cases:
        values = []
        for standardize in (True, "rank"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MIConvergenceWarning)
                values.append(cls(seed=0, standardize=standardize, **options).fit(x, y)
                              .estimate_nats_)
        out[label] = values
        print(f"{label:34s} truth {truth:.3f}  moments {values[0]:.3f}  ranks {values[1]:.3f}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and epochs")
    parser.add_argument("--benchmark-mi-python", default=None,
                        help="python interpreter where `import bmi` works")
    parser.add_argument("--draws", default="0,1,2",
                        help="benchmark-mi draws (task.sample(5000, seed=draw)) for --only bmi")
    parser.add_argument("--estimators", default="MINE,InfoNCE,NWJ,DV",
                        help="--only bmi: benchmark-mi's estimators to compare (MINE, InfoNCE, "
                             "NWJ, DV)")
    parser.add_argument("--cross-fit", action="store_true",
                        help="--only bmi: also cross_fit(MINE(...)) beside benchmark-mi's MINE")
    parser.add_argument("--no-minee", action="store_true", help="skip the R^6 MI-NEE case")
    parser.add_argument("--only", default="speed,bias,bmi,minee",
                        help="comma-separated sections to run (speed, bias, bmi, minee, floor, "
                             "invariance, compile)")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} default threads; machine shared, "
          "compare ratios within this run")
    if "speed" in only:
        section_speed(repeats=3 if args.quick else 5, steps=200 if args.quick else 500)
    if "bias" in only:
        section_bias(seeds=(0,) if args.quick else (0, 1, 2))
    if "bmi" in only:
        section_benchmark_mi(args.benchmark_mi_python,
                             draws=tuple(int(d) for d in args.draws.split(",")),
                             cross=args.cross_fit, estimators=tuple(args.estimators.split(",")))
    if "minee" in only and not args.no_minee:
        section_minee_r6(epochs=200 if args.quick else 1000)
    if "floor" in only:
        section_floor(steps=200 if args.quick else 500)
    if "invariance" in only:
        section_invariance()
    if "compile" in only:
        section_compile(steps=200 if args.quick else 500)


if __name__ == "__main__":
    main(sys.argv[1:])
