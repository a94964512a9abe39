"""Hook specifications: one ``register_<kind>`` hook per block kind.

Every hook is called once, when the registry is (re)built — lazily, on first use — and must
return a list of block *classes* (not instances).  Each class declares its registry key in the
class attribute ``name`` and derives from the base of its kind (``Distance``, ``Loss`` ...).
Wrap a class in :func:`infoblocks.plugins.override` to replace a block another plugin already
registered under the same name; any other duplicate is an error naming both plugins.  Put
:func:`infoblocks.plugins.unavailable` in the list for one part of the plugin that failed (a
module that did not import): it is reported, and the other blocks still register.

A plugin is a module (or object) with functions decorated ``@hookimpl``; it is found through
the entry-point group ``infoblocks``::

    [project.entry-points.infoblocks]
    myplugin = "mypkg.plugin"

The built-in blocks and recipes are registered through these very hooks.
"""

from __future__ import annotations

import pluggy

PROJECT = "infoblocks"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------- geometry


@hookspec
def register_distances() -> list[type]:
    """Distance classes (subclasses of ``infoblocks.blocks.distances.Distance``).

    Called when the registry is built.  Return e.g. ``[Manhattan]``; each must implement
    ``pairwise(a, b) -> (n, m)`` and ``paired(a, b) -> (n,)``.
    """


@hookspec
def register_relations() -> list[type]:
    """Relation classes (``infoblocks.blocks.relations.Relation``): ``compute(data) ->
    RelationData``.  Called when the registry is built."""


@hookspec
def register_transforms() -> list[type]:
    """Transform classes (``infoblocks.blocks.transforms.Transform``): ``apply(RelationData) ->
    RelationData``, declaring the accepted forms in ``accepts``.  Called when the registry is
    built."""


# ---------------------------------------------------------------------------- training


@hookspec
def register_samplers() -> list[type]:
    """Sampler classes (``infoblocks.blocks.samplers.Sampler``): ``num_batches(state)`` and
    ``batches(state)`` yielding dicts of tensors.  Called when the registry is built."""


@hookspec
def register_losses() -> list[type]:
    """Loss classes (``infoblocks.blocks.losses.Loss``): ``__call__(batch, models, state) ->
    LossOutput``.  Called when the registry is built."""


@hookspec
def register_models() -> list[type]:
    """Model builder classes (``infoblocks.blocks.models.Model``): ``build() ->
    torch.nn.Module``.  Called when the registry is built."""


# ---------------------------------------------------------------------------- user level


@hookspec
def register_datasets() -> list[type]:
    """Dataset source classes (``infoblocks.blocks.datasets.DatasetSource``): ``load() ->
    dict[str, numpy.ndarray]`` — shipped or generated data for demos and tests (no downloads).
    Called when the registry is built."""


@hookspec
def register_recipes() -> list[type]:
    """Recipe classes (``infoblocks.blocks.recipe.Recipe``): attrs classes of hyperparameters
    with ``build(...) -> Routine`` and a convenience API.  Called when the registry is built;
    a recipe is then usable by name from Python, TOML configs and ``infoblocks demo``."""


@hookspec
def register_callbacks() -> list[type]:
    """Callback classes (``infoblocks.blocks.callbacks.Callback``) with a ``name``: training
    observers (``on_epoch_end(state, metrics)`` ...) that a recipe's ``callbacks = [...]``
    names, e.g. the built-in ``"tensorboard"``.  Called when the registry is built."""


@hookspec
def register_placements() -> list[type]:
    """Placement classes (``infoblocks.blocks.embedding.placement.Placement``): how
    ``transform`` of a parametric embedding puts new points among the fixed training
    positions, ``place(start, neighbours, distances, positions, context) -> (m, d)``; a
    recipe's ``[evaluation] placement`` names one.  Called when the registry is built."""


@hookspec
def register_optimizers() -> list[type]:
    """Optimizer classes (``infoblocks.blocks.optim.OptimizerBlock``): an optimizer a phase
    names (``optimizer = "my_optimizer"``, ``optimizer_options`` its fields), ``build(params,
    lr, weight_decay) -> torch.optim.Optimizer``.  Called when the registry is built."""


@hookspec
def register_schedules() -> list[type]:
    """Learning-rate schedule classes (``infoblocks.blocks.schedules.Schedule``): what a
    phase's ``lr_schedule`` names (``lr_schedule = "my_schedule"`` or ``{name = ...,
    **fields}``, in any recipe), ``factor(step, total_steps) -> float``, the multiplier of the
    phase's learning rate at each optimizer step.  Called when the registry is built."""


#: hook name for each block kind
HOOK_FOR_KIND: dict[str, str] = {
    "distance": "register_distances",
    "relation": "register_relations",
    "transform": "register_transforms",
    "sampler": "register_samplers",
    "loss": "register_losses",
    "model": "register_models",
    "dataset": "register_datasets",
    "recipe": "register_recipes",
    "callback": "register_callbacks",
    "placement": "register_placements",
    "optimizer": "register_optimizers",
    "schedule": "register_schedules",
}
