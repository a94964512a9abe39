"""Transforms of relation data: ``transform(RelationData) -> RelationData``.

Each transform says which forms it accepts (``accepts``); handing it another form is an error
that names the transform and the conversion to use, never a silent densification.
"""

from __future__ import annotations

import pkgutil
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


def _resolve_fn(value: Any) -> Callable[..., Any]:
    """The callable ``fn`` names: itself, or for a string the importable object it names
    (``"torch.exp"``, ``"numpy:log1p"``; :func:`pkgutil.resolve_name`)."""
    if isinstance(value, str):
        try:
            found = pkgutil.resolve_name(value)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValidationError(
                f"Functional `fn` = {value!r} does not name an importable callable "
                f"({type(exc).__name__}: {exc}); write it as \"module.function\" or "
                f"\"module:function\", e.g. fn = \"torch.exp\".") from None
        if not callable(found):
            raise ValidationError(
                f"Functional `fn` = {value!r} names {type(found).__name__} {found!r}, which is "
                "not callable; name a function of a tensor, e.g. fn = \"torch.exp\".")
        return found
    if not callable(value):
        raise ValidationError(f"Functional needs a callable `fn` or the name of one "
                              f"(\"torch.exp\", \"numpy:log1p\"), got {value!r}.")
    return value


def _importable_name(fn: Any) -> str | None:
    """The name a callable given in Python is imported by (``torch.exp``), or None: a
    lambda, a local function, one defined in ``__main__`` or another object without one."""
    module = getattr(fn, "__module__", None)
    names = [getattr(fn, "__qualname__", None), getattr(fn, "__name__", None)]
    if not isinstance(module, str) or module == "__main__":
        return None
    for name in dict.fromkeys(n for n in names if isinstance(n, str) and "<" not in n):
        candidate = f"{module}.{name}" if "." not in name else f"{module}:{name}"
        try:
            if pkgutil.resolve_name(candidate) is fn:
                return candidate
        except (ImportError, AttributeError, ValueError):
            continue
    return None


@attrs.define
class Functional(Transform):
    """values ← fn(values) elementwise (any torch function of a tensor).

    ``fn`` is a callable, or — in a config — the name of an importable one, resolved with
    :func:`pkgutil.resolve_name`: ``fn = "torch.exp"``, ``fn = "numpy:log1p"``.  The data
    form (``describe``, ``to_toml``, ``config --full``) writes the name back; a callable
    without an importable name (a lambda, a local function) cannot be written, and says so."""

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
        """``{"name": "functional", "fn": "module.function"}``: the name ``fn`` was given as,
        or the one a callable is imported by; :class:`ConfigError` for a callable without
        one, which would be written as a name that reads back as nothing."""
        if isinstance(self.fn, str):
            return {"name": self.name, "fn": self.fn}
        found = _importable_name(self.fn)
        if found is None:
            raise ConfigError(
                f"Functional `fn` = {self.fn!r} has no importable name, so the transform "
                "cannot be written as data (to_toml, config --full, save): define the "
                "function at the top level of a module and give it, or its name, as fn "
                "(fn = \"mypackage.module:function\"; built-ins such as fn = \"torch.exp\").")
        return {"name": self.name, "fn": found}


__all__ = ["Transform", "Normalize", "NormalizeRows", "Symmetrize", "ZeroDiagonal", "Functional"]
