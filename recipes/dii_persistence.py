"""Saving and loading a fitted DII — a mixin of :class:`~infoblocks.recipes.dii.DII`, kept
apart so that each file stays short."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from infoblocks.blocks.data import as_rows
from infoblocks.blocks.imbalance import recorded_weights
from infoblocks.blocks.recipe import check_saved_recipe
from infoblocks.blocks.routine import Routine

if TYPE_CHECKING:  # pragma: no cover
    from .dii import DII

#: fitted arrays (histories, and the data unless save(data=False)) next to the routine
FITTED_FILE = "dii_fitted.pt"


class DIIPersistence:
    """``save`` and ``load`` of a DII."""

    def save(self, path: str | Path, data: bool = True) -> Path:
        """Write the fitted DII into directory ``path``: the routine (weights, history) with
        the full recipe (``to_dict(full=True)``) as its extra, and ``dii_fitted.pt`` (the
        histories and, with ``data``, the arrays that ``final_dii`` and ``select_features``
        need).  :meth:`load` reads it back."""
        self._require_fitted(data=False)
        path = self.routine_.save(path, extra=self.to_dict(full=True))
        if not self.routine_.dist.is_main:  # under torchrun, rank 0 writes
            return path
        fitted = {"weights_history": torch.as_tensor(self.weights_history_),
                  "dii_history": torch.as_tensor(self.dii_history_)}
        if data and self._data is not None:  # arrays read lazily stay in their files:
            fitted.update({k: v.detach().cpu() for k, v in self._data.items()  # their paths
                           if isinstance(v, torch.Tensor)})                  # are recorded
            files = {k: _file_of(v) for k, v in self._data.items()
                     if not isinstance(v, torch.Tensor)}
            fitted["files"] = {k: v for k, v in files.items() if v is not None}
            fitted["not_saved"] = sorted(k for k, v in files.items() if v is None)
        torch.save(fitted, path / FITTED_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> DII:
        """A DII saved with :meth:`save`, with working ``weights_``, histories and (when the
        data was saved) ``final_dii`` / ``select_features`` / ``information_imbalance``."""
        path = Path(path)
        check_saved_recipe(cls, path)  # another recipe's save: named, with its loader
        routine = Routine.load(path, device=device)
        extra = dict(getattr(routine, "saved_extra", {}) or {})
        # the full form reads back without the sections the shortcuts give, so that
        # set_params(...) on the loaded recipe keeps working
        recipe = cls.from_dict(extra)
        recipe.device = device
        fitted = torch.load(path / FITTED_FILE, map_location="cpu", weights_only=True) \
            if (path / FITTED_FILE).exists() else {}
        recipe.routine_ = routine
        recipe.weights_ = recorded_weights(routine.models["weights"]).cpu().numpy().copy()
        if "weights_history" in fitted:
            recipe.weights_history_ = fitted["weights_history"].numpy()
            recipe.dii_history_ = fitted["dii_history"].numpy()
        data = {k: fitted[k] for k in ("data_A", "data_B", "distances_B") if k in fitted}
        missing = list(fitted.get("not_saved", []))
        for key, record in (fitted.get("files") or {}).items():
            rows = _reopen(record)
            if rows is None:
                missing.append(f"{key} ({record['path']}, {tuple(record['shape'])})")
            else:
                data[key] = as_rows(rows, key)
        recipe._data = data if "data_A" in data and not missing else None
        if missing:
            recipe._data_missing = (
                f"it was fitted on arrays read from disk, which a save does not copy, and "
                f"{', '.join(missing)} cannot be opened again with the shape it had; fit it "
                "again, or keep the files where they were")
        return recipe


def _file_of(rows: object) -> dict | None:
    """Where a lazily read array lives: a memory-mapped ``.npy`` opened whole (its path,
    shape and dtype), else None (a torch Dataset, or a slice of a file)."""
    source = getattr(rows, "source", None)
    filename = getattr(source, "filename", None)
    if not isinstance(source, np.memmap) or filename is None:
        return None
    try:
        whole = np.load(filename, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if whole.shape != source.shape or whole.dtype != source.dtype or \
            whole.strides != source.strides or source.offset != whole.offset:
        return None
    return {"path": str(Path(filename).resolve()), "shape": list(source.shape),
            "dtype": str(source.dtype)}


def _reopen(record: dict) -> np.ndarray | None:
    """The recorded file memory-mapped again, or None when it is gone or changed shape."""
    try:
        array = np.load(record["path"], mmap_mode="r")
    except (OSError, ValueError):
        return None
    if list(array.shape) != list(record["shape"]) or str(array.dtype) != record["dtype"]:
        return None
    return array


__all__ = ["FITTED_FILE", "DIIPersistence"]
