"""Saving and loading a fitted DII — a mixin of :class:`~infoblocks.recipes.dii.DII`, kept
apart so that each file stays short."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

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
        if data and self._data is not None:  # arrays read lazily stay in their files
            fitted.update({k: v.detach().cpu() for k, v in self._data.items()
                           if isinstance(v, torch.Tensor)})
        torch.save(fitted, path / FITTED_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> DII:
        """A DII saved with :meth:`save`, with working ``weights_``, histories and (when the
        data was saved) ``final_dii`` / ``select_features`` / ``information_imbalance``."""
        path = Path(path)
        routine = Routine.load(path, device=device)
        extra = dict(getattr(routine, "saved_extra", {}) or {})
        # the full form reads back without the sections the shortcuts give, so that
        # set_params(...) on the loaded recipe keeps working
        recipe = cls.from_dict(extra)
        recipe.device = device
        fitted = torch.load(path / FITTED_FILE, map_location="cpu", weights_only=True) \
            if (path / FITTED_FILE).exists() else {}
        recipe.routine_ = routine
        recipe.weights_ = routine.models["weights"].weights.detach().abs().cpu().numpy().copy()
        if "weights_history" in fitted:
            recipe.weights_history_ = fitted["weights_history"].numpy()
            recipe.dii_history_ = fitted["dii_history"].numpy()
        data = {k: fitted[k] for k in ("data_A", "data_B", "distances_B") if k in fitted}
        recipe._data = data if "data_A" in data else None
        return recipe


__all__ = ["FITTED_FILE", "DIIPersistence"]
