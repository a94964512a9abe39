"""Training under torch.distributed (``torchrun``): one process per device, the engine's
reductions on the standard collectives — no home-made transport.

What the engine does when a routine runs with ``world_size > 1``:

- the process group is initialised from torchrun's environment (``gloo`` on the CPU,
  ``nccl`` on CUDA) unless the caller already did;
- global relations are computed on rank 0 and broadcast (``broadcast_object_list``);
- every rank draws the *same* batch from the shared seeded generator and keeps its shard
  (``Sampler.shard``: items ``rank::world_size``), so ranks see disjoint data with no
  communication and the union is the single-process batch;
- after ``backward`` the gradients of the trained parameters are averaged over the ranks
  (``all_reduce`` of one flattened buffer, what DistributedDataParallel does without the
  overlap) — the models stay plain modules, so attribute access (DII's ``weights``), the
  declared ``after_optimizer_step`` constraints and ``state_dict`` keys are unchanged;
- epoch metrics are averaged over the ranks before the one host transfer per epoch, so early
  stopping sees the same numbers everywhere (its stop flag is broadcast from rank 0);
- saving and checkpoints are written by rank 0 only;
- infoblocks' own warnings are shown by rank 0 only (:func:`quiet_other_ranks`): every rank
  computes them from the same settings, globals and rank-averaged results, so the other ranks
  would repeat them word for word.  A plugin's, torch's or the user's own warnings (which may
  concern one rank's shard) still show on every rank; ``INFOBLOCKS_WARN_ALL_RANKS=1`` shows
  infoblocks' on every rank too.

With equal shards (a batch size divisible by the world size) the averaged gradient is the
gradient of the full batch's mean loss: a 2-process run follows the 1-process run with the same
total batch up to floating-point reduction order.
"""

from __future__ import annotations

import atexit
import os
import sys
import warnings
from typing import Any

import attrs
import torch
import torch.distributed as dist

from .errors import ValidationError


@attrs.define
class Distributed:
    """The rank and world size of this process (1 and 0 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ collectives

    def broadcast(self, value: Any) -> Any:
        """``value`` of rank 0 on every rank (any picklable object)."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Mean of each parameter's gradient over the ranks, in one flattened all-reduce."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            chunk = flat[offset:offset + n].view_as(g)
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
            offset += n

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over the ranks."""
        if not self.active:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values / self.world_size

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over the ranks (no gradient; a copy, ``values`` is untouched)."""
        if not self.active:
            return values
        values = values.detach().clone()
        dist.all_reduce(values)
        return values

    def differentiable_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over the ranks, through which autograd flows back to every
        rank's ``values`` (:class:`_SumOverRanks`).

        A loss built from such sums is the loss of the whole batch and identical on every
        rank; its backward sums the ranks' identical upstream gradients, so each rank's
        local gradient comes out ``world_size`` times the one-process gradient of its own
        contributions — the engine's gradient *averaging* over ranks then gives exactly the
        one-process gradient of the full batch."""
        if not self.active:
            return values
        return _SumOverRanks.apply(values)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_ranks x, on every rank; ∂L/∂x = Σ_ranks ∂L/∂y (every rank's y depends on every
    rank's x).  What ``torch.distributed.nn.functional.all_reduce`` did for a sum before
    torch deprecated it in favour of a private module."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor) -> torch.Tensor:
        total = values.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def from_environment(mode: bool | str, device: torch.device) -> Distributed:
    """The :class:`Distributed` of this process for ``distributed`` = ``"auto"`` (torchrun's
    environment decides), ``True`` (required) or ``False``; initialises the process group when
    torchrun started the process and nobody did yet."""
    if mode not in (True, False, "auto"):
        raise ValidationError(f"`distributed` must be True, False or 'auto', got {mode!r}.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if mode is False or (mode == "auto" and world <= 1 and not dist.is_initialized()):
        return Distributed()
    if not dist.is_available():
        raise ValidationError("`distributed=True` but this torch build has no torch.distributed.")
    if not dist.is_initialized():
        if "RANK" not in os.environ or world <= 1:
            raise ValidationError(
                "`distributed=True` needs a process group: launch with `torchrun "
                "--nproc_per_node=N ...` (or call torch.distributed.init_process_group first).")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        # the group we opened is closed before the interpreter exits (a gloo group still open
        # at exit can abort the process: "terminate called without an active exception")
        atexit.register(_close)
    quiet_other_ranks(dist.get_rank())
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


#: set to 1 to see infoblocks' own warnings on every rank under torchrun
WARN_ALL_RANKS = "INFOBLOCKS_WARN_ALL_RANKS"


def quiet_other_ranks(rank: int | None = None) -> bool:
    """On a rank other than 0 (``rank``, else torchrun's ``RANK``), stop showing the warnings
    that infoblocks itself issues (a ``warnings.warn`` called from an ``infoblocks.*``
    module: ShortcutWarning, MIConvergenceWarning, the batch-norm warning ...), which every
    rank computes alike and rank 0 shows; warnings issued by other code (a plugin's block,
    torch, the user's script) are shown as before.  Not done with
    ``INFOBLOCKS_WARN_ALL_RANKS=1``.  Filters still apply first (``"error"`` still raises)
    and recording (``catch_warnings(record=True)``, ``pytest.warns``) still records them.
    Returns whether this process now leaves them to rank 0."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0") or 0)
    if rank == 0 or os.environ.get(WARN_ALL_RANKS, "") not in ("", "0"):
        return False
    shown = warnings.showwarning
    if getattr(shown, "_infoblocks_rank", None) is None:  # once (again after catch_warnings)

        def showwarning(message: Any, category: Any, filename: str, lineno: int,
                        file: Any = None, line: str | None = None) -> None:
            if not _issued_by_infoblocks():
                shown(message, category, filename, lineno, file, line)

        showwarning._infoblocks_rank = rank  # type: ignore[attr-defined]
        warnings.showwarning = showwarning
    return True


def _issued_by_infoblocks() -> bool:
    """Whether the code that called ``warnings.warn`` (the first frame up the stack outside
    the warnings machinery and this module) is infoblocks' own."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module not in ("warnings", "_py_warnings", __name__):  # (3.14: _py_warnings)
            return module == "infoblocks" or module.startswith("infoblocks.")
        frame = frame.f_back
    return False


def _close() -> None:
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


__all__ = ["Distributed", "from_environment", "quiet_other_ranks", "WARN_ALL_RANKS"]
