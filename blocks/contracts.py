"""Declared contracts between blocks, checked before the first training step.

A sampler names the :class:`BatchType` it yields; a loss names the batch fields it consumes,
the globals and models it needs, and the metrics it reports.  :func:`check_phase` compares
the two sides when a routine starts training and raises a :class:`ContractError` that names
both blocks and the missing field — instead of a ``KeyError`` deep inside the first step.

A block that declares nothing (``None``) is not checked: third-party blocks written before
the contracts keep working, they only lose the early error.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import torch

from .errors import ContractError

if TYPE_CHECKING:  # pragma: no cover
    from .phases import TrainingPhase
    from .state import TrainState


@attrs.frozen
class BatchType:
    """What a sampler's batches hold: a name and the fields every batch has.

    ``fields`` are the keys always present; samplers add dynamic ones (the dataset arrays an
    item batch carries, the globals it gathers) in :meth:`Sampler.batch_fields`.
    """

    name: str
    fields: frozenset[str] = attrs.field(converter=frozenset)
    doc: str = ""
    #: (field, target) pairs: the field holds positions in the batch's ``target`` field
    #: (``pos_source`` indexes ``items``); checked on a phase's first batch
    positions: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)


#: item batches: ``index`` (item indices, long) plus the dataset arrays and gathered globals
#: at those indices (``data``, ``positions`` ...)
ITEMS = BatchType("items", {"index"}, "item indices and the per-item arrays at them")
#: edge batches of a sparse relation: ``pos_source``, ``pos_target`` (long, B), the
#: ``neg_source`` / ``neg_target`` negative pairs and the items they touch
EDGES = BatchType("edges", {"pos_source", "pos_target", "neg_source", "neg_target"},
                  "positive edges drawn from a relation and negative pairs")
#: paired samples and product-of-marginals negatives: ``x``, ``y`` (joint pairs) and
#: ``x_marginal``, ``y_marginal`` (pairs drawn from the product of the marginals)
MARGINAL_PAIRS = BatchType("marginal_pairs", {"x", "y", "x_marginal", "y_marginal"},
                           "joint pairs and product-of-marginals pairs")
#: rows and columns of a pairwise table: ``rows``, ``cols`` (item indices)
ROWS_COLS = BatchType("rows_cols", {"rows", "cols"}, "row and column item indices")
#: IMNN simulations: ``fiducial`` (n_s, ...) always, and either ``derivative`` (n_d, ...,
#: n_params) or ``numerical_derivative`` with ``delta_theta`` (seed-matched finite
#: differences); the sampler's ``batch_fields`` says which
SIMULATIONS = BatchType("simulations", {"fiducial"},
                        "fiducial simulations and their derivatives with respect to θ")


def _names(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "nothing"


def _label(block: Any) -> str:
    return f"{block.kind} {getattr(block, 'name', type(block).__name__)!r}"


def _part_reading(loss: Any, missing: list[str]) -> str:
    """`` (losses[k]: 'name')``: the first part of a ``compound`` that consumes one of the
    ``missing`` fields (author22-6: the error named only 'compound'); "" otherwise."""
    for k, part in enumerate(getattr(loss, "losses", None) or []):
        consumed = getattr(part, "required_fields", lambda: None)()
        if consumed is not None and set(consumed) & set(missing):
            return f" (losses[{k}]: {getattr(part, 'name', type(part).__name__)!r})"
    return ""


def check_phase(phase: TrainingPhase, state: TrainState) -> None:
    """Raise :class:`ContractError` if the phase's sampler, loss, models and the routine's
    globals do not fit together.  Called for every phase before the first step."""
    available = set(state.globals) | (set(state.dataset) if state.dataset is not None else set())
    pairs = [(phase.sampler, phase.loss, "")]
    if phase.validation is not None:
        pairs.append((phase.validation.sampler, phase.validation.loss, " (validation)"))
    for sampler, loss, where in pairs:
        for block in (sampler, loss):
            needed = getattr(block, "required_globals", lambda: None)()
            missing = sorted(set(needed or ()) - available)
            if missing:
                raise ContractError(
                    f"Phase {phase.name!r}{where}: {_label(block)} needs the global(s) "
                    f"{missing}, which the routine does not compute; it has {_names(available)}. "
                    "Add them under [globals] or point the block at an existing one.")
        models = getattr(loss, "required_models", lambda: None)()
        missing = sorted(set(models or ()) - set(state.models.keys()))
        if missing:
            raise ContractError(
                f"Phase {phase.name!r}{where}: {_label(loss)} uses model(s) {missing}; the "
                f"routine has {_names(state.models.keys())}. Add them under [models] or set the "
                "loss's model name.")
        fields = sampler.batch_fields(state) if hasattr(sampler, "batch_fields") else None
        consumed = getattr(loss, "required_fields", lambda: None)()
        if fields is None or consumed is None:
            continue
        missing = sorted(set(consumed) - set(fields))
        if missing:
            batch_type = getattr(sampler, "batch_type", None)
            kind = f" ({batch_type.name} batches)" if batch_type is not None else ""
            raise ContractError(
                f"Phase {phase.name!r}{where}: {_label(loss)}{_part_reading(loss, missing)} "
                f"consumes the batch field(s) "
                f"{missing}, but {_label(sampler)}{kind} yields only {_names(fields)}. Use a "
                "sampler that yields them (an item sampler gathers per-item globals with "
                "gather=[...]) or a loss that fits this sampler.")
    if phase.validation is not None:
        reports = getattr(phase.validation.loss, "reports", None)
        metric = phase.validation.metric
        if reports is not None and metric != "loss" and metric not in reports:
            raise ContractError(
                f"Phase {phase.name!r}: validation tracks the metric {metric!r}, but "
                f"{_label(phase.validation.loss)} reports only {_names(reports)} (and 'loss').")


def check_yields(phase: TrainingPhase, batch: dict[str, Any], state: TrainState) -> None:
    """The phase's first batch holds every field its sampler declares (``batch_fields``), and
    its position fields (the batch type's ``positions``) index into their targets: otherwise
    the sampler, not the loss that reads the field, is named."""
    sampler = phase.sampler
    fields = sampler.batch_fields(state) if hasattr(sampler, "batch_fields") else None
    missing = sorted(set(fields or ()) - set(batch))
    if missing:
        raise ContractError(
            f"Phase {phase.name!r}: {_label(sampler)} declares the batch field(s) {missing} "
            f"(its batch_type / batch_fields), but its batch holds only {_names(batch)}. "
            "Yield them, or declare only the fields the sampler yields.")
    _check_simulation_shapes(phase, batch)
    sharded = " (this rank's shard)" if state.dist.active else ""
    for field, target in getattr(getattr(sampler, "batch_type", None), "positions", ()):
        index, into = batch.get(field), batch.get(target)
        if not (torch.is_tensor(index) and hasattr(into, "__len__")) or index.numel() == 0:
            continue
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= len(into):
            raise ContractError(
                f"Phase {phase.name!r}: {_label(sampler)}'s batch{sharded} holds `{field}` "
                f"positions {low}..{high}, but `{target}` has {len(into)} entries. `{field}` "
                f"holds positions in `{target}`"
                + (": a `shard` that keeps part of the items must renumber the positions "
                   "into its own `items`." if sharded else "."))


def _check_simulation_shapes(phase: TrainingPhase, batch: dict[str, Any]) -> None:
    """A simulation batch's derivatives match its fiducial simulations: ``derivative``
    (n_d, p, *S) and ``numerical_derivative`` (n_d, 2, p, *S) for ``fiducial`` (n_s, *S), p
    the sampler's ``n_params`` where it has one.  Otherwise the built-in `fisher` loss failed
    with an IndexError inside its Jacobian-vector product, the sampler unnamed (author11
    A11-9)."""
    fiducial = batch.get("fiducial")
    if not torch.is_tensor(fiducial) or fiducial.ndim < 1:
        return
    sampler, shape = phase.sampler, tuple(fiducial.shape[1:])
    p = getattr(sampler, "n_params", None)
    p = p if isinstance(p, int) and not isinstance(p, bool) else None
    for field, lead, form in (("derivative", (), "(n_d, p, *S)"),
                              ("numerical_derivative", (2,), "(n_d, 2, p, *S)")):
        value = batch.get(field)
        if not torch.is_tensor(value):
            continue
        got = tuple(value.shape)
        k = 1 + len(lead)  # the axis of the parameters
        if len(got) == len(shape) + k + 1 and got[1:k] == lead and got[k + 1:] == shape \
                and (p is None or got[k] == p):
            continue
        want = ", ".join(["n_d", *map(str, lead), str(p) if p is not None else "p",
                          *map(str, shape)])
        raise ContractError(
            f"Phase {phase.name!r}: {_label(sampler)} yields `{field}` of shape {got} with "
            f"`fiducial` of shape {tuple(fiducial.shape)}: `{field}` must be {form} = ({want}) "
            "— the derivatives of the first n_d simulations with respect to each of the p "
            "parameters (p = len(theta_fid)), each of one simulation's shape S.")


def _batch_stats(batch: dict[str, Any]) -> tuple[list[str], torch.Tensor | None]:
    """Per tensor field: its size, the sum and sum of squares of its finite entries and the
    counts of NaN, +inf and −inf (float64; NaN ≠ NaN would make equal batches differ)."""
    # every tensor field, empty ones too: a rank whose part of a field is empty sends a table
    # of the same size as the others (else the ranks' all-reduces would not match)
    names = sorted(k for k, v in batch.items() if torch.is_tensor(v))
    if not names:
        return names, None
    rows = []
    for k in names:
        v = batch[k].detach().double().reshape(-1)
        finite = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        rows.append(torch.stack([v.new_tensor(float(v.numel())), finite.sum(),
                                 (finite * finite).sum(), torch.isnan(v).sum().double(),
                                 torch.isposinf(v).sum().double(),
                                 torch.isneginf(v).sum().double()]))
    return names, torch.stack(rows)


def check_shard(phase: TrainingPhase, whole: dict[str, Any], part: dict[str, Any],
                state: TrainState) -> None:
    """Under torchrun, on the phase's first batch: every rank drew the same batch (from
    ``state.generator``), and the ranks' shards of it are not all the same.  A sampler that
    draws with a generator of its own gives each rank other rows, and a ``shard`` that keeps
    the whole batch trains each row ``world_size`` times where a loss sums over the ranks;
    nothing else would say so.  A batch the sampler drew as this rank's part already (it
    holds a ``shard`` field, as the MI samplers' do) is not compared.  Every rank takes part
    (one all-reduce), so all ranks agree."""
    if not state.dist.active:
        return
    rank, world = state.dist.rank, state.dist.world_size
    missing = sorted(set(getattr(getattr(phase, "loss", None), "shard_fields", ())) - set(part))
    if missing:  # (the same fields on every rank: all raise, before the collective below)
        raise ContractError(
            f"Phase {phase.name!r}: {_label(phase.sampler)}'s `shard(batch, rank, world_size)` "
            f"returns no {_names(missing)}, which {_label(phase.loss)} needs in a "
            f"shard (its `shard_fields`) to treat the rank's part as part of the whole batch; "
            f"without it the part is normalised as a batch of its own and the ranks train on "
            f"another objective. Add {_names(missing)} to the shard (docs/plugins.md).")
    drawn = "shard" not in whole  # (else the sampler drew this rank's rows itself)
    checks = [("part", *_batch_stats(part))] + ([("whole", *_batch_stats(whole))] if drawn else [])
    checks = [(label, names, stats) for label, names, stats in checks if stats is not None]
    if not checks:
        return
    flat = torch.cat([stats.reshape(-1) for _, _, stats in checks])
    table = torch.zeros(world, flat.numel(), dtype=torch.float64, device=flat.device)
    table[rank] = flat
    table = state.dist.sum(table)
    offset = 0
    for label, names, stats in checks:
        block = table[:, offset:offset + stats.numel()].reshape(world, *stats.shape)
        offset += stats.numel()
        differ = [k for j, k in enumerate(names) if not bool((block[:, j] == block[:1, j]).all())]
        same = not differ
        if label == "part":
            sizes = block[:, :, 0]  # (world, fields): the entries of each rank's part
            empty = [(r, k) for j, k in enumerate(names) for r in range(world)
                     if sizes[r, j] == 0 and bool((sizes[:, j] > 0).any())]
            if empty:
                ranks = sorted({r for r, _ in empty})
                raise ContractError(
                    f"Phase {phase.name!r}: rank(s) {ranks} of {world} get no rows of "
                    f"{_names({k for _, k in empty})} from {_label(phase.sampler)}'s "
                    f"`shard(batch, rank, world_size)`: its batch has fewer rows than there are "
                    f"ranks. Raise `batch_size` to at least {world} (better a multiple of "
                    f"{world}), or train in fewer processes.")
        if label == "whole" and not same:
            raise ContractError(
                f"Phase {phase.name!r}: {_label(phase.sampler)} drew different batches on the "
                f"{world} ranks ({_names(differ)} differ). Under torchrun every rank draws the "
                "same batch from `state.generator` (the shared seeded generator) and keeps its "
                "part in `shard(batch, rank, world_size)`; draw with `state.generator`, not a "
                "generator of your own or numpy's.")
        if label == "part" and same and max(
                part[k].shape[0] if part[k].ndim else 1 for k in names) > 1:
            raise ContractError(
                f"Phase {phase.name!r}: {_label(phase.sampler)}'s `shard(batch, rank, "
                f"world_size)` gives all {world} ranks the same part of the first batch "
                f"({_names(names)}). Each rank must keep its own part, the union over the "
                "ranks being the batch (e.g. rows `rank::world_size`); the whole batch on every "
                f"rank trains each row {world} times where a loss sums over the ranks.")


def check_loss_value(phase: TrainingPhase, value: Any) -> None:
    """On the phase's first step: the loss's ``LossOutput.value`` is a scalar (0-d tensor).
    One value per item ended in torch's "grad can be implicitly created only for scalar
    outputs" from the engine's backward, naming no block (author11 A11-5)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return
    from .base import _provider

    got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) \
        else type(value).__name__
    raise ContractError(
        f"Phase {phase.name!r}: {_label(phase.loss)}{_provider(phase.loss)} returned a value "
        f"(LossOutput.value) that is {got}; a loss's value is a scalar (a 0-d tensor): "
        "reduce it over the batch (e.g. `.mean()`).")


def check_whole_batch(phase: TrainingPhase, value: torch.Tensor, state: TrainState) -> None:
    """Under torchrun, on the phase's first step: a loss that declares ``whole_batch`` has
    the same value on every rank (it reduces its sums over the ranks, so the engine's gradient
    average is the one-process gradient).  A value computed from the rank's shard alone
    differs by rank; nothing else would say so.  Every rank takes part (one all-reduce)."""
    if not state.dist.active or not getattr(phase.loss, "whole_batch", False):
        return
    rank, world = state.dist.rank, state.dist.world_size
    table = torch.zeros(world, dtype=torch.float64, device=value.device)
    table[rank] = float(value.detach())
    table = state.dist.sum(table)
    if not bool(torch.isfinite(table).all()):
        return  # (a non-finite loss is reported by the phase)
    spread = float((table - table[0]).abs().max())
    if spread > 1e-5 * max(float(table.abs().max()), 1e-3):
        values = ", ".join(f"{float(v):.7g}" for v in table)
        raise ContractError(
            f"Phase {phase.name!r}: {_label(phase.loss)} declares `whole_batch` (its value "
            f"is the whole batch's on every rank) but the {world} ranks' first-step values "
            f"differ ({values}). Sum the loss's statistics over the ranks before any "
            "non-linear step (`state.dist.differentiable_sum`, or the `BatchScores` reductions "
            "of an MI bound), check that the sampler's `shard` keeps what the loss reduces "
            f"({_label(phase.sampler)}), or do not declare `whole_batch` if a per-rank value "
            "whose mean over the ranks is the whole batch's is meant.")


class NoGradientWarning(UserWarning):
    """A model that a phase trains got no gradient on the phase's first step
    (:func:`check_gradients`)."""


def _model_label(name: str, state: TrainState) -> str:
    """```models.name``` and, where a registered block built it, ``(model 'x', plugin 'p')``."""
    block = (getattr(state, "model_blocks", None) or {}).get(name)
    if not isinstance(block, str):
        return f"`models.{name}`"
    try:
        from infoblocks.plugins.registry import get_registry

        plugin = get_registry().entry("model", block).plugin
    except Exception:  # noqa: BLE001 - informative only
        plugin = "builtin"
    return f"`models.{name}` (model {block!r}" + (
        ")" if plugin == "builtin" else f", plugin {plugin!r})")


def check_gradients(phase: TrainingPhase, state: TrainState, trained: Iterable[str]) -> None:
    """After the phase's first backward: a model that the phase trains (``trained``: in its
    optimizer) and its loss uses (``required_models``), with trainable parameters none of
    which got a gradient, is named in a :class:`NoGradientWarning` — the loss's value does not
    depend on it, so the optimizer never moves it (author27-B: an InfoMax encoder whose forward
    ended in ``.detach()`` left the encoder at its initialisation, only the critic trained,
    with no message).  A warning, not an error: a loss may read a model under ``no_grad`` on
    purpose (``position``'s ``target_model``) in a phase that does not list ``trainable``."""
    used = getattr(phase.loss, "required_models", lambda: None)()
    for name in trained:
        if not used or name not in used or name not in state.models:
            continue
        params = [p for p in state.models[name].parameters() if p.requires_grad]
        if not params or any(p.grad is not None for p in params):
            continue
        others = sorted(n for n in trained if n != name)
        warnings.warn(
            f"Phase {phase.name!r}: {_model_label(name, state)} has {len(params)} trainable "
            f"parameter tensor(s) and none got a gradient from {_label(phase.loss)} on the "
            "first step: the loss does not depend on them (a `.detach()`, `torch.no_grad()` "
            "or a conversion to numpy in the model's forward?), so the optimizer never moves "
            "the model. Remove what cuts the gradient; or, to hold the model fixed on purpose, "
            f"list the models the phase trains in `phases.{phase.name}.trainable` "
            f"(= {others}) or set requires_grad = False on its parameters.",
            NoGradientWarning, stacklevel=3)


class UntrainedModelWarning(UserWarning):
    """A model that a phase does not train got a gradient on the phase's first step
    (:func:`check_untrained_gradients`)."""


def _losses_reading(loss: Any, name: str) -> list[Any]:
    """The innermost losses (parts of a ``compound``, nested ones too) that declare reading
    model ``name`` (``required_models``); ``[loss]`` where none of its parts says so."""
    found, parts = [], [loss]
    while parts:
        part = parts.pop(0)
        inner = list(getattr(part, "losses", None) or [])
        if inner:
            parts += inner
        elif name in (getattr(part, "required_models", lambda: None)() or ()):
            found.append(part)
    return found or [loss]


def check_untrained_gradients(phase: TrainingPhase, state: TrainState,
                              trained: Iterable[str]) -> None:
    """After the phase's first backward: a model that the phase does not train (not in its
    ``trainable``) and whose parameters nevertheless got a gradient is named in an
    :class:`UntrainedModelWarning` — the loss back-propagates into it, so it was meant to
    learn, but the optimizer never moves it (author29-3: a ``[models.decoder]`` for a plugin
    reconstruction loss in UMAP's main phase, whose ``trainable = ["main"]`` keeps the layout
    fixed, stayed at its initialisation: reconstruction MSE 57.8 against 11.8 trained, with no
    message).  The mirror of :func:`check_gradients`.  A model read detached or under
    ``no_grad`` (UMAP's ``anchor_model``, ``position``'s ``target_model``) gets no gradient
    and is not named.  The phase clears the untrained models' gradients before this first
    backward, so one left by an earlier phase does not count."""
    trained = set(trained)
    kept = {id(p) for n in trained if n in state.models for p in state.models[n].parameters()}
    for name, model in state.models.items():
        if name in trained:
            continue
        got = [p for p in model.parameters()
               if p.requires_grad and id(p) not in kept and p.grad is not None]
        if not got:
            continue
        readers = ", ".join(_label(loss) + _provider_of(loss)
                            for loss in _losses_reading(phase.loss, name))
        warnings.warn(
            f"Phase {phase.name!r}: {_model_label(name, state)} got a gradient from "
            f"{readers} on the first step ({len(got)} parameter tensor(s)), but the phase "
            f"does not train it (`phases.{phase.name}.trainable` = {sorted(trained)}): the "
            "optimizer never moves it and it stays at its initialisation. To train it, add it: "
            f"`trainable = {sorted(trained) + [name]}` in the phase (TOML: [[phases]] name = "
            f"{phase.name!r}); to hold it fixed on purpose, read it under `torch.no_grad()` or "
            "set requires_grad = False on its parameters.",
            UntrainedModelWarning, stacklevel=3)


def _provider_of(block: Any) -> str:
    """`` (plugin 'x')`` for a plugin's block, '' for infoblocks' own or an unregistered one."""
    from .base import BUILTIN, block_origin

    origin = block_origin(block)
    return "" if origin in (None, BUILTIN) else f" (plugin {origin!r})"


__all__ = ["BatchType", "ContractError", "NoGradientWarning", "UntrainedModelWarning",
           "check_gradients", "check_untrained_gradients",
           "check_loss_value", "check_phase", "check_shard", "check_whole_batch",
           "check_yields", "ITEMS",
           "EDGES", "MARGINAL_PAIRS", "ROWS_COLS", "SIMULATIONS"]
