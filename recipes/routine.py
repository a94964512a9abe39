"""A routine of your own, written as data: the ``routine`` recipe.

Every built-in recipe is an assembly of registered blocks that its shortcuts fill in. The
``routine`` recipe has no shortcuts and no default blocks: its sections *are* the routine —
``[globals.NAME]`` (input, relation, transforms), ``[models.NAME]``, ``[[phases]]`` (sampler,
loss, optimizer, validation ...) — so a composition that no recipe offers (a UMAP loss and an
MI bound in one ``compound``, a DII front end to a critic) is a TOML file, run by
``infoblocks run``, saved and loaded like any recipe, with no plugin recipe to write::

    recipe = "routine"
    arrays = ["data"]                     # what fit(X) / --data X.npy names the array
    [globals.graph]
    input = "data"
    relation = { name = "neighbor_pdist", n_neighbors = 15 }
    transforms = ["connectivity_rescale", "symmetrize"]
    [models.main]
    name = "mlp"
    out_dim = 2                           # in_dim: the first array's width, filled in
    [[phases]]
    name = "main"
    epochs = 50
    sampler = { name = "negative_edges", relation = "graph" }
    loss = "relation"

``fit(X)`` (or ``fit(data=..., labels=...)`` by name; every name of ``arrays`` must be
given, and only those) puts the arrays in the dataset, builds every
block through the registry (a model gets ``in_dim`` = the width of the first array and
``n_items`` = its rows where its table leaves them out) and trains; ``transform(X)`` applies
``output_model``.  ``fit()`` with no arrays (``infoblocks run`` without ``--data``; ``arrays
= []`` says so in the config) trains on no dataset when every sampler draws its own data
(:meth:`~infoblocks.blocks.samplers.Sampler.draws_own_data`, e.g. a simulation sampler
without ``with_source``); a model's ``in_dim`` is then the size of the first phase sampler's
``simulation_shape`` where its table leaves it out.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from attrs.validators import optional

from infoblocks.blocks.data import Dataset, as_tensor, intra_op_threads, resolve_device
from infoblocks.blocks.errors import ConfigError, InfoblocksError, ValidationError
from infoblocks.blocks.assembly import GLOBAL_KEYS, block_fields
from infoblocks.blocks.base import default_data
from infoblocks.blocks.recipe import Recipe, _plain
from infoblocks.blocks.routine import Routine
from infoblocks.blocks.validators import device as valid_device
from infoblocks.blocks.validators import non_negative_int, positive_int

#: the saved model's folder inside ``infoblocks run``'s ``--out``
MODEL_DIR = "model"


class UnreadArrayWarning(UserWarning):
    """An array given to a routine's ``fit`` that no block of the routine reads."""


def _array_names(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
        raise ValidationError(f"`arrays` must be a list of distinct names (the dataset keys "
                              f"of fit's arrays, in order; [] for samplers that draw their "
                              f"own data), got {value!r}.")


def _model_fields(spec: Any) -> Any:
    """A model's table with the defaults of the fields it leaves out (the data sizes a fit
    fills in — fields without a default — stay out); a name alone becomes a table."""

    table = {"name": spec} if isinstance(spec, str) else spec
    fields = block_fields("model", table.get("name")) if isinstance(table, dict) else None
    if fields is None:
        return spec  # an instance or an unknown name: as written (the build names it)
    defaults = {key: default_data(field) for key, field in fields.items()
                if key not in table and not key.startswith("_")}
    defaults = {key: value for key, value in defaults.items() if value is not attrs.NOTHING}
    ordered = {key: table[key] if key in table else defaults[key] for key in fields
               if key in table or key in defaults}
    return _plain({"name": table["name"], **ordered, **table})


@attrs.define(kw_only=True)
class RoutineRecipe(Recipe):
    """A routine written block by block in its sections (module docstring): no shortcuts,
    no defaults — what the sections name is what trains."""

    name: ClassVar[str] = "routine"
    summary: ClassVar[str] = ("a routine of your own: globals, models and phases named block "
                              "by block in the config")
    #: read by ``transform``, not by the routine a warm fit continues
    warm_fit_reads: ClassVar[frozenset[str]] = frozenset({"output_model"})

    #: the dataset keys of the arrays ``fit(*arrays)`` / ``--data`` give, in order
    arrays: list[str] = attrs.field(factory=lambda: ["data"], validator=_array_names)
    #: the model :meth:`transform` applies (``infoblocks run`` writes it on the first array
    #: into ``outputs.npy``); "" for none (a model that does not map one array: an MI
    #: critic's ``forward(x, y)``)
    output_model: str = "main"
    seed: int = attrs.field(default=0, validator=non_negative_int)
    device: str = attrs.field(default="cpu", validator=valid_device)
    #: torch threads during ``fit`` (restored after); None leaves torch's setting
    threads: int | None = attrs.field(default=1, validator=optional(positive_int))
    verbose: bool = False

    history_: list[dict[str, Any]] | None = attrs.field(init=False, default=None, repr=False)
    fit_seconds_: float | None = attrs.field(init=False, default=None, repr=False)

    def config_notes(self, full: bool) -> list[str]:
        """Comment lines for ``infoblocks config routine``: where the sections come from."""
        if self.models and self.phases:
            return []
        return ["The sections are the routine: write [globals.NAME] (input, relation, "
                "transforms), [models.NAME] and [[phases]] (sampler, loss, optimizer ...).",
                "`infoblocks config parametric_umap --full` (or any recipe's) prints complete "
                "sections to start from; docs/plugins.md, \"A routine of your own\"."]

    def full_sections(self) -> dict[str, Any]:
        """The sections with each block written with all its fields — what it runs with,
        its own defaults included, as ``routine.json`` keeps them — so a routine written by
        hand can be diffed against a recipe's ``--full`` (author22-1: `negative_edges` ran
        `epoch_draws = "fixed"`, the UMAP recipe sets "edges", and nothing printed it).  A
        model's data sizes (``in_dim``, ``n_items``) stay out: the fit fills them in."""
        spec = self.routine_spec()
        out = dict(spec)
        try:
            return self._described(spec, out)
        except InfoblocksError:  # a block that cannot be built: the sections as written
            return spec  # (the fit names the error; a saved routine still loads its weights)

    def _described(self, spec: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        if spec.get("globals"):
            out["globals"] = {k: {key: g.describe().get(key) for key in GLOBAL_KEYS}
                              for k, g in self.build_globals(spec).items()}
        if spec.get("models"):
            out["models"] = {k: _model_fields(v) for k, v in spec["models"].items()}
        if spec.get("phases"):
            out["phases"] = [p.describe() for p in self.build_phases(spec)]
        return out

    # ------------------------------------------------------------------ the assembly

    def _dataset(self, arrays: tuple[Any, ...], named: dict[str, Any]) -> dict[str, Any]:
        if len(arrays) > len(self.arrays):
            raise ValidationError(
                f"routine.fit got {len(arrays)} arrays but `arrays` names {len(self.arrays)} "
                f"({self.arrays}); name the others in `arrays`, or pass them by keyword.")
        given = dict(zip(self.arrays, arrays))
        both = sorted(set(given) & set(named))
        if both:
            raise ValidationError(f"routine.fit got {both} both by position and by name.")
        unknown = sorted(set(named) - set(self.arrays))
        if unknown:
            raise ValidationError(
                f"routine.fit got {unknown} by name, which `arrays` = {self.arrays} does not "
                "name; add them to `arrays` (the dataset keys the blocks read) or fix the name.")
        data = {**given, **named}
        missing = [name for name in self.arrays if name not in data]
        if missing:
            raise ValidationError(
                f"routine.fit: `arrays` = {self.arrays} but {missing} "
                f"{'was' if len(missing) == 1 else 'were'} not given; pass them in that order "
                f"(fit({', '.join(self.arrays)})) or by name.")
        tensors = {k: as_tensor(v, k, ndim=None) for k, v in data.items()}
        rows = {k: int(t.shape[0]) for k, t in tensors.items() if t.ndim}
        if len(set(rows.values())) > 1:
            raise ValidationError(f"routine.fit: the arrays must have one row per item, got "
                                  f"{rows} rows.")
        return tensors

    def _spec(self) -> dict[str, Any]:
        spec = self.routine_spec()
        if not spec.get("models") or not spec.get("phases"):
            raise ConfigError(
                "routine: the sections are the routine — write at least one model "
                "([models.main] name = \"mlp\" ...) and one phase ([[phases]] name, sampler, "
                "loss); `infoblocks config parametric_umap --full` shows a complete example.")
        return spec

    @staticmethod
    def _data_readers(phases: list[Any]) -> list[str]:
        """The samplers of ``phases`` (validation ones too) that read the dataset, as
        ``phases.NAME.sampler 'items'``: all but those that draw their own data."""
        found = []
        for phase in phases:
            for where, sampler in (("sampler", phase.sampler), ("validation.sampler",
                                   getattr(phase.validation, "sampler", None))):
                if sampler is not None and not sampler.draws_own_data():
                    found.append(f"phases.{phase.name}.{where} {sampler.name!r}")
        return found

    def draws_own_simulations(self) -> bool:
        """Whether every sampler of the phases (validation ones too) draws its own data
        (:meth:`~infoblocks.blocks.samplers.Sampler.draws_own_data`): then ``fit()`` and
        ``infoblocks run`` (no ``--data``) train with no arrays."""
        try:
            return not self._data_readers(self.build_phases(self._spec()))
        except (ConfigError, ValidationError):
            return False  # the fit reports a bad config itself

    def build(self, *arrays: Any, **named: Any) -> Routine:
        """The :class:`Routine` of the sections, on the dataset of ``arrays`` (named by
        ``arrays``) and the ``named`` ones; with no arrays at all, on no dataset, when every
        sampler draws its own data."""
        spec = self._spec()
        if not arrays and not named:
            return self._build_without_data(spec)
        data = self._dataset(arrays, named)
        first = data.get(self.arrays[0], next(iter(data.values())))
        context = {"n_items": int(first.shape[0])}
        if first.ndim == 2:
            context["in_dim"] = int(first.shape[1])
        models = self._models(spec, context)
        global_relations, phases = self.build_globals(spec), self.build_phases(spec)
        self._warn_unread(data, global_relations, phases)
        return Routine(dataset=data, models=models, global_relations=global_relations,
                       phases=phases, device=self.device, seed=self.seed, verbose=self.verbose)

    def _warn_unread(self, data: dict[str, Any], global_relations: dict[str, Any],
                     phases: list[Any]) -> None:
        """An :class:`UnreadArrayWarning` for each given array that no global, loss or
        sampler reads (author22-2: labels given, the loss that reads them forgotten — an
        unsupervised fit, silently).  Only where every block says what it reads: a loss
        whose ``required_fields()`` is None, or a sampler that does not pass the array
        through by its name (it may read it itself), reads anything."""
        read = {g.input for g in global_relations.values()}
        state = SimpleNamespace(dataset=data)
        for phase in phases:
            for sampler, loss in ((phase.sampler, phase.loss), (
                    getattr(phase.validation, "sampler", None),
                    getattr(phase.validation, "loss", None))):
                if loss is None:
                    continue
                fields = loss.required_fields()
                try:
                    passed = None if sampler.draws_own_data() else sampler.batch_fields(state)
                except Exception:  # noqa: BLE001 - a plugin sampler that needs a real state
                    return
                if fields is None or (passed is not None and not set(data) <= set(passed)):
                    return
                read |= {*fields, *loss.required_globals(), *sampler.required_globals()}
        for name in [k for k in self.arrays if k in data and k not in read]:
            warnings.warn(UnreadArrayWarning(
                f"routine: the array {name!r} (`arrays` = {self.arrays}) is read by no loss, "
                "sampler or global: the routine trains without it. Name it where a block "
                f"reads it (a loss's `target = \"{name}\"`, a compound part, a global's "
                f"`input = \"{name}\"`), or leave it out of `arrays` and fit."), stacklevel=4)

    def _models(self, spec: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        models = {name: self.build_model(name, spec, **context) for name in spec["models"]}
        if self.output_model and self.output_model not in models:
            raise ConfigError(f"routine: `output_model` = {self.output_model!r} is not among "
                              f"the models {sorted(models)}.")
        return models

    def _build_without_data(self, spec: dict[str, Any]) -> Routine:
        """No arrays: every sampler must draw its own data; a model's ``in_dim`` is the size
        of one simulation (a sampler's ``simulation_shape``) where its table leaves it out."""
        phases = self.build_phases(spec)
        readers = self._data_readers(phases)
        if readers:
            raise ValidationError(
                f"routine.fit was given no arrays, but {', '.join(readers)} read"
                f"{'s' if len(readers) == 1 else ''} the dataset: pass the arrays "
                f"(`arrays` = {self.arrays}: fit({', '.join(self.arrays) or 'X'}), or --data "
                "FILE under `infoblocks run`). A routine trains without data only when every "
                "sampler draws its own (Sampler.draws_own_data(): a simulation sampler without "
                "with_source, docs/plugins.md).")
        shapes = [getattr(p.sampler, "simulation_shape", None) for p in phases]
        shape = next((tuple(s) for s in shapes if s is not None), None)
        context = {} if shape is None else {"in_dim": int(np.prod(shape))}
        if spec.get("globals"):
            raise ConfigError(
                f"routine: [globals] {sorted(spec['globals'])} are computed from the arrays, "
                "and fit was given none; pass the arrays, or leave the globals out.")
        return Routine(dataset=None, models=self._models(spec, context), phases=phases,
                       device=self.device, seed=self.seed, verbose=self.verbose)

    # ------------------------------------------------------------------ scikit-learn API

    def fit(self, *arrays: Any, checkpoint: str | Path | None = None,
            resume: bool | str | Path = False, warm_start: bool = False,
            **named: Any) -> RoutineRecipe:
        """Train the routine on ``arrays`` (named by ``arrays``) and the ``named`` arrays.
        ``checkpoint=DIR`` / ``resume=True`` as every recipe's ``fit``; ``warm_start=True``
        continues the fitted routine — every phase from its weights and optimizer state, for
        its epochs again, the history appended — on the data it was fitted on (a fresh fit
        when there is none)."""
        resolve_device(self.device)
        start = time.perf_counter()
        warm = bool(warm_start) and self.routine_ is not None
        with intra_op_threads(self.threads):
            routine = self._warm_routine(arrays, named) if warm \
                else self.build(*arrays, **named)
            self.train_routine(routine, checkpoint=checkpoint, resume=resume, warm_start=warm)
        self.routine_ = routine
        self.history_ = [dict(r) for r in routine.history.rows]
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _warm_routine(self, arrays: tuple[Any, ...], named: dict[str, Any]) -> Routine:
        """The fitted routine, to continue on the dataset it was fitted on: other arrays are
        a :class:`ValidationError` (they would be ignored); a loaded routine (no dataset)
        takes the arrays given."""
        routine, fitted = self.routine_, self.routine_.dataset
        if not arrays and not named:
            return routine
        given = self._dataset(arrays, named)
        if fitted is None:
            routine.dataset = Dataset(**given)
            return routine
        same = all(
            k in fitted and tuple(fitted[k].shape) == tuple(v.shape)
            and torch.equal(torch.as_tensor(fitted[k]).cpu(), v.to(fitted[k].dtype).cpu())
            for k, v in given.items())
        if not same:
            raise ValidationError(
                "routine.fit(warm_start=True) continues the fitted routine on the arrays it was "
                "fitted on, and these differ; pass the same arrays, or fit with "
                "warm_start=False for a new fit on them.")
        return routine

    def transform(self, X: Any, batch_size: int = 4096) -> np.ndarray:
        """``output_model`` applied to ``X``."""
        self._check_fitted()
        if not self.output_model:
            raise ConfigError("routine: `output_model` = \"\" names no model to apply; set it "
                              f"to one of the models {sorted(self.routine_.models)}.")
        if hasattr(X, "shape") and self.output_model in self.routine_.models:
            self.routine_.check_width(X, self.output_model, "X")  # (a list: apply checks it)
        with intra_op_threads(self.threads), torch.no_grad():
            return self.routine_.apply(X, model=self.output_model, batch_size=batch_size,
                                       name="X").numpy()

    def fit_transform(self, X: Any, y: Any = None, **named: Any) -> np.ndarray:
        """``fit(X, y, **named).transform(X)``: ``y``, when given, is the second array of
        ``arrays`` as in :meth:`fit` (a scikit-learn Pipeline passes it so)."""
        return self.fit(X, *([] if y is None else [y]), **named).transform(X)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> RoutineRecipe:
        recipe = super().load(path, device=device)
        recipe.history_ = [dict(r) for r in recipe.routine_.history.rows]
        return recipe

    # ------------------------------------------------------------------ command line

    @property
    def run_inputs(self) -> tuple[str, ...]:
        """The arrays of `infoblocks run` in order: ``arrays`` (an .npz named after them is
        reordered)."""
        return tuple(self.arrays)

    def run(self, data: list[np.ndarray], out_dir: Path, **fit_options: Any) -> dict[str, Any]:
        """``--data`` arrays in the order of ``arrays``; saves into ``out_dir/model`` and
        ``outputs.npy`` (``output_model`` on the first array; none with ``output_model``
        = "")."""
        self.fit(*data, **fit_options)
        out_dir = Path(out_dir)
        self.save(out_dir / MODEL_DIR)
        outputs = None
        if self.output_model and data:  # (samplers that draw their own: nothing to map)
            try:
                values = self.transform(data[0])
            except Exception as exc:  # noqa: BLE001 - named below, the model saved
                module = type(self.routine_.models[self.output_model]).__name__
                raise ConfigError(
                    f"routine: the trained routine is saved in {out_dir / MODEL_DIR}, but "
                    f"`output_model` = {self.output_model!r} ({module}) could not be applied "
                    f"to the first --data array {self.arrays[0]!r} for outputs.npy: "
                    f"{type(exc).__name__}: {exc}. A model that does not map one array (an "
                    "MI critic's forward(x, y)): set `output_model = \"\"` to write no "
                    "outputs.") from exc
            outputs = out_dir / "outputs.npy"
            np.save(outputs, values)
        last = {k: v for k, v in (self.history_[-1] if self.history_ else {}).items()
                if isinstance(v, (int, float, str))}
        return {"recipe": self.name, "model": str(out_dir / MODEL_DIR),
                "outputs": None if outputs is None else str(outputs),
                "epochs_run": len(self.history_), "last": last, "seconds": self.fit_seconds_}


__all__ = ["RoutineRecipe", "UnreadArrayWarning", "MODEL_DIR"]
