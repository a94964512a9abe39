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


#: a column whose float32 rounding at its mean exceeds this fraction of its standard
#: deviation is refused (|mean| / sd above about 1.7e5)
PRECISION_LOSS = 1e-2


def _refuse_lost_precision(wide: torch.Tensor, narrow: torch.Tensor, name: str) -> None:
    """Refuse a cast to float32 that rounds a column's variation away: a column far from zero
    relative to its spread (coordinates in metres, a large baseline) keeps too few significant
    digits of its variation (user13: DII on A + 1e8 returned its initial weights, MINE on
    x + 1e8 about 0 nats, UMAP called the data constant)."""
    if narrow.dtype != torch.float32 or wide.dtype in (torch.float32, torch.float16,
                                                       torch.bfloat16, torch.bool) \
            or wide.ndim < 1 or wide.shape[0] < 2 or not wide.numel():
        return
    if not wide.is_floating_point() and int(wide.abs().max()) < 2 ** 24:
        return  # integers that float32 holds exactly
    w = wide.reshape(wide.shape[0], -1).double()
    finite = torch.isfinite(w)
    w = torch.where(finite, w, 0.0)
    count = finite.sum(0).clamp_min(1)
    mean = w.sum(0) / count
    sd = (torch.where(finite, w - mean, 0.0).pow(2).sum(0) / count).sqrt()
    rounding = mean.abs() * 2.0 ** -24
    lost = ((sd > 0) & (rounding > PRECISION_LOSS * sd)).nonzero().flatten().tolist()
    if lost:
        j = lost[0]
        where = f"column {j}" if len(lost) == 1 else \
            f"columns {lost[:5]}{'...' if len(lost) > 5 else ''}: column {j}"
        raise ValidationError(
            f"`{name}` {where} has mean {float(mean[j]):.6g} and standard deviation "
            f"{float(sd[j]):.3g}: in float32, which infoblocks computes in (about 7 significant "
            "digits), that variation is lost to rounding. Subtract the column means first "
            f"({name} - {name}.mean(0), and the same shift for data you transform later).")


def _torch_dtype(arr: np.ndarray) -> np.ndarray:
    """``arr`` in a dtype torch converts: native byte order (big-endian data from FITS or
    HDF5 files: torch refuses it), wide unsigned integers as int64 / float64 (torch has
    few kernels for uint16-64) and long double as float64 (torch has none)."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:
        arr = arr.astype(np.int64 if arr.dtype.itemsize < 8 else np.float64)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        arr = arr.astype(np.float64)
    return arr


def _refuse_empty(x: Any, name: str) -> None:
    """An array without values: no samples, or samples without features (an (n, 0) array
    was "empty; pass at least one sample" though it had n)."""
    shape = tuple(x.shape)
    if len(shape) >= 2 and shape[0] > 0:
        raise ValidationError(f"`{name}` has no features ({_describe(x)}): each of its "
                              f"{shape[0]} samples needs at least one column.")
    raise ValidationError(f"`{name}` is empty ({_describe(x)}); pass at least one sample.")


def _is_pandas(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "pandas" and hasattr(x, "to_numpy")


def _frame_array(x: Any, name: str) -> tuple[np.ndarray, list[Any] | None]:
    """A pandas DataFrame / Series as a numpy array, and its column labels (a DataFrame's).

    Nullable columns (``Float64``, ``Int64``, ``boolean``: what ``convert_dtypes()`` and
    ``read_csv(dtype_backend="numpy_nullable")`` give) become their numpy dtype, float64 where a
    value is missing (``pd.NA`` becomes NaN, which the finite check then reports): ``np.asarray``
    made them an object array, refused as "must hold numbers" (author29-10).  A column that does
    not hold numbers (text, categories, objects) is named."""
    import pandas as pd

    frame = x.to_frame() if getattr(x, "ndim", 2) == 1 else x
    columns = list(frame.columns) if getattr(x, "ndim", 2) == 2 else None
    dtypes = list(frame.dtypes)
    if all(isinstance(dt, np.dtype) and dt != object for dt in dtypes):
        return np.asarray(x), columns  # plain numpy columns: as before
    numeric = [pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)
               for dt in dtypes]
    if not all(numeric):
        j = numeric.index(False)
        label = f"column {frame.columns[j]!r} (position {j})" if columns is not None else name
        others = [frame.columns[i] for i, ok in enumerate(numeric) if not ok][1:]
        more = f"; also {others[:5]}{'...' if len(others) > 5 else ''}" if others else ""
        values = frame.iloc[:, j].dropna()
        example = f", e.g. {values.iloc[0]!r}" if len(values) else ""
        raise ValidationError(
            f"`{name}` must hold numbers: {label} has dtype {dtypes[j]}{example}{more}. Encode "
            "such a column as numbers (pd.get_dummies for categories, .astype(float) for "
            "numbers held as text or objects) or drop it.")
    wanted = np.result_type(*[getattr(dt, "numpy_dtype", dt) for dt in dtypes])
    missing = bool(frame.isna().to_numpy().any())
    if missing and wanted.kind in "biu":
        wanted = np.dtype(np.float64)
    return x.to_numpy(dtype=wanted, na_value=np.nan if missing else None), columns


def feature_names(x: Any, name: str = "X") -> np.ndarray | None:
    """The column names of a DataFrame ``x`` (anything with ``columns``), as scikit-learn keeps
    them in ``feature_names_in_``: an object array of str where every name is a string; None
    for an array or tensor, or a DataFrame with other labels (pandas' default 0 .. D-1 are
    positions, not names).  Names of mixed types are refused, as scikit-learn refuses them."""
    columns = getattr(x, "columns", None)
    if columns is None or isinstance(x, np.ndarray | torch.Tensor):
        return None
    names = list(columns)
    kinds = sorted({type(c).__name__ for c in names})
    text = [isinstance(c, str) for c in names]
    if not names or not any(text):
        return None
    if not all(text):
        raise ValidationError(
            f"`{name}`'s column names mix strings with other types ({kinds}); feature names "
            "are kept and checked only where all are strings. Make them all strings "
            f"(`{name}.columns = {name}.columns.astype(str)`) or none.")
    return np.asarray(names, dtype=object)


def check_feature_names(fitted: Any, x: Any, owner: str, name: str = "X") -> None:
    """Compare the column names of ``x`` with those of the fit (``fitted``, the recipe's
    ``feature_names_in_``), as scikit-learn does at ``transform``: other names, or the same in
    another order, are a :class:`ValidationError` naming the first mismatch (the columns would
    be read by position: author29-17, a DataFrame with its columns reversed was embedded
    silently, held-out 10-NN 0.939 -> 0.451); an array after a fit on a DataFrame, or a
    DataFrame after a fit on an array, is scikit-learn's ``UserWarning`` (an array's columns
    cannot be checked: they are taken in the fit's order)."""
    import warnings

    names = feature_names(x, name)
    if fitted is None:
        if names is not None:
            warnings.warn(f"`{name}` has feature names, but {owner} was fitted without feature "
                          "names: its columns are read by position.", UserWarning, stacklevel=3)
        return
    fitted = [str(f) for f in fitted]
    if names is None:
        shown = ", ".join(map(repr, fitted[:3])) + (", ..." if len(fitted) > 3 else "")
        warnings.warn(f"`{name}` does not have valid feature names, but {owner} was fitted with "
                      f"feature names ({shown}): its columns are taken in that order.",
                      UserWarning, stacklevel=3)
        return
    names = [str(n) for n in names]
    if names == fitted:
        return
    j = next((i for i, (a, b) in enumerate(zip(names, fitted)) if a != b),
             min(len(names), len(fitted)))
    here = repr(names[j]) if j < len(names) else "absent"
    there = repr(fitted[j]) if j < len(fitted) else "absent"
    fix = (f"Pass the columns of the fit in its order: `{name}[model.feature_names_in_]` "
           "(a pandas DataFrame), or fit again on these columns.")
    if sorted(names) == sorted(fitted):
        raise ValidationError(
            f"`{name}`'s columns are in another order than at fit: column {j} is {here}, at "
            f"fit {there}; {owner} reads columns by position. {fix}")
    unseen = [n for n in names if n not in set(fitted)]
    missing = [f for f in fitted if f not in set(names)]
    listed = "; ".join(part for part in (
        f"not seen at fit: {unseen[:5]}{'...' if len(unseen) > 5 else ''}" if unseen else "",
        f"missing: {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "") if part)
    raise ValidationError(
        f"`{name}`'s columns differ from those at fit ({listed}): column {j} is {here}, at "
        f"fit {there}. {fix}")


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
    _refuse_sparse_or_masked(x, name)
    columns = None  # a DataFrame's, to name the column of a missing value
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise ValidationError(f"`{name}` is complex ({t.dtype}); infoblocks works on real "
                                  "numbers: pass x.real and x.imag as separate features.")
    else:
        try:
            arr, columns = _frame_array(x, name) if _is_pandas(x) else (np.asarray(x), None)
        except ValidationError:
            raise
        except Exception as exc:  # ragged lists and the like
            raise ValidationError(f"`{name}` could not be converted to an array: {exc}") from None
        if np.iscomplexobj(arr):
            raise ValidationError(f"`{name}` is complex ({arr.dtype}); infoblocks works on real "
                                  "numbers: pass x.real and x.imag as separate features.")
        if arr.dtype == object or arr.dtype.kind == "m" or not (
            np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
        ):
            hint = (f" Convert the time spans to numbers first, e.g. {name} / "
                    "np.timedelta64(1, 's') for seconds." if arr.dtype.kind == "m" else "")
            raise ValidationError(
                f"`{name}` must hold numbers, got dtype {arr.dtype} ({_describe(arr)}).{hint}"
            )
        arr = _torch_dtype(arr)
        # (np.ascontiguousarray makes a 0-d array 1-d: a scalar must stay a scalar, so that
        # the dimension checks below name it)
        arr = np.ascontiguousarray(arr).reshape(arr.shape)
        if not arr.flags.writeable:  # a read-only (e.g. memory-mapped) array: torch copies
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if dtype is not None and t.dtype != dtype:
        if (t.is_floating_point() and dtype.is_floating_point and t.numel()
                and torch.finfo(t.dtype).max > torch.finfo(dtype).max):
            values = t[torch.isfinite(t)]
            if values.numel() and float(values.abs().max()) > torch.finfo(dtype).max:
                raise ValidationError(
                    f"`{name}` holds values up to {float(values.abs().max()):.3g}, beyond the "
                    f"range of {dtype} (about {torch.finfo(dtype).max:.3g}); rescale it (e.g. "
                    "divide by its standard deviation) first.")
        wide = t
        t = t.to(dtype)
        _refuse_lost_precision(wide, t, name)
    accepted = (ndim,) if isinstance(ndim, int) else ndim
    if accepted is not None and t.ndim not in accepted:
        hint = ""
        if 2 in accepted and t.ndim == 1:
            hint = f" For one feature use `{name}.reshape(-1, 1)`; for one sample `.reshape(1, -1)`."
        elif 2 in accepted and t.ndim > 2:
            hint = (f" To use each sample's values as its features, flatten them: "
                    f"`{name}.reshape(len({name}), -1)`.")
        raise ValidationError(
            f"`{name}` must have {' or '.join(map(str, accepted))} dimension(s), "
            f"got {t.ndim} ({_describe(t)}).{hint}"
        )
    if not allow_empty and t.numel() == 0:
        _refuse_empty(t, name)
    if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()
        first = tuple(bad[0].tolist())
        where = ""
        if columns is not None and len(first) == 2 and first[1] < len(columns):
            where = (f" (row {first[0]}, column {columns[first[1]]!r}; a missing value, pd.NA "
                     "or None, counts as NaN)")
        raise ValidationError(
            f"`{name}` contains {len(bad)} non-finite value(s) (NaN or inf), the first at index "
            f"{first}{where}. Remove or impute them first."
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


#: rows read per chunk when :class:`LazyRows` scans a whole array (finite check, moments)
LAZY_CHUNK_ROWS = 65_536


def _refuse_sparse_or_masked(x: Any, name: str) -> None:
    """A sparse matrix (scipy's: np.asarray makes it a 0-d object array; torch's: no dense
    kernels) or a masked array with masked entries (np.asarray drops the mask and the values
    under it become data) is refused with the conversion that fixes it."""
    if type(x).__module__.startswith("scipy.sparse"):
        raise ValidationError(
            f"`{name}` is a scipy sparse matrix ({type(x).__name__} of shape "
            f"{getattr(x, 'shape', '?')}); infoblocks needs dense arrays: pass "
            f"`{name}.toarray()` (N × D values in memory).")
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        raise ValidationError(f"`{name}` is a sparse torch tensor ({x.layout}); infoblocks "
                              f"needs dense tensors: pass `{name}.to_dense()`.")
    if isinstance(x, np.ma.MaskedArray) and np.ma.is_masked(x):
        raise ValidationError(
            f"`{name}` is a masked array with {int(np.ma.count_masked(x))} masked entries, whose "
            f"values would be used as data; fill them (`{name}.filled(np.nan)`, then impute) or "
            "drop their rows.")


def is_lazy(x: Any) -> bool:
    """Whether ``x`` is read on demand rather than held in memory: :class:`LazyRows`, a
    memory-mapped numpy array (``np.load(path, mmap_mode="r")``, ``np.memmap``) or a torch
    ``Dataset`` that is not a tensor."""
    if isinstance(x, LazyRows | np.memmap):
        return True
    from torch.utils.data import Dataset as TorchDataset

    return isinstance(x, TorchDataset)


class LazyRows:
    """Rows of an array larger than memory, read only when a batch needs them.

    ``source`` is a memory-mapped numpy array (``np.load(path, mmap_mode="r")``) or a torch
    ``Dataset`` whose item ``i`` is row ``i`` (an array or tensor).  ``rows[index]`` /
    :meth:`take` read the rows at ``index`` (a tensor, array or slice) as ``float32`` on
    :attr:`device`; :meth:`chunks` and :meth:`moments` scan the whole array in bounded memory.
    :attr:`rows_read` counts the rows read so far (what a test checks to show the array was
    never loaded whole).
    """

    def __init__(self, source: Any, name: str = "data", device: torch.device | str = "cpu",
                 check_finite: bool = True) -> None:
        if isinstance(source, LazyRows):
            source = source.source
        self.source, self.name, self.device = source, name, torch.device(device)
        self._read = [0]  # shared by the copies :meth:`to` makes
        self._moments: list[Any] = []  # the scan's result, once (shared by the copies too)
        if isinstance(source, np.ndarray):
            if not (np.issubdtype(source.dtype, np.number) or np.issubdtype(source.dtype, np.bool_)) \
                    or np.iscomplexobj(source):
                raise ValidationError(f"`{name}` must hold real numbers, got dtype {source.dtype} "
                                      f"({_describe(source)}).")
            self.shape = tuple(source.shape)
        else:
            try:
                n = len(source)
            except TypeError:
                raise ValidationError(f"`{name}`: a torch Dataset read row by row needs __len__; "
                                      f"{type(source).__name__} has none.") from None
            if n == 0:
                raise ValidationError(f"`{name}` is empty (a Dataset of length 0).")
            first = self._row(0)
            self.shape = (n, *first.shape)
        if len(self.shape) == 0:
            raise ValidationError(f"`{name}` is a scalar; pass an array with one row per item.")
        if 0 in self.shape:
            _refuse_empty(self, name)
        if check_finite:
            self.check_finite()

    # ------------------------------------------------------------------ reading rows

    def _row(self, i: int) -> torch.Tensor:
        item = self.source[i]
        if isinstance(item, tuple | list) and len(item) == 1:
            item = item[0]
        try:
            if isinstance(item, torch.Tensor):
                return item
            row = np.asarray(item)
            # a read-only row (a memory-mapped file): torch refuses to share it without a copy
            return torch.as_tensor(row if row.flags.writeable else row.copy())
        except (TypeError, ValueError, RuntimeError):
            raise ValidationError(f"`{self.name}`: item {i} of the Dataset is a "
                                  f"{type(item).__name__}, not a row of numbers; its "
                                  "__getitem__ must return one array or tensor.") from None

    def take(self, index: Any) -> torch.Tensor:
        """The rows at ``index`` (integer tensor / array, or a slice), ``float32`` on
        :attr:`device`; only those rows are read."""
        if isinstance(index, slice):
            index = np.arange(self.shape[0])[index]
        idx = np.asarray(index.detach().cpu() if isinstance(index, torch.Tensor) else index)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if isinstance(self.source, np.ndarray):
            rows = torch.from_numpy(np.asarray(self.source[idx], dtype=np.float32))
        else:
            read = [self._row(int(i)) for i in idx]
            for i, row in zip(idx, read):
                if tuple(row.shape) != tuple(self.shape[1:]):
                    raise ValidationError(
                        f"`{self.name}`: item {int(i)} of the Dataset has shape "
                        f"{tuple(row.shape)}, but its first item has {tuple(self.shape[1:])}; "
                        "every row must have the same shape (pad or drop the odd ones).")
            rows = torch.stack(read).to(torch.float32) if idx.size \
                else torch.empty((0, *self.shape[1:]))
            if rows.shape[1:] != self.shape[1:]:
                raise ValidationError(f"`{self.name}`: the Dataset's rows have different shapes "
                                      f"({tuple(rows.shape[1:])} and {self.shape[1:]}).")
        self._read[0] += int(idx.size)
        return rows.to(self.device)

    __getitem__ = take

    def chunks(self, rows: int | None = None) -> Iterator[torch.Tensor]:
        """The whole array, ``rows`` (default :data:`LAZY_CHUNK_ROWS`) rows at a time."""
        rows = rows or LAZY_CHUNK_ROWS
        for start in range(0, self.shape[0], rows):
            yield self.take(slice(start, min(start + rows, self.shape[0])))

    def check_finite(self) -> None:
        """Raise a :class:`ValidationError` naming the first non-finite value (chunked scan)."""
        for k, chunk in enumerate(self.chunks()):
            if chunk.is_floating_point() and not bool(torch.isfinite(chunk).all()):
                bad = (~torch.isfinite(chunk)).nonzero()[0].tolist()
                bad[0] += k * LAZY_CHUNK_ROWS
                raise ValidationError(
                    f"`{self.name}` contains non-finite values (NaN or inf), the first at index "
                    f"{tuple(bad)}. Remove or impute them first.")
        self._read[0] = 0  # the scan is not what a batch read

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and standard deviation (population), from a chunked float64 scan
        made once: the source is read-only, so a second caller (a check and a scale) gets the
        same numbers without reading the array again."""
        if not self._moments:
            self._moments.append(self._scan_moments())
        mean, std = self._moments[0]
        return mean.clone(), std.clone()

    def _scan_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros(self.shape[1:], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for chunk in self.chunks():
            chunk = chunk.to("cpu", torch.float64)
            total += chunk.sum(0)
            squares += (chunk * chunk).sum(0)
        n = self.shape[0]
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0)
        return mean.float(), var.sqrt().float()

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` rows drawn without replacement (all rows if fewer), for statistics that a
        subsample estimates well (a PCA front end, a bandwidth)."""
        if n >= self.shape[0]:
            return self.take(slice(None))
        idx = np.sort(np.random.default_rng(seed).choice(self.shape[0], n, replace=False))
        return self.take(idx)

    # ------------------------------------------------------------------ array-like

    @property
    def rows_read(self) -> int:
        """Rows read by :meth:`take` so far (by this object and the copies :meth:`to` made)."""
        return self._read[0]

    @property
    def n_items(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def to(self, device: torch.device | str) -> LazyRows:
        """The same rows, delivered on ``device`` (nothing is read)."""
        other = object.__new__(LazyRows)
        other.__dict__.update(self.__dict__)
        other.device = torch.device(device)
        return other

    def __repr__(self) -> str:
        return f"LazyRows({self.name!r}, shape={self.shape}, source={type(self.source).__name__})"


def rows_for(block: Any, value: Any) -> Any:
    """``value`` as ``block`` takes it: :class:`LazyRows` read whole into a tensor unless the
    block declares ``lazy_rows = True``; anything else unchanged."""
    if isinstance(value, LazyRows) and not getattr(block, "lazy_rows", False):
        return value.take(slice(None))
    return value


def as_rows(x: Any, name: str, *, ndim: int | tuple[int, ...] | None = 2) -> torch.Tensor | LazyRows:
    """A memory-mapped array or torch ``Dataset`` as :class:`LazyRows` (checked in chunks,
    never loaded whole); anything else through :func:`as_tensor`."""
    if not is_lazy(x):
        return as_tensor(x, name, ndim=ndim)
    rows = x if isinstance(x, LazyRows) else LazyRows(x, name)
    accepted = (ndim,) if isinstance(ndim, int) else ndim
    if accepted is not None and rows.ndim not in accepted:
        hint = f" For one feature save it as `{name}.reshape(-1, 1)`." if rows.ndim == 1 else ""
        if rows.ndim > 2 and 2 in accepted:
            hint = (" To use each sample's values as its features, save "
                    f"`{name}.reshape(len({name}), -1)`.")
        raise ValidationError(f"`{name}` must have {' or '.join(map(str, accepted))} "
                              f"dimension(s), got {rows.ndim} ({_describe(rows)}).{hint}")
    return rows


class Dataset(Mapping[str, torch.Tensor]):
    """Named tensors that share an item axis (axis 0).

    ``Dataset(data=X)`` or ``Dataset(x=X, y=Y)``: every tensor has ``n_items`` rows.  Indexing
    by a name returns the tensor; :meth:`take` gathers rows of every tensor.  A memory-mapped
    array or a torch ``Dataset`` stays on disk as :class:`LazyRows`: :meth:`take` reads only
    the rows asked for, so item and pair samplers never load it whole.
    """

    def __init__(self, **tensors: Any) -> None:
        if not tensors:
            raise ValidationError("A Dataset needs at least one named array, e.g. Dataset(data=X).")
        converted = {
            name: as_rows(value, name, ndim=None) if not isinstance(value, torch.Tensor)
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
        out = object.__new__(Dataset)
        out.n_items = self.n_items
        out._tensors = {k: v.to(device) for k, v in self._tensors.items()}
        return out

    def take(self, index: torch.Tensor, names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Rows ``index`` of the named tensors (all by default), as a batch dict."""
        chosen = self._tensors if names is None else {n: self[n] for n in names}
        return {k: v.take(index) if isinstance(v, LazyRows) else v[index.to(v.device)]
                for k, v in chosen.items()}

    @property
    def lazy(self) -> bool:
        """Whether any array is read on demand (:class:`LazyRows`)."""
        return any(isinstance(v, LazyRows) for v in self._tensors.values())

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


__all__ = ["DEFAULT_DTYPE", "Dataset", "LazyRows", "as_rows", "as_tensor", "check_positive",
           "check_same_length", "intra_op_threads", "is_lazy", "resolve_device", "rows_for"]
