"""Transforms of relation data: ``transform(RelationData) -> RelationData``.

Each transform says which forms it accepts (``accepts``); handing it another form is an error
that names the transform and the conversion to use, never a silent densification.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import torch

from .base import Block, not_implemented
from .errors import ConfigError, ValidationError
from .relations import DenseRelations, EdgeRelations, RelationData, SparseRelations

#: guard against division by zero when normalizing all-zero rows
_TINY = 1e-12


class Transform(Block):
    """Base of relation transforms; subclasses implement :meth:`apply`."""

    kind: ClassVar[str] = "transform"
    accepts: ClassVar[tuple[type, ...]] = (DenseRelations, SparseRelations)

    def __call__(self, relations: RelationData) -> RelationData:
        if not isinstance(relations, self.accepts):
            forms = ", ".join(t.__name__ for t in self.accepts)
            fix = "Convert first (e.g. `.to_sparse()`)."
            if not isinstance(relations, RelationData):  # data (input = "data"), not a relation
                fix = ("A transform that takes data (e.g. an init with input = \"data\") "
                       "declares it: `accepts: ClassVar[tuple[type, ...]] = (torch.Tensor,)`.")
            raise ValidationError(
                f"Transform {self.name!r} accepts {forms}, got {type(relations).__name__}. "
                + fix)
        return self.apply(relations)

    def apply(self, relations: RelationData) -> RelationData:
        raise not_implemented(self, "apply")


def _require_square(relations: RelationData, who: str) -> None:
    n, m = relations.shape
    if n != m:
        raise ValidationError(f"{who} needs a square (n x n) relation, got shape {(n, m)}.")


@attrs.define
class Normalize(Transform):
    """p_ij ← p_ij / Σ_kl p_kl (all entries sum to 1)."""

    name: ClassVar[str] = "normalize"

    def apply(self, relations):
        total = relations.values.sum().clamp_min(_TINY)
        return attrs.evolve(relations, values=relations.values / total)


@attrs.define
class NormalizeRows(Transform):
    """p_ij ← p_ij / Σ_k p_ik (each row sums to 1; empty rows stay 0)."""

    name: ClassVar[str] = "normalize_rows"

    def apply(self, relations):
        if isinstance(relations, DenseRelations):
            sums = relations.values.sum(dim=1, keepdim=True).clamp_min(_TINY)
            return DenseRelations(relations.values / sums)
        sums = torch.zeros(relations.shape[0], dtype=relations.values.dtype,
                           device=relations.values.device)
        sums.index_add_(0, relations.rows, relations.values)
        return attrs.evolve(relations, values=relations.values / sums[relations.rows].clamp_min(_TINY))


@attrs.define
class Symmetrize(Transform):
    """P ← P + Pᵀ − P∘Pᵀ (fuzzy union, ``subtract_product=True``) or (P + Pᵀ)/2.

    Sparse input stays sparse; rows with no entries (an item that is nobody's neighbour) are
    fine because the relation keeps its full (n, n) shape.
    """

    name: ClassVar[str] = "symmetrize"
    subtract_product: bool = True

    def apply(self, relations):
        _require_square(relations, "Symmetrize")
        if isinstance(relations, DenseRelations):
            p = relations.values
            sym = p + p.T - p * p.T if self.subtract_product else 0.5 * (p + p.T)
            return DenseRelations(sym)
        p = relations.coalesce()
        n = p.shape[0]
        # merge P and Pᵀ on a common (row, col) key so that each entry sees its transpose
        keys = torch.cat([p.rows * n + p.cols, p.cols * n + p.rows])
        vals = torch.cat([p.values, torch.zeros_like(p.values)])
        tvals = torch.cat([torch.zeros_like(p.values), p.values])
        unique, inverse = torch.unique(keys, return_inverse=True)
        a = torch.zeros(unique.numel(), dtype=p.values.dtype, device=p.values.device)
        b = torch.zeros_like(a)
        a.index_add_(0, inverse, vals)
        b.index_add_(0, inverse, tvals)
        sym = a + b - a * b if self.subtract_product else 0.5 * (a + b)
        keep = sym != 0
        unique = unique[keep]
        return SparseRelations(unique // n, unique % n, sym[keep], (n, n))


@attrs.define
class ZeroDiagonal(Transform):
    """p_ii ← 0."""

    name: ClassVar[str] = "zero_diagonal"
    accepts: ClassVar[tuple[type, ...]] = (DenseRelations, SparseRelations, EdgeRelations)

    def apply(self, relations):
        if isinstance(relations, DenseRelations):
            v = relations.values.clone()
            v.fill_diagonal_(0.0)
            return DenseRelations(v)
        if isinstance(relations, SparseRelations):
            keep = relations.rows != relations.cols
            return SparseRelations(relations.rows[keep], relations.cols[keep],
                                   relations.values[keep], relations.shape)
        keep = relations.source != relations.target
        return EdgeRelations(relations.source[keep], relations.target[keep],
                             relations.values[keep], relations.shape)


#: the elementwise functions ``functional``'s ``fn`` names in a config: names, not import
#: paths (a config never imports code: a function of your own is a plugin transform)
ELEMENTWISE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    name: getattr(torch, name) for name in (
        "abs", "exp", "expm1", "log", "log1p", "neg", "reciprocal", "relu", "rsqrt",
        "sigmoid", "sign", "sqrt", "square", "tanh")
} | {"softplus": torch.nn.functional.softplus}


def _named(fn: Any) -> str | None:
    """The :data:`ELEMENTWISE` name of the callable ``fn``, or None."""
    return next((name for name, f in ELEMENTWISE.items() if f is fn), None)


def _resolve_fn(value: Any) -> Callable[..., Any]:
    """The callable ``fn`` names: itself, or for a string the :data:`ELEMENTWISE` function
    of that name."""
    if isinstance(value, str):
        if value not in ELEMENTWISE:
            close = difflib.get_close_matches(value.rpartition(".")[2].rpartition(":")[2],
                                              list(ELEMENTWISE), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValidationError(
                f"Functional `fn` = {value!r} is not one of the elementwise functions a config "
                f"can name: {sorted(ELEMENTWISE)}.{hint} A config names functions, it never "
                "imports code: a function of your own is a plugin transform (docs/plugins.md, "
                "\"Add an affinity (or an encoder) to UMAP\").")
        return ELEMENTWISE[value]
    if not callable(value):
        raise ValidationError(f"Functional needs a callable `fn` or the name of an elementwise "
                              f"function ({sorted(ELEMENTWISE)}), got {value!r}.")
    return value


@attrs.define
class Functional(Transform):
    """values ← fn(values) elementwise (any torch function of a tensor).

    ``fn`` is a callable, or — in a config — the name of one of :data:`ELEMENTWISE`
    (``fn = "sqrt"``, ``"log1p"``, ``"exp"``, ...).  The data form (``describe``,
    ``to_toml``, ``config --full``) writes the name; a callable without one (a lambda, a
    function of your own) cannot be written, and says so: make it a plugin transform."""

    name: ClassVar[str] = "functional"
    accepts: ClassVar[tuple[type, ...]] = (DenseRelations, SparseRelations, EdgeRelations)
    fn: Callable[[torch.Tensor], torch.Tensor] | str = attrs.field()
    _call: Callable[..., Any] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._call = _resolve_fn(self.fn)

    def apply(self, relations):
        out = self._call(relations.values)
        if not isinstance(out, torch.Tensor) or out.shape != relations.values.shape:
            raise ValidationError(
                "Functional `fn` must return a tensor of the same shape as its input "
                f"{tuple(relations.values.shape)}, got {getattr(out, 'shape', type(out))}."
            )
        return attrs.evolve(relations, values=out)

    def describe(self) -> dict[str, Any]:
        """``{"name": "functional", "fn": NAME}`` with ``fn``'s :data:`ELEMENTWISE` name;
        :class:`ConfigError` for a callable without one, which could not be read back."""
        found = self.fn if isinstance(self.fn, str) else _named(self.fn)
        if found is None:
            raise ConfigError(
                f"Functional `fn` = {self.fn!r} has no name a config can hold, so the "
                "transform cannot be written as data (to_toml, config --full, save): use one "
                f"of {sorted(ELEMENTWISE)} (fn = \"sqrt\"), or make the function a plugin "
                "transform registered by name (docs/plugins.md, \"Add an affinity (or an "
                "encoder) to UMAP\").")
        return {"name": self.name, "fn": found}


__all__ = ["Transform", "Normalize", "NormalizeRows", "Symmetrize", "ZeroDiagonal", "Functional",
           "ELEMENTWISE"]
