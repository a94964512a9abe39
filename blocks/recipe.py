"""The Recipe base: a user-facing attrs class of hyperparameters that builds a Routine.

A recipe is an *assembled routine*, and its data form shows the assembly, in one schema for
every recipe (see :mod:`infoblocks.blocks.assembly`):

- top-level *shortcuts* (``n_neighbors``, ``learning_rate`` ...) fill the defaults;
- ``globals``: name -> ``{input, relation, transforms}``, computed once before training;
- ``models``: name -> model block spec (``main`` is the encoder / critic / summary network);
- ``phases``: list merged by ``name`` (sampler, loss, optimizer, schedule, validation);
- ``evaluation``: slot -> block spec, the blocks used after training.

An explicit section wins over a shortcut; a section that sets a key a non-default shortcut
also sets, to another value, is an error naming both.  :meth:`Recipe.to_dict` /
:meth:`Recipe.from_dict` round-trip through the one strict converter of
:mod:`infoblocks.blocks.config` (unknown keys and wrong types are rejected with their path);
``to_dict(full=True)`` expands the sections.  Fields that hold live objects (a simulator, a
custom module) are marked ``transient`` and are left out of the data form.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar

import attrs
import cattrs
import numpy as np

from .assembly import SECTIONS, expand_sections, section_field, shortcut_fields
from .base import Block, as_data, not_implemented
from .config import (NONE_SPELLING, _field_types, check_arguments, check_types, spells_none,
                     structure)
from .errors import (ConfigError, InfoblocksError, NotFittedError, RegistryError,
                     ValidationError)

#: key of the recipe name in dict / TOML form
RECIPE_KEY = "recipe"
#: key of a full form's table of the shortcut values its sections were expanded from
EXPANDED_KEY = "expanded_from"
#: key, in that table, of the recipe's own sections the full form was expanded from
WRITTEN_SECTIONS_KEY = "sections"
#: key of a save's ``extra`` holding the recipe's fitted attributes (:meth:`Recipe.save`)
FITTED_KEY = "fitted"
#: file of a save holding the fitted attributes that are arrays or tensors
FITTED_FILE = "fitted.npz"


class UnsavedStateWarning(UserWarning):
    """:meth:`Recipe.save` leaves out a fitted attribute it cannot write (not an array,
    tensor, number, string, or list / dict of them)."""


def _phase_defaults() -> dict[str, Any]:
    """The optimizer settings of a phase that leaves them out (:meth:`Recipe.routine_spec`
    states them)."""
    from .phases import TrainingPhase

    fields = {f.name: f.default for f in attrs.fields(TrainingPhase)}
    return {k: fields[k] for k in ("optimizer", "learning_rate", "lr_schedule", "weight_decay")}


_PHASE_DEFAULTS = _phase_defaults()

TRANSIENT = {"transient": True}


def transient_field(**kwargs: Any) -> Any:
    """An attrs field left out of ``to_dict`` (live objects: modules, callables)."""
    return attrs.field(metadata=TRANSIENT, **kwargs)


def _plain(value: Any) -> Any:
    """Values as TOML/JSON-friendly data (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _same(a: Any, b: Any) -> bool:
    """Whether two settings are equal (arrays by value; live objects by identity)."""
    if a is b:
        return True
    try:
        return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) or \
            isinstance(b, np.ndarray) else bool(_plain(a) == _plain(b))
    except Exception:  # noqa: BLE001 - objects without a plain equality
        return False


def _brief(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a module's repr runs to pages)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _data_copy(value: Any) -> Any:
    """``value`` with its plain containers and arrays copied; anything else as it is."""
    if isinstance(value, dict):
        return {k: _data_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_data_copy(v) for v in value) if type(value) in (list, tuple) \
            else value
    return value.copy() if isinstance(value, np.ndarray) else value


def _none_is_not_default(cls: type, field: attrs.Attribute) -> bool:
    """Whether a recipe setting left None must be written (:data:`NONE_SPELLING`): its
    default is not None (InfoMax's ``patience`` 100, ParametricUMAP's ``pca_dims`` 64), so
    leaving the key out would read back as that default (author27-1: ``patience=None`` became
    100 through ``to_toml(full=True)``, ``save`` / ``load`` and ``infoblocks run``'s
    recipe.toml; the run early-stopped at 169 of 200 epochs)."""
    return field.default is not None and \
        spells_none(_field_types(cls).get(field.alias or field.name))


def _section_data(value: Any) -> Any:
    """A section as data: a block instance as its table, ``name`` included (cattrs alone
    wrote its fields without the name: a file that could not be read back, author22-11)."""
    from .base import as_data

    return _plain(cattrs.unstructure(as_data(value)))


def _blocks_in(value: Any) -> list[Any]:
    """The block instances inside a section's value (nested ones too)."""
    from .base import Block

    if isinstance(value, Block):
        return [value, *(b for v in attrs.asdict(value, recurse=False).values()
                         for b in _blocks_in(v))] if attrs.has(type(value)) else [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [b for v in value for b in _blocks_in(v)]
    return []


def _warn_unregistered(recipe: Any, sections: list[Any]) -> None:
    """An :class:`UnregisteredBlockWarning` for each block instance in the sections whose
    class is not the one registered under its name: the data form names it, but reading
    it back builds another block or none (author22-11: a notebook-defined loss in a
    compound was written without a name and its saved routine loaded without phases)."""
    from infoblocks.plugins.hookspecs import HOOK_FOR_KIND
    from infoblocks.plugins.registry import get_registry

    from .assembly import warn_once

    registry = get_registry()
    for block in _blocks_in(sections):
        kind, name, cls = getattr(block, "kind", None), getattr(block, "name", None), type(block)
        if kind not in HOOK_FOR_KIND:
            continue
        known = registry.get(kind, name) if isinstance(name, str) and (kind, name) in registry \
            else None
        if known is cls:
            continue
        then = f"builds {known.__name__} instead" if known is not None else \
            "fails: no block has that name"
        warn_once(recipe, UnregisteredBlockWarning(
            f"{recipe.name}: the {kind} {cls.__module__}.{cls.__qualname__} (name {name!r}) is "
            f"not a registered block, so its data form (to_dict, to_toml, save) names it but "
            f"reading that back (recipe_from_dict, load) {then}. Register the class with a "
            f"plugin's `{HOOK_FOR_KIND[kind]}` hook under a name of its own (docs/plugins.md), "
            "or keep the recipe in Python."), stacklevel=4)


class UnregisteredBlockWarning(UserWarning):
    """A block instance in a recipe's sections whose class is not registered by its name."""


def map_block_slots(spec: dict[str, Any], evaluation_kinds: dict[str, str],
                    visit: Any) -> dict[str, Any]:
    """``spec`` with the entry of every slot that holds a block replaced by ``visit(kind,
    entry, place)`` — the globals' relation and transforms, the models, each phase's and its
    validation's sampler and loss, the evaluation slots (``evaluation_kinds``: slot -> kind);
    a list entry (transforms, a compound's parts) item by item, ``place`` e.g.
    ``"phases.main.loss"`` or ``"globals.P.transforms[1]"``.  Slots the spec leaves out stay
    out; ``visit`` walks a block's own block fields (a loss's ``kernel``) with
    :func:`visit_entry`."""
    out = dict(spec)
    if isinstance(spec.get("globals"), dict):
        out["globals"] = {}
        for gname, entry in spec["globals"].items():
            if isinstance(entry, dict):
                entry = dict(entry)
                for key, kind in (("relation", "relation"), ("transforms", "transform")):
                    if key in entry:
                        entry[key] = visit_entry(kind, entry[key], f"globals.{gname}.{key}",
                                                 visit)
            out["globals"][gname] = entry
    if isinstance(spec.get("models"), dict):
        out["models"] = {k: visit_entry("model", v, f"models.{k}", visit)
                         for k, v in spec["models"].items()}
    if isinstance(spec.get("phases"), list):
        out["phases"] = []
        for phase in spec["phases"]:
            if isinstance(phase, dict):
                phase, where = dict(phase), f"phases.{phase.get('name')}"
                for slot in ("sampler", "loss"):
                    if slot in phase:
                        phase[slot] = visit_entry(slot, phase[slot], f"{where}.{slot}", visit)
                if isinstance(phase.get("validation"), dict):
                    validation = phase["validation"] = dict(phase["validation"])
                    for slot in ("sampler", "loss"):
                        if slot in validation:
                            validation[slot] = visit_entry(
                                slot, validation[slot], f"{where}.validation.{slot}", visit)
            out["phases"].append(phase)
    if isinstance(spec.get("evaluation"), dict):
        out["evaluation"] = {
            k: visit_entry(evaluation_kinds[k], v, f"evaluation.{k}", visit)
            if k in evaluation_kinds else v for k, v in spec["evaluation"].items()}
    return out


def visit_entry(kind: str, value: Any, where: str, visit: Any) -> Any:
    """``visit(kind, value, where)``, or item by item for a list (``where[k]``)."""
    if isinstance(value, list):
        return [visit_entry(kind, v, f"{where}[{k}]", visit) for k, v in enumerate(value)]
    return visit(kind, value, where)


def _plugin_defaults(spec: dict[str, Any], evaluation_kinds: dict[str, str],
                     written: set[str], builtin: bool = False,
                     skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``spec`` with each plugin block named in the recipe's own sections (``written``: a
    block the user put in) written with its own fields — those no built-in block of its kind
    has (an MI bound's ``baseline``, a sampler's ``k``) — and their defaults where the spec
    leaves them out, so a full form shows what that block runs with (author24-5:
    `alpha_tuba` was written without `baseline`).  The fields it shares with the built-ins
    (``x_dim``, ``in_dim``, ``x_key``, ``batch_size``, ``hidden_dims`` ...) stay as the
    recipe leaves them: a fit fills those from the data and its settings.  Fields without a
    default or defaulting to None stay out; nested blocks (a loss's ``kernel``, a compound's
    ``losses``) are looked at too.  The blocks a recipe's defaults name are written as the
    recipe sets them, built-in or plugin alike — with ``builtin`` (the recipe's
    :attr:`Recipe.full_defaults`) each built-in block also with every field the spec leaves
    out at its default, so that the full form shows every knob, but those in ``skip`` (the
    recipe's :attr:`Recipe.full_defaults_skip`: what it fills from the data)."""
    from .base import BUILTIN, default_data
    from infoblocks.plugins.registry import get_registry

    registry = get_registry()
    shared: dict[str, set[str]] = {}

    def builtin_fields(kind: str) -> set[str]:
        if kind not in shared:
            shared[kind] = {f.alias or f.name for e in registry.entries(kind)
                            if e.plugin == BUILTIN and attrs.has(e.block)
                            for f in attrs.fields(e.block)}
        return shared[kind]

    def filled(kind: str, value: Any, where: str) -> Any:
        table = {"name": value} if isinstance(value, str) else value
        name = table.get("name") if isinstance(table, dict) else None
        if not isinstance(name, str) or (kind, name) not in registry:
            return value  # an instance, a placeholder or a partial table: as written
        entry = registry.entry(kind, name)
        if not attrs.has(entry.block):
            return value
        table, defaults = dict(table), {}
        for f in attrs.fields(entry.block):
            key = f.alias or f.name
            if not f.init or key.startswith("_"):
                continue
            if f.metadata.get("block_kind") and key in table:
                table[key] = visit_entry(f.metadata["block_kind"], table[key],
                                         f"{where}.{key}", filled)
            if key in table or (entry.plugin == BUILTIN and (not builtin or key in skip)) or (
                    entry.plugin != BUILTIN and (name not in written
                                                 or key in builtin_fields(kind))):
                continue
            default = default_data(f)
            if default is not attrs.NOTHING and default is not None:
                defaults[key] = _plain(default)
        if not defaults:
            return value if table == ({"name": value} if isinstance(value, str) else value) \
                else table
        return {**table, **defaults}

    return map_block_slots(spec, evaluation_kinds, filled)


def _spelt_nones(spec: dict[str, Any], evaluation_kinds: dict[str, str]) -> dict[str, Any]:
    """``spec`` (sections as data, before None is dropped) with each block table's option set
    to None written :data:`NONE_SPELLING` where the block's own default is not None and its
    type :func:`spells_none` — as a recipe setting is (TOML has no null, and an option left
    out reads back as the default: a sampler's ``batch_size = None``, the whole pool, came
    back as 100 through ``to_dict`` / ``to_toml`` / ``save``).  Nested blocks (a loss's
    ``kernel``, a compound's ``losses``) too; a table of an unknown block stays as it is."""
    from .base import default_data
    from infoblocks.plugins.registry import get_registry

    registry = get_registry()

    def spell(kind: str, value: Any, where: str) -> Any:
        name = value.get("name") if isinstance(value, dict) else None
        if not isinstance(name, str) or (kind, name) not in registry:
            return value
        block = registry.entry(kind, name).block
        if not attrs.has(block):
            return value
        table, types = dict(value), _field_types(block)
        for f in attrs.fields(block):
            key = f.alias or f.name
            if key not in table:
                continue
            if f.metadata.get("block_kind"):
                table[key] = visit_entry(f.metadata["block_kind"], table[key],
                                         f"{where}.{key}", spell)
            elif table[key] is None and spells_none(types.get(f.name)) and \
                    default_data(f) not in (None, attrs.NOTHING):
                table[key] = NONE_SPELLING
        return table

    return map_block_slots(spec, evaluation_kinds, spell)


def _strings(value: Any) -> list[str]:
    """Every string in nested lists / dicts (the names a section's blocks refer to)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _partial_entry(section: str, entry: Any) -> bool:
    """Whether a ``globals`` / ``models`` entry names no block: a table that tunes a default
    entry rather than a spec of its own (a global's relation without ``name`` and no
    transforms, or none of either; a model table without ``name``)."""
    if not isinstance(entry, dict):
        return False
    if section == "models":
        return "name" not in entry
    relation = entry.get("relation")
    return (isinstance(relation, dict) and "name" not in relation) or \
        (relation is None and not entry.get("transforms"))


class _CheckedConstructor(type):
    """Recipes check their keyword arguments before attrs sees them: an unknown keyword gets
    the close matches (as a TOML key does) and typed values go through the strict converter,
    so ``MINE(standardize="no")`` or ``ParametricUMAP(hidden_dims=16)`` is a clear error at
    construction rather than a silent coercion or a raw ``TypeError``."""

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(name, bases, namespace)
        for method in NAMED_METHODS:
            if method in namespace:
                _name_failures(cls, method, namespace[method])

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if attrs.has(cls):
            check_arguments(cls, kwargs)
        return super().__call__(*args, **kwargs)


#: the methods of a recipe whose exceptions name the recipe and its plugin (blocks' are
#: named by :func:`~infoblocks.blocks.base.naming_blocks`)
NAMED_METHODS = ("build", "fit", "run", "demo")
#: marks a method wrapped by :func:`_name_failures`
_NAMING = "__infoblocks_names_recipe__"


def _name_failures(cls: type, method: str, value: Any) -> None:
    """Wrap ``cls.method``, defined outside infoblocks (a plugin's or a user's recipe), so
    that an exception of its own code — not infoblocks' errors — becomes a
    :class:`~infoblocks.blocks.errors.PluginError` naming the recipe, its plugin and the line
    (also an instance of the original type), as a block's does (author20 F3: a KeyError in a
    plugin recipe's build was a raw traceback on the command line)."""
    import functools

    wrapper = classmethod if isinstance(value, classmethod) else None
    func = value.__func__ if wrapper else value
    if not callable(func):
        return
    if getattr(func, _NAMING, False):  # attrs' slotted copy of a wrapped class: re-point
        _repoint_class_cell(func.__wrapped__, cls)  # super() in the original (as attrs does)
        return
    if getattr(func, "__module__", "").startswith("infoblocks."):
        return

    @functools.wraps(func)
    def named(self_or_cls: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self_or_cls, *args, **kwargs)
        except Exception as exc:
            failure = _recipe_failure(self_or_cls, method, exc)
            if failure is None:
                raise
            raise failure from exc

    setattr(named, _NAMING, True)
    setattr(cls, method, wrapper(named) if wrapper else named)


def _repoint_class_cell(func: Any, cls: type) -> None:
    """Point ``func``'s ``__class__`` cell (what ``super()`` reads) at ``cls``, the slotted
    class attrs made from the one ``func`` was defined in."""
    for var, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
        try:
            old = cell.cell_contents
        except ValueError:
            continue
        if var == "__class__" and isinstance(old, type) and old is not cls and \
                old.__qualname__ == cls.__qualname__:
            cell.cell_contents = cls


def _recipe_failure(owner: Any, method: str, exc: Exception) -> Exception | None:
    """The :class:`PluginError` for ``exc`` raised in ``owner.method`` (``owner`` a recipe or
    its class), or None where ``exc`` is infoblocks' own error or the recipe a built-in."""
    from .base import BUILTIN, _raised_at, failure_like
    from .errors import InfoblocksError, PluginError

    if isinstance(exc, InfoblocksError):
        return None
    cls = owner if isinstance(owner, type) else type(owner)
    recipe = getattr(cls, "name", cls.__name__)
    origin = None
    if isinstance(recipe, str) and _registered_recipe(recipe) is cls:
        from infoblocks.plugins.registry import get_registry

        origin = get_registry().entry("recipe", recipe).plugin
    if origin == BUILTIN:
        return None
    who = f"plugin {origin!r}" if origin is not None else \
        f"class {cls.__qualname__}, not registered"
    text = str(exc) or "(no message)"
    message = (f"recipe {recipe!r} ({who}) raised {type(exc).__name__} in {method}: {text} "
               f"({_raised_at(exc.__traceback__)}).")
    return failure_like(PluginError, exc, message)


@attrs.define(kw_only=True)
class Recipe(Block, metaclass=_CheckedConstructor):
    """Base of recipes.  Subclasses add hyperparameter fields and implement :meth:`build`
    plus a convenience API (``fit`` ...).  ``demo`` runs the embedded problem with a known
    answer and writes a figure; ``run`` is what ``infoblocks run`` calls."""

    kind: ClassVar[str] = "recipe"
    #: one-line description shown by ``infoblocks list recipe`` and ``infoblocks demo``
    summary: ClassVar[str] = ""
    #: named settings for :meth:`preset` (a different trade-off, not the good result)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: evaluation slot -> block kind (how the ``evaluation`` section's specs are built)
    evaluation_kinds: ClassVar[dict[str, str]] = {}
    #: settings without a default that a run must set (``infoblocks config`` names them)
    required_settings: ClassVar[tuple[str, ...]] = ()
    #: whether the full form (``to_dict(full=True)``, ``config --full``, the save) writes each
    #: built-in block of the sections with every field the spec leaves out at its default
    #: (:func:`_plugin_defaults`; fields defaulting to None and the sizes a fit fills stay
    #: out), so that it shows every knob.  A recipe opts in once its full form runs as it is
    #: with them: a field a build step of its own fills where the spec leaves it out is named
    #: in :attr:`full_defaults_skip`, and its older full forms read back unedited (every
    #: built-in recipe)
    full_defaults: ClassVar[bool] = False
    #: fields of built-in blocks that a build step of the recipe fills from the data where the
    #: spec leaves them out (DII: its distances' ``unit``): the full form leaves them out too,
    #: so that the written form, run on other data, fills them from that data as the recipe
    #: would, instead of pinning the blocks' defaults
    full_defaults_skip: ClassVar[frozenset[str]] = frozenset()

    #: name -> {input, relation, transforms}: updates the default globals by name
    globals: dict[str, Any] | None = section_field()
    #: name -> model spec: updates the default models by name
    models: dict[str, Any] | None = section_field()
    #: phases merged by ``name`` into the defaults; new names are appended
    phases: list[dict[str, Any]] | None = section_field()
    #: slot -> block spec: the blocks used after training
    evaluation: dict[str, Any] | None = section_field()
    #: training observers by registry name or ``{name = ..., **options}`` (kind
    #: ``callback``), e.g. ``["tensorboard"]``; called in every ``fit``
    callbacks: list[Any] | None = None
    #: the fitted routine (``fit`` sets it); :meth:`save` writes it, :meth:`load` reads it
    routine_: Any = attrs.field(init=False, default=None, repr=False, eq=False)
    #: what the last training ran with (models and phases as data, the settings, the phase
    #: objects), for a warm fit to compare with (:meth:`_apply_warm_changes`)
    _trained: Any = attrs.field(init=False, default=None, repr=False, eq=False)

    def build(self, *data: Any) -> Any:
        raise not_implemented(self, "build")

    def train_routine(self, routine: Any, *, checkpoint: str | Path | None = None,
                      resume: bool | str | Path = False, warm_start: bool = False,
                      checkpoint_every: int = 1, phases: Any = None) -> Any:
        """Train ``routine`` the way every recipe's ``fit`` does, with the run options of
        ``fit(..., checkpoint=DIR, resume=...)``.

        ``checkpoint``: a directory where the whole training state is written atomically
        (every ``checkpoint_every`` epochs and at each phase's end); ``resume=True`` continues
        from the checkpoint there, and ``resume=DIR`` is short for ``checkpoint=DIR,
        resume=True``; a directory without a checkpoint (a first run, or a mistyped path)
        starts from scratch with a ``NothingToResumeWarning`` naming it (not an error: the
        same command line starts a run and continues it after a kill).  ``warm_start=True``
        continues this process's previous run of the routine (weights, optimizer and loss
        state): pass the fitted ``self.routine_`` again, not a newly built one (refused with
        a :class:`~infoblocks.blocks.errors.ContractError`: it would start over); settings
        changed by ``set_params`` since are applied or refused (:meth:`_apply_warm_changes`).
        A model of
        the ``models`` section that ``routine`` does not hold is refused (nothing would read
        it).  Returns the routine."""
        if isinstance(resume, (str, Path)):
            if checkpoint is not None and Path(checkpoint) != Path(resume):
                raise ConfigError(f"`resume` = {str(resume)!r} and `checkpoint` = "
                                  f"{str(checkpoint)!r} name different directories; pass "
                                  "`resume=True` with `checkpoint`, or `resume=DIR` alone.")
            checkpoint, resume = resume, True
        elif not isinstance(resume, bool):
            raise ConfigError(f"`resume` must be True, False or a checkpoint directory, got "
                              f"{resume!r}.")
        self._check_warm_routine(routine, warm_start)
        self._check_built_models(routine)
        spec = self._trained_spec_now()
        if warm_start is True and routine is self.routine_:
            self._apply_warm_changes(routine, spec, phases)
        observers = self.build_callbacks()
        routine.callbacks.extend(observers)
        try:
            trained = routine.train(phases=phases, checkpoint=checkpoint, resume=resume,
                                    warm_start=warm_start, checkpoint_every=checkpoint_every)
        finally:  # a later fit builds its own: none is left behind on the routine
            routine.callbacks = [cb for cb in routine.callbacks if cb not in observers]
        params, before = self._warm_params(), self._trained
        kept = before[2] if before is not None and before[0] == spec and all(
            _same(v, before[1].get(k)) for k, v in params.items()) else []
        # (the phases of every routine trained with these settings: InfoMax's n_init
        # restarts train several, and keeps one)
        self._trained = (spec, params, [*kept, *routine.phases][-64:])
        return trained

    #: settings a warm fit takes as they are now without a look at the routine: they set how
    #: this fit runs, not what it continues
    _WARM_FREE: ClassVar[frozenset[str]] = frozenset(
        {"warm_start", "verbose", "threads", "callbacks", "device"})
    #: phase keys a warm fit applies to the phase it continues (author27-D)
    _WARM_APPLIED: ClassVar[tuple[str, ...]] = ("epochs", "learning_rate")
    #: phase keys held in the optimizer state a warm fit continues, besides the learning rate
    _WARM_OPTIMIZER: ClassVar[tuple[str, ...]] = ("optimizer", "optimizer_options",
                                                  "weight_decay")
    #: settings this recipe's warm fit takes as they are now although the models and phases
    #: it continues do not show them: read after training, or again on every fit (MI's
    #: ``n_subsamples``, read by ``estimate``).  A section named here (``"evaluation"``: a
    #: recipe that builds its evaluation blocks from the settings on every fit or use) also
    #: covers the shortcuts whose change reaches only that section (UMAP's
    #: ``transform_epochs``).  Any other change that the models and phases do not show is
    #: refused on a warm fit (:meth:`_apply_warm_changes`): the routine it continues was
    #: built with the old value (InfoMax's ``scaling``, a split's ``test_fraction``, a graph's
    #: ``n_neighbors``).  A plugin recipe names here the settings its own warm fit re-reads.
    warm_fit_reads: ClassVar[frozenset[str]] = frozenset()

    def _spec_sections(self, **override: Any) -> dict[str, Any] | None:
        """The expanded sections as data, with the settings ``override`` in place of this
        recipe's (put back after): what a setting's change reaches (None where the recipe
        cannot expand its sections, or not with ``override``)."""
        import warnings

        from .assembly import _WARNED

        shown = set(_WARNED.get(id(self), ()))
        before = {key: getattr(self, key) for key in override}
        try:
            for key, value in override.items():  # (a value this recipe held: no checks)
                object.__setattr__(self, key, value)
            with warnings.catch_warnings():  # (the fit itself warns what there is to warn)
                warnings.simplefilter("ignore")
                spec = self.routine_spec()
            return {k: _section_data(spec.get(k)) for k in SECTIONS}
        except Exception:  # noqa: BLE001 - a recipe without sections of its own
            return None
        finally:  # ... and warn_once still shows what this look did not
            for key, value in before.items():
                object.__setattr__(self, key, value)
            if id(self) in _WARNED:
                _WARNED[id(self)] = shown

    def _trained_spec_now(self) -> dict[str, Any] | None:
        """The models and phases as data, to compare a later warm fit's settings with (None
        where the recipe cannot expand its sections: a routine of its own)."""
        sections = self._spec_sections()
        return None if sections is None else {k: sections[k] for k in ("models", "phases")}

    def _warm_params(self) -> dict[str, Any]:
        """The settings a later warm fit compares with: plain data copied (a list edited in
        place later is a change), live objects (a torch module, a callable) held as they are
        and compared by identity — a deep copy of ``encoder_module`` per fit doubled its memory
        and never compared equal to the module it was copied from."""
        return {key: _data_copy(value) for key, value in self.get_params().items()
                if key not in self._WARM_FREE}

    def _unseen_changes(self, changed: list[str], params: dict[str, Any]) -> list[str]:
        """Of the settings ``changed`` since the last fit, those whose change a warm fit would
        not take: each is set back alone to its value then and the sections compared with
        those now.  A change that shows in the models or phases is left to the comparison of
        those (:meth:`_apply_warm_changes`); one that shows only in the ``globals`` (a split,
        a graph: computed once per routine) or ``evaluation`` section, or in none (a setting
        the recipe's fit reads itself: InfoMax's ``scaling``, MI's ``standardize``), is
        refused unless :attr:`warm_fit_reads` names it or that section (fix28w: each was
        accepted and ignored while ``get_params()`` reported it)."""
        now = self._spec_sections()
        if now is None:
            return []
        reads = self.warm_fit_reads
        unseen = []
        for key in changed:
            then = self._spec_sections(**{key: params[key]})
            if then is None:  # not expandable with the old value alone: left to the
                continue      # comparison of the models and phases, as before
            reached = {k for k in SECTIONS if then[k] != now[k]}
            # (its models and phases part: compared by the caller)
            rest = reached - {"models", "phases"} - reads if reached else {"none"}
            if rest and key not in reads:
                unseen.append(key)
        return unseen

    def _apply_warm_changes(self, routine: Any, spec: dict[str, Any] | None,
                            running: Any = None) -> None:
        """A warm fit after ``set_params``: the settings changed since the last fit reach the
        routine it continues, or are refused.  A phase's ``epochs`` and ``learning_rate``
        are applied to the phase it continues (the optimizer's state is kept, its learning
        rates scaled to the new one); any other change of the models or of a continued
        phase (a block, a penalty's weight, the critic) is a :class:`ConfigError` naming it
        (author27-D: it was ignored while ``get_params()`` reported it).  A recipe whose warm
        fit rebuilds a phase from its settings (IMNN, DII) has that phase's changes applied;
        a change of a phase the warm fit does not run (``running``: UMAP continues its last
        one) is refused, and so is a setting whose change the models and phases do not show
        unless the recipe's :attr:`warm_fit_reads` names it (:meth:`_unseen_changes`)."""
        trained = getattr(self, "_trained", None)
        if trained is None or spec is None or trained[0] is None:
            return  # a loaded model, or a recipe without sections: nothing to compare with
        then, params, phases = trained
        changed = [k for k, v in self._warm_params().items()
                   if k in params and not _same(v, params[k])]
        if not changed:
            return
        from .routine import _differences

        unseen = self._unseen_changes(changed, params)
        now = self._warm_params()
        refused: list[str] = [
            f"`{key}`: {_brief(params[key])} then, {_brief(now[key])} now, of which a warm "
            "fit keeps what the last fit made" for key in unseen]
        if then["models"] != spec["models"]:
            refused.append(_differences(then["models"], spec["models"], "models"))
        applied: list[tuple[Any, str, Any, Any]] = []
        old_phases = {p.get("name"): p for p in then["phases"] if isinstance(p, dict)}
        new_phases = {p.get("name"): p for p in spec["phases"] if isinstance(p, dict)}
        reused = False
        for phase in routine.phases:
            old, new = old_phases.get(phase.name), new_phases.get(phase.name)
            if running is not None and phase.name not in running:
                if old is not None and new is not None and old != new:  # (ignored before)
                    refused.append(
                        _differences(old, new, f"phases.{phase.name}") + ", a phase this warm "
                        f"fit does not run: it continues {', '.join(map(repr, running))}")
                continue  # not run by this fit
            if not any(phase is p for p in phases):  # rebuilt by the recipe's own warm fit
                # (IMNN, DII): it has the new settings, but the optimizer state it continues
                # has the old learning rate (DII's 0.01 -> 0.1 ran at 0.01)
                rate = "learning_rate"
                if old is not None and new is not None and new.get(rate) is not None \
                        and old.get(rate) != new.get(rate):
                    applied.append((phase, rate, old.get(rate), new[rate]))
                # ... and the old optimizer, whose state torch's load_state_dict puts back
                # whole (IMNN's weight_decay 0 -> 0.1 ran at 0; DII's sgd -> adam: KeyError)
                moved = [k for k in self._WARM_OPTIMIZER if old is not None and new is not None
                         and old.get(k) != new.get(k)]
                if moved and phase.last_run is not None:
                    refused.append(_differences(
                        {k: old.get(k, "(unset)") for k in moved},
                        {k: new.get(k, "(unset)") for k in moved}, f"phases.{phase.name}")
                        + ", whose old value the optimizer state this warm fit continues keeps")
                continue
            reused = True
            if old is None or new is None:
                refused.append(f"phases.{phase.name}: {'gone' if new is None else 'new'}")
                continue
            rest = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
            for key in sorted(rest):
                if key in self._WARM_APPLIED and new.get(key) is not None:
                    applied.append((phase, key, old.get(key), new[key]))
                    rest.discard(key)
            if rest:
                refused.append(_differences({k: old.get(k, "(unset)") for k in rest},
                                            {k: new.get(k, "(unset)") for k in rest},
                                            f"phases.{phase.name}"))
        if reused:
            refused += [f"phases.{n}: new" for n in new_phases if n not in old_phases]
        if refused:
            named = unseen if len(refused) == len(unseen) else changed
            takes = [f"`{k}`" for k in (*self._WARM_APPLIED, *sorted(self.warm_fit_reads))]
            raise ConfigError(
                f"{self.name}.fit(warm_start=True) continues the fitted models and phases, "
                f"but {', '.join(f'`{k}`' for k in named)} changed since the last fit, "
                f"which a warm fit cannot take ({'; '.join(refused)}); it takes a changed "
                f"{', '.join(takes[:-1])} or {takes[-1]} only. Fit with warm_start=False for a "
                "new fit with these settings, or set them back.")
        for phase, key, before, after in applied:
            setattr(phase, key, after)
            if key == "learning_rate" and phase.last_run is not None and before:
                for group in phase.last_run["optimizer"].get("param_groups", []):
                    for name in ("lr", "initial_lr"):  # the groups' own ratios kept
                        if isinstance(group.get(name), (int, float)):
                            group[name] = group[name] * after / before

    def _check_warm_routine(self, routine: Any, warm_start: Any) -> None:
        """``warm_start=True`` with a fitted ``routine_`` while ``routine`` is another one (a
        recipe's ``fit`` that builds a new routine every time) would train the new one from
        scratch, silently (author20 F1: a 2 + 2 epoch warm start equalled a fresh 2-epoch
        fit): a :class:`ContractError` naming the recipe and the pattern to use."""
        from .errors import ContractError

        if warm_start is not True or self.routine_ is None or routine is self.routine_:
            return
        raise ContractError(
            f"{self.name}.fit(warm_start=True): {type(self).__name__}'s fit passed "
            "train_routine a newly built routine while a fitted one (routine_) exists, so "
            "training would start over instead of continuing. In the recipe's fit, continue "
            "the fitted routine: `routine = self.routine_ if warm_start and self.routine_ is not "
            "None else self.build(X)` (docs/plugins.md, 'A new recipe from existing blocks'); "
            "or fit with warm_start=False for a new fit.")

    def _check_built_models(self, routine: Any) -> None:
        """A model of the ``models`` section that the recipe's ``build`` did not put in
        ``routine`` (``models = {extra = {...}}`` given to a recipe whose build makes only
        ``main``) would be ignored, silently (author20 F16): the :class:`ConfigError` of
        :meth:`_check_read_models`, for every recipe."""

        models = getattr(routine, "models", None)
        given = self.models if isinstance(self.models, dict) else {}
        if models is None or not given:
            return
        unbuilt = [n for n in self.routine_spec()["models"] if n in given and n not in models]
        if not unbuilt:
            return
        built = sorted(models)
        raise self._unread_model(
            unbuilt[0], built, f"{self.name} builds the models {built} and ignores the others, "
            "so it would be left out.", "or remove the table.")

    def build_callbacks(self) -> list[Any]:
        """The ``callbacks`` named by this recipe, built through the registry."""
        from infoblocks.plugins.registry import get_registry

        if self.callbacks is None:
            return []
        if not isinstance(self.callbacks, list | tuple):
            raise ConfigError(f"{self.name}.callbacks must be a list of callback names or "
                              f"tables, e.g. [\"tensorboard\"]; got {self.callbacks!r}.")
        return [get_registry().build("callback", spec, path=f"{self.name}.callbacks[{k}]")
                for k, spec in enumerate(self.callbacks)]

    # ------------------------------------------------------------------ the assembly

    def default_globals(self) -> dict[str, dict[str, Any]]:
        """Name -> ``{"input", "relation", "transforms"}`` specs, from the shortcuts."""
        return {}

    def default_models(self) -> dict[str, Any]:
        """Name -> model spec, from the shortcuts.  Data-dependent sizes (``in_dim``,
        ``n_items`` ...) are filled at build time by :meth:`build_model`."""
        return {}

    def default_phases(self) -> list[dict[str, Any]]:
        """The phases as dicts, from the shortcuts."""
        return []

    def default_evaluation(self) -> dict[str, Any]:
        """Slot -> block spec of the blocks used after training."""
        return {}

    def default_sections(self) -> dict[str, Any]:
        return {"globals": self.default_globals(), "models": self.default_models(),
                "phases": self.default_phases(), "evaluation": self.default_evaluation()}

    def routine_spec(self) -> dict[str, Any]:
        """The expanded routine: the default sections updated by the explicit ones.

        Raises :class:`ConfigError` where an explicit section and a non-default shortcut
        set the same key to different values, and :class:`ValidationError` where a
        hyperparameter has the wrong type (``standardize="no"`` for a bool)."""
        check_types(self, type(self).__name__, shortcut_fields(type(self)))
        self._check_new_entries()
        spec = expand_sections(self)
        self._check_evaluation_slots(spec)
        # every phase's optimizer settings, the engine's defaults where the recipe leaves them
        # out: a plugin recipe's full config says what runs, as the built-ins' do
        spec["phases"] = [{**p, **{k: v for k, v in _PHASE_DEFAULTS.items() if k not in p}}
                          if isinstance(p, dict) else p for p in spec.get("phases") or []]
        return spec

    def _check_block_names(self, spec: dict[str, Any]) -> None:
        """A block name the sections give that no registered block of its slot's kind has is
        a :class:`RegistryError` naming its place and the close names, when the full form is
        written: ``infoblocks config FILE --full`` and ``to_toml(full=True)`` refuse it as
        ``fit`` does (author23-8: ``kernel = "gaussian"`` was written back with no complaint).
        Reading a config does not check (the docs' placeholder ``my_loss`` reads and expands;
        a plugin may come later), nor a name only a recipe's own defaults give
        (``check_block``'s).  Looked at: the globals' relation and transforms, the models,
        each phase's and its validation's sampler and loss, the evaluation slots, and inside a
        named block its fields that hold blocks (a loss's ``kernel``, a compound's
        ``losses``); block instances are left to the build."""
        from infoblocks.plugins.registry import get_registry

        registry = get_registry()
        written = set(_strings([getattr(self, k) for k in SECTIONS]))

        def check(kind: str, value: Any, where: str) -> Any:
            table = value if isinstance(value, dict) else {}
            name = value if isinstance(value, str) else table.get("name")
            if not isinstance(name, str) or (name not in written and (kind, name) not in
                                             registry):
                return value
            try:
                cls = registry.get(kind, name)
            except RegistryError as exc:
                raise RegistryError(f"{self.name}.{where}: {exc}") from None
            for f in attrs.fields(cls) if attrs.has(cls) else ():
                inner, key = f.metadata.get("block_kind"), f.alias or f.name
                if inner and key in table:
                    visit_entry(inner, table[key], f"{where}.{key}", check)
            return value

        map_block_slots(spec, self.evaluation_kinds, check)

    def _check_evaluation_slots(self, spec: dict[str, Any]) -> None:
        """An ``evaluation`` entry the recipe has no slot for (a misspelt one) is refused with
        the close match: the recipe reads only its own slots, so it would be ignored.  A
        recipe without slots (``routine``, most plugins') refuses any entry (author20 F15: a
        plugin recipe took ``evaluation = {placement = ...}`` and never used it)."""
        known = set(self.evaluation_kinds) | set(self.default_sections().get("evaluation") or {})
        explicit = self.evaluation if isinstance(self.evaluation, dict) else {}
        unknown = sorted(k for k in explicit if k not in known)
        if unknown and not known:
            raise ConfigError(f"{self.name}: [evaluation] has {unknown}, but {self.name} uses no "
                              "block after training (it has no evaluation slots), so it would "
                              "be ignored; remove the [evaluation] table. (A recipe declares its "
                              "slots with default_evaluation() / evaluation_kinds.)")
        if unknown:
            import difflib

            close = {k: m for k in unknown
                     if (m := difflib.get_close_matches(str(k), sorted(known), n=1, cutoff=0.6))}
            hint = "".join(f" Did you mean {m[0]!r} for {k!r}?" for k, m in close.items())
            raise ConfigError(f"{self.name}: [evaluation] has no slot {unknown}; its slots are "
                              f"{sorted(known)}.{hint}")

    def _check_new_entries(self) -> None:
        """A ``globals`` or ``models`` entry under a name the recipe does not have, given as a
        partial spec (``globals = {grph = {relation = {metric = "cosine"}}}``: no block
        named) while a default entry has a close name, is a misspelling of that entry — a
        :class:`ConfigError` with the close match, instead of the block's "needs a 'name'
        key" (phases: :func:`~infoblocks.blocks.assembly.merge_sections`)."""
        import difflib

        defaults = self.default_sections()
        for section, noun, full in (("globals", "global", "relation = {name = ...} or "
                                     "transforms = [...]"), ("models", "model", "name = ...")):
            given, known = getattr(self, section), list(defaults.get(section) or {})
            if not isinstance(given, dict) or not known:
                continue
            for name, entry in given.items():
                if name in known or not _partial_entry(section, entry):
                    continue
                close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
                if close:
                    raise ConfigError(
                        f"{self.name}.{section}: no {noun} {name!r} in {self.name} ({section}: "
                        f"{', '.join(known)}); did you mean {close[0]!r}? A new one needs a "
                        f"full spec ({full}).")

    def _check_read_models(self, spec: dict[str, Any], phases: list[Any]) -> None:
        """A model added under ``models`` that nothing reads — no phase trains it by name, no
        loss uses it (``required_models``), no block of the sections names it — would be built
        and left untrained while the recipe trains its own (``MINE(models={"critc": ...})``
        trained the default critic): a :class:`ConfigError` listing the recipe's models.
        Checked where every loss is infoblocks' own (a plugin's loss may read a model it does
        not declare) and the recipe has default models."""
        from .base import BUILTIN, block_origin

        defaults = list(self.default_models())
        added = [n for n in (self.models if isinstance(self.models, dict) else {})
                 if n not in defaults]
        if not defaults or not added:
            return
        read = set(_strings([spec.get(k) for k in ("globals", "phases", "evaluation")]))
        for phase in phases:
            read |= set(phase.trainable or ())
            for loss in (phase.loss, getattr(phase.validation, "loss", None)):
                for part in [loss, *getattr(loss, "losses", ())] if loss is not None else ():
                    if block_origin(part) != BUILTIN:
                        return
                    read |= set(part.required_models() or ())
        unread = [n for n in added if n not in read]
        if not unread:
            return
        raise self._unread_model(
            unread[0], defaults, "(no phase trains it by name, no loss or evaluation block uses "
            f"it), so it would be built and left untrained. {self.name}'s models are {defaults}.",
            "a new model needs a block that names it (a loss's `model`, a phase's `trainable`).")

    def _unread_model(self, name: str, models: list[str], why: str, rest: str) -> ConfigError:
        """The ConfigError of a ``models`` table ``name`` that nothing reads: ``why``, the
        closest of ``models`` and how to change one of them; ``rest`` the other way out."""
        import difflib

        close = difflib.get_close_matches(str(name), models, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return ConfigError(
            f"{self.name}.models.{name}: nothing reads model {name!r}{':' if why[0] != '(' else ''}"
            f" {why}{hint} To change one, give its table under that name (models = "
            f"{{{models[0] if models else 'main'} = {{...}}}}); {rest}")

    def phase_specs(self) -> list[dict[str, Any]]:
        """The phases that training runs, as dicts (defaults merged with ``phases``)."""
        return self.routine_spec()["phases"]

    def build_globals(self, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        """The :class:`~infoblocks.blocks.routine.GlobalRelation` s of the ``globals``
        section, built through the registry."""
        from .assembly import build_global

        spec = self.routine_spec() if spec is None else spec
        return {name: build_global(value, f"{self.name}.globals.{name}")
                for name, value in spec["globals"].items() if value is not None}

    def build_model(self, name: str, spec: dict[str, Any] | None = None, **context: Any) -> Any:
        """Model ``name`` of the ``models`` section, with ``context`` (``in_dim=...``)
        filled into the block's fields that the spec leaves out."""
        from .assembly import build_model

        spec = self.routine_spec() if spec is None else spec
        if name not in spec["models"]:
            raise ConfigError(f"{self.name}: the routine needs a model {name!r}; [models] has "
                              f"{sorted(spec['models'])}.")
        return build_model(spec["models"][name], f"{self.name}.models.{name}", context)

    def build_phases(self, spec: dict[str, Any] | None = None,
                     sampler_context: dict[str, Any] | None = None,
                     validation_context: dict[str, Any] | None = None) -> list[Any]:
        """The :class:`~infoblocks.blocks.phases.TrainingPhase` s of the ``phases`` section;
        ``sampler_context`` (``validation_context``) is filled into each phase's (validation's)
        sampler fields that the spec leaves out, e.g. a split index or simulation settings."""
        from .assembly import build_phase

        spec = self.routine_spec() if spec is None else spec
        phases = [build_phase(p, f"{self.name}.phases.{p.get('name', k)}", sampler_context,
                              validation_context)
                  for k, p in enumerate(spec["phases"])]
        self._check_read_models(spec, phases)
        return phases

    def build_evaluation(self, slot: str, spec: dict[str, Any] | None = None, **context: Any
                         ) -> Any:
        """The block in evaluation ``slot`` (its kind from :attr:`evaluation_kinds`)."""
        from .assembly import build_model
        from infoblocks.plugins.registry import get_registry

        spec = self.routine_spec() if spec is None else spec
        if slot not in spec["evaluation"]:
            raise ConfigError(f"{self.name}: no evaluation block {slot!r}; [evaluation] has "
                              f"{sorted(spec['evaluation'])}.")
        kind = self.evaluation_kinds.get(slot)
        value = spec["evaluation"][slot]
        if kind is None:
            return value
        path = f"{self.name}.evaluation.{slot}"
        if kind == "model":
            return build_model(value, path, context)
        return get_registry().build(kind, value, path=path)

    # ------------------------------------------------------------------ scikit-learn

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments (scikit-learn convention; ``sklearn.base.clone`` works)."""
        return {f.alias or f.name: getattr(self, f.name) for f in attrs.fields(type(self))
                if f.init}

    def set_params(self, **params: Any) -> Recipe:
        """Set constructor arguments by name (validated as in the constructor); ``self``."""
        # the constructor's checks: a misspelt name gets the close match (author20 F10),
        # a wrong type names the argument
        check_arguments(type(self), params)
        before = {key: getattr(self, key) for key in params}
        try:
            for key, value in params.items():
                setattr(self, key, value)
            # the constructor's checks across fields (UMAP's init "none" with a layout ...)
            post_init = getattr(self, "__attrs_post_init__", None)
            if post_init is not None:
                post_init()
        except Exception:
            for key, value in before.items():  # all or nothing: the recipe stays valid
                setattr(self, key, value)
            raise
        return self

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted once ``fit`` set ``routine_`` (scikit-learn's ``check_is_fitted``; its
        fallback would take the unfitted recipe's ``*_`` fields, None, for fitted)."""
        return getattr(self, "routine_", None) is not None

    def __sklearn_tags__(self) -> Any:
        """scikit-learn >= 1.6 asks every step of a Pipeline for its tags (``transform`` calls
        ``check_is_fitted``): an unsupervised estimator, a transformer where it has
        ``transform``.  Older scikit-learn does not call it."""
        from sklearn.utils import Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags() if hasattr(self, "transform") else None)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Recipe:
        """A recipe with the named settings of :attr:`presets`, updated by ``overrides``."""
        if name not in cls.presets:
            import difflib

            known = ", ".join(sorted(cls.presets)) or "none"
            close = difflib.get_close_matches(str(name), sorted(cls.presets), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cls.__name__} has no preset {name!r}; presets: {known}.{hint}")
        return cls(**{**cls.presets[name], **overrides})

    # ------------------------------------------------------------------ data form

    def full_sections(self) -> dict[str, Any]:
        """The sections as :meth:`to_dict` ``(full=True)`` writes them: the expanded routine
        (:meth:`routine_spec`), a plugin block's own fields with their defaults included
        (:func:`_plugin_defaults`), and with :attr:`full_defaults` every built-in block's
        defaults too; a recipe may write its blocks with more of their fields."""
        spec = self.routine_spec()
        written = set(_strings([getattr(self, k) for k in SECTIONS]))
        try:
            return _plugin_defaults(spec, self.evaluation_kinds, written, self.full_defaults,
                                    self.full_defaults_skip)
        except InfoblocksError:  # a block that cannot be looked up: the sections as written
            return spec  # (the full form's name check or the fit names it)

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """``{"recipe": name, **hyperparameters, **sections}`` (transient fields left out;
        None dropped, except a setting whose default is not None, e.g. ``patience = None``
        (no early stopping): that is written ``"none"``, which :meth:`from_dict` reads back as
        None (TOML has no null, and a key left out reads as the default)).  With ``full`` the
        sections are the expanded routine."""
        out: dict[str, Any] = {RECIPE_KEY: self.name}
        _warn_unregistered(self, [getattr(self, k) for k in SECTIONS])
        for f in attrs.fields(type(self)):
            if f.metadata.get("transient") or not f.init or f.name in SECTIONS:
                continue
            value = getattr(self, f.name)
            if value is None:  # the default where that is None; else spelt (TOML has no null)
                if _none_is_not_default(type(self), f):
                    out[f.name] = NONE_SPELLING
                continue
            out[f.name] = _plain(cattrs.unstructure(value))
        sections = self.full_sections() if full else {
            k: getattr(self, k) for k in SECTIONS if getattr(self, k) is not None}
        if full:  # what is written as what runs names blocks that exist
            self._check_block_names(sections)
        data = self._sections_data(sections)
        for key in SECTIONS:
            value = sections.get(key)
            if value or (key in sections and not full):
                out[key] = data[key]
        if full:  # what the sections were expanded from: an edited shortcut reaches them
            out[EXPANDED_KEY] = {f.name: out[f.name] for f in shortcut_fields(type(self))
                                 if f.name in out}
            written = self._sections_data({k: getattr(self, k) for k in SECTIONS
                                           if getattr(self, k)})
            if written:
                out[EXPANDED_KEY][WRITTEN_SECTIONS_KEY] = written
        return out

    def _sections_data(self, sections: dict[str, Any]) -> dict[str, Any]:
        """``sections`` as plain data, a block option set to None spelt where it must be
        (:func:`_spelt_nones`)."""
        data = {k: cattrs.unstructure(as_data(v)) for k, v in sections.items()}
        return {k: _plain(v) for k, v in _spelt_nones(data, self.evaluation_kinds).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Structure a dict made by :meth:`to_dict` (the ``recipe`` key is optional but, when
        present, must match).  Unknown keys and wrong types raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict takes a dict of settings (a TOML "
                              f"config's tables), got {type(data).__name__}.")
        data = dict(data)
        name = data.pop(RECIPE_KEY, cls.name)
        if name != cls.name:
            raise ConfigError(f"This dict describes recipe {name!r}, not {cls.name!r}; "
                              "use infoblocks.plugins.registry.recipe_from_dict for any recipe.")
        transient = [f.name for f in attrs.fields(cls)
                     if (f.metadata.get("transient") or not f.init) and f.name in data]
        if transient:
            raise ConfigError(f"Invalid {cls.name}: {transient} cannot be given as data (live "
                              "objects or fitted results); pass them from Python.")
        expanded = data.pop(EXPANDED_KEY, None)
        recipe = structure(data, cls, cls.name)
        if expanded is not None:
            recipe = recipe._rebased(expanded)
        recipe.routine_spec()  # a section that contradicts a shortcut fails here, by path
        return recipe

    def _rebased(self, expanded: Any) -> Recipe:
        """This recipe, read from a full form (``to_dict(full=True)``, ``config --full``)
        whose ``expanded`` table records the shortcut values and the explicit sections it was
        written from: the recipe as written, with the shortcuts as the file has them now and
        the file's edits to the sections (:func:`~infoblocks.blocks.assembly.section_edits`)
        on top.  So a shortcut edited in the file reaches every key it filled, an edited key
        stays (and conflicts with an edited shortcut that fills it), and what the recipe
        derives from its sections (InfoMax's validation loss following the trained one) is
        derived again."""
        from .assembly import apply_edits, section_edits

        cls, path = type(self), f"{self.name}.{EXPANDED_KEY}"
        if not isinstance(expanded, dict):
            raise ConfigError(f"{path} must be the table of shortcut values that "
                              f"`to_dict(full=True)` / `config --full` writes, got {expanded!r}; "
                              "remove it to read the sections as they are.")
        expanded = dict(expanded)
        written_from = expanded.pop(WRITTEN_SECTIONS_KEY, None) or {}
        names = {f.name for f in shortcut_fields(cls)}
        unknown = sorted(set(expanded) - names)
        if unknown or not isinstance(written_from, dict):
            raise ConfigError(f"{path}: {unknown or [WRITTEN_SECTIONS_KEY]} are not settings of "
                              f"{cls.__name__}; the table holds the shortcut values and sections "
                              "the file was written from (remove it to read the sections as they "
                              "are).")
        then = structure({**expanded, **written_from}, cls, path)
        dumped = then._sections_data(then.full_sections())
        edits = section_edits({k: getattr(self, k) for k in SECTIONS}, dumped)
        self._check_edited_phases(then, dumped, edits)
        sections = apply_edits({k: getattr(then, k) for k in SECTIONS}, edits, self.name)
        return attrs.evolve(self, **{k: v or None for k, v in sections.items()})

    def _check_edited_phases(self, then: Recipe, dumped: dict[str, Any],
                             edits: dict[str, Any]) -> None:
        """An edit of a phase that the recipe ``then`` (as the file was written) has and the
        shortcuts as they are now do not make (t-SNE's `exaggerate`, which exists only without
        a layout) would read as a new phase: :class:`ConfigError` naming the changed
        shortcuts."""
        plain = attrs.evolve(self, **{k: None for k in SECTIONS})
        now = {p.get("name") for p in plain.default_sections()["phases"]} | {
            p.get("name") for p in then.phases or [] if isinstance(p, dict)}
        written = {p.get("name") for p in dumped["phases"]}
        gone = [p["name"] for p in edits["phases"] or []
                if p["name"] in written and p["name"] not in now]
        if not gone:
            return
        changed = [f"`{f.name}` = {getattr(self, f.name)!r} (written {getattr(then, f.name)!r})"
                   for f in shortcut_fields(type(self))
                   if _plain(getattr(self, f.name)) != _plain(getattr(then, f.name))]
        raise ConfigError(
            f"{self.name}.phases.{gone[0]}: the file edits this phase, which the recipe has "
            f"with the settings it was written with but not with the file's now "
            f"({', '.join(changed) or 'its shortcuts'}). Remove the edit of the phase, or set "
            "those settings back.")

    def to_toml(self, path: str | Path | None = None, full: bool = False) -> str:
        import tomli_w

        text = tomli_w.dumps(self.to_dict(full=full))
        if path is not None:
            if Path(path).is_dir():
                raise ValidationError(f"to_toml writes a file; {str(path)!r} is a directory "
                                      "(give a file name, e.g. DIR/recipe.toml).")
            Path(path).parent.mkdir(parents=True, exist_ok=True)  # as save() and figures do
            Path(path).write_text(text)
        return text

    @classmethod
    def from_toml(cls, path: str | Path) -> Recipe:
        return cls.from_dict(read_toml(path))

    # ------------------------------------------------------------------ persistence

    def fitted_attributes(self) -> dict[str, Any]:
        """The fitted results this recipe holds besides ``routine_``, which :meth:`save`
        writes and :meth:`load` puts back: its attrs fields set by ``fit`` (``init=False``,
        a public name ending in ``_``) that are not None.  Arrays and tensors are written to
        ``fitted.npz``; numbers, strings and lists / dicts of them to ``routine.json``.  A
        recipe keeping other objects (a fitted scikit-learn transformer ...) overrides
        :meth:`save` / :meth:`load` (:meth:`save` warns, naming them)."""
        if not attrs.has(type(self)):
            return {}
        return {f.name: value for f in attrs.fields(type(self))
                if not f.init and f.name.endswith("_") and not f.name.startswith("_")
                and f.name != "routine_" and (value := getattr(self, f.name)) is not None}

    def save(self, path: str | Path) -> Path:
        """The fitted routine (weights, the routine's blocks by name, history), this recipe's
        settings and its :meth:`fitted_attributes` into directory ``path``; :meth:`load`
        reads them back."""
        import json
        import warnings

        import torch

        self._check_fitted()
        arrays, values, unsaved = {}, {}, []
        for name, value in self.fitted_attributes().items():
            if isinstance(value, torch.Tensor):
                arrays[name] = ("tensor", value.detach().cpu().numpy())
            elif isinstance(value, np.ndarray) and not value.dtype.hasobject:
                arrays[name] = ("ndarray", value)
            else:
                try:
                    values[name] = json.loads(json.dumps(_plain(value)))
                except (TypeError, ValueError):
                    unsaved.append(f"{name} ({type(value).__name__})")
        if unsaved:
            warnings.warn(UnsavedStateWarning(
                f"{type(self).__name__}.save leaves out the fitted attributes {unsaved}: the "
                "base save keeps arrays, tensors, numbers, strings and lists / dicts of them. "
                "Keep them in one of those forms, or override save / load (docs/plugins.md, 'A "
                "new recipe from existing blocks')."), stacklevel=2)
        extra: dict[str, Any] = {RECIPE_KEY: self.to_dict(full=True)}
        if arrays or values:
            extra[FITTED_KEY] = {"values": values,
                                 "arrays": {name: kind for name, (kind, _) in arrays.items()}}
        path = self.routine_.save(path, extra=extra)
        if arrays and self.routine_.dist.is_main:
            tmp = path / (FITTED_FILE + ".tmp")
            with open(tmp, "wb") as stream:
                np.savez(stream, **{name: array for name, (_, array) in arrays.items()})
            tmp.replace(path / FITTED_FILE)
        return path

    def _restore_fitted(self, path: Path, fitted: Any, device: str) -> None:
        """Put back what :meth:`save` wrote of :meth:`fitted_attributes`."""
        import torch

        fields = {f.name for f in attrs.fields(type(self)) if not f.init}
        if not isinstance(fitted, dict):
            return
        for name, value in (fitted.get("values") or {}).items():
            if name in fields:
                setattr(self, name, value)
        kinds = fitted.get("arrays") or {}
        if not kinds:
            return
        try:
            with np.load(Path(path) / FITTED_FILE, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in kinds}
        except (OSError, KeyError, ValueError) as exc:
            raise ValidationError(
                f"{Path(path) / FITTED_FILE} (the fitted attributes {sorted(kinds)} of this "
                f"save) cannot be read: {exc}. Save the fitted recipe again.") from None
        for name, array in arrays.items():
            if name in fields:
                setattr(self, name, torch.from_numpy(array).to(device)
                        if kinds[name] == "tensor" else array)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Recipe:
        """A recipe saved with :meth:`save` (or a routine saved with the recipe's
        ``to_dict(full=True)`` as its ``extra``), its ``routine_`` rebuilt with the weights.
        ``Recipe.load(path)`` on the base class loads any recipe's save with that recipe's
        own ``load``; a save of another recipe is a :class:`ValidationError` naming its
        loader (:func:`check_saved_recipe`)."""
        from .routine import Routine

        saved = check_saved_recipe(cls, path)
        if saved is not None and saved is not cls:  # Recipe.load(path): the saver's own load
            if saved.load.__func__ is not Recipe.load.__func__:  # type: ignore[attr-defined]
                import inspect

                takes_device = "device" in inspect.signature(saved.load).parameters
                return saved.load(path, **({"device": device} if takes_device else {}))
            cls = saved
        routine = Routine.load(path, device=device)
        extra = routine.saved_extra
        settings = extra.get(RECIPE_KEY) if isinstance(extra.get(RECIPE_KEY), dict) else extra
        if settings.get(RECIPE_KEY) != cls.name:
            raise ValidationError(f"{path} holds no {cls.name!r} settings (its routine was "
                                  f"saved by {settings.get(RECIPE_KEY) or 'no recipe'!r}); "
                                  f"save one with {cls.__name__}(...).fit(...).save(path).")
        recipe = cls.from_dict(settings)
        recipe.routine_ = routine
        if settings is not extra and FITTED_KEY in extra:
            recipe._restore_fitted(Path(path), extra[FITTED_KEY], device)
        return recipe

    # ------------------------------------------------------------------ command line

    def run(self, data: list[np.ndarray], out_dir: Path, **fit_options: Any) -> dict[str, Any]:
        """Fit on ``data`` (the arrays given with ``--data``; ``fit_options`` are the command
        line's ``checkpoint`` / ``resume``), save into ``out_dir``, and return a summary dict
        (printed and written as JSON by the CLI)."""
        raise NotImplementedError(f"Recipe {self.name!r} cannot be run from a config file.")

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """Run the embedded demo problem; write a figure into ``out_dir``; return numbers."""
        raise NotImplementedError(f"Recipe {cls.name!r} has no demo.")

    @classmethod
    def has_demo(cls) -> bool:
        return cls.demo.__func__ is not Recipe.demo.__func__  # type: ignore[attr-defined]

    def _check_fitted(self, attribute: str = "routine_") -> None:
        if getattr(self, attribute, None) is None:
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit() first.")


#: keys of a save's ``extra`` (``routine.json``) under which recipes record their settings:
#: ``recipe`` holds the recipe's name (the extra is the full form itself, as DII writes it) or
#: the full form (the embeddings, InfoMax, IMNN, :meth:`Recipe.save`); ``recipe_config``
#: holds the full form (the MI estimators)
SAVED_SETTINGS_KEYS = (RECIPE_KEY, "recipe_config")


def saved_recipe_name(extra: Any) -> str | None:
    """The name of the recipe whose settings a save's ``extra`` holds, in any recipe's layout
    (:data:`SAVED_SETTINGS_KEYS`); None for a routine saved without a recipe."""
    if not isinstance(extra, dict):
        return None
    for key in SAVED_SETTINGS_KEYS:
        value = extra.get(key)
        if isinstance(value, dict):
            value = value.get(RECIPE_KEY)
        if isinstance(value, str) and value:
            return value
    return None


def check_saved_recipe(cls: type, path: str | Path) -> type | None:
    """Before ``cls.load(path)`` reads a save: the recipe class that wrote ``path``, which
    must be ``cls`` (or, for a base class without a name such as :class:`Recipe`, one of its
    subclasses).  A save of another recipe, or of a bare ``Routine.save``, is a
    :class:`ValidationError` naming the loader to use, instead of a ``KeyError`` deep in
    ``cls``'s own reading of the layout.  None where ``path`` holds no readable
    ``routine.json`` (``Routine.load`` then says what is wrong with it)."""
    import json

    from .base import is_abstract
    from .routine import SPEC_FILE

    try:
        spec = json.loads((Path(path) / SPEC_FILE).read_text())
    except Exception:  # noqa: BLE001 - missing or damaged: Routine.load names the problem
        return None
    if not isinstance(spec, dict):
        return None
    name = saved_recipe_name(spec.get("extra"))
    label = cls.__name__
    if name is None:
        writes = "a recipe's save(path)" if is_abstract(cls) else \
            f"{label}(...).fit(...).save(path)"
        raise ValidationError(
            f"{path} holds a routine saved without a recipe's settings (Routine.save); load it "
            f"with Routine.load(path). {label}.load reads what {writes} writes.")
    saved = _registered_recipe(name)
    if name == getattr(cls, "name", None) or (
            saved is not None and is_abstract(cls) and issubclass(saved, cls)):
        return saved if saved is not None else cls
    wanted = "" if is_abstract(cls) else f", not by {label}"
    if saved is None:
        # the plugin and package that registered it, as routine.json's plugin_blocks records
        plugin = (spec.get("plugin_blocks") or {}).get(f"recipe {name!r}")
        package = plugin.split(" (")[1].rstrip(")") if isinstance(plugin, str) and \
            " (" in plugin else None
        install = f"install the plugin {plugin.split(' (')[0]!r} that provides it (pip " \
            f"install {package})" if package else "install the plugin that provides it"
        raise ValidationError(
            f"{path} holds a model saved by recipe {name!r}{wanted}, and no recipe {name!r} is "
            f"registered here: {install}, then load it with "
            "infoblocks.blocks.recipe.Recipe.load(path).")
    raise ValidationError(f"{path} holds a model saved by {saved.__name__} (recipe {name!r})"
                          f"{wanted}; load it with {saved.__name__}.load(path).")


def _registered_recipe(name: str) -> type | None:
    """The recipe class registered as ``name``, or None."""
    from infoblocks.plugins.registry import get_registry

    from .errors import InfoblocksError

    try:
        return get_registry().entry("recipe", name).block
    except InfoblocksError:
        return None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file with an error that names the file and line on a syntax error."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8); a config is TOML text.") \
            from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory; give the config file.") from None


__all__ = ["Recipe", "RECIPE_KEY", "EXPANDED_KEY", "UnsavedStateWarning", "UnregisteredBlockWarning",
           "check_saved_recipe",
           "read_toml", "saved_recipe_name", "transient_field"]
