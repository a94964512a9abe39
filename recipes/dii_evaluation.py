"""Evaluation of a fitted DII: the final DII over the whole data set, the classic information
imbalance, greedy / l1 feature selection and the figure — a mixin of
:class:`~infoblocks.recipes.dii.DII`, kept apart so that each file stays short.

Every value here is computed with the blocks of the recipe's ``evaluation`` section
(``distance_A``, ``distance_B``, ``softmax``), read from :meth:`DII.routine_spec`, never
hard-wired: a plugin's distance named there is the one ``final_dii`` uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import torch

from infoblocks.blocks.data import intra_op_threads, resolve_device
from infoblocks.blocks.errors import NotFittedError, NumericalError, ValidationError
from infoblocks.blocks.figures import save_figure
from infoblocks.blocks.imbalance import WEIGHT_INIT, chunked_dii, information_imbalance

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .dii import DII


def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def _is_number(value: Any) -> bool:
    return (not isinstance(value, (bool, np.bool_))
            and isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value))


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValidationError(f"`{name}` must be True or False, got {value!r}.")


def _check_int(value: Any, name: str, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not (_is_int(value) and value >= low):
        what = "a positive integer" if low == 1 else "a non-negative integer"
        raise ValidationError(f"`{name}` must be {what}{' or None' if optional else ''}, "
                              f"got {value!r}.")


def _reduced_mean(processes: Any) -> Any:
    """The mean of per-row values spread over the ranks (a global λ's k-th distances)."""
    def mean(values: torch.Tensor) -> torch.Tensor:
        count = torch.tensor(float(values.numel()), dtype=values.dtype, device=values.device)
        total, n = processes.sum(torch.stack([values.sum(), count]))
        return total / n
    return mean


def _reduced_mean_and_error(values: torch.Tensor, processes: Any) -> tuple[float, float]:
    """Mean and standard error of per-row values spread over the ranks (one all-reduce)."""
    v = values.to(torch.float64)
    n, total, squares = processes.sum(torch.stack([
        torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device), v.sum(),
        (v * v).sum()])).tolist()
    mean = total / n
    variance = max(squares - n * mean * mean, 0.0) / max(n - 1, 1)
    return mean, math.sqrt(variance / n)


class DIIEvaluation:
    """``final_dii``, ``information_imbalance``, ``select_features`` and ``plot`` of a DII."""

    # ------------------------------------------------------------------ evaluation

    def final_dii(self, compute_error: bool = False, ratio_rows_columns: float | None = 1.0,
                  seed: int = 0, discard_close_ind: int = 0,
                  num_points_rows: int | None = None) -> tuple[float, float | None]:
        """DII over the whole data set at the learned weights, computed in row chunks.

        ``compute_error=False``: all rows × all columns (a point and the points within
        ``discard_close_ind`` of it in the data order excluded); returns (DII, None).
        ``compute_error=True``: disjoint random rows and columns in the ratio
        ``ratio_rows_columns`` (after keeping every (discard_close_ind + 1)-th point);
        returns (DII, standard error over rows) — about twice the plain value, as in DADApy.
        k keeps the training ratio k/N: k_final × batches_per_epoch (scaled as DADApy does).
        ``num_points_rows`` evaluates only that many random rows (against all columns).
        """
        self._require_fitted()
        _check_bool(compute_error, "compute_error")
        if ratio_rows_columns is not None and not (_is_number(ratio_rows_columns)
                                                   and ratio_rows_columns > 0):
            raise ValidationError(
                f"`ratio_rows_columns` must be a positive number (rows / columns) or None, got "
                f"{ratio_rows_columns!r}.")
        _check_int(seed, "seed", 0)
        _check_int(discard_close_ind, "discard_close_ind", 0)
        _check_int(num_points_rows, "num_points_rows", 1, optional=True)
        n = self._data["data_A"].shape[0]
        if not compute_error and 2 * discard_close_ind + 2 > n:
            raise ValidationError(
                f"`discard_close_ind` = {discard_close_ind} excludes every neighbour of the "
                f"middle points of the {n}: each point keeps the points more than "
                f"discard_close_ind away in the data order, so it must be at most "
                f"{(n - 2) // 2} ((n - 2) / 2) here.")
        blocks = self._evaluation_blocks(self._data)
        data = self._data
        dev = resolve_device(self.device)
        a = data["data_A"].to(dev)
        b = data["data_B"].to(dev) if "data_B" in data else None
        dist_b = data["distances_B"].to(dev) if "distances_B" in data else None
        generator = torch.Generator(device=dev).manual_seed(int(seed))
        if compute_error:
            if ratio_rows_columns is None:
                raise ValidationError(
                    "`compute_error=True` needs a positive `ratio_rows_columns` (rows / "
                    "columns), got None.")
            keep = torch.arange(0, n, discard_close_ind + 1, device=dev)
            a = a[keep]
            b = None if b is None else b[keep]
            dist_b = None if dist_b is None else dist_b[keep][:, keep]
            m = a.shape[0]
            n_rows = int(ratio_rows_columns / (ratio_rows_columns + 1) * m)
            if not (n_rows >= 2 and m - n_rows >= 2):  # (one column: every rank is 1, a
                # "DII = 1 ± 0" that says nothing; user13)
                kept = (f" (every {discard_close_ind + 1}-th of the {n} points, "
                        f"discard_close_ind = {discard_close_ind})" if discard_close_ind else "")
                raise ValidationError(
                    f"`ratio_rows_columns` = {ratio_rows_columns} leaves {n_rows} rows of the "
                    f"{m} points{kept}; the error needs at least 2 rows and 2 columns: choose "
                    "a ratio that gives both, or a smaller `discard_close_ind`.")
            perm = torch.randperm(m, generator=generator, device=dev)
            rows = perm[:n_rows]
            cols = perm[n_rows:].sort().values
            k = math.ceil(self.k_final * self.batches_per_epoch / (discard_close_ind + 1))
            discard, norm = 0, cols.numel() + 1
        else:
            rows = torch.arange(n, device=dev)
            cols = rows
            k = math.ceil(self.k_final * self.batches_per_epoch * (1 - 2 * discard_close_ind / n))
            discard, norm = discard_close_ind, n - 2 * discard_close_ind
        if num_points_rows is not None:
            low = 2 if compute_error else 1  # a standard error needs two rows
            if not low <= num_points_rows <= rows.numel():
                raise ValidationError(
                    f"`num_points_rows` must be in [{low}, {rows.numel()}], got "
                    f"{num_points_rows!r}.")
            pick = torch.randperm(rows.numel(), generator=generator, device=dev)[:num_points_rows]
            rows = rows[pick]
        k = max(1, min(k, cols.numel() - 2 * discard - 1))
        processes = self.routine_.dist
        if processes.active:  # under torchrun each rank takes every world_size-th row
            rows = rows[processes.rank::processes.world_size]
        lam = None
        if self.lambda_init is not None:  # in the data's units; the distance's are its unit's
            lam = self.lambda_final if self.lambda_final is not None else self.lambda_init
            lam = lam * blocks["lambda_factor"]
        with intra_op_threads(self.threads):
            values = chunked_dii(
                a, self._signed_feature_weights().to(dev), rows, cols, k=k, data_B=b,
                distances_B=dist_b, distance_A=blocks["distance_A"],
                distance_B=blocks.get("distance_B"), softmax=blocks["softmax"],
                lambda_value=lam, discard_close_ind=discard, normalization=norm,
                max_elements=self.max_elements,
                row_mean=_reduced_mean(processes) if processes.active else None)
        if processes.active:
            dii, error = _reduced_mean_and_error(values, processes)
            error = error if compute_error else None
        else:
            dii = float(values.mean())
            error = float(values.std() / math.sqrt(values.numel())) if compute_error else None
        self.final_dii_, self.final_dii_error_ = dii, error
        return dii, error

    def information_imbalance(self, features: Sequence[int] | None = None, k: int = 1,
                              weighted: bool = False) -> tuple[float, float]:
        """Classic information imbalance (Δ(A_S → B), Δ(B → A_S)) of the feature subset S of
        A (all by default), unweighted or scaled by the learned weights (``weighted``)."""
        self._require_fitted()
        if "data_B" not in self._data:
            raise ValidationError("The classic information imbalance needs data_B features; "
                                  "this DII was fitted with distances_B.")
        _check_bool(weighted, "weighted")
        a, b = (v if isinstance(v, torch.Tensor) else v.take(slice(None))  # lazy: read whole
                for v in (self._data["data_A"], self._data["data_B"]))
        if features is not None and (isinstance(features, (str, bytes))
                                     or not hasattr(features, "__iter__")
                                     or not all(_is_int(f) for f in features)):
            mask = hasattr(features, "__iter__") and not isinstance(features, (str, bytes)) \
                and len(list(features)) > 0 \
                and all(isinstance(f, (bool, np.bool_)) for f in features)
            raise ValidationError(
                f"`features` must be a list of feature indices in [0, {a.shape[1]}) or None, "
                f"got {features!r}"
                + (": a boolean mask; pass its indices, np.flatnonzero(mask)." if mask else "."))
        cols = list(range(a.shape[1])) if features is None else [int(f) for f in features]
        if not cols or any(not 0 <= f < a.shape[1] for f in cols):
            raise ValidationError(
                f"`features` must be indices in [0, {a.shape[1]}), got {features!r}.")
        twice = sorted({f for f in cols if cols.count(f) > 1})
        if twice:  # the subset is a set: a repeat would be silently counted once
            raise ValidationError(f"`features` = {features!r} names feature(s) {twice} more than "
                                  "once; give each feature of the subset once.")
        # the evaluation's distances; a feature subset is A's distance with the other
        # features at weight 0 (periodic conventions stay those of the full feature set)
        blocks = self._evaluation_blocks(self._data, with_weights=weighted)
        mask = np.zeros(a.shape[1])
        mask[cols] = 1.0
        weights = mask * self._per_feature_weights(weighted)
        with intra_op_threads(self.threads):
            return information_imbalance(a, b, k=k, weights_A=weights,
                                         distance_A=blocks["distance_A"],
                                         distance_B=blocks["distance_B"],
                                         max_elements=self.max_elements)

    # ------------------------------------------------------------------ feature selection

    def _subset_fit(self, keep: Sequence[int], epochs: int | None) -> DII:
        init = self.params_init or [WEIGHT_INIT] * len(self.weights_)
        masked = [v if i in keep else 0.0 for i, v in enumerate(init)]
        clone = attrs.evolve(self, l1_strength=0.0, verbose=False,
                             epochs=self.epochs if epochs is None else epochs)
        return clone._fit(self._data, l1_strength=0.0, params_init=masked)

    def select_features(self, method: str = "backward", n_best: int = 1, n_features_min: int = 1,
                        l1_strengths: Sequence[float] | None = None, compute_error: bool = False,
                        epochs: int | None = None, n_features_max: int | None = None
                        ) -> list[dict[str, Any]]:
        """DII for each subset size; returns and stores ``selection_`` (largest subset first).

        ``method="backward"``: greedy backward elimination from all weights: at each size the
        ``n_best`` best subsets (beam) each lose one weight; every candidate is retrained from
        its initial weights with the others at 0 (``epochs``, default the fit's).
        ``method="forward"``: greedy forward selection from single weights up to
        ``n_features_max`` (default all): at each size the ``n_best`` best subsets each gain
        one weight, candidates retrained as above (the full set is the fitted model itself).
        ``method="l1"``: retrain with each of ``l1_strengths`` (default: 8 values, geometric
        from 1e-3 to 1 × ‖params_init‖ / learning_rate, where one step's threshold equals the
        initial norm) and keep, per number of non-zero weights, the lowest final DII.
        Entries: n_features, features, dii, error, weights (and l1_strength for the l1 path).
        Weights are groups when ``params_groups`` is set.
        """
        self._require_fitted()
        if method not in ("backward", "forward", "l1"):
            raise ValidationError(
                f"`method` must be 'backward', 'forward' or 'l1', got {method!r}.")
        self._check_selectable(method)  # the weights model takes params_init, l1_strength
        _check_int(n_best, "n_best", 1)
        _check_int(n_features_min, "n_features_min", 1)
        _check_int(epochs, "epochs", 1, optional=True)  # 0 is an error, not "the default"
        _check_bool(compute_error, "compute_error")
        if l1_strengths is not None:
            given = l1_strengths
            l1_strengths = [] if isinstance(given, (str, bytes)) \
                or not hasattr(given, "__iter__") else list(given)
            if not l1_strengths or not all(_is_number(v) and v >= 0 for v in l1_strengths):
                l1_strengths = given
                raise ValidationError(
                    f"`l1_strengths` must be a non-empty list of non-negative numbers or None, "
                    f"got {l1_strengths!r}.")
        n_params = len(self.weights_)
        widest = math.comb(n_params, n_params // 2)  # the most subsets of one size
        if method != "l1" and n_best > widest:
            raise ValidationError(
                f"`n_best` = {n_best} is the beam width, the subsets kept at each size, not a "
                f"number of features; with {n_params} weights a size has at most {widest} "
                f"subsets (n_best = {widest} searches them all). Set n_best ≤ {widest}; the "
                "subset sizes are n_features_min / n_features_max.")
        if not 1 <= n_features_min <= n_params:
            raise ValidationError(
                f"`n_features_min` must be in [1, {n_params}], got {n_features_min!r}.")
        _check_int(n_features_max, "n_features_max", 1, optional=True)
        if n_features_max is not None and n_features_max > n_params:
            raise ValidationError(
                f"`n_features_max` must be in [1, {n_params}] or None, got {n_features_max!r}.")

        def entry(model: DII, keep: Sequence[int]) -> dict[str, Any]:
            dii, err = model.final_dii(compute_error=compute_error)
            return {"n_features": len(keep), "features": sorted(int(f) for f in keep),
                    "dii": dii, "error": err, "weights": model.weights_.tolist()}

        results: list[dict[str, Any]] = []
        if method == "backward":
            results.append(entry(self, range(n_params)))
            beam: list[tuple[int, ...]] = [tuple(range(n_params))]
            while len(beam[0]) > n_features_min:
                candidates = sorted({tuple(f for f in subset if f != drop)
                                     for subset in beam for drop in subset})
                scored = [entry(self._subset_fit(c, epochs), c) for c in candidates]
                scored.sort(key=lambda e: e["dii"])
                beam = [tuple(e["features"]) for e in scored[:n_best]]
                results.append(scored[0])
        elif method == "forward":
            largest = n_params if n_features_max is None else n_features_max
            beam = [()]
            while len(beam[0]) < largest:
                candidates = sorted({tuple(sorted((*subset, add))) for subset in beam
                                     for add in range(n_params) if add not in subset})
                scored = [entry(self, c) if len(c) == n_params else
                          entry(self._subset_fit(c, epochs), c) for c in candidates]
                scored.sort(key=lambda e: e["dii"])
                beam = [tuple(e["features"]) for e in scored[:n_best]]
                results.insert(0, scored[0])
        else:
            strengths = l1_strengths if l1_strengths is not None else \
                list(np.geomspace(1e-3, 1.0, 8) * self._default_l1_scale())
            best: dict[int, dict[str, Any]] = {}
            for s in strengths:
                clone = attrs.evolve(self, l1_strength=float(s), verbose=False,
                                     epochs=self.epochs if epochs is None else epochs)
                try:
                    clone._fit(self._data)
                except NumericalError:  # every weight thresholded away: past the path's end
                    continue
                keep = [i for i, w in enumerate(clone.weights_) if w > 0]
                e = entry(clone, keep)
                e["l1_strength"] = float(s)
                if len(keep) not in best or e["dii"] < best[len(keep)]["dii"]:
                    best[len(keep)] = e
            results = [best[k] for k in sorted(best, reverse=True)]
        self.selection_ = results
        return results

    def _default_l1_scale(self) -> float:
        """An l1 strength at which one step's threshold (lr × strength) equals the initial
        norm of the weights: the upper end of a useful l1 path."""
        init = np.asarray(self.params_init or [WEIGHT_INIT] * len(self.weights_))
        return float(np.linalg.norm(init) / self.learning_rate)

    # ------------------------------------------------------------------ plotting

    def plot(self, path: str | Path | None = None, feature_names: Sequence[str] | None = None,
             title: str = "") -> Figure:
        """Two panels: the DII per epoch, and the weights per epoch (DADApy tutorial style)."""
        from matplotlib.figure import Figure  # only when plotting

        if self.weights_history_ is None:
            raise NotFittedError("This DII is not fitted yet; call fit(data_A, data_B) first.")
        fig = Figure(figsize=(10, 3.8), constrained_layout=True)
        ax_dii, ax_w = fig.subplots(1, 2)
        epochs = np.arange(len(self.dii_history_))
        ax_dii.plot(epochs, self.dii_history_, color="C0")
        ax_dii.set_xlabel("epoch")
        ax_dii.set_ylabel("DII")
        ax_dii.set_title("DII during training" if not title else f"{title}: DII")
        n_weights = self.weights_history_.shape[1]
        names = [f"w{i}" for i in range(n_weights)] if feature_names is None else \
            [str(name) for name in feature_names]
        if len(names) != n_weights:  # (fewer: only their curves were drawn, silently)
            raise ValidationError(
                f"`feature_names` has {len(names)} names for {n_weights} learned weights; give "
                "one name per weight (per group with `params_groups`), or None.")
        for i, label in enumerate(names):
            ax_w.plot(epochs, self.weights_history_[:, i], label=label)
        ax_w.set_xlabel("epoch")
        ax_w.set_ylabel("|weight|")
        ax_w.set_title("feature weights" if not title else f"{title}: weights")
        if len(names) <= 12:
            ax_w.legend(fontsize=8, loc="best")
        if path is not None:
            save_figure(fig, path, dpi=80)
        return fig


__all__ = ["DIIEvaluation"]
