"""Training checkpoints that hold the whole training state, so a killed run resumes.

A checkpoint (``train_state.pt`` in its directory, written atomically: a temporary file then
``os.replace``) holds, at the end of an epoch: the phase index and epoch, the models'
weights, the optimizer and learning-rate scheduler state, the routine's torch generator (every
sampler draws from it), the global torch RNG (dropout) and numpy RNG states, the step counter,
the early-stopping state (best value, epoch, weights, wait) and the state that
the loss owns (``Loss.checkpoint_state``), plus the history so far.  Everything is tensors and
plain data, read back with ``torch.load(..., weights_only=True)``.

``Routine.train(checkpoint=DIR)`` writes it every ``checkpoint_every`` epochs;
``Routine.train(checkpoint=DIR, resume=True)`` continues from it: the phases before the saved
one are skipped, the saved phase continues after the saved epoch.  On the CPU, one process, the
result is bit-identical to an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import ValidationError

#: file of a training checkpoint inside its directory
TRAIN_STATE_FILE = "train_state.pt"
#: format version of the checkpoint payload
CHECKPOINT_FORMAT = 1


def write_checkpoint(directory: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``directory/train_state.pt`` atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / TRAIN_STATE_FILE
    handle, tmp = tempfile.mkstemp(prefix=f".{TRAIN_STATE_FILE}.", dir=directory)
    os.close(handle)
    try:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
        os.replace(tmp, target)  # atomic on POSIX: a reader sees the old or the new file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The payload in ``directory`` (None when there is no checkpoint yet)."""
    path = Path(directory) / TRAIN_STATE_FILE
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file
        raise ValidationError(f"{path} is not a readable training checkpoint "
                              f"({type(exc).__name__}); delete it to start afresh.") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValidationError(f"{path} is not a training checkpoint of this version "
                              f"(format {CHECKPOINT_FORMAT}).")
    return payload


class NothingToResumeWarning(UserWarning):
    """``resume`` was asked for, but the checkpoint directory holds no checkpoint: training
    starts from scratch (a typo in the path would otherwise pass for a resume)."""


def checkpoint_to_resume(directory: str | Path, announce: bool = True) -> dict[str, Any] | None:
    """The payload to resume from in ``directory`` (:func:`read_checkpoint`); where there is
    none, a :class:`NothingToResumeWarning` naming ``directory`` (with ``announce``: one
    process of a distributed run says it) and None — the run starts from scratch and writes
    its checkpoint there, so that one command line both starts a run and continues it after a
    kill (``infoblocks run --resume``, restarted workers)."""
    payload = read_checkpoint(directory)
    if payload is None and announce:
        import warnings

        missing = "" if Path(directory).is_dir() else " (the directory does not exist yet)"
        warnings.warn(
            f"resume: {str(directory)!r} holds no training checkpoint ({TRAIN_STATE_FILE})"
            f"{missing}, so training starts from scratch and writes its checkpoint there; "
            "check the path if you meant to continue a run.", NothingToResumeWarning,
            stacklevel=2)
    return payload


def load_models(models: torch.nn.Module, saved: dict[str, Any]) -> None:
    """The checkpoint's weights into ``models``, with a clear error when they do not fit."""
    try:
        models.load_state_dict(saved)
    except RuntimeError as exc:
        first = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:2]
        raise ValidationError(f"The training checkpoint was written by a routine with other "
                              f"models ({' '.join(first)[:200]}); resume with the same "
                              "configuration, or delete the checkpoint to start afresh.") from None


def rng_states(state: Any) -> dict[str, Any]:
    """The generator states of a running routine (torch generator, global torch, numpy)."""
    return {"generator": state.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(state.rng.bit_generator.state)}


def restore_rng_states(state: Any, payload: dict[str, Any]) -> None:
    state.generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    state.rng.bit_generator.state = json.loads(payload["numpy_rng"])


__all__ = ["TRAIN_STATE_FILE", "NothingToResumeWarning", "checkpoint_to_resume", "write_checkpoint",
           "read_checkpoint", "load_models", "rng_states", "restore_rng_states"]
