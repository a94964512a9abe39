"""Validation of user arrays and the :class:`Dataset` container.

Every public ``fit`` / constructor funnels user arrays through :func:`as_tensor` so that
NaN / inf, wrong dimensionality, empty data and mismatched lengths are reported with the
argument's name, the value received and the fix — before any torch kernel sees them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from .errors import ValidationError

#: dtype used for all floating point work unless a block says otherwise
DEFAULT_DTYPE = torch.float32


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def as_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = 2,
    dtype: torch.dtype | None = DEFAULT_DTYPE,
    device: torch.device | str | None = None,
    allow_empty: bool = False,
    finite: bool = True,
) -> torch.Tensor:
    """Convert ``x`` (array-like or tensor) to a tensor and validate it.

    ``ndim`` is the accepted number of dimensions (``None``: any).  A 1-D input where 2-D is
    required is *not* silently reshaped: the message tells the user how to reshape it.
    """
    if x is None:
        raise ValidationError(f"`{name}` is None; pass an array of numbers.")
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise ValidationError(f"`{name}` is complex ({t.dtype}); infoblocks works on real "
                                  "numbers: pass x.real and x.imag as separate features.")
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise ValidationError(f"`{name}` could not be converted to an array: {exc}") from None
        if np.iscomplexobj(arr):
            raise ValidationError(f"`{name}` is complex ({arr.dtype}); infoblocks works on real "
                                  "numbers: pass x.real and x.imag as separate features.")
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
        ):
            raise ValidationError(
                f"`{name}` must hold numbers, got dtype {arr.dtype} ({_describe(arr)})."
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if dtype is not None and t.dtype != dtype:
        if (t.is_floating_point() and dtype.is_floating_point and t.numel()
                and torch.finfo(t.dtype).max > torch.finfo(dtype).max):
            values = t[torch.isfinite(t)]
            if values.numel() and float(values.abs().max()) > torch.finfo(dtype).max:
                raise ValidationError(
                    f"`{name}` holds values up to {float(values.abs().max()):.3g}, beyond the "
                    f"range of {dtype} (about {torch.finfo(dtype).max:.3g}); rescale it (e.g. "
                    "divide by its standard deviation) before fitting.")
        t = t.to(dtype)
    accepted = (ndim,) if isinstance(ndim, int) else ndim
    if accepted is not None and t.ndim not in accepted:
        hint = ""
        if 2 in accepted and t.ndim == 1:
            hint = f" For one feature use `{name}.reshape(-1, 1)`; for one sample `.reshape(1, -1)`."
        raise ValidationError(
            f"`{name}` must have {' or '.join(map(str, accepted))} dimension(s), "
            f"got {t.ndim} ({_describe(t)}).{hint}"
        )
    if not allow_empty and t.numel() == 0:
        raise ValidationError(f"`{name}` is empty ({_describe(t)}); pass at least one sample.")
    if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()
        first = tuple(bad[0].tolist())
        raise ValidationError(
            f"`{name}` contains {len(bad)} non-finite value(s) (NaN or inf), the first at index "
            f"{first}. Remove or impute them before fitting."
        )
    if device is not None:
        t = t.to(device)
    return t


def check_same_length(**arrays: Any) -> int:
    """Check that all arrays share their first dimension; return it."""
    lengths = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"`{k}` has {v}" for k, v in lengths.items())
        raise ValidationError(
            f"Mismatched numbers of samples: {listing}. Row i of each must describe the same item."
        )
    return next(iter(lengths.values())) if lengths else 0


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
    """Raise a :class:`ValidationError` unless ``value`` is a positive (or non-negative) number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValidationError(f"`{name}` must be a number, got {value!r}.")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "non-negative" if allow_zero else "positive"
        raise ValidationError(f"`{name}` must be {need}, got {value!r}.")


def resolve_device(device: str | torch.device) -> torch.device:
    """Map ``"auto"`` to CUDA when available, else CPU; validate explicit devices."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValidationError(f"`device` = {device!r} is not a device; use 'cpu', 'cuda', "
                              "'cuda:N' or 'auto'.") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValidationError(f"`device` = {device!r}: infoblocks runs on 'cpu', 'cuda' "
                              "('cuda:N') or 'auto'.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValidationError(
            f"`device` is {str(device)!r} but torch reports no CUDA device here; "
            "use device='cpu' or device='auto'."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValidationError(f"`device` is {str(device)!r} but torch sees {count} CUDA "
                              f"device(s) (cuda:0 .. cuda:{count - 1}).")
    return dev


class Dataset(Mapping[str, torch.Tensor]):
    """Named tensors that share an item axis (axis 0).

    ``Dataset(data=X)`` or ``Dataset(x=X, y=Y)``: every tensor has ``n_items`` rows.  Indexing
    by a name returns the tensor; :meth:`take` gathers rows of every tensor.
    """

    def __init__(self, **tensors: Any) -> None:
        if not tensors:
            raise ValidationError("A Dataset needs at least one named array, e.g. Dataset(data=X).")
        converted = {
            name: as_tensor(value, name, ndim=None) if not isinstance(value, torch.Tensor)
            else as_tensor(value, name, ndim=None, dtype=None if not value.is_floating_point()
                           else value.dtype)
            for name, value in tensors.items()
        }
        for name, t in converted.items():
            if t.ndim == 0:
                raise ValidationError(f"`{name}` is a scalar; a Dataset holds arrays with rows.")
        self.n_items = check_same_length(**converted)
        self._tensors = converted

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise ValidationError(
                f"The dataset has no array named {name!r}; it holds {sorted(self._tensors)}."
            ) from None

    def __contains__(self, name: object) -> bool:  # Mapping's default would raise, not say False
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self._tensors.items())
        return f"Dataset({shapes})"

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device``."""
        return Dataset(**{k: v.to(device) for k, v in self._tensors.items()})

    def take(self, index: torch.Tensor, names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Rows ``index`` of the named tensors (all by default), as a batch dict."""
        chosen = self._tensors if names is None else {n: self[n] for n in names}
        return {k: v[index.to(v.device)] for k, v in chosen.items()}

    def subset(self, index: torch.Tensor | np.ndarray) -> Dataset:
        """A new Dataset of the selected rows."""
        index = torch.as_tensor(index)
        return Dataset(**self.take(index))


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (None: unchanged), restoring the previous value.

    The recipes train small networks (MI critics, IMNN summaries, DII weights, UMAP encoders)
    whose steps are too short to split: on a busy 2-core machine one thread was 2–80× faster
    than two (docs/mi.md, docs/dii.md), so their ``fit`` runs under ``intra_op_threads(1)``.
    """
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


__all__ = ["DEFAULT_DTYPE", "Dataset", "as_tensor", "check_same_length", "check_positive",
           "intra_op_threads", "resolve_device"]
