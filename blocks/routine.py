"""Routine: dataset + models + global relations + phases; train / apply / save / load.

The routine is the one engine behind every recipe.  Global relations are computed once from
the data and cached; phases run in order on the same models; one ``seed`` drives the model
initialisation, every sampler and any dropout, without touching the user's global RNG state.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from .base import BUILTIN, Block, _provider, block_field, block_origin, naming_blocks
from .callbacks import Callback, History, ProgressBar
from .data import Dataset, as_tensor, resolve_device, rows_for
from .errors import ConfigError, InfoblocksError, NotFittedError, PluginError, ValidationError
from .models import Model
from .neighbors import distances_by
from .phases import TrainingPhase
from .relations import RelationData
from .state import TrainState

#: format version of saved routines, bumped when the layout of routine.json changes
SAVE_FORMAT = 1
WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "routine.json"


@attrs.define
class GlobalRelation:
    """A value computed once before training: ``transforms(relation.compute(input))``.

    ``input`` names a dataset array or an earlier global; with ``relation=None`` the input
    itself is passed through the transforms (e.g. a graph -> its spectral embedding).
    """

    relation: Any = block_field("relation", default=None)
    transforms: list[Any] = block_field("transform", many=True, factory=list)
    input: str = "data"

    def compute(self, state: TrainState, name: str = "") -> Any:
        """The value; ``name`` (the global's) is what an error inside a block names.

        An input on disk (:class:`~infoblocks.blocks.data.LazyRows`) reaches the relation (or
        first transform) as it is only if the block declares ``lazy_rows``; otherwise it is
        read whole into a tensor first (:func:`~infoblocks.blocks.data.rows_for`)."""
        value = state.lookup(self.input, lazy=True)
        where = f"globals.{name or self.input}"
        # distances_by: a transform's error that blames the distances names a plugin's metric
        with naming_blocks(where), distances_by(self.relation, where):
            if self.relation is not None:
                self._check_rows(value, where)
                value = self.relation.compute(rows_for(self.relation, value))
                _check_finite(self.relation, value, where)
            for k, transform in enumerate(self.transforms):
                _check_form(transform, value, f"{where}.transforms[{k}]",
                            self.input if self.relation is None and k == 0 else None)
                value = transform(rows_for(transform, value))
                _check_finite(transform, value, where)
        return value

    def _check_rows(self, value: Any, where: str) -> None:
        """A built-in relation compares rows ``(n, d)``: a 1-D input (labels as sklearn and
        ``--data y.npy`` give them) is a :class:`ValidationError` naming the global, its
        input and the reshape (author22-3: torch's "cdist only supports at least 2D
        tensors").  A plugin's relation may take other shapes: not checked."""
        if getattr(value, "ndim", 2) != 1 or block_origin(self.relation) != BUILTIN:
            return
        raise ValidationError(
            f"{where}: relation {self.relation.name!r} compares rows (n, d), but its input "
            f"`{self.input}` has shape {tuple(value.shape)}. Give `{self.input}` one column "
            f"per feature: `{self.input}.reshape(-1, 1)` for labels or one feature (an .npy "
            "of shape (n, 1) under `infoblocks run`).")

    def describe(self) -> dict[str, Any]:
        out = {"input": self.input, "transforms": [t.describe() for t in self.transforms]}
        if self.relation is not None:
            out["relation"] = self.relation.describe()
        return out


#: a relation of each form, named in the fix of a form a transform does not take
_RELATION_OF_FORM = {"SparseRelations": "a k-NN relation such as `neighbor_pdist`",
                     "DenseRelations": "a dense one such as `pdist`"}


def _check_form(transform: Any, value: Any, where: str, source: str | None = None) -> None:
    """A relation of a form ``transform`` does not take (a dense ``pdist`` before a
    sparse-only transform): a :class:`ValidationError` naming the config path, the block and
    the fix in config terms (author20 F7: the transform's own message named no path and
    offered only Python's ``.to_sparse()``).  ``source``: the global whose value reached the
    transform unchanged (a global without a relation), where the fix belongs."""
    accepts = getattr(transform, "accepts", None)
    if not accepts or not isinstance(value, RelationData) or isinstance(value, accepts):
        return
    forms = [t.__name__ for t in accepts]
    examples = [_RELATION_OF_FORM[f] for f in forms if f in _RELATION_OF_FORM]
    raise ValidationError(
        f"{where}: transform {transform.name!r}{_provider(transform)} takes "
        f"{' or '.join(forms)}, but what reaches it is {type(value).__name__}"
        + (f" (the value of global `{source}`)" if source else "") + ". Give "
        + (f"`globals.{source}`" if source else "the global")
        + f" a relation that yields {' or '.join(forms)}"
        + (f" ({'; '.join(examples)})" if examples else "")
        + ", or put a transform that converts it before this one.")


def _check_finite(block: Any, value: Any, where: str) -> None:
    """A global's value made by a block that is not infoblocks' own must be finite:
    :class:`PluginError` naming the global and the block.  A plugin graph transform's NaN
    weights were reported as the built-in `spectral_init`'s lobpcg failure, the plugin not
    named (author19 F4).  Once per global: the built-ins' outputs are not re-checked."""
    if block_origin(block) == BUILTIN:
        return
    values = value.values if isinstance(value, RelationData) else value
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        return
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    raise PluginError(
        f"{where}: {block.kind} {block.name!r}{_provider(block)} gave "
        f"{int((~finite).sum())} non-finite value(s) (NaN or inf) among {values.numel()}: the "
        "blocks after it need finite values. Fix the block's output (a division by 0, the "
        "log of 0, a NaN in its input?).")


def move_to(value: Any, device: torch.device) -> Any:
    """Tensors, and the tensors inside RelationData, moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, RelationData) and attrs.has(type(value)):
        changes = {f.name: getattr(value, f.name).to(device) for f in attrs.fields(type(value))
                   if isinstance(getattr(value, f.name), torch.Tensor)}
        return attrs.evolve(value, **changes)
    return value


def _library_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    try:
        versions["infoblocks"] = metadata.version("infoblocks")
    except metadata.PackageNotFoundError:  # running from a source tree
        versions["infoblocks"] = "unknown"
    try:  # the plugins that provide blocks; lazily, blocks do not need the plugin layer
        from infoblocks.plugins.manager import get_plugin_manager

        versions.update({f"plugin:{k}": v for k, v in get_plugin_manager().plugin_versions().items()})
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return versions


def _strings(value: Any) -> Iterator[str]:
    """Every string value in a JSON-like tree (block names, recipe shortcuts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _plugin_blocks(named: set[str]) -> dict[str, str]:
    """``"kind 'name'" -> "plugin (dist==version)"`` for the third-party blocks among the
    ``named`` strings (blocks of a package other than infoblocks), so that
    :meth:`Routine.load` can say which plugin to install when one is missing."""
    try:
        from infoblocks.plugins.manager import get_plugin_manager

        manager = get_plugin_manager()
    except Exception:  # noqa: BLE001 - informative only, as the versions are
        return {}
    found = {}
    for entry in manager.registry.entries():
        package = manager.packages.get(entry.plugin)
        package = None if package is None or package[0] == "?" else package  # from Python
        if entry.name in named and (package is None or package[0] != "infoblocks"):
            found[f"{entry.kind} {entry.name!r}"] = entry.plugin + (
                f" ({package[0]}=={package[1]})" if package else "")
    return found


def _require_plugin_blocks(spec: dict[str, Any], spec_file: Path) -> None:
    """A :class:`ValidationError` naming the blocks, plugin and version to install when a
    saved model names blocks of a plugin that this process does not have."""
    from infoblocks.plugins.registry import get_registry

    registry = get_registry()
    saved = spec.get("plugin_blocks") or {}
    now = _plugin_blocks({b.partition(" ")[2].strip("'") for b in saved})
    missing: dict[str, list[str]] = {}
    for block, plugin in saved.items():
        kind, _, name = block.partition(" ")
        if (kind, name.strip("'")) not in registry:
            missing.setdefault(plugin, []).append(block)
        elif now.get(block, plugin) != plugin:
            warnings.warn(f"{spec_file.parent} was saved with {block} of {plugin}; this Python "
                          f"has {now[block]}: a changed default or method of the plugin may "
                          "change what the loaded model computes.", stacklevel=3)
    if missing:
        listed = "; ".join(f"{', '.join(blocks)} from plugin {plugin}"
                           for plugin, blocks in missing.items())
        packages = [p.split(" (")[1].rstrip(")") for p in missing if " (" in p]
        install = f"pip install {' '.join(packages)}" if packages else "register it"
        raise ValidationError(
            f"{spec_file.parent} was saved with plugin blocks this Python does not have: "
            f"{listed}. Install the plugin ({install}) and load again."
            + registry.failed_hint())


class Routine:
    """Train models with phases on a dataset.

    Parameters
    ----------
    dataset : Dataset, mapping of arrays, or None (e.g. IMNN with a simulator).
    models : name -> Model block (rebuilt on load) or ``torch.nn.Module``.  ``"main"`` is
        the model :meth:`apply` uses by default.
    global_relations : name -> :class:`GlobalRelation`, computed once and cached.
    phases : :class:`TrainingPhase` list, run in order by :meth:`train`.
    constants : name -> tensor, extra global values (index splits, precomputed positions).
    device : "cpu", "cuda" or "auto".
    seed : drives model initialisation, samplers and dropout.
    """

    def __init__(
        self,
        dataset: Dataset | Mapping[str, Any] | None = None,
        models: Mapping[str, Model | torch.nn.Module] | None = None,
        global_relations: Mapping[str, GlobalRelation] | None = None,
        phases: Sequence[TrainingPhase] = (),
        constants: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        verbose: bool = False,
        callbacks: Sequence[Callback] = (),
        distributed: bool | str = "auto",
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValidationError(f"`seed` must be a non-negative integer, got {seed!r}.")
        if not models:
            raise ValidationError("A Routine needs at least one model, e.g. models={'main': MLP(...)}.")
        self.device = resolve_device(device)
        from .distributed import from_environment

        #: rank / world size under torchrun ("auto": torchrun's environment decides)
        self.dist = from_environment(distributed, self.device)
        self.seed = int(seed)
        self.verbose = verbose
        self.dataset = dataset if isinstance(dataset, Dataset) or dataset is None \
            else Dataset(**dataset)
        self.global_relations = dict(global_relations or {})
        self.phases = list(phases)
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValidationError(f"Phase names must be unique, got {names}.")
        self.constants = {k: v for k, v in (constants or {}).items()}
        self.callbacks = list(callbacks)
        self.model_specs: dict[str, dict[str, Any] | None] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            built = {}
            for name, model in models.items():
                if isinstance(model, Model):
                    built[name] = model.build()
                    self.model_specs[name] = model.describe()
                elif isinstance(model, torch.nn.Module):
                    built[name] = model
                    self.model_specs[name] = None
                else:
                    raise ValidationError(
                        f"Model {name!r} must be a Model block (e.g. MLP) or a torch.nn.Module, "
                        f"got {type(model).__name__}."
                    )
        self.models = torch.nn.ModuleDict(built).to(self.device)
        self.history = History()
        self._runs = 0  # completed train() calls (warm starts seed dropout afresh)
        self._globals: dict[str, Any] | None = None
        self.state: TrainState | None = None
        #: why :meth:`load` could not rebuild the phases (None: it could)
        self.unrestored: str | None = None

    # ------------------------------------------------------------------ state

    def _new_state(self) -> TrainState:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed)
        dataset = self.dataset.to(self.device) if self.dataset is not None else None
        blocks = {name: spec.get("name") if isinstance(spec, dict) else None
                  for name, spec in self.model_specs.items()}
        made_by = {name: [b for b in (g.relation, *g.transforms) if b is not None]
                   for name, g in self.global_relations.items()}
        return TrainState(models=self.models, dataset=dataset, globals={}, device=self.device,
                          generator=generator, rng=np.random.default_rng(self.seed),
                          dist=self.dist, model_blocks=blocks, global_blocks=made_by)

    def compute_global_relations(self) -> dict[str, Any]:
        """Constants and global relations, computed once (cached) in declaration order."""
        if self._globals is None:
            state = self.state or self._new_state()
            state.globals.update({k: move_to(torch.as_tensor(v) if isinstance(v, np.ndarray)
                                             else v, self.device)
                                  for k, v in self.constants.items()})
            if self.dist.active:  # computed once, on rank 0, and broadcast
                computed = {}
                if self.dist.is_main:
                    for name, relation in self.global_relations.items():
                        state.globals[name] = relation.compute(state, name)
                        computed[name] = move_to(state.globals[name], torch.device("cpu"))
                computed = self.dist.broadcast(computed)
                state.globals.update({k: move_to(v, self.device) for k, v in computed.items()})
            else:
                for name, relation in self.global_relations.items():
                    state.globals[name] = move_to(relation.compute(state, name), self.device)
            self.state = state
            self._globals = state.globals
        return self._globals

    # ------------------------------------------------------------------ training

    def train(self, phases: Sequence[str] | None = None, checkpoint: str | Path | None = None,
              checkpoint_every: int = 1, resume: bool = False, warm_start: bool = False
              ) -> Routine:
        """Run the phases (all, or those named) in order; returns ``self``.

        ``warm_start=True`` continues an earlier ``train`` of this routine (scikit-learn's
        convention): each phase starts from the current weights and its optimizer and loss
        state at the end of its previous run, for its ``epochs`` more epochs; the samplers
        draw on from the same generator and the history is appended (epochs numbered on).
        Two warm runs of E epochs at a constant learning rate equal one run of 2E epochs.

        ``checkpoint``: a directory where the whole training state is written (atomically)
        every ``checkpoint_every`` epochs and at the end of each phase
        (:mod:`infoblocks.blocks.resume`).  With ``resume=True`` training continues from the
        checkpoint there: phases already done are skipped, the interrupted one goes on after
        its last saved epoch — bit-identical to an uninterrupted run on the CPU.  Where the
        directory holds no checkpoint (or does not exist), training starts from scratch with a
        ``NothingToResumeWarning`` naming it.
        """
        if not self.phases and self.unrestored:
            raise ValidationError(f"This routine was loaded without its phases ({self.unrestored});"
                                  " pass phases=[...] to a new Routine to train it further.")
        if not isinstance(warm_start, bool):
            raise ValidationError(f"`warm_start` must be True or False, got {warm_start!r}.")
        if warm_start and resume:
            raise ValidationError("`warm_start` continues this process's run and `resume` a run "
                                  "from its checkpoint; pass one of them.")
        if resume and checkpoint is None:
            raise ValidationError("`resume=True` needs the `checkpoint` directory to resume from.")
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
                or checkpoint_every < 1:
            raise ValidationError(f"`checkpoint_every` must be a positive integer, got "
                                  f"{checkpoint_every!r}.")
        if checkpoint is not None:
            if not isinstance(checkpoint, (str, Path)):
                raise ValidationError(f"`checkpoint` must be a directory path (str or Path), "
                                      f"got {checkpoint!r}; `resume=True` is the flag that "
                                      "continues from it.")
            if Path(checkpoint).exists() and not Path(checkpoint).is_dir():
                raise ValidationError(f"`checkpoint` = {str(checkpoint)!r} is a file; give a "
                                      "directory path (the training state is written into it).")
        self.compute_global_relations()
        assert self.state is not None
        chosen = self.phases if phases is None else [self._phase(n) for n in phases]
        self.check(chosen)
        self._warn_batch_statistics()
        saved = None
        if resume:
            from .resume import checkpoint_to_resume

            saved = checkpoint_to_resume(checkpoint, announce=self.dist.is_main)
        fingerprint = None if checkpoint is None else self._fingerprint()
        if saved is not None and saved.get("routine", fingerprint) != fingerprint:
            raise ValidationError(
                f"The checkpoint in {checkpoint} was written by a routine configured otherwise "
                f"({_differences(json.loads(saved['routine']), json.loads(fingerprint))}); "
                "resuming would mix the two. Resume with the configuration it was written "
                "with, or delete the checkpoint to start afresh.")
        first, resumed_phase = 0, None
        if saved is not None:
            names = [p.name for p in chosen]
            if saved.get("phase") not in names:
                raise ValidationError(f"The checkpoint in {checkpoint} is of phase "
                                      f"{saved.get('phase')!r}; this routine runs {names}.")
            first = names.index(saved["phase"])
            self.history = History(json.loads(saved["history"]))
            if saved["complete"]:
                from .resume import load_models, restore_rng_states

                load_models(self.models, saved["models"])
                restore_rng_states(self.state, saved)
                first += 1
            else:
                resumed_phase = saved
        callbacks = [self.history, ProgressBar(self.verbose), *self.callbacks]
        for cb in callbacks:
            cb.on_train_start(self.state)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for k, phase in enumerate(chosen):
                if k < first:
                    continue
                # dropout etc.: reproducible per phase (and per warm-started run)
                torch.manual_seed(self.seed + 1 + k + (7919 * self._runs if warm_start else 0))
                writer = None if checkpoint is None else self._checkpoint_writer(
                    Path(checkpoint), checkpoint_every, fingerprint)
                with naming_blocks(f"phase {phase.name!r}"):  # an error in a block names it
                    phase.run(self.state, callbacks, checkpoint=writer, warm_start=warm_start,
                              resume=resumed_phase if k == first else None)
                if checkpoint is not None:  # the phase's end state (best weights restored)
                    self._write_phase_end(Path(checkpoint), phase, fingerprint)
        for cb in callbacks:
            cb.on_train_end(self.state)
        self._runs += 1
        self.models.eval()
        return self

    def _warn_batch_statistics(self) -> None:
        """Under torchrun, a model with batch norm normalises by its rank's rows alone (and
        each rank keeps running statistics of its own; rank 0's are saved): the fit is not
        the one-process fit, and no loss check can see it (UMAP with ``mlp``'s
        ``batch_norm = true``: an embedding 110 % away; InfoMax's held-out bound 1.277 against
        1.292).  torch's SyncBatchNorm needs a GPU."""
        if not self.dist.active:
            return
        for name, module in self.models.items():
            norms = sorted({type(m).__name__ for m in module.modules()
                            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})
            if norms:
                warnings.warn(
                    f"models.{name} has batch normalisation ({', '.join(norms)}): under "
                    f"torchrun each of the {self.dist.world_size} ranks normalises by its own "
                    "rows, so the fit differs from the one-process fit. Use LayerNorm or "
                    "GroupNorm (or no normalisation; the `mlp` block's batch_norm = false), or "
                    "train in one process.", UserWarning, stacklevel=3)

    def _fingerprint(self) -> str:
        """The routine's configuration as a checkpoint records it (seed, models, phases, the
        global relations; live objects by type, arrays by shape) and its data (each array's
        shape and a digest of a few rows), so that a resume with another one is refused."""
        return json.dumps({"seed": self.seed, "models": self.model_specs,
                           "phases": [_describe_saved(p) for p in self.phases],
                           "globals": {k: _describe_saved(g)
                                       for k, g in self.global_relations.items()},
                           "data": _data_fingerprint(self.dataset)},
                          default=_fingerprint_default, sort_keys=True)

    def _checkpoint_writer(self, directory: Path, every: int, fingerprint: str | None) -> Any:
        from .resume import write_checkpoint

        def write(payload: dict[str, Any], final: bool) -> None:
            if self.dist.is_main and not final and (payload["epoch"] + 1) % every == 0:
                write_checkpoint(directory, {**payload, "complete": False,
                                             "routine": fingerprint,
                                             "history": json.dumps(self.history.rows,
                                                                   default=_json_default)})
        return write

    def _write_phase_end(self, directory: Path, phase: TrainingPhase,
                         fingerprint: str | None) -> None:
        from .resume import rng_states, write_checkpoint

        if not self.dist.is_main:
            return
        write_checkpoint(directory, {
            "phase": phase.name, "complete": True, "models": self.models.state_dict(),
            "history": json.dumps(self.history.rows, default=_json_default),
            "routine": fingerprint, **rng_states(self.state)})

    def check(self, phases: Sequence[TrainingPhase] | None = None) -> None:
        """Check every phase's declared contracts (sampler ↔ loss ↔ globals ↔ models) before
        the first step; :class:`~infoblocks.blocks.errors.ContractError` names both blocks."""
        from .contracts import check_phase

        self.compute_global_relations()
        for phase in self.phases if phases is None else phases:
            check_phase(phase, self.state)
            phase.check_trained_models_are_read(self.models)

    def _phase(self, name: str) -> TrainingPhase:
        for p in self.phases:
            if p.name == name:
                return p
        raise ValidationError(f"No phase named {name!r}; phases: {[p.name for p in self.phases]}.")

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def apply(self, x: Any, model: str = "main", batch_size: int = 4096, name: str = "x",
              method: str = "forward") -> torch.Tensor:
        """``model`` applied to ``x`` in batches, on the routine's device; returns a CPU tensor.
        ``name``: the argument's name in the messages (a recipe's ``X``); ``method``: the
        model's method to call on each batch (a head of a shared trunk, e.g. ``"classify"``;
        default its ``forward``)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValidationError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if model not in self.models:
            raise ValidationError(f"No model named {model!r}; models: {sorted(self.models.keys())}.")
        x = as_tensor(x, name, ndim=None)
        if x.ndim == 0:
            raise ValidationError(f"`{name}` must have a leading item axis, got a scalar.")
        self.check_width(x, model, name)
        module = self.models[model]
        call = module if method == "forward" else getattr(module, method, None)
        if method.startswith("_") or not callable(call):
            raise ValidationError(
                f"Model {model!r} ({type(module).__name__}) has no method {method!r} to apply; "
                "name a public method of the model that maps a batch of rows.")
        was_training = module.training
        module.eval()
        outputs = [call(x[i:i + batch_size].to(self.device)).cpu()
                   for i in range(0, len(x), batch_size)]
        module.train(was_training)
        return torch.cat(outputs)

    def check_width(self, x: Any, model: str = "main", name: str = "x") -> None:
        """A 2-D ``x`` has the ``in_dim`` columns the block of ``model`` was built for (its
        description's ``in_dim``, filled from the training data; not checked for a model
        without one): a clear error instead of torch's matrix-shape one."""
        spec = self.model_specs.get(model)
        in_dim = spec.get("in_dim") if isinstance(spec, dict) else None
        shape = tuple(getattr(x, "shape", ()))
        if isinstance(in_dim, int) and not isinstance(in_dim, bool) and len(shape) == 1:
            # torch would read a 1-D x as one sample (or fail): not one row per item
            raise ValidationError(
                f"`{name}` is 1-D (shape {shape}) but model {model!r} maps rows of {in_dim} "
                f"features: for one sample pass `{name}.reshape(1, -1)`, for one feature per "
                f"item `{name}.reshape(-1, 1)`.")
        if isinstance(in_dim, int) and not isinstance(in_dim, bool) and len(shape) == 2 \
                and shape[1] != in_dim:
            raise ValidationError(
                f"`{name}` has {shape[1]} features (columns) but model {model!r} was built for "
                f"{in_dim} (the width of the data it was trained on); pass the same columns, "
                "in the same order.")

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``weights.pt`` (state dicts) and ``routine.json`` (model specs, history,
        library versions, ``extra`` such as the recipe dict) into directory ``path``.

        Atomic: both files are written into a temporary directory beside ``path`` that then
        replaces it, so an interrupted save never leaves a half-written model that loads."""
        path = Path(path)
        if not self.dist.is_main:  # under torchrun, rank 0 writes
            return path
        if path.exists() and not path.is_dir():
            raise ValidationError(f"Cannot save into {str(path)!r}: it is a file; give a "
                                  "directory path.")
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = {
            "format": SAVE_FORMAT,
            "seed": self.seed,
            "models": self.model_specs,
            "globals": {k: _describe_saved(g) for k, g in self.global_relations.items()},
            "phases": [_describe_saved(p) for p in self.phases],
            "history": self.history.rows,
            "versions": _library_versions(),
            "extra": dict(extra or {}),
        }
        text = json.dumps(spec, indent=2, default=_json_default)
        plugin_blocks = _plugin_blocks(set(_strings(json.loads(text))))
        if plugin_blocks:
            text = json.dumps({**json.loads(text), "plugin_blocks": plugin_blocks}, indent=2)
        weights = {name: {k: v.detach().cpu() for k, v in m.state_dict().items()}
                   for name, m in self.models.items()}
        _write_atomically(path, lambda tmp: (torch.save(weights, tmp / WEIGHTS_FILE),
                                             (tmp / SPEC_FILE).write_text(text)))
        return path

    @classmethod
    def load(cls, path: str | Path, models: Mapping[str, torch.nn.Module] | None = None,
             device: str | torch.device = "cpu", dataset: Dataset | Mapping[str, Any] | None = None,
             ) -> Routine:
        """Rebuild a routine saved with :meth:`save`: models, history, and the global
        relations and phases as they were specified, so ``apply`` works at once and, given
        the ``dataset`` again, ``train()`` continues from the saved weights.

        Model blocks are rebuilt through the registry; models that were plain torch modules
        must be passed again in ``models`` (their weights are then loaded into them).
        """
        path = Path(path)
        spec_file, weights_file = path / SPEC_FILE, path / WEIGHTS_FILE
        if not spec_file.exists() or not weights_file.exists():
            raise ValidationError(
                f"{path} is not a saved routine: expected {SPEC_FILE} and {WEIGHTS_FILE} in it."
            )
        spec = _read_spec(spec_file)
        if spec.get("format") != SAVE_FORMAT:
            raise ValidationError(f"{spec_file} has format {spec.get('format')!r}; this version "
                                  f"of infoblocks reads format {SAVE_FORMAT}.")
        _require_plugin_blocks(spec, spec_file)
        given = dict(models or {})
        rebuilt: dict[str, Model | torch.nn.Module] = {}
        for name, model_spec in spec["models"].items():
            if name in given:
                rebuilt[name] = given[name]
            elif model_spec is None:
                raise ValidationError(
                    f"Model {name!r} was a custom torch module; pass it again: "
                    f"Routine.load(path, models={{{name!r}: module}})."
                )
            else:
                from infoblocks.plugins.registry import get_registry

                rebuilt[name] = get_registry().build("model", model_spec)
        from .assembly import build_global, build_phase

        try:  # blocks holding live objects (a simulator, a user function) are not data
            not_data = [f"{where}: {entry['not_data']}" for where, entry in
                        [*((f"globals.{k}", g) for k, g in (spec.get("globals") or {}).items()),
                         *((f"phases.{p.get('name')}", p) for p in spec.get("phases") or [])]
                        if isinstance(entry, dict) and "not_data" in entry]
            if not_data:  # (recorded by save: _describe_saved)
                raise ConfigError("; ".join(not_data))
            relations = {k: build_global(g, f"{spec_file}: globals.{k}")
                         for k, g in (spec.get("globals") or {}).items()}
            phases = [build_phase(p, f"{spec_file}: phases.{p.get('name')}")
                      for p in spec.get("phases") or []]
            unrestored = None
        except (InfoblocksError, TypeError, ValueError) as exc:
            relations, phases, unrestored = {}, [], str(exc)
            warnings.warn(  # (author22-11: a notebook-defined loss dropped them silently)
                f"Routine.load({str(path)!r}): the phases and globals could not be rebuilt "
                f"({unrestored}); apply / transform work, train() does not. A block that is "
                "not data (a class defined in a notebook, a live object) must be registered "
                "with a plugin's hook (docs/plugins.md), or passed again in Python.",
                stacklevel=2)
        routine = cls(dataset=dataset, models=rebuilt, device=device, seed=spec.get("seed", 0),
                      global_relations=relations, phases=phases)
        routine.unrestored = unrestored
        weights = _read_weights(weights_file, routine.device)
        for name, module in routine.models.items():
            _load_state(module, weights, name, weights_file, given=name in given)
        routine.history = History(spec.get("history"))
        routine.saved_extra = spec.get("extra", {})
        routine.models.eval()
        return routine

    def require_trained(self) -> None:
        if not len(self.history):
            raise NotFittedError("The routine has not been trained yet; call train() first.")


def _describe_saved(block: Any) -> dict[str, Any]:
    """``block.describe()`` for a save or a checkpoint; a block that cannot be written as
    data (a ``functional`` of a lambda: :class:`ConfigError`) is recorded by its name and
    the reason, so the weights are still saved and :meth:`Routine.load` says what it could
    not rebuild (``to_toml`` / ``config --full`` refuse it outright)."""
    try:
        return block.describe()
    except ConfigError as exc:
        return {"name": getattr(block, "name", type(block).__name__), "not_data": str(exc)}


def _write_atomically(path: Path, write: Any) -> None:
    """``write(tmp_dir)`` into a fresh directory beside ``path``, then swap it into place
    (the old directory, if any, is removed only after the new one is complete)."""
    import shutil
    import tempfile

    if path.is_dir() and not (path / SPEC_FILE).exists() and any(path.iterdir()):
        held = sorted(p.name for p in path.iterdir())
        raise ValidationError(
            f"save: {path} is a folder that is not a saved model (it holds "
            f"{', '.join(held[:5])}{' ...' if len(held) > 5 else ''}); saving replaces the "
            "folder whole, so save into a new or empty folder (e.g. a `model` folder inside it).")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{tmp.name[-8:]}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _not_saved(spec_file: Path, why: str) -> ValidationError:
    return ValidationError(f"{spec_file.parent} is not a valid saved routine: {why}. Save it "
                           "again with save(); files written by infoblocks are never edited "
                           "by hand.")


def _read_spec(spec_file: Path) -> dict[str, Any]:
    try:
        spec = json.loads(spec_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_saved(spec_file, f"{SPEC_FILE} is not JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise _not_saved(spec_file, f"{SPEC_FILE} holds a {type(spec).__name__}, not a table")
    missing = [k for k in ("format", "models") if k not in spec]
    if missing:
        raise _not_saved(spec_file, f"{SPEC_FILE} lacks the key(s) {missing}")
    if not isinstance(spec["models"], dict):
        raise _not_saved(spec_file, f"'models' in {SPEC_FILE} is not a table")
    return spec


def _read_weights(weights_file: Path, device: torch.device) -> dict[str, Any]:
    try:
        weights = torch.load(weights_file, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        # torch's own message suggests weights_only=False (unsafe unpickling): not repeated
        raise _not_saved(weights_file.with_name(SPEC_FILE),
                         f"{WEIGHTS_FILE} cannot be read as saved weights "
                         f"({type(exc).__name__}: damaged, truncated or not written by "
                         "infoblocks)") from None
    if not isinstance(weights, dict):
        raise _not_saved(weights_file.with_name(SPEC_FILE), f"{WEIGHTS_FILE} holds no weights")
    return weights


def _load_state(module: torch.nn.Module, weights: dict[str, Any], name: str,
                weights_file: Path, given: bool = False) -> None:
    """Load model ``name``'s weights, refusing missing, mis-shaped and non-finite ones."""
    spec_file = weights_file.with_name(SPEC_FILE)
    state = weights.get(name)
    if not isinstance(state, dict):
        raise _not_saved(spec_file, f"{WEIGHTS_FILE} has no weights for model {name!r}")
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and \
                not bool(torch.isfinite(value).all()):
            raise _not_saved(spec_file, f"the weights {name}.{key} contain NaN or inf; the "
                                        "model diverged before it was saved — train it again")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:3]
        if given:
            raise ValidationError(
                f"The module passed for model {name!r} does not have the architecture saved in "
                f"{weights_file.parent} ({' '.join(lines)[:300]}); pass the module the routine "
                "was trained with.") from None
        raise _not_saved(spec_file, f"the weights of model {name!r} do not fit its "
                                    f"architecture ({' '.join(lines)[:300]})") from None


#: rows of each dataset array that a checkpoint's data digest reads (evenly spaced)
FINGERPRINT_ROWS = 8


def _data_fingerprint(dataset: Any) -> dict[str, str] | None:
    """Each array's shape and a digest of :data:`FINGERPRINT_ROWS` evenly spaced rows (read
    through ``take``: an array on disk is not loaded): other data of the same shape is not the
    data a checkpoint was trained on."""
    if dataset is None:
        return None
    out = {}
    for key in dataset:
        array = dataset[key]
        n = int(array.shape[0])
        index = torch.linspace(0, max(n - 1, 0), min(n, FINGERPRINT_ROWS)).round().long()
        rows = dataset.take(index, (key,))[key]
        digest = hashlib.sha1(rows.detach().cpu().double().contiguous().numpy().tobytes())
        out[key] = f"{tuple(array.shape)} {digest.hexdigest()[:16]}"
    return out


def _fingerprint_default(value: Any) -> Any:
    """A checkpoint's record of a value JSON cannot hold: a block by its description, an
    array by its shape and type, anything else (a function, a simulator) by its type."""
    if isinstance(value, Block):
        return value.describe()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"<{type(value).__name__} {tuple(value.shape)} {value.dtype}>"
    if isinstance(value, (np.generic, Path)):
        return _json_default(value)
    return f"<{type(value).__qualname__}>"


def _differences(saved: Any, now: Any, path: str = "", limit: int = 4) -> str:
    """Where two records differ: ``path: saved -> now`` for the first few places."""
    found: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(found) >= limit or a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, "(unset)"), b.get(key, "(unset)"),
                     f"{where}.{key}" if where else str(key))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for k, (x, y) in enumerate(zip(a, b)):
                name = x.get("name") if isinstance(x, dict) else None
                walk(x, y, f"{where}[{name or k}]")
        else:
            found.append(f"{where or 'the routine'}: {str(a)[:60]} then, {str(b)[:60]} now")

    walk(saved, now, path)
    return "; ".join(found)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Block):
        return value.describe()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


__all__ = ["Routine", "GlobalRelation", "move_to", "SAVE_FORMAT"]
