"""One strict data path: the cattrs converter for recipes, phases and blocks.

Every config value — a recipe's hyperparameter, a phase key, a block's field inside a TOML
section — is structured by :data:`converter`, which refuses silent coercion: ``5.7`` for an
int, ``"false"`` for a bool and ``true`` for an int are errors that name the path of the key
(``parametric_umap.globals.graph.relation.n_neighbors``).  An int is accepted for a float.
"""

from __future__ import annotations

import collections.abc
import enum
import functools
import sys
import types
import typing
from typing import Any

import attrs
import cattrs
import numpy as np

from .errors import ConfigError, InfoblocksError


def _strict_int(value: Any, type_: Any) -> int:
    if _is_enum(type_):  # an IntEnum: its members, not any integer
        return _structure_enum(value, type_)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _strict_float(value: Any, _: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"expected true or false, got {value!r}")
    return bool(value)


def _strict_str(value: Any, type_: Any) -> str:
    if _is_enum(type_):  # a str Enum: its members, not any string
        return _structure_enum(value, type_)
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _is_literal(type_: Any) -> bool:
    return typing.get_origin(type_) is typing.Literal


def _is_enum(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, enum.Enum)


def _is_choice_union(type_: Any) -> bool:
    """A union with a ``Literal`` or an ``Enum`` among its members (``Literal["a"] | int``,
    ``Literal["a"] | Literal["b"]``), which cattrs would pass unchecked or fail on raw."""
    return typing.get_origin(type_) in (typing.Union, types.UnionType) and any(
        _is_literal(t) or _is_enum(t) for t in typing.get_args(type_))


def _allowed(type_: Any) -> str:
    """What ``type_`` accepts, in words: "one of 'mean', 'sum'", "an integer"."""
    if _is_literal(type_):
        return "one of " + ", ".join(map(repr, typing.get_args(type_)))
    if _is_enum(type_):
        return "one of " + ", ".join(repr(m.value) for m in type_)
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        members = typing.get_args(type_)
        choices = [repr(c) for t in members if _is_literal(t) for c in typing.get_args(t)] + \
            [repr(m.value) for t in members if _is_enum(t) for m in t]
        rest = [_allowed(t) for t in members if not (_is_literal(t) or _is_enum(t))]
        return " or ".join(([f"one of {', '.join(choices)}"] if choices else []) + rest)
    origin = typing.get_origin(type_) or type_
    if origin in _LISTS or origin in _TABLES:
        return "a list" if origin in _LISTS else "a table"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             type(None): "None (leave the key out)"}
    return words.get(type_, getattr(type_, "__name__", str(type_)))


def _structure_literal(value: Any, type_: Any) -> Any:
    # equal and of the same kind: True is not the 1 of Literal[0, 1], nor 1 the "1" of a str
    for choice in typing.get_args(type_):
        if isinstance(value, (bool, np.bool_)) == isinstance(choice, bool) and \
                isinstance(value, str) == isinstance(choice, str) and _equal(value, choice):
            return choice
    raise ValueError(f"expected {_allowed(type_)}, got {value!r}")


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an array compared with a choice
        return False


def _structure_enum(value: Any, type_: Any) -> Any:
    if isinstance(value, type_):
        return value
    for member in type_:  # by value (a TOML string or number), else by name
        if isinstance(value, (bool, np.bool_)) == isinstance(member.value, bool) and \
                _equal(value, member.value):
            return member
    if isinstance(value, str) and value in type_.__members__:
        return type_.__members__[value]
    raise ValueError(f"expected {_allowed(type_)} ({type_.__name__}), got {value!r}")


def _structure_choice_union(value: Any, type_: Any) -> Any:
    """The first member of the union that takes ``value``; none: what each would take."""
    members = typing.get_args(type_)
    if value is None and type(None) in members:
        return None
    for member in members:
        if member is type(None):
            continue
        try:
            _check_container(value, member)  # (a string is no list of its characters here)
            return converter.structure(value, member)
        except cattrs.errors.StructureHandlerNotFoundError:
            raise  # a member the converter cannot check: the value passes, as for the member
        except (ValueError, TypeError, cattrs.errors.CattrsError):
            continue
    raise ValueError(f"expected {_allowed(type_)}, got {value!r}")


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _strict_str)
    # a choice, as plugins declare one (PML's reducer, type_of_triplets): a value outside it is
    # a message naming the choices, where cattrs raised a bare CattrsError ("avg not in literal
    # ...", a traceback from `infoblocks run`, author25-1), passed a str Enum's non-member as it
    # was, and passed a union of Literals unchecked
    conv.register_structure_hook_func(_is_literal, _structure_literal)
    conv.register_structure_hook_func(_is_enum, _structure_enum)
    conv.register_structure_hook_func(_is_choice_union, _structure_choice_union)
    return conv


#: the one converter (strict scalars, unknown keys rejected)
converter = _make_converter()


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Init parameter name -> annotation of an attrs class (string annotations resolved
    where possible; an unresolvable one is left unchecked)."""
    try:
        attrs.resolve_types(cls)
    except Exception:  # noqa: BLE001 - e.g. a name imported only for type checking
        pass  # (then each field on its own: one unresolvable annotation spoils only itself)
    return {f.alias or f.name: _resolved(f.type, cls) for f in attrs.fields(cls) if f.init}


def _resolved(annotation: Any, cls: type) -> Any:
    """A field's string annotation evaluated in its class's module (``Any`` when it cannot be:
    a class defined in a function that annotates with names local to it)."""
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(cls.__module__)
    try:
        return eval(annotation, dict(vars(module)) if module else {}, dict(vars(cls)))  # noqa: S307
    except Exception:  # noqa: BLE001
        return Any


#: how a data form (TOML, which has no null; to_dict; a save) spells None for a setting
#: whose type takes None besides numbers or lists but no string (``patience: int | None``):
#: the string "none".  A key left out is the setting's default, which is not None for e.g.
#: ``patience`` (None: no early stopping), so it cannot stand for None there.
NONE_SPELLING = "none"


def spells_none(type_: Any) -> bool:
    """Whether ``type_`` is a union with None whose other members take no string (so the
    string :data:`NONE_SPELLING` can only mean None): ``int | None``, ``list[int] | None``,
    not ``str | None`` nor ``Literal["none", "auto"] | None``."""
    if typing.get_origin(type_) not in (typing.Union, types.UnionType):
        return False
    members = typing.get_args(type_)
    if type(None) not in members:
        return False
    for member in members:
        if member is type(None):
            continue
        if member is str or member is Any or _is_literal(member) or _is_enum(member):
            return False
        if _accepted_kinds(member) is None:  # a class, a callable: it might take a string
            return False
    return True


def _check_value(value: Any, type_: Any) -> Any:
    """``value`` structured as ``type_`` (strict scalars); values of types the converter has no
    rule for (live objects: modules, callables, arrays) pass unchanged.  The string "none"
    is None where ``type_`` :func:`spells_none`."""
    if type_ is Any or type_ is None:
        return value
    if isinstance(value, str) and spells_none(type_):
        if value == NONE_SPELLING:
            return None
        others = [t for t in typing.get_args(type_) if t is not type(None)]
        if all(t in (int, float) for t in others):  # (a list's own message says more)
            raise ValueError(f"expected {' or '.join(_allowed(t) for t in others)} or "
                             f'"{NONE_SPELLING}" (None), got {value!r}')
    members = typing.get_args(type_) if typing.get_origin(type_) in (typing.Union,
                                                                     types.UnionType) else ()
    classes = [t for t in (type_, *members) if isinstance(t, type)
               and t not in (int, float, bool, str, type(None), list, dict, tuple)]
    if any(isinstance(value, t) for t in classes):
        return value  # an object built already (a phase's Validation, a block)
    _check_container(value, type_)
    try:
        return converter.structure(value, type_)
    except cattrs.errors.StructureHandlerNotFoundError:
        return value


#: the containers a field's annotation may name: a list (TOML array) or a table
_LISTS = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set)
_TABLES = (dict, collections.abc.Mapping)


def _accepted_kinds(type_: Any) -> set[str] | None:
    """What ``type_`` accepts among "list", "table", "str" and "scalar"; None when it also
    accepts something else (Any, a class, a callable), so that nothing is refused here."""
    members = typing.get_args(type_) if typing.get_origin(type_) in (typing.Union,
                                                                     types.UnionType) else (type_,)
    kinds = set()
    for member in members:
        origin = typing.get_origin(member) or member
        if member is type(None):
            continue
        if origin in _LISTS:
            kinds.add("list")
        elif origin in _TABLES:
            kinds.add("table")
        elif member is str:
            kinds.add("str")
        elif member in (int, float, bool):
            kinds.add("scalar")
        elif isinstance(member, type) and attrs.has(member) and not _is_block(member):
            kinds.add("table")  # a settings class built from its table (a phase's validation)
        else:
            return None
    return kinds


def _is_block(cls: type) -> bool:
    """Whether ``cls`` is a block class (a name or a table goes for it)."""
    from .base import Block

    return issubclass(cls, Block)


def _check_container(value: Any, type_: Any) -> None:
    """A string or a table where only a list goes, or anything but a table where only a
    table goes, is refused by name: cattrs iterates a string's characters (``arrays = "xy"``
    was the arrays ['x', 'y'], silently) or a table's keys, and raises a bare AttributeError
    for a list given as a table (``models = [1, 2]``)."""
    kinds = _accepted_kinds(type_)
    if not kinds or value is None:
        return
    if "list" in kinds and "str" not in kinds and isinstance(value, str):
        raise ValueError(f"expected a list, got the string {value!r} (a list is written "
                         f"[a, b, ...]{f', here [{value!r}]' if ',' not in value else ''})")
    if "list" in kinds and "table" not in kinds and isinstance(value, dict):
        raise ValueError(f"expected a list, got a table {value!r} (a list is written "
                         "[a, b, ...])")
    if kinds <= {"table"} and not isinstance(value, collections.abc.Mapping):
        raise ValueError(f"expected a table (in TOML a [section] or {{key = value, ...}}), "
                         f"got {value!r}")


def _check_values(values: dict[str, Any], types: dict[str, Any], path: str | None = None
                  ) -> tuple[dict[str, Any], list[str]]:
    """Each value structured as its field's type: ``(structured values, problems)``.  With
    ``path`` (a config) a problem ends ``@ path.key``; without (Python arguments) it names
    the argument (`` `key`: ...``)."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in values.items():
        if isinstance(value, dict) and _is_list_of_tables(types[key]):
            # (cattrs would iterate the table's keys: "expected a mapping @ phases[0]" ...)
            message = (f"`{key}` is one table, but it is a list of tables: write [[{key}]] "
                       f"(double brackets) before each entry in TOML, or {key} = [{{...}}] in "
                       "Python")
            problems.append(f"{message} @ {path}.{key}" if path else message)
            continue
        try:
            out[key] = _check_value(value, types[key])
            continue
        except cattrs.BaseValidationError as exc:
            found = cattrs.transform_error(exc, path=f"{path}.{key}" if path else "$",
                                           format_exception=_format_exception)
            problems += found if path else [m.replace(" @ $", f" @ {key}") for m in found]
        except (ValueError, TypeError, cattrs.errors.CattrsError) as exc:
            message = _format_exception(exc, types[key])
            problems.append(f"{message} @ {path}.{key}" if path else f"`{key}`: {message}")
        if "got" not in problems[-1]:
            problems[-1] += f" (got {value!r})"
    return out, problems


def _is_list_of_tables(type_: Any) -> bool:
    """Whether ``type_`` is (optionally) a list of dicts, e.g. a recipe's ``phases``."""
    origin = typing.get_origin(type_)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list_of_tables(arg) for arg in typing.get_args(type_))
    if origin is list:
        args = typing.get_args(type_)
        return bool(args) and typing.get_origin(args[0]) is dict or (bool(args) and args[0] is dict)
    return False


def _format_exception(exc: BaseException, type_: Any) -> str:
    """cattrs' message for a field, except that our validators' messages are kept whole."""
    from cattrs.v import format_exception

    if isinstance(exc, InfoblocksError) or (isinstance(exc, ValueError)
                                            and str(exc).startswith("expected ")):
        return str(exc)
    return format_exception(exc, type_)


def structure(data: dict[str, Any], cls: type, path: str, label: str | None = None) -> Any:
    """``cls(**data)`` through the strict converter; :class:`ConfigError` names ``path``.

    Field values are type-checked by the converter (scalars strictly) and then validated by
    the class's own attrs validators; nested blocks are resolved by their fields' converters.
    ``label`` (default ``path``) names the thing in the message, e.g. ``transform 'pca_init'``.
    """
    label = label or path
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a table (dict) of settings, got {data!r}.")
    if not attrs.has(cls):
        try:
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"Invalid {label}: {exc}") from None
    types = _field_types(cls)
    extra = [k for k in data if k not in types]
    if extra:
        import difflib

        close = [f"{m[0]!r} for {k!r}" for k in extra if not _migrant_hint(str(k), types)
                 and (m := difflib.get_close_matches(str(k), list(types), n=1, cutoff=0.6))]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        hint += "".join(f" `{k}`:{_migrant_hint(str(k), types)}" for k in extra
                        if _migrant_hint(str(k), types))
        raise ConfigError(f"Invalid {label}: extra fields found ({', '.join(map(str, extra))}); "
                          f"the known keys are {sorted(types)}.{hint}")
    values, problems = _check_values(data, types, path)
    if problems:
        raise ConfigError(f"Invalid {label}: {'; '.join(problems)}")
    missing = _missing_required(cls, data)
    if missing:  # said before cls(**values): Python's TypeError text names no TOML key
        fields = ", ".join(f"`{k}`" for k in missing)
        adds = "; ".join(f"`{k} = ...`" for k in missing)
        raise ConfigError(f"Invalid {label}: field{'s' if len(missing) > 1 else ''} {fields} "
                          f"{'are' if len(missing) > 1 else 'is'} required: add {adds} to "
                          + (f"the table at {path}." if path != label else "its settings."))
    try:
        return cls(**values)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc, path=path,
                                                    format_exception=_format_exception))
        raise ConfigError(f"Invalid {label}: {problems}") from None
    except InfoblocksError as exc:
        if isinstance(exc, ConfigError) and label in str(exc):
            raise
        raise ConfigError(f"Invalid {label}: {exc}") from None
    except (ValueError, TypeError) as exc:  # raised by field validators
        raise ConfigError(f"Invalid {label}: {exc}") from None


def _missing_required(cls: type, data: dict[str, Any]) -> list[str]:
    """Init parameters of attrs class ``cls`` without a default that ``data`` does not set."""
    return [f.alias or f.name for f in attrs.fields(cls)
            if f.init and f.default is attrs.NOTHING and (f.alias or f.name) not in data]


#: the names scikit-learn, umap-learn, openTSNE, DADApy and imnn give a setting, and the
#: infoblocks settings they are (the first that the class has is suggested)
MIGRANT_NAMES: dict[str, tuple[str, ...]] = {
    "random_state": ("seed",), "n_epochs": ("layout_epochs", "epochs"),
    "num_epochs": ("epochs",), "max_iter": ("layout_epochs", "epochs"),
    "n_iter": ("layout_epochs", "epochs"), "lr": ("learning_rate",),
    "n_jobs": ("threads",), "num_threads": ("threads",), "batch": ("batch_size",),
    "negative_sample_rate": ("neg_sampling_rate",),
    "learning_rate_decay": ("lr_schedule",), "gradient_clip_value": ("grad_clip",),
    # ParametricUMAP's epochs of the network (its n_epochs: of the graph's optimisation)
    "n_training_epochs": ("epochs",),
}

_SUPERVISED = ("umap-learn's supervised UMAP (fit(X, y), a label graph intersected with the "
               "k-NN graph) has no setting here: the fit is unsupervised. To train with labels, "
               "write a routine: `recipe = \"routine\"`, `arrays = [\"data\", \"labels\"]` and a "
               "loss that reads `labels` (docs/plugins.md, \"A routine of your own, as data\").")
_DECODER = ("ParametricUMAP's decoder (parametric_reconstruction) is a model of your own: "
            "`[models.decoder]` and a reconstruction loss beside `relation` in the main phase's "
            "`compound`, with `trainable = [\"main\", \"decoder\"]` (docs/umap.md, on "
            "`[models.decoder]`; docs/plugins.md, \"Add a loss to UMAP\").")
_OWN_LOSS = ("a loss block of your own beside `relation` in a phase's `compound` "
             "(docs/plugins.md, \"Add a loss to UMAP\").")

#: names of umap-learn / ParametricUMAP settings that infoblocks has no setting for, and what
#: to do instead: said (in place of the close matches, which point to wrong settings:
#: `target_metric` -> `metric`) where the class has the field in the key (the embeddings)
MIGRANT_NOTES: dict[str, tuple[str, str]] = {
    **{name: ("n_neighbors", _SUPERVISED) for name in (
        "target_metric", "target_metric_kwds", "target_weight", "target_n_neighbors")},
    **{name: ("n_neighbors", _DECODER) for name in (
        "parametric_reconstruction", "autoencoder_loss", "decoder", "reconstruction_validation",
        "parametric_reconstruction_loss_fcn", "parametric_reconstruction_loss_weight")},
    "output_metric": ("n_neighbors", "umap-learn's output_metric (the embedding space's "
                      "distance) has no setting: the embedding is Euclidean, its kernel set by "
                      "`min_dist` / `spread` (a kernel of your own: docs/plugins.md, \"Add an "
                      "affinity (or an encoder) to UMAP\"); `metric` is the data's distance."),
    "output_metric_kwds": ("n_neighbors", "see `output_metric`: the embedding is Euclidean; "
                           "`metric_kwds` are the data distance's options."),
    "global_correlation_loss_weight": ("n_neighbors", "ParametricUMAP's global correlation "
                                       "term is not built in: it can be " + _OWN_LOSS),
    "landmark_loss_weight": ("n_neighbors", "umap-learn's landmark re-training is not built "
                             "in: a loss of your own that reads the landmarks' positions, in a "
                             "routine (docs/plugins.md, \"A routine of your own, as data\")."),
    "landmark_loss_fn": ("n_neighbors", "see `landmark_loss_weight`."),
    "densmap": ("n_neighbors", "densMAP is not built in: its density term can be " + _OWN_LOSS),
    "dens_lambda": ("n_neighbors", "densMAP is not built in: see `densmap`."),
    "parametric_embedding": ("n_neighbors", "This recipe is parametric and non-parametric at "
                             "once: `embedding_` is the layout of free coordinates (umap-learn's "
                             "UMAP), `transform(X, refine=False)` the network alone."),
}

#: the hint of a Python function given as `metric` (umap-learn's numba metric)
METRIC_FUNCTION_HINT = (
    "; a Python function is not taken as `metric` (a config names blocks, it cannot hold "
    "code): write it as a `distance` block — `pairwise(a, b)` (n, m) and `paired(a, b)` (n,), "
    "finite and >= 0 — registered by a plugin, and give its name, `metric = \"my_distance\"` "
    "(docs/plugins.md, \"Add a distance to UMAP (a custom metric)\")")


def _migrant_hint(key: str, fields: Any) -> str:
    """`` Did you mean 'seed'? (infoblocks' name for it)`` for another library's name of a
    setting ``fields`` has (:data:`MIGRANT_NAMES`), or the note of :data:`MIGRANT_NOTES`;
    '' for neither."""
    alias = [a for a in MIGRANT_NAMES.get(key, ()) if a in fields]
    if alias:
        return (f" Did you mean {', '.join(map(repr, alias))}? (infoblocks' "
                f"{'name' if len(alias) == 1 else 'names'} for it)")
    field, note = MIGRANT_NOTES.get(key, ("", ""))
    return f" {note}" if note and field in fields else ""


def check_arguments(cls: type, kwargs: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Before ``cls(**kwargs)``: an unknown keyword is an
    :class:`~infoblocks.blocks.errors.UnknownParameterError` with the close matches, and each
    value of a typed field goes through the strict converter (``hidden_dims=16``,
    ``standardize="no"``) — a :class:`~infoblocks.blocks.errors.ValidationError` naming it."""
    import difflib

    from .errors import UnknownParameterError, ValidationError

    fields = {f.alias or f.name: f for f in attrs.fields(cls) if f.init}
    for key in kwargs:
        if key not in fields:
            hint = _migrant_hint(key, fields)
            close = [] if hint else difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
            hint = hint or (f" Did you mean {', '.join(map(repr, close))}?" if close else "")
            raise UnknownParameterError(
                f"{cls.__name__} has no parameter {key!r}.{hint} Its parameters are "
                f"{sorted(fields)}.")
    checked = {k: v for k, v in kwargs.items() if k not in skip
               and not fields[k].metadata.get("transient") and not fields[k].metadata.get("section")}
    _, problems = _check_values(checked, _field_types(cls))
    if problems:
        if callable(checked.get("metric")) and "metric_kwds" in fields:
            problems = [p + METRIC_FUNCTION_HINT if p.startswith("`metric`") else p
                        for p in problems]
        raise ValidationError(f"{cls.__name__}: {'; '.join(problems)}.")


def check_types(obj: Any, label: str, fields: list[attrs.Attribute] | None = None) -> None:
    """Check the values of an attrs object's fields against their annotations with the strict
    converter (``standardize="no"`` for a bool field is refused, not read as True);
    :class:`~infoblocks.blocks.errors.ValidationError` names every wrong argument."""
    from .errors import ValidationError

    types = _field_types(type(obj))
    values = {f.alias or f.name: getattr(obj, f.name)
              for f in (fields if fields is not None else attrs.fields(type(obj)))
              if (f.alias or f.name) in types and not f.metadata.get("transient")}
    _, problems = _check_values(values, types)
    if problems:
        raise ValidationError(f"{label}: {'; '.join(problems)}.")


__all__ = ["converter", "structure", "check_types", "check_arguments", "spells_none",
           "NONE_SPELLING"]
