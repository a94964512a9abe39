"""Callbacks: progress, history, early stopping and checkpointing are ordinary callbacks.

Hooks are named ``on_<event>_<start|end>``; each receives the :class:`TrainState` (and, at the
end of an epoch, that epoch's metrics as host floats — moved once per epoch).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from tqdm.auto import tqdm

from .base import Block
from .errors import ValidationError
from .state import TrainState


class Callback(Block):
    """Base with no-op hooks.  A callback with a ``name`` (an attrs class, like every block)
    is registered (kind ``callback``) and can be named in a recipe's ``callbacks = [...]``."""

    kind: ClassVar[str] = "callback"

    def on_train_start(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...
    def on_phase_start(self, state: TrainState, phase: Any) -> None: ...
    def on_phase_end(self, state: TrainState, phase: Any) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None: ...


class History(Callback):
    """Per-epoch metrics of every phase: ``rows`` of ``{"phase", "epoch", **metrics}``."""

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows: list[dict[str, Any]] = list(rows or [])

    def on_epoch_end(self, state, metrics):
        self.rows.append({"phase": state.phase, "epoch": state.epoch_offset + state.epoch,
                          **metrics})

    def column(self, metric: str, phase: str | None = None) -> list[float]:
        """The values of ``metric`` over epochs (of one phase, or all)."""
        return [r[metric] for r in self.rows
                if metric in r and (phase is None or r["phase"] == phase)]

    def phases(self) -> list[str]:
        return list(dict.fromkeys(r["phase"] for r in self.rows))

    def __len__(self) -> int:
        return len(self.rows)


class ProgressBar(Callback):
    """One tqdm bar per phase, showing the latest metrics; silent when not verbose."""

    def __init__(self, verbose: bool = True, report_every: int = 1) -> None:
        self.verbose = verbose
        self.report_every = max(1, report_every)
        self._bar = None

    def on_phase_start(self, state, phase):
        self._bar = tqdm(total=phase.epochs, desc=phase.name, disable=not self.verbose,
                         leave=True, dynamic_ncols=True)

    def on_epoch_end(self, state, metrics):
        if self._bar is None:
            return
        self._bar.update(1)
        if state.epoch % self.report_every == 0:
            shown = {k: f"{v:.4g}" for k, v in list(metrics.items())[:4]}
            self._bar.set_postfix(shown, refresh=False)

    def on_phase_end(self, state, phase):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@attrs.define
class EarlyStopping(Callback):
    """Stop a phase when ``monitor`` has not improved for ``patience`` epochs.

    With ``restore_best`` the weights of the best epoch are put back at the end of the phase.
    ``min_epochs`` epochs always run.  A NaN metric never counts as an improvement.
    """

    monitor: str
    mode: str = attrs.field(default="min")
    patience: int | None = None
    min_epochs: int = 0
    min_delta: float = 0.0
    restore_best: bool = True
    #: epochs without the metric (validation every k epochs) are skipped instead of an error
    skip_missing: bool = False
    best: float = attrs.field(init=False, default=math.nan)
    best_epoch: int = attrs.field(init=False, default=-1)
    _best_state: dict[str, Any] | None = attrs.field(init=False, default=None)
    _wait: int = attrs.field(init=False, default=0)

    @mode.validator
    def _check_mode(self, attribute, value):
        if value not in ("min", "max"):
            raise ValidationError(f"EarlyStopping `mode` must be 'min' or 'max', got {value!r}.")

    def on_phase_start(self, state, phase):
        self.best, self.best_epoch, self._best_state, self._wait = math.nan, -1, None, 0

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if math.isnan(self.best):
            return True
        return value < self.best - self.min_delta if self.mode == "min" \
            else value > self.best + self.min_delta

    def on_epoch_end(self, state, metrics):
        if self.monitor not in metrics:
            if self.skip_missing:
                return
            raise ValidationError(
                f"Early stopping monitors {self.monitor!r}, which the phase does not record; "
                f"recorded metrics: {sorted(metrics)}."
            )
        value = float(metrics[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self._wait = value, state.epoch_offset + state.epoch, 0
            if self.restore_best:
                self._best_state = copy.deepcopy(state.models.state_dict())
        else:
            self._wait += 1
        if (self.patience is not None and self._wait >= self.patience
                and state.epoch + 1 >= self.min_epochs):
            state.stop = True

    def on_phase_end(self, state, phase):
        if self.restore_best and self._best_state is not None:
            state.models.load_state_dict(self._best_state)

    def checkpoint_state(self) -> dict[str, Any]:
        """What a resumed run needs: best value and epoch, the wait and the best weights."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self._wait,
                "best_state": self._best_state}

    def restore_state(self, saved: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(saved["best"]), int(saved["best_epoch"])
        self._wait, self._best_state = int(saved["wait"]), saved["best_state"]


@attrs.define
class Checkpoint(Callback):
    """Save the models' weights to ``directory`` every ``every`` epochs (weights only)."""

    directory: Path = attrs.field(converter=Path)
    every: int = 10

    def on_epoch_end(self, state, metrics):
        if (state.epoch + 1) % self.every == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            torch.save(state.models.state_dict(),
                       self.directory / f"{state.phase}-epoch{state.epoch + 1}.pt")


@attrs.define
class TensorBoard(Callback):
    """Write every metric of each epoch (the ``history_`` row: loss, validation metrics, lr,
    the recipe's own figures) to TensorBoard as ``PHASE/METRIC`` against the epoch — what the
    MINE notebook logs.  ``log_dir``: the run's folder (None: ``runs/DATE_HOST``, TensorBoard's
    default).  Needs the ``tensorboard`` package (``pip install "infoblocks[tensorboard]"``);
    under torchrun rank 0 writes.  From TOML: ``callbacks = ["tensorboard"]`` or
    ``callbacks = [{name = "tensorboard", log_dir = "runs/mine"}]``."""

    name: ClassVar[str] = "tensorboard"
    log_dir: str | None = None
    #: also write the learning rate
    lr: bool = True
    _writer: Any = attrs.field(init=False, default=None, repr=False, eq=False)

    def on_train_start(self, state):
        if not state.dist.is_main or self._writer is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValidationError(
                "The `tensorboard` callback needs the tensorboard package: pip install "
                "tensorboard (or infoblocks[tensorboard]); or drop it from `callbacks`.") from None
        self._writer = SummaryWriter(log_dir=self.log_dir)

    def on_epoch_end(self, state, metrics):
        if self._writer is None:
            return
        step = state.epoch_offset + state.epoch
        for key, value in metrics.items():
            if (key != "lr" or self.lr) and isinstance(value, int | float) and \
                    not isinstance(value, bool):
                self._writer.add_scalar(f"{state.phase}/{key}", value, step)

    def on_train_end(self, state):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@attrs.define
class EpochTimer(Callback):
    """Append one JSON line per epoch to ``path``: phase, epoch, wall seconds of the epoch
    (training and validation) and the process's peak resident memory so far (MiB) — for
    profiling and the scaling benchmark.  Under torchrun every rank writes its own file
    (``path`` with ``.rankN`` before the suffix) when ``all_ranks``, else rank 0 only."""

    name: ClassVar[str] = "epoch_timer"
    path: str = "epoch_times.jsonl"
    all_ranks: bool = False
    _start: float = attrs.field(init=False, default=0.0, repr=False, eq=False)

    def _file(self, state) -> Path | None:
        if not state.dist.active:
            return Path(self.path)
        if not self.all_ranks and not state.dist.is_main:
            return None
        p = Path(self.path)
        return p.with_name(f"{p.stem}.rank{state.dist.rank}{p.suffix}")

    def on_epoch_start(self, state):
        self._start = time.perf_counter()

    def on_epoch_end(self, state, metrics):
        target = self._file(state)
        if target is None:
            return
        row = {"phase": state.phase, "epoch": state.epoch_offset + state.epoch,
               "seconds": time.perf_counter() - self._start, "rank": state.dist.rank,
               "world_size": state.dist.world_size, "peak_rss_mib": peak_rss_mib()}
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux / macOS units)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


__all__ = ["Callback", "History", "ProgressBar", "EarlyStopping", "Checkpoint", "TensorBoard",
           "EpochTimer", "peak_rss_mib"]
