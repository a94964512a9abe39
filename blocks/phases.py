"""TrainingPhase: sampler + loss + optimizer + schedule + stopping, and the loop that runs it.

One optimizer step: ``loss(batch) (+ l1) -> backward -> clip -> step -> lr schedule ->
after_optimizer_step`` of every module inside the trained models that declares it (a
parameter constraint, e.g. DII's proximal l1 and rescaling).  At phase start the loss's
``on_phase_start`` resets its own state and every module inside the trained models that
declares ``on_phase_start(state)`` runs its data-dependent initialisation (PCA front end,
free-position start, IMNN whitening) — found by walking ``module.modules()``, so it also runs
when the user wraps such a module in a model of their own.  Metrics stay
on the device during the epoch and are moved to the host once at its end, where a non-finite
loss is reported as an error rather than trained on.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from attrs.validators import optional
import torch

from .base import BUILTIN, CheckedKeywords, as_data, block_field, block_origin
from .callbacks import Callback, EarlyStopping
from .contracts import (check_gradients, check_loss_value, check_phase, check_shard,
                        check_untrained_gradients, check_whole_batch, check_yields)
from .errors import ContractError, NumericalError, ValidationError
from .optim import OptimizerBlock, make_adam
from .schedules import Schedule, build_schedule, checked_factor, schedule_spec
from .state import TrainState
from .validators import non_negative, non_negative_int, one_of, positive, positive_int

OPTIMIZERS = ("sgd", "adam", "adamw")
#: torch.optim classes the engine cannot step (LBFGS needs a closure, SparseAdam sparse grads)
UNSTEPPABLE_OPTIMIZERS = ("LBFGS", "SparseAdam")


def optimizer_block(name: str) -> type[OptimizerBlock] | None:
    """The registered ``optimizer`` block of ``name`` (a plugin's, or ``delta_bar_delta``), or
    None; ``sgd`` / ``adam`` / ``adamw`` are the engine's own and never looked up."""
    if not isinstance(name, str) or name.lower() in OPTIMIZERS:
        return None
    from infoblocks.plugins.registry import get_registry  # lazily: blocks import no plugin

    registry = get_registry()
    return registry.get("optimizer", name) if ("optimizer", name) in registry else None


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The torch optimizer of ``name``: ``sgd`` / ``adam`` / ``adamw``, a registered
    ``optimizer`` block's class (``"delta_bar_delta"``, a plugin's), or any ``torch.optim``
    class by its name, case-insensitive (``"RAdam"``, ``"nadam"``, ``"Adagrad"`` ...)."""
    classes = {n.lower(): c for n, c in vars(torch.optim).items() if isinstance(c, type)
               and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer
               and n not in UNSTEPPABLE_OPTIMIZERS}
    block = optimizer_block(name)
    if block is not None:
        return block.optimizer or torch.optim.Optimizer
    if not isinstance(name, str) or name.lower() not in classes:
        from infoblocks.plugins.registry import get_registry

        registered = get_registry().names("optimizer")
        raise ValidationError(
            f"`optimizer` must be one of {list(OPTIMIZERS)}, a registered optimizer block "
            f"{registered} or the name of a torch.optim optimizer, got {name!r}; torch.optim: "
            f"{sorted(c.__name__ for c in classes.values())} (any case; LBFGS needs a closure "
            "the engine does not give).")
    return classes[name.lower()]


def _optimizer_name(instance: Any, attribute: Any, value: Any) -> None:
    optimizer_class(value)


#: optimizer keywords the phase passes itself, from its own fields: (field, optimizers it
#: always passes it to; None: every torch optimizer)
PHASE_OPTIMIZER_KEYWORDS = {"lr": ("learning_rate", None),
                            "weight_decay": ("weight_decay", ("sgd", "adam", "adamw")),
                            "momentum": ("momentum", ("sgd",))}


def _optimizer_options(instance: Any, attribute: Any, value: Any) -> None:
    """``optimizer_options`` is a table of keywords the phase's torch optimizer takes: not
    the ones the phase passes from its own fields (``lr``: ``learning_rate`` ...), no unknown
    one (a registered optimizer block's options are its fields, checked when it is built)."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"`optimizer_options` must be a table of optimizer keywords, "
                              f"got {type(value).__name__}.")
    name = instance.optimizer
    if not isinstance(name, str) or optimizer_block(name) is not None:
        return
    lower = name.lower()
    for key, (field, where) in PHASE_OPTIMIZER_KEYWORDS.items():
        passed = where is None or lower in where or (key == "weight_decay"
                                                     and instance.weight_decay)
        if key in value and passed:
            raise ValidationError(
                f"`optimizer_options` sets {key!r}, which phase {instance.name!r} passes to "
                f"the optimizer from its own `{field}`: set `{field}` = {value[key]!r} instead "
                f"(the recipe's argument of that name, or phases.{instance.name}.{field}).")
    cls = optimizer_class(name)
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [k for k in parameters if k not in ("self", "params")]
    unknown = [k for k in value if k not in known]
    if unknown:
        close = {k: m for k in unknown
                 if (m := difflib.get_close_matches(str(k), known, n=1, cutoff=0.6))}
        hint = "".join(f" (did you mean {m[0]!r} for {k!r}?)" for k, m in close.items())
        raise ValidationError(
            f"`optimizer_options`: torch.optim.{cls.__name__} (`optimizer` = {name!r}) does not "
            f"take the options {unknown}{hint}; it takes {[k for k in known if k != 'lr']}.")


#: the built-in schedules (kind ``schedule``; ``lr_schedule`` takes any registered one)
LR_SCHEDULES = ("none", "cos", "exp", "warmup_cos")


@attrs.define
class Validation(CheckedKeywords):
    """How a phase is validated: a sampler over held-out data and a loss whose ``metric`` is
    tracked (``mode`` min or max) every ``every`` epochs, recorded as ``val_<metric>``; a
    phase shorter than ``every`` epochs is validated once, at its last epoch."""

    sampler: Any = block_field("sampler")
    loss: Any = block_field("loss")
    metric: str = "loss"
    mode: str = attrs.field(default="min", validator=one_of("min", "max"))
    every: int = 1
    no_grad: bool = True

    def evaluate(self, state: TrainState) -> dict[str, float]:
        """Mean of the loss value and metrics over the sampler's batches, as host floats."""
        was_training = {k: m.training for k, m in state.models.items()}
        state.models.eval()
        collected: list[dict[str, torch.Tensor]] = []
        try:
            with torch.set_grad_enabled(not self.no_grad):
                for batch in self.sampler.batches(state):
                    if state.dist.active:
                        batch = self.sampler.shard(batch, state.dist.rank, state.dist.world_size)
                    out = self.loss(batch, state.models, state)
                    collected.append({"loss": out.value.detach(),
                                      **{k: v.detach() for k, v in out.metrics.items()}})
        finally:
            for k, m in state.models.items():
                m.train(was_training[k])
        return {f"val_{k}": v for k, v in _mean_metrics(collected, state).items()}


def _mean_metrics(collected: list[dict[str, torch.Tensor]], state: TrainState
                  ) -> dict[str, float]:
    if not collected:
        return {}
    names = list(collected[0])
    stacked = torch.stack([torch.stack([c[n].float().reshape(()) for n in names])
                           for c in collected]).mean(0)
    stacked = state.dist.mean(stacked).cpu()  # averaged over the ranks; one host transfer
    return dict(zip(names, stacked.tolist()))


@attrs.define
class TrainingPhase(CheckedKeywords):
    """One stage of training (e.g. UMAP's init phase, then its main phase).

    ``trainable`` names the models whose parameters are optimised (None: all).  The learning
    rate follows ``lr_schedule`` over the phase's steps, a registered ``schedule`` block by
    name or ``{"name": ..., **fields}`` (:mod:`infoblocks.blocks.schedules`): ``cos`` decays to
    0 on a half cosine, ``exp`` multiplies by ``lr_decay_rate`` every ``lr_decay_steps`` steps
    (staircase; with ``lr_decay_staircase=False`` continuously, rate ** (step /
    lr_decay_steps)), ``warmup_cos`` warms up linearly, then decays on a half cosine.
    ``l1_strength`` adds strength × Σ|θ| of the trained parameters to the loss.  A trained model
    with an ``on_phase_start(state)`` method has it called at the start of the phase (before its
    parameters are collected).  ``patience`` counts *validations* (every ``validation.every``
    epochs) without a better ``validation.metric``, not epochs; the best weights are restored
    (``restore_best``).
    """

    name: str
    epochs: int = attrs.field(validator=non_negative_int)
    sampler: Any = block_field("sampler")
    loss: Any = block_field("loss")
    #: "sgd", "adam", "adamw", a registered optimizer block (kind ``optimizer``, e.g.
    #: "delta_bar_delta"; ``optimizer_options``: its fields) or any torch.optim class name
    #: (``optimizer_options``: its keywords)
    optimizer: str = attrs.field(default="adam", validator=_optimizer_name)
    learning_rate: float = attrs.field(default=1e-3, validator=positive)
    momentum: float = attrs.field(default=0.0, validator=non_negative)
    #: a registered schedule's name or table (kind ``schedule``), or a Schedule block
    lr_schedule: str | dict[str, Any] | Schedule = attrs.field(default="none",
                                                               validator=schedule_spec)
    lr_decay_rate: float = 0.5
    lr_decay_steps: int = 10
    lr_decay_staircase: bool = True
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    l1_strength: float = attrs.field(default=0.0, validator=non_negative)
    grad_clip: float | None = attrs.field(default=None, validator=optional(non_negative))
    #: extra keyword arguments of the torch optimizer, e.g. {"fused": True} for Adam
    optimizer_options: dict[str, Any] = attrs.field(factory=dict, validator=_optimizer_options)
    trainable: list[str] | None = attrs.field(
        default=None, converter=lambda names: None if names is None else list(names))
    validation: Validation | None = None
    #: validations (not epochs) without a better ``validation.metric`` before the phase stops
    #: (a recipe's ``patience`` in epochs becomes ⌈patience / validation.every⌉ here)
    patience: int | None = attrs.field(default=None, validator=optional(positive_int))
    min_epochs: int = attrs.field(default=0, validator=non_negative_int)
    restore_best: bool = True
    report_every: int = attrs.field(default=1, validator=positive_int)
    callbacks: list[Callback] = attrs.field(factory=list, metadata={"transient": True})
    #: what a warm-started run continues from: the optimizer and loss state at the end of this
    #: phase's last run and its epochs so far (in memory only; not data, not saved)
    last_run: dict[str, Any] | None = attrs.field(default=None, init=False, eq=False,
                                                  repr=False, metadata={"transient": True})

    def describe(self) -> dict[str, Any]:
        """The phase as data (blocks by name; callbacks, which are live objects, left out);
        :func:`infoblocks.blocks.assembly.build_phase` rebuilds it."""
        return as_data(self)

    # ------------------------------------------------------------------ building the optimiser

    def _parameters(self, models: torch.nn.ModuleDict) -> list[torch.nn.Parameter]:
        names = list(models.keys()) if self.trainable is None else list(self.trainable)
        missing = [n for n in names if n not in models]
        if missing:
            raise ValidationError(
                f"Phase {self.name!r} trains models {missing} that the routine does not have; "
                f"it has {sorted(models.keys())}."
            )
        params = [p for n in names for p in models[n].parameters() if p.requires_grad]
        if not params:
            raise ValidationError(f"Phase {self.name!r} has no trainable parameters.")
        return params

    def _set_up(self, sampler: Any, where: str, state: TrainState) -> None:
        """``sampler.setup(state)``; its :class:`ValidationError` names the phase and the
        sampler's path (author22-5: "`batch_size` = 500 exceeds the 400 items" named neither,
        in a routine of several phases)."""
        try:
            sampler.setup(state)
        except ValidationError as exc:
            if str(exc).startswith("Phase "):
                raise
            label = getattr(sampler, "name", type(sampler).__name__)
            raise type(exc)(f"Phase {self.name!r} (phases.{self.name}.{where} {label!r}): "
                            f"{exc}") from exc

    def check_trained_models_are_read(self, models: Mapping[str, Any]) -> None:
        """A :class:`ContractError` where ``trainable`` names models none of which the loss
        reads: no parameter would get a gradient, and the phase would run its epochs and
        change nothing (author22-12: UMAP's layout loss in a compound read ``main`` while
        the phase trained ``layout``: ``embedding_`` stayed at its start, silently).  Only
        where every loss is infoblocks' own (a plugin's may read a model it does not
        declare) and every model it trains exists (else the optimizer names the missing)."""
        if self.trainable is None or any(name not in models for name in self.trainable):
            return
        losses, parts = [], [self.loss]
        while parts:  # the loss and the parts of a compound, nested ones too
            loss = parts.pop()
            losses.append(loss)
            parts += list(getattr(loss, "losses", None) or [])
        if any(block_origin(loss) != BUILTIN for loss in losses):
            return
        read = set(self.loss.required_models())
        if not read or read & set(self.trainable):
            return
        raise ContractError(
            f"Phase {self.name!r} trains {list(self.trainable)} (`trainable`), but its loss "
            f"{getattr(self.loss, 'name', type(self.loss).__name__)!r} reads only "
            f"{sorted(read)}: no parameter would get a gradient. Set the loss's `model` to a "
            "model the phase trains, or `trainable` to the models the loss reads.")

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        name = self.optimizer.lower()
        try:
            if name == "sgd":
                return torch.optim.SGD(params, lr=self.learning_rate, momentum=self.momentum,
                                       weight_decay=self.weight_decay, **self.optimizer_options)
            if name in OPTIMIZERS:  # the lean fused step where it is exact (blocks/optim.py)
                return make_adam(params, lr=self.learning_rate, weight_decay=self.weight_decay,
                                 decoupled=name == "adamw", options=self.optimizer_options)
        except (TypeError, ValueError) as error:  # a value torch refuses, e.g. betas (0.9, 2)
            raise ValidationError(
                f"Phase {self.name!r}: optimizer {self.optimizer!r} cannot be built with "
                f"`optimizer_options` {self.optimizer_options}, `learning_rate` = "
                f"{self.learning_rate}, `weight_decay` = {self.weight_decay}: {error}.") from None
        block = optimizer_block(self.optimizer)
        if block is not None:  # a registered block: optimizer_options are its fields
            from infoblocks.plugins.registry import get_registry

            built = get_registry().build("optimizer", {"name": self.optimizer,
                                                       **self.optimizer_options},
                                         path=f"phases.{self.name}.optimizer_options")
            try:
                optimizer = built.build(params, lr=self.learning_rate,
                                        weight_decay=self.weight_decay)
            except (TypeError, ValueError) as error:
                raise ValidationError(f"Phase {self.name!r}: optimizer {self.optimizer!r} "
                                      f"cannot be built ({error}); check its options and "
                                      "`weight_decay`.") from None
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise ValidationError(f"Phase {self.name!r}: optimizer {self.optimizer!r}'s "
                                      f"build() returned a {type(optimizer).__name__}, not a "
                                      "torch.optim.Optimizer.")
            return optimizer
        cls = optimizer_class(self.optimizer)  # any torch.optim class, with its own keywords
        decay = {"weight_decay": self.weight_decay} if self.weight_decay else {}
        try:
            return cls(params, lr=self.learning_rate, **decay, **self.optimizer_options)
        except TypeError as error:
            raise ValidationError(
                f"Phase {self.name!r}: torch.optim.{cls.__name__} does not take the options "
                f"{sorted({**decay, **self.optimizer_options})}: {error}. Set "
                "`optimizer_options` to keywords it accepts.") from None

    def make_schedule(self) -> Schedule:
        """The ``lr_schedule`` block, built through the registry (a schedule's fields it
        declares in ``phase_fields`` and the spec leaves out come from this phase)."""
        return build_schedule(self.lr_schedule, self, path=f"phases.{self.name}.lr_schedule")

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
        return checked_factor(self.make_schedule(), step, total_steps, f"Phase {self.name!r}")

    # ------------------------------------------------------------------ running

    def stopping_callback(self) -> EarlyStopping | None:
        if self.validation is None:
            return None
        return EarlyStopping(monitor=f"val_{self.validation.metric}", mode=self.validation.mode,
                             patience=self.patience, min_epochs=self.min_epochs,
                             restore_best=self.restore_best, skip_missing=True)

    def _validated(self, state: TrainState) -> dict[str, float]:
        """The validation's metrics; a :class:`ContractError` where they lack the tracked
        one (a loss whose ``reports`` is undeclared: early stopping would skip every epoch
        and restore nothing, silently — author22-9)."""
        found = self.validation.evaluate(state)
        metric = self.validation.metric
        if found and f"val_{metric}" not in found:
            raise ContractError(
                f"Phase {self.name!r}: validation tracks the metric {metric!r}, but loss "
                f"{getattr(self.validation.loss, 'name', type(self.validation.loss).__name__)!r}"
                f" records only {', '.join(sorted(k[4:] for k in found))}. Set "
                "`validation.metric` to one of them.")
        return found

    def run(self, state: TrainState, callbacks: Sequence[Callback],
            checkpoint: Callable[[dict[str, Any], bool], None] | None = None,
            resume: dict[str, Any] | None = None, warm_start: bool = False) -> None:
        """Train ``state.models`` for this phase.

        ``checkpoint(payload, final)`` is called at the end of every epoch with this phase's
        training state (optimizer, scheduler, early stopping, loss, step; see
        :mod:`infoblocks.blocks.resume`); ``resume`` is such a payload: the phase continues
        after its epoch with everything put back.

        ``warm_start``: continue from this phase's previous run in this process — the current
        weights (the models' data-dependent ``on_phase_start`` initialisation is skipped), the
        optimizer's state (Adam's moments and step count), the loss's own state (e.g. MINE's
        moving average) — for ``epochs`` more epochs, numbered after the earlier ones; the
        learning-rate schedule and early stopping start afresh over the new epochs."""
        models = state.models
        trained = list(models.keys()) if self.trainable is None else list(self.trainable)
        warm = self.last_run if warm_start else None
        if warm is None:
            for module in _declaring(models, trained, "on_phase_start"):
                module.on_phase_start(state)  # e.g. free coordinates that start from a layout
        constrained = _declaring(models, trained, "after_optimizer_step")
        params = self._parameters(models)
        optimizer = self.make_optimizer(params)
        self._set_up(self.sampler, "sampler", state)
        if self.validation is not None:
            self._set_up(self.validation.sampler, "validation.sampler", state)
        total_steps = self.epochs * self.sampler.num_batches(state)
        # a constant rate needs no scheduler call per step (it costs ~2 % of a small step)
        schedule, where = self.make_schedule(), f"Phase {self.name!r}"
        scheduler = None if schedule.constant else torch.optim.lr_scheduler.LambdaLR(
            # LambdaLR evaluates the factor once more after the last step, for a step no
            # update takes: it is given the last step's (factor's domain is 0 .. total − 1)
            optimizer, lambda s: checked_factor(schedule, min(s, max(total_steps - 1, 0)),
                                                total_steps, where))
        stopper = self.stopping_callback()
        every = [*callbacks, *self.callbacks, *([stopper] if stopper else [])]
        state.phase, state.n_epochs, state.step, state.stop = self.name, self.epochs, 0, False
        state.total_steps = total_steps
        check_phase(self, state)
        self.loss.on_phase_start(state)
        if self.validation is not None and self.validation.loss is not self.loss:
            self.validation.loss.on_phase_start(state)
        for cb in every:
            cb.on_phase_start(state, self)
        start = 0
        state.epoch_offset = 0
        if warm is not None:
            optimizer.load_state_dict(warm["optimizer"])
            self.loss.restore_state(warm["loss"])
            state.epoch_offset = warm["epochs"]
        if resume is not None:
            start = self._restore(resume, state, optimizer, scheduler, stopper)
        sharded = state.dist.active
        models.train()
        # (a resumed phase ran a validation before the interruption once it passed `every`)
        validated = self.validation is not None and start >= self.validation.every
        lr = optimizer.param_groups[0]["lr"]
        for epoch in range(start, self.epochs):
            state.epoch = epoch
            for cb in every:
                cb.on_epoch_start(state)
            collected = []
            for whole in self.sampler.batches(state):
                batch = whole
                if sharded:
                    batch = self.sampler.shard(whole, state.dist.rank, state.dist.world_size)
                first = epoch == start and not collected
                if sharded and not collected:  # each epoch's first batch: a sampler whose
                    check_shard(self, whole, batch, state)  # ranks drift apart later is named
                if first:  # the phase's first batch
                    check_yields(self, batch, state)
                try:
                    out = self.loss(batch, models, state)
                except ValidationError as exc:
                    if not (first and sharded):
                        raise
                    # a loss refusing a shard: name the sampler that cut it too
                    raise ValidationError(
                        f"Phase {self.name!r}, first batch (rank {state.dist.rank}'s shard from "
                        f"sampler {getattr(self.sampler, 'name', type(self.sampler).__name__)!r})"
                        f": {exc}") from None
                if first:
                    check_loss_value(self, out.value)
                    check_whole_batch(self, out.value, state)
                value = out.value
                if self.l1_strength > 0:
                    value = value + self.l1_strength * sum(p.abs().sum() for p in params)
                optimizer.zero_grad(set_to_none=True)
                if first:  # an earlier phase's gradients on models this one does not train
                    _clear_untrained_gradients(models, trained, params)
                if out.gradients is not None and value is out.value:  # computed by the loss
                    for p, g in out.gradients:
                        p.grad = g if p.grad is None else p.grad + g
                else:
                    value.backward()
                if first:  # a trained model the loss's value does not reach (a detach)
                    check_gradients(self, state, trained)
                    check_untrained_gradients(self, state, trained)  # and the reverse
                if sharded:  # the mean gradient of the whole batch, on every rank
                    state.dist.average_gradients(params)
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                lr = optimizer.param_groups[0]["lr"]  # this step's rate
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                state.step += 1
                if constrained:  # a proximal step at the rate of the step it follows
                    for module in constrained:
                        module.after_optimizer_step(lr=lr, state=state)
                collected.append({"loss": out.value.detach(),
                                  **{k: v.detach() for k, v in out.metrics.items()}})
            metrics = _mean_metrics(collected, state)
            if collected and not math.isfinite(metrics["loss"]):
                raise NumericalError(
                    f"Phase {self.name!r}, epoch {epoch}: the loss became {metrics['loss']}. "
                    "Lower `learning_rate`, set `grad_clip`, or check the data for extreme values."
                )
            # the rate of the epoch's last step (the scheduler has already moved on)
            metrics["lr"] = lr if collected else optimizer.param_groups[0]["lr"]
            if self.validation is not None and ((epoch + 1) % self.validation.every == 0 or (
                    epoch + 1 == self.epochs and not validated)):  # at least once per phase
                metrics.update(self._validated(state))
                validated = True
            for cb in every:
                cb.on_epoch_end(state, metrics)
            if sharded:
                state.stop = bool(state.dist.broadcast(state.stop))
            if checkpoint is not None:
                checkpoint(self._payload(state, epoch, optimizer, scheduler, stopper),
                           state.stop or epoch + 1 == self.epochs)
            if state.stop:
                break
        for cb in every:
            cb.on_phase_end(state, self)
        self.last_run = {"optimizer": optimizer.state_dict(), "loss": self.loss.checkpoint_state(),
                         "epochs": state.epoch_offset + state.epoch + 1}

    def _payload(self, state: TrainState, epoch: int, optimizer: Any, scheduler: Any,
                 stopper: EarlyStopping | None) -> dict[str, Any]:
        from .resume import rng_states

        return {"phase": self.name, "epoch": epoch, "step": state.step,
                "epoch_offset": state.epoch_offset,
                "models": state.models.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "stopper": None if stopper is None else stopper.checkpoint_state(),
                "loss": self.loss.checkpoint_state(), **rng_states(state)}

    def _restore(self, saved: dict[str, Any], state: TrainState, optimizer: Any, scheduler: Any,
                 stopper: EarlyStopping | None) -> int:
        """Put a checkpoint of this phase back; the epoch to continue from."""
        from .resume import load_models, restore_rng_states

        if saved.get("phase") != self.name:
            raise ValidationError(f"The checkpoint is of phase {saved.get('phase')!r}, not "
                                  f"{self.name!r}: it was written by another routine.")
        load_models(state.models, saved["models"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        if stopper is not None and saved.get("stopper") is not None:
            stopper.restore_state(saved["stopper"])
        self.loss.restore_state(saved.get("loss") or {})
        restore_rng_states(state, saved)
        state.step = int(saved["step"])  # a stopped phase is saved as complete, never here
        state.epoch_offset = int(saved.get("epoch_offset", 0))
        return int(saved["epoch"]) + 1


def _clear_untrained_gradients(models: torch.nn.ModuleDict, trained: Sequence[str],
                               params: list[torch.nn.Parameter]) -> None:
    """Set to None the gradients of the parameters no trained model holds (``params``: the
    optimizer's): the optimizer never reads them, and a gradient left there by an earlier
    phase (UMAP's layout after its own phase) would read as this phase's in
    :func:`~infoblocks.blocks.contracts.check_untrained_gradients`."""
    kept = {id(p) for p in params}
    for name in models.keys():
        if name not in trained:
            for p in models[name].parameters():
                if id(p) not in kept:
                    p.grad = None


def _declaring(models: torch.nn.ModuleDict, names: Sequence[str], method: str) -> list[Any]:
    """Modules inside the named models (at any depth, each once) that define ``method``."""
    found, seen = [], set()
    for name in names:
        if name not in models:
            continue
        for module in models[name].modules():
            if id(module) not in seen and callable(getattr(module, method, None)):
                seen.add(id(module))
                found.append(module)
    return found


__all__ = ["TrainingPhase", "Validation", "OPTIMIZERS", "LR_SCHEDULES", "optimizer_block",
           "optimizer_class"]
