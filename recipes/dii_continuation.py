"""Continuing a DII fit: a warm start (a second ``fit`` with ``warm_start=True``) and a run
resumed from its checkpoint (``fit(..., resume=True)``) — a helper module of
:mod:`infoblocks.recipes.dii`; it defines no recipe."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.routine import Routine


def check_warm_start_shapes(previous: dict[str, Any], data: dict[str, Any]) -> None:
    """A warm start continues the same weights: the arrays must have the fitted shapes."""
    if set(previous) != set(data):
        raise ValidationError(
            f"warm_start continues a fit on {sorted(previous)}; this fit passes "
            f"{sorted(data)}. Pass the same kind of data, or set warm_start=False.")
    for key, value in data.items():
        before, now = tuple(previous[key].shape), tuple(value.shape)
        # the weights are per feature; the number of points may change
        if before[1:] != now[1:] or (key == "distances_B" and before != now):
            raise ValidationError(
                f"warm_start continues the weights fitted on `{key}` of shape {before}; this "
                f"fit's has shape {now}. Pass data with the same features, or set "
                "warm_start=False to start afresh.")


def continue_routine(previous: Routine, fresh: Routine) -> Routine:
    """``previous`` (the fitted routine: weights, generator, history, each phase's optimizer
    state) with the phases and data of ``fresh`` (this fit's settings: epochs, learning
    rate ... and arrays).  Each new phase continues the optimizer state of the previous phase
    of its name."""
    last_runs = {phase.name: phase.last_run for phase in previous.phases}
    for phase in fresh.phases:
        phase.last_run = last_runs.get(phase.name)
    previous.phases = fresh.phases
    previous.dataset = fresh.dataset
    previous.constants = fresh.constants
    if previous.state is not None:  # the running state reads the new arrays
        previous.state.dataset = fresh.dataset.to(previous.device)
        previous.state.globals.update(
            {key: torch.as_tensor(value).to(previous.device)
             for key, value in fresh.constants.items()})
    return previous


def weights_history(rows: list[np.ndarray], length: int, final: np.ndarray,
                    before: np.ndarray | None = None) -> np.ndarray:
    """(length, n_params) weights per epoch from a recorder's ``rows`` (the phase start, then
    each epoch): after ``before`` (a warm start: the start row repeats its last), or, for a
    run resumed at a later epoch, with NaN rows for the epochs trained before the restart
    (their weights were not kept; the DII history has them).  A run resumed from a complete
    checkpoint trains nothing: NaN rows, then the ``final`` weights."""
    if not rows:  # (NaN fits the weights' own dtype: a resumed fit keeps float32)
        table = np.full((length, len(final)), np.nan, dtype=final.dtype)
        table[-1] = final
        return table
    if before is not None:
        return np.concatenate([before, np.stack(rows[1:])]) if len(rows) > 1 else before
    table = np.stack(rows)
    missing = length - len(table)
    if missing > 0:
        table = np.concatenate([table[:1], np.full((missing, table.shape[1]), np.nan,
                                                   dtype=table.dtype), table[1:]])
    return table


__all__ = ["check_warm_start_shapes", "continue_routine", "weights_history"]
