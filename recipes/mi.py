"""Neural mutual-information estimators: MINE, MI-NEE, InfoNCE, NWJ and SMILE.

Each recipe is ``fit(x, y)`` -> ``estimate()`` (an :class:`MIEstimate`: a float in nats, or
``units="bits"``, with its half-sampling interval), ``history_``, ``plot()``, ``save`` / ``load``.
The routine is data (``to_dict(full=True)``), assembled from registry slots that a plugin can
fill by name from TOML:

- ``globals.train_index`` / ``test_index`` — the held-out split (``random_split``);
- ``models.main`` — the critic (``joint_critic`` / ``separable_critic``; MI-NEE adds
  ``critic_x`` / ``critic_y``);
- ``phases`` ``train``: ``sampler`` (the negative sampler: ``marginal_pairs``, ``all_pairs``,
  ``reference``), ``loss`` (the training bound), optimizer, and ``validation`` (held-out
  sampler and bound, metric ``mi``, maximised, best weights restored);
- ``evaluation.bound`` — the bound block of the final estimate, evaluated with its own
  ``bound(scores)`` over all off-diagonal pairs of ``evaluation.pairs`` (``index``: the global
  of the evaluation items, ``max_pairs``).

See ``docs/mi.md`` (the bounds, the measurements) and ``docs/plugins.md`` (the slots).
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import numpy as np
import torch

from infoblocks.blocks.assembly import ShortcutWarning, warn_once
from infoblocks.blocks.data import Dataset, intra_op_threads, resolve_device
from infoblocks.blocks.base import naming_blocks
from infoblocks.blocks.errors import ConfigError, NotFittedError, ValidationError
from infoblocks.blocks.mutual_information import MAX_PAIRS, split_sizes
from infoblocks.blocks.mutual_information.bounds import _optional_positive, _rate
from infoblocks.blocks.mutual_information.split import _fraction
from infoblocks.blocks.phases import _optimizer_name
from infoblocks.blocks.schedules import schedule_data, schedule_spec
from infoblocks.blocks.recipe import Recipe, transient_field
from infoblocks.blocks.routine import Routine
from infoblocks.blocks.validators import device as valid_device
from infoblocks.blocks.validators import (non_negative_int, one_of, positive, positive_int,
                                          positive_ints)
from infoblocks.plugins.registry import get_registry

# (the submodule first: ``from . import`` would ask the package's lazy __getattr__, which
# scans the recipes while this module is half-imported)
from .mi_evaluation import (SEED_PROBLEM_N, MIConvergenceWarning, MIEstimate, _complete,
                            _fields_of, _only_fields, _sampler_name, negative_sampler,
                            sampler_name, seed_problem)
from . import mi_evaluation as evaluation  # noqa: E402 - after the line above, on purpose
from . import mi_inputs as inputs  # noqa: E402

#: validation pairs per held-out item (a fixed set: epoch-to-epoch changes are the critic's)
VALIDATION_PAIRS_FACTOR = 10
#: ... but at most this many pairs (large held-out sets: validation must stay cheap)
VALIDATION_MAX_PAIRS = 10_000
#: the default ``validate_every`` with the fixed product-of-marginals validation pairs
MARGINAL_VALIDATE_EVERY = 5
#: MI-NEE validation: reference draws per held-out item (three critics see them: kept small)
VALIDATION_REFERENCE_FACTOR = 4
#: an InfoNCE estimate above this fraction of log(batch_size), the cap of the bound on a
#: training batch, is reported: the critic's training signal saturates there (the final
#: estimate's own cap, log of the items in a row, is checked by check_final_estimate)
INFONCE_CAP_WARNING = 0.8
#: the ``critic`` shortcut: joint MLP([x, y]), separable h(x)ᵀg(y), linear xᵀWy + aᵀx + bᵀy
CRITICS = ("joint", "separable", "linear")
#: where a critic of one's own goes (the `critic` shortcut chooses among the built-ins)
OWN_CRITIC = ("A critic of your own (a registered model) goes in its section, not in "
              "`critic`: `[models.main] name = \"{value}\"`.")


def _loss_class(spec: Any) -> type | None:
    """The registered loss class ``spec`` (a name or table) names, or None."""
    name = spec.get("name") if isinstance(spec, dict) else spec
    if not isinstance(name, str) or ("loss", name) not in get_registry():
        return None
    return get_registry().get("loss", name)


def _is_bound(spec: Any) -> bool:
    """``spec`` (a name or table) names a registered bound block (one with ``bound(scores)``)."""
    return callable(getattr(_loss_class(spec), "bound", None))


def _with_fields(spec: Any, **values: Any) -> dict[str, Any]:
    """A copy of the block spec ``spec`` with ``values`` for the fields its block has."""
    table = copy.deepcopy(spec) if isinstance(spec, dict) else {"name": spec}
    fields = _fields_of("loss", table["name"]) or set()
    return {**table, **{k: v for k, v in values.items() if k in fields}}


def _two_or_more(instance: Any, attribute: Any, value: Any) -> None:
    if value < 2:  # (one subsample gives an interval of zero width: a false certainty)
        raise ValidationError(f"`{attribute.name}` must be at least 2 (the interval is the "
                              f"spread of the subsamples' values), got {value!r}.")


@attrs.define(kw_only=True)
class NeuralMIEstimator(Recipe):
    """Shared base of the neural MI recipes (not registered: it has no ``name``).

    Subclasses set the registry names of their default bound blocks: ``training_bound``,
    ``validation_bound`` and ``final_bound`` (a shortcut such as ``ma_rate`` or ``clip`` is
    passed to the blocks that have that field).
    """

    #: the arrays of `infoblocks run` in order (an .npz named after them is reordered)
    run_inputs: ClassVar[tuple[str, ...]] = ("x", "y")

    evaluation_kinds: ClassVar[dict[str, str]] = {"bound": "loss"}
    #: read again by a warm fit: the interval's subsamples (``estimate``), ``run``'s split
    warm_fit_reads: ClassVar[frozenset[str]] = frozenset({"n_subsamples", "split_at"})
    training_bound: ClassVar[str] = ""
    validation_bound: ClassVar[str] = ""
    final_bound: ClassVar[str] = "dv"
    #: the full form writes every block's defaults (every knob; :attr:`Recipe.full_defaults`)
    full_defaults: ClassVar[bool] = True
    #: keys of the ``evaluation.pairs`` table
    pair_keys: ClassVar[tuple[str, ...]] = ("index", "max_pairs")

    critic: str = attrs.field(default="joint", validator=one_of(*CRITICS, otherwise=OWN_CRITIC))
    hidden_dims: tuple[int, ...] = attrs.field(default=(100, 100), converter=tuple,
                                               validator=positive_ints)
    activation: str = "elu"
    embed_dim: int = attrs.field(default=32, validator=positive_int)
    init_std: float | None = None
    batch_size: int = attrs.field(default=100, validator=positive_int)
    epochs: int = attrs.field(default=400, validator=positive_int)
    batches_per_epoch: int | None = attrs.field(default=None, validator=optional(positive_int))
    learning_rate: float = attrs.field(default=1e-3, validator=positive)
    optimizer: str = attrs.field(default="adam", validator=_optimizer_name)  # any phase optimizer
    lr_schedule: str | dict[str, Any] = attrs.field(
        default="none", converter=schedule_data, validator=schedule_spec)
    grad_clip: float | None = None
    test_fraction: float = attrs.field(default=0.5, validator=_fraction)
    #: epochs without a better held-out bound before training stops (the best weights are
    #: restored); counted in epochs whatever ``validate_every`` is: ⌈patience / validate_every⌉
    #: validations
    patience: int | None = attrs.field(default=50, validator=optional(positive_int))
    #: the held-out bound every ``validate_every`` epochs; None: every 5th where it is read on
    #: the fixed product-of-marginals pairs (``negatives="marginal_pairs"``: MINE, NWJ, SMILE),
    #: whose network pass costs as much as an epoch of training steps — with the same 50-epoch
    #: patience, MINE's fits on benchmark-mi's tasks took 45 % less time at equal accuracy
    #: (docs/mi.md) — and every epoch otherwise (InfoNCE's in-batch validation is cheap and
    #: its best epochs come early; MI-NEE not measured)
    validate_every: int | None = attrs.field(default=None, validator=optional(positive_int))
    #: "rank": rank-Gaussian (copula) map per column — the estimate is invariant to monotone
    #: transforms of the marginals, as MI is (NWJ lost 36 % of the truth on y -> y³ with the
    #: moments, 0 with ranks; on Gaussian tasks the two agree within 0.006 nats, docs/mi.md);
    #: True: zero mean, unit variance; False: the raw values
    standardize: bool | str = attrs.field(default="rank",
                                          validator=inputs.check_standardize)
    #: the negative sampler: a registered sampler's name, or a table of it with its options
    #: (``{name = "...", option = ...}``; its options win over the recipe's settings)
    negatives: str | dict[str, Any] = attrs.field(default="marginal_pairs",
                                                  validator=_sampler_name)
    #: whether the bounds read reference draws (``x_reference``: MI-NEE); a sampler yielding
    #: them is refused by the others
    reads_reference: ClassVar[bool] = False
    marginal_factor: float = attrs.field(default=1.0, validator=positive)
    replacement: bool = False
    evaluate_on: str = attrs.field(default="test", validator=one_of("test", "all"))
    #: the final estimator's pair budget; None: 4·10⁶ for a critic with ``embed`` (separable,
    #: linear: a pair is a dot product), 5·10⁵ for the joint critic (a pair is a network call)
    max_pairs: int | None = attrs.field(default=None, validator=optional(positive_int))
    #: half-size subsamples (without replacement) behind ``estimate(ci=...)``'s interval
    n_subsamples: int = attrs.field(default=200, validator=[positive_int, _two_or_more])
    split_at: int | None = attrs.field(default=None, validator=optional(positive_int))
    seed: int = attrs.field(default=0, validator=non_negative_int)
    device: str = attrs.field(default="cpu", validator=valid_device)
    threads: int | None = attrs.field(default=1, validator=optional(positive_int))
    verbose: bool = False
    #: scikit-learn's convention: a second ``fit`` continues the trained critic, its optimizer
    #: and loss state (MINE's moving average) for ``epochs`` more epochs
    warm_start: bool = False
    critic_module: Any = transient_field(default=None)

    routine_: Routine | None = attrs.field(init=False, default=None, repr=False)
    history_: list[dict[str, Any]] | None = attrs.field(init=False, default=None, repr=False)
    estimate_nats_: float | None = attrs.field(init=False, default=None, repr=False)
    best_epoch_: int | None = attrs.field(init=False, default=None, repr=False)
    n_train_: int | None = attrs.field(init=False, default=None, repr=False)
    n_eval_: int | None = attrs.field(init=False, default=None, repr=False)
    scores_: Any = attrs.field(init=False, default=None, repr=False)
    bound_: Any = attrs.field(init=False, default=None, repr=False)
    x_scale_: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)
    y_scale_: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)
    intervals_: dict[float, tuple[float, float]] = attrs.field(init=False, factory=dict,
                                                               repr=False)
    #: the expanded routine spec of the last build (data-dependent context filled in)
    spec_: dict[str, Any] | None = attrs.field(init=False, default=None, repr=False)
    x_mean_: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)
    y_mean_: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)
    #: the maps from the data to the critic's inputs (standardisation or rank-Gaussian)
    x_transform_: Any = attrs.field(init=False, default=None, repr=False)
    y_transform_: Any = attrs.field(init=False, default=None, repr=False)
    #: fresh-sample mode (``fit(sampler=fn)``): fn, and the held-out share of the fixed draw
    sampler_: Any = attrs.field(init=False, default=None, repr=False)
    fresh_test_fraction_: float | None = attrs.field(init=False, default=None, repr=False)
    fresh_n_eval_: int | None = attrs.field(init=False, default=None, repr=False)

    # ------------------------------------------------------------------ the assembly

    def default_globals(self) -> dict[str, dict[str, Any]]:
        fraction = self.test_fraction if self.fresh_test_fraction_ is None \
            else self.fresh_test_fraction_
        split = {"name": "random_split", "test_fraction": fraction, "seed": self.seed}
        parts = ["train", "test"] + (["all"] if self.evaluate_on == "all" else [])
        return {f"{part}_index": {"input": "x", "relation": {**split, "part": part}}
                for part in parts}

    def default_models(self) -> dict[str, Any]:
        common = {"hidden_dims": list(self.hidden_dims), "activation": self.activation,
                  "init_std": self.init_std}
        if self.critic == "separable":
            return {"main": {"name": "separable_critic", "embed_dim": self.embed_dim, **common}}
        if self.critic == "linear" or not self.hidden_dims:
            # a joint MLP without hidden layers is linear in [x, y]: blind to any dependence
            # (its DV bound is <= 0); no hidden layers means the linear discriminator instead
            return {"main": {"name": "linear_critic", "init_std": self.init_std}}
        return {"main": {"name": "joint_critic", **common}}

    def bound_options(self) -> dict[str, Any]:
        """Shortcuts passed to every bound block that has the field (``ma_rate``, ``clip``)."""
        return {}

    def _bound(self, name: str, **fixed: Any) -> dict[str, Any]:
        return _only_fields("loss", {"name": name, **self.bound_options(), **fixed})

    def sampler_options(self) -> dict[str, Any]:
        """Shortcuts of the training sampler (kept where the named sampler has the field)."""
        return {"batch_size": self.batch_size, "batches_per_epoch": self.batches_per_epoch,
                "replacement": self.replacement, "marginal_factor": self.marginal_factor,
                "index_key": "train_index"}

    def validation_sampler(self) -> dict[str, Any]:
        """The held-out set: a fixed set of min(10 n_test, 10,000) product-of-marginals pairs,
        or fixed in-batch batches for other negative samplers."""
        fixed = {"index_key": "test_index", "fixed": True, "fixed_seed": self.seed}
        if sampler_name(self.negatives) == "marginal_pairs":
            return {"name": "marginal_pairs", "batch_size": None, "replacement": True,
                    "marginal_factor": VALIDATION_PAIRS_FACTOR,
                    "max_marginal": VALIDATION_MAX_PAIRS, **fixed}
        return negative_sampler(self.negatives, self, batch_size=self.batch_size, **fixed)

    def __attrs_post_init__(self) -> None:
        if self.validate_every is not None and self.test_fraction > 0 and \
                self.validate_every > self.epochs:
            raise ValidationError(
                f"`validate_every` = {self.validate_every} exceeds `epochs` = {self.epochs}: the "
                "held-out bound would be read once, at the last epoch, so early stopping "
                "(`patience`) and the restore of the best epoch could do nothing. Set "
                "validate_every ≤ epochs (= epochs: one validation, at the end).")

    def validation_interval(self) -> int:
        """Epochs between held-out evaluations: ``validate_every``, or by default
        :data:`MARGINAL_VALIDATE_EVERY` with the fixed product-of-marginals pairs, else 1."""
        if self.validate_every is not None:
            return self.validate_every
        return MARGINAL_VALIDATE_EVERY if sampler_name(self.negatives) == "marginal_pairs" else 1

    def default_phases(self) -> list[dict[str, Any]]:
        phase: dict[str, Any] = {
            "name": "train", "epochs": self.epochs,
            "sampler": negative_sampler(self.negatives, self, **self.sampler_options()),
            "loss": self._bound(self.training_bound), "optimizer": self.optimizer,
            "learning_rate": self.learning_rate, "lr_schedule": self.lr_schedule,
            "grad_clip": self.grad_clip, "restore_best": True,
            # torch's fused Adam kernel where the optimizer is torch's Adam / AdamW
            "optimizer_options": {"fused": True} if self.optimizer.lower() in ("adam", "adamw")
            else {}}
        if self.test_fraction > 0:
            every = self.validation_interval()
            # the engine counts validations; ``patience`` counts epochs
            phase["patience"] = None if self.patience is None else -(-self.patience // every)
            phase["validation"] = {"sampler": self.validation_sampler(),
                                   "loss": self._bound(self.validation_bound, ma_rate=1.0),
                                   "metric": "mi", "mode": "max", "every": every}
        return [phase]

    def routine_spec(self) -> dict[str, Any]:
        """The expanded routine; a bound put in ``phases.train.loss`` is also the validation's
        and the final estimate's where the recipe's default there is its training bound (NWJ,
        InfoNCE, SMILE; MI-NEE's validation) and the sections give them none of their own — in
        the spec, so the saved and printed routine is the one that runs. (author24-2: NWJ
        trained with another bound validated and estimated with nwj_loss, no message.)"""
        spec = super().routine_spec()
        self._place_embed_dim(spec)
        given = {p.get("name"): p for p in self.phases or [] if isinstance(p, dict)}
        own = given.get("train", {})
        trained = next((p.get("loss") for p in spec["phases"] if p.get("name") == "train"), None)
        if "loss" not in own or not _is_bound(trained):
            return spec
        validation = next(p.get("validation") for p in spec["phases"] if p.get("name") == "train")
        own_validation = own.get("validation")
        if self.validation_bound == self.training_bound and isinstance(validation, dict) and \
                not (isinstance(own_validation, dict) and "loss" in own_validation):
            # the held-out bound of one fixed set: no moving average across its batches
            validation["loss"] = _with_fields(trained, ma_rate=1.0)
        own_evaluation = self.evaluation if isinstance(self.evaluation, dict) else {}
        if self.final_bound == self.training_bound and "bound" not in own_evaluation and \
                isinstance(spec.get("evaluation"), dict):
            spec["evaluation"]["bound"] = _with_fields(trained)  # (a table, as the default)
        return spec

    def _place_embed_dim(self, spec: dict[str, Any]) -> None:
        """``embed_dim`` set where the default critic has no such field (joint, linear): the
        sections carry a shortcut only into a block that replaces a default block holding it,
        so here a critic of one's own in ``models.main`` with the field gets it (its table
        wins), and a critic without it is a :class:`ShortcutWarning` (author24-7: NWJ's
        ``embed_dim = 8`` changed nothing, silently, while ``activation`` warned)."""
        fields = attrs.fields_dict(type(self))
        if self.embed_dim == fields["embed_dim"].default or self.critic_module is not None:
            return  # the default, or a critic module from Python
        # the critic of the recipe's defaults has the field: the sections carry the shortcut
        # (and warn where `critic` or `hidden_dims` chose a critic without it)
        plain = attrs.evolve(self, critic=fields["critic"].default,
                             hidden_dims=fields["hidden_dims"].default)
        if "embed_dim" in (plain.default_models().get("main") or {}):
            return
        main = spec["models"].get("main")
        name = main.get("name") if isinstance(main, dict) else main
        if "embed_dim" in (_fields_of("model", name) or ()):
            table = main if isinstance(main, dict) else {"name": name}
            if table.get("embed_dim", self.embed_dim) != self.embed_dim:
                raise ConfigError(
                    f"{self.name}: `embed_dim` = {self.embed_dim!r} and `models.main.embed_dim` "
                    f"= {table['embed_dim']!r} both set this value. Remove one of them (the "
                    f"shortcut `embed_dim` fills `models.main.embed_dim` of {name!r}).")
            spec["models"]["main"] = {**table, "embed_dim": self.embed_dim}
            return
        why = "" if self.critic != "joint" or name != "joint_critic" else \
            " (the joint critic scores MLP([x, y]): it has no embedding)"
        warn_once(self, ShortcutWarning(
            f"{self.name}: `embed_dim` = {self.embed_dim!r} reaches no block: `models.main` is "
            f"{name!r}, which has no field `embed_dim`{why}. Set critic = \"separable\" (h(x)ᵀg(y) "
            "in embed_dim dimensions), a critic of your own with the field in [models.main], or "
            "remove `embed_dim`."), stacklevel=3)

    def _evaluation_index(self) -> str:
        if self.sampler_ is not None:  # fresh samples: the evaluation draw is never trained on
            return "train_index"
        return "all_index" if self.evaluate_on == "all" else "test_index"

    def default_evaluation(self) -> dict[str, Any]:
        index = self._evaluation_index()
        max_pairs = self.max_pairs
        rows = getattr(get_registry().get("loss", self.final_bound), "rows", False)
        if self.fresh_n_eval_ is not None and not rows:
            # a large draw: its size, not the pairs, sets the precision of a pair bound; a row
            # bound (InfoNCE) depends on the partners per row: it keeps the pair budget
            max_pairs = min(MAX_PAIRS if max_pairs is None else max_pairs,
                            inputs.FRESH_PAIRS_PER_ITEM * self.fresh_n_eval_)
        return {"bound": self._bound(self.final_bound),
                "pairs": {"index": index, "max_pairs": max_pairs}}

    # ------------------------------------------------------------------ building

    def model_context(self, name: str, x_dim: int, y_dim: int) -> dict[str, Any]:
        return {"x_dim": x_dim, "y_dim": y_dim}

    def _complete_phases(self, spec: dict[str, Any], n_test: int) -> None:
        for phase in spec["phases"]:
            if "sampler" in phase:
                phase["sampler"] = _complete(phase["sampler"], self.sampler_options())
            validation = phase.get("validation")
            if isinstance(validation, dict) and "sampler" in validation:
                sampler = _complete(validation["sampler"], {
                    "index_key": "test_index", "fixed": True, "fixed_seed": self.seed,
                    "batch_size": self.batch_size})
                size = sampler.get("batch_size") if isinstance(sampler, dict) else None
                if isinstance(size, int) and size > n_test > 0 and not sampler.get("replacement"):
                    sampler["batch_size"] = n_test
                validation["sampler"] = sampler

    def build(self, x: torch.Tensor, y: torch.Tensor, fresh: Any = None) -> Routine:
        """The routine on ``x`` (n, d_x), ``y`` (n, d_y): the globals (split), the critic
        model(s), the training phase with held-out validation, from :meth:`routine_spec`;
        ``fresh`` (``fit(sampler=fn)``) goes into the training sampler's spec."""
        spec = self.routine_spec()
        fraction = self.test_fraction if self.fresh_test_fraction_ is None \
            else self.fresh_test_fraction_
        _, n_test = split_sizes(len(x), fraction)
        self._complete_phases(spec, n_test)
        if fresh is not None:
            inputs.fresh_sampler_spec(self, spec, fresh)
        evaluation.check_pairs(self, spec["evaluation"].get("pairs"), self.pair_keys)
        if self.critic_module is not None:
            evaluation.check_critic_module(self.critic_module, x, y)
        models = {}
        for name in spec["models"]:
            context = self.model_context(name, x.shape[1], y.shape[1])
            models[name] = self.critic_module if name == "main" and \
                self.critic_module is not None else self.build_model(name, spec, **context)
        self.spec_ = spec
        global_relations = self.build_globals(spec)
        phases = evaluation.build_phases(self, spec)
        if not self.reads_reference:
            self._refuse_reference_samplers(phases[0])
        evaluation.refuse_ignored_negatives(self.name, phases[0], sampler_name(self.negatives))
        return Routine(dataset={"x": x, "y": y}, models=models,
                       global_relations=global_relations, phases=phases,
                       device=self.device, seed=self.seed, verbose=self.verbose)

    def _refuse_reference_samplers(self, phase: Any) -> None:
        """A sampler yielding MI-NEE's reference draws (``x_reference``) in a recipe whose
        bound reads none: the draws were ignored and the bound used the in-batch pairs, with no
        message (author19)."""
        for where, sampler in (("phases.train.sampler", phase.sampler),
                               ("phases.train.validation.sampler",
                                getattr(phase.validation, "sampler", None))):
            if "x_reference" not in getattr(getattr(sampler, "batch_type", None), "fields", ()):
                continue
            name = getattr(sampler, "name", type(sampler).__name__)
            key = "negatives" if sampler_name(self.negatives) == name else where
            raise ConfigError(
                f"{self.name}.{key}: the sampler {name!r} yields MI-NEE's reference draws "
                f"(x_reference, y_reference), which {type(self).__name__}'s bound never reads: "
                "it would score the in-batch pairs and ignore them. Use a negative sampler "
                "(\"marginal_pairs\", \"all_pairs\", or one yielding x_marginal / y_marginal; "
                "docs/mi.md, \"Negative samplers and their batches\"), or recipe = \"minee\" "
                "for an estimate against a reference.")

    # ------------------------------------------------------------------ fitting

    def fit(self, x: Any = None, y: Any = None, *, sampler: Any = None, n_eval: int | None = None,
            checkpoint: str | Path | None = None, resume: bool | str | Path = False
            ) -> NeuralMIEstimator:
        """Train the critic and compute the final estimate; returns ``self``.

        Data: ``x`` (n, d_x) and ``y`` (n, d_y) (1-D: one feature; a memory-mapped ``.npy`` or
        a torch ``Dataset`` is read by the rows each batch needs), or fresh samples:
        ``sampler=fn``, ``fn(generator, n) -> (x, y)`` (a torch generator, the number of
        pairs): every epoch trains on a new draw, validation and the final estimate use one
        fixed draw of ``n_eval`` pairs (default 10,000) plus a validation draw.
        ``checkpoint=DIR`` writes the whole training state; ``resume=True`` (or ``resume=DIR``)
        continues a killed run from it.  With ``warm_start=True`` a second ``fit`` on data of
        the same shape continues the trained critic (weights, optimizer, moving average)."""
        fresh = sampler is not None
        if fresh:
            if x is not None or y is not None:
                raise ValidationError("Pass either the data `x`, `y` or a fresh-sample `sampler`, "
                                      "not both.")
            x, y, fraction, n_eval = inputs.fresh_draw(self, sampler, n_eval)
        elif x is None or y is None:
            raise ValidationError(f"`{'x' if x is None else 'y'}` is None: fit needs the paired "
                                  "samples `x` and `y` (or `sampler=fn(generator, n) -> (x, y)` "
                                  "for fresh samples).")
        elif n_eval is not None:
            raise ValidationError("`n_eval` sizes the evaluation draw of a fresh-sample `sampler`;"
                                  " with data `x`, `y` leave it out.")
        x, y = inputs.validate_input(self, x, y, fresh=fresh)
        resolve_device(self.device)
        warm = self.warm_start and self.routine_ is not None
        if warm:
            inputs.check_warm_start(self, x, y, fresh)
        else:
            self.sampler_ = sampler
            self.fresh_test_fraction_ = fraction if fresh else None
            self.fresh_n_eval_ = n_eval if fresh else None
        with intra_op_threads(self.threads):  # small critics: one thread is fastest (docs/mi.md)
            return self._fit(x, y, sampler, warm, checkpoint, resume)

    def _fit(self, x: Any, y: Any, sampler: Any, warm: bool, checkpoint: Any, resume: Any
             ) -> NeuralMIEstimator:
        if not warm:
            self.x_mean_, self.x_scale_, self.x_transform_ = inputs.scaling(
                x, "x", self.standardize, self.seed)
            self.y_mean_, self.y_scale_, self.y_transform_ = inputs.scaling(
                y, "y", self.standardize, self.seed)
        x = inputs.standardized(x, self.x_transform_)
        y = inputs.standardized(y, self.y_transform_)
        if warm:
            routine = self.routine_
            routine.dataset = Dataset(x=x, y=y)
            routine.state.dataset = routine.dataset.to(routine.device)
        else:
            routine = self.build(x, y, fresh=sampler)
        if sampler is not None and warm:
            # a new source: the training sampler is rebuilt from its spec, not changed
            inputs.fresh_sampler_spec(self, self.spec_, sampler)
            routine.phases[0].sampler = get_registry().build(
                "sampler", self.spec_["phases"][0]["sampler"], path=f"{self.name}.phases.train")
        spec = self.spec_
        self.train_routine(routine, checkpoint=checkpoint, resume=resume, warm_start=warm)
        self.routine_, self.intervals_ = routine, {}
        self.history_ = [dict(row) for row in routine.history.rows]
        pairs = spec["evaluation"]["pairs"]
        index = evaluation.evaluation_index(routine, pairs)
        train_sampler = routine.phases[0].sampler
        if sampler is not None:  # fresh pairs drawn in all
            self.n_train_ = len(self.history_) * train_sampler.batch_size * \
                train_sampler.batches_per_epoch
        elif hasattr(train_sampler, "pool"):
            self.n_train_ = int(train_sampler.pool(routine.state).numel())
        else:  # a sampler of another base: the training split it draws from
            split = routine.state.globals.get("train_index")
            self.n_train_ = int(split.numel()) if isinstance(split, torch.Tensor) else None
        self.n_eval_ = int(index.numel())
        self.bound_ = self.build_evaluation("bound", spec)
        device = routine.device
        with naming_blocks(f"{self.name}.evaluation"):  # a plugin bound / critic that raises
            self._final_estimate(routine, x[index].to(device), y[index].to(device), pairs)
        evaluation.diagnose(self)
        return self

    def _final_estimate(self, routine: Routine, x: torch.Tensor, y: torch.Tensor,
                        pairs: dict[str, Any]) -> None:
        evaluation.pair_estimate(self, routine.models["main"], x, y, pairs, dist=routine.dist)

    def _interval(self, level: float) -> tuple[float, float]:
        return evaluation.pair_interval(self, level)

    # ------------------------------------------------------------------ results

    def estimate(self, units: str = "nats", ci: float = 0.95) -> MIEstimate:
        """The final estimate in ``units`` ("nats" or "bits"), always an :class:`MIEstimate`:
        a ``float`` with its interval at level ``ci`` (``.low``, ``.high``): the sampling
        uncertainty of the evaluation items, the critic held fixed, from ``n_subsamples``
        half-size subsets drawn without replacement (:meth:`PairScores.interval`); it always
        contains the estimate."""
        self._check_fitted()
        scale = evaluation.units_scale(units)
        if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < ci < 1:
            raise ValidationError(f"`ci` must be a level in (0, 1), e.g. 0.95, got {ci!r}.")
        if ci not in self.intervals_:
            self.intervals_[ci] = self._interval(float(ci))
        low, high = self.intervals_[ci]
        return MIEstimate(self.estimate_nats_ * scale, low * scale, high * scale, float(ci),
                          units)

    def plot(self, truth: float | None = None, path: str | Path | None = None) -> Any:
        """Training curve: the batch and held-out estimates per epoch, the final estimate and,
        when given, the true value (nats).  Returns the matplotlib Figure; writes a PNG to
        ``path`` when given."""
        self._check_fitted()
        return evaluation.plot_training(self, truth, path)

    def plot_critic(self, path: str | Path | None = None, resolution: int = 120,
                    max_points: int = 1000) -> Any:
        """2-D problems (one column of x, one of y): the learned critic t(x, y) as a heat map
        over the data's range (in the data's units), with up to ``max_points`` samples on
        top — the notebook's figure.  Returns the Figure; writes a PNG to ``path``."""
        self._check_fitted()
        return evaluation.plot_critic(self, path, resolution, max_points)

    def plot_samples(self, path: str | Path | None = None, max_points: int = 1000) -> Any:
        """2-D problems: the joint sample (x_i, y_i) beside the product-of-marginals sample
        (x_i, y_π(i)) that the critic learns to tell apart.  Returns the Figure."""
        self._check_fitted()
        return evaluation.plot_samples(self, path, max_points)

    def _check_fitted(self, attribute: str = "estimate_nats_") -> None:
        if getattr(self, attribute, None) is None:
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(x, y) "
                                 "first.")

    def summary_dict(self) -> dict[str, Any]:
        """JSON-able numbers of the fit."""
        interval = self.estimate(ci=0.95)
        return {"recipe": self.name, "estimate_nats": float(interval),
                "estimate_bits": float(self.estimate(units="bits")),
                "ci95_nats": [interval.low, interval.high], "n_train": self.n_train_,
                "n_eval": self.n_eval_, "best_epoch": self.best_epoch_,
                "epochs_run": len(self.history_)}

    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator into directory ``path``: the routine (critic weights,
        history) with ``to_dict(full=True)`` and the results, and the final scores."""
        self._check_fitted()
        return evaluation.save_estimator(self, path)

    @classmethod
    def load(cls, path: str | Path, critic_module: torch.nn.Module | None = None,
             device: str = "cpu") -> NeuralMIEstimator:
        """An estimator saved with :meth:`save`; ``estimate()``, ``plot()`` and ``routine_``
        work (pass ``critic_module`` again when it was a custom module)."""
        return evaluation.load_estimator(cls, path, critic_module, device)

    # ------------------------------------------------------------------ command line / demo

    def run(self, data: list[np.ndarray], out_dir: Path, **fit_options: Any) -> dict[str, Any]:
        """``infoblocks run``: ``--data X.npy --data Y.npy`` (memory-mapped, read by rows; or
        one array split at column ``split_at``); ``fit_options`` (``checkpoint``, ``resume``)
        go to :meth:`fit`; saves the estimator, ``mi_training.png`` and returns the summary."""
        return evaluation.run_cli(self, data, out_dir, **fit_options)

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """The seed problem (2-D Gaussian, ρ = 1 − 0.19·U, n = 1000) for seeds 0, 1, 2 (seed 0
        only when ``quick``); writes ``mi_<name>_demo.png``; returns truths and estimates."""
        return evaluation.demo_runs(cls, out_dir, quick)


# ====================================================================== the recipes


@attrs.define(kw_only=True)
class MINE(NeuralMIEstimator):
    """MINE: Donsker–Varadhan bound with the moving-average gradient correction.

    I ≥ E_P[t] − log E_{P_X×P_Y}[e^t]; product-of-marginals pairs by index resampling; the
    moving average of E[e^t] is kept in the log domain by the ``mine_loss`` block
    (``ma_rate`` weights the newest batch); validation and the final estimate use ``dv``.
    """

    name: ClassVar[str] = "mine"
    summary: ClassVar[str] = "MINE: Donsker-Varadhan mutual-information estimate (nats)"
    training_bound: ClassVar[str] = "mine_loss"
    validation_bound: ClassVar[str] = "dv"
    final_bound: ClassVar[str] = "dv"
    #: "notebook": the MINE notebook's budget (no held-out set, 100 epochs × 10 batches,
    #: N(0, 0.02²) weights) — for comparisons, not the better estimate
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "notebook": {"init_std": 0.02, "epochs": 100, "batches_per_epoch": 10,
                     "test_fraction": 0.0, "patience": None, "ma_init": 1.0}}
    #: ``infoblocks demo mi-sweep`` (every estimator against the truth over ρ)
    extra_demos: ClassVar[dict[str, tuple[str, str]]] = {
        "mi-sweep": ("demo_sweep", "every MI estimator vs the truth over rho, fresh samples")}
    ma_rate: float = attrs.field(default=0.01, validator=_rate)
    #: the moving average before the first batch (None: the first batch's; notebook: 1.0)
    ma_init: float | None = attrs.field(default=None, validator=_optional_positive)

    def bound_options(self):
        return {"ma_rate": self.ma_rate,
                **({} if self.ma_init is None else {"ma_init": self.ma_init})}

    @classmethod
    def demo_sweep(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """Every MI recipe on fresh samples of the 1-D correlated Gaussian for ρ = 0, 0.2, …,
        0.8, 0.9, 0.99 (three ρ and a short budget when ``quick``): ``mi_sweep.png``, one
        panel per estimator (:func:`~infoblocks.recipes.mi_problems.mi_sweep`)."""
        from .mi_problems import mi_sweep

        return mi_sweep(out_dir, quick=quick)


@attrs.define(kw_only=True)
class NWJ(NeuralMIEstimator):
    """NWJ: I ≥ E_P[t] − e^{−1} E_{P_X×P_Y}[e^t] (unbiased gradients, higher variance)."""

    name: ClassVar[str] = "nwj"
    summary: ClassVar[str] = "NWJ: f-divergence mutual-information estimate (nats)"
    training_bound: ClassVar[str] = "nwj_loss"
    validation_bound: ClassVar[str] = "nwj_loss"
    final_bound: ClassVar[str] = "nwj_loss"


@attrs.define(kw_only=True)
class InfoNCE(NeuralMIEstimator):
    """InfoNCE: contrastive bound over in-batch negatives; on a training batch capped at
    log(batch_size), the final estimate at log of the items in a row (log n_eval for all
    pairs)."""

    name: ClassVar[str] = "infonce"
    summary: ClassVar[str] = "InfoNCE: contrastive mutual-information estimate, <= log(batch)"
    training_bound: ClassVar[str] = "infonce_loss"
    validation_bound: ClassVar[str] = "infonce_loss"
    final_bound: ClassVar[str] = "infonce_loss"
    critic: str = attrs.field(default="separable",
                              validator=one_of(*CRITICS, otherwise=OWN_CRITIC))
    batch_size: int = attrs.field(default=128, validator=positive_int)
    negatives: str | dict[str, Any] = attrs.field(default="all_pairs", validator=_sampler_name)

    def fit(self, x=None, y=None, **options):
        super().fit(x, y, **options)
        cap, value = math.log(self.batch_size), self.estimate_nats_
        # (near the final estimate's own cap, check_final_estimate has said so: not twice)
        if value > INFONCE_CAP_WARNING * cap and not evaluation.near_cap(self):
            warnings.warn(
                f"InfoNCE: the estimate {value:.3f} nats is "
                f"{'above' if value > cap else 'close to'} log(batch_size) = {cap:.3f}, the "
                f"cap of the bound on a training batch of {self.batch_size} (the estimate itself, "
                f"{evaluation.estimate_cap(self)[1]}, is not held to it): the critic's training "
                "signal saturates there and the true MI may be larger. Increase `batch_size` or "
                "use MINE / SMILE.", MIConvergenceWarning, stacklevel=2)
        return self


@attrs.define(kw_only=True)
class SMILE(NeuralMIEstimator):
    """SMILE: DV with the partition term clipped to [e^{−τ}, e^{τ}], trained with the JS
    gradient; ``clip`` = τ (passed to the training, validation and final bound blocks)."""

    name: ClassVar[str] = "smile"
    summary: ClassVar[str] = "SMILE: clipped Donsker-Varadhan mutual-information estimate (nats)"
    training_bound: ClassVar[str] = "smile_loss"
    validation_bound: ClassVar[str] = "smile_loss"
    final_bound: ClassVar[str] = "smile_loss"
    clip: float = attrs.field(default=5.0, validator=positive)

    def bound_options(self):
        return {"clip": self.clip}


#: sampler fields that set how a pass draws (its split, batches, draws per row), not the
#: reference P' itself: the validation sampler keeps its own
_PASS_KEYS = ("index_key", "fixed", "fixed_seed", "batch_size", "batches_per_epoch",
              "replacement", "reference_factor", "max_reference")


#: reference pairs drawn from each fitted sampler to compare their P'
CHECK_REFERENCE_DRAWS = 64


def _check_one_reference(samplers: list[Any], device: torch.device) -> None:
    """MI-NEE's training and validation samplers (those with ``fit_reference``, fitted to the
    same rows) must draw from one reference P': the same fields but :data:`_PASS_KEYS` and,
    for two different blocks, the same :data:`CHECK_REFERENCE_DRAWS` pairs from one seed.
    Otherwise the critics learn log p / p'_train and are selected on draws of
    p'_validation, a silently wrong estimate: :class:`ConfigError` naming both."""
    if len(samplers) < 2:
        return
    train, validation = ({k: v for k, v in s.describe().items()
                          if k not in _PASS_KEYS and k not in ("name", "simulator")}
                         for s in samplers)
    same = train == validation
    if same and type(samplers[0]) is not type(samplers[1]):  # (a subclass of the other?)
        draws = [s.draw(CHECK_REFERENCE_DRAWS, torch.Generator(device).manual_seed(0), device)
                 for s in samplers]
        same = all(a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
                   for a, b in zip(*draws))
    if not same:
        names = [getattr(s, "name", type(s).__name__) for s in samplers]
        raise ConfigError(
            f"minee: phases.train.sampler {names[0]!r} ({train}) and "
            f"phases.train.validation.sampler {names[1]!r} ({validation}) draw from different "
            "references P'; MI-NEE's divergences must share one, or the held-out bound selects "
            "the epoch on another reference than the critics learnt. Give the validation the "
            "same sampler and reference options (it may differ in "
            f"{', '.join(_PASS_KEYS)}), or leave it out (it then follows "
            "phases.train.sampler), or set `negatives = ...` for both.")


@attrs.define(kw_only=True)
class MINEE(NeuralMIEstimator):
    """MI-NEE: I = D(P_XY‖P_X'×P_Y') − D(P_X‖P_X') − D(P_Y‖P_Y') against i.i.d. draws from a
    known reference (``"gaussian"``: the data's mean and covariance per variable, or
    ``"uniform"``: its bounding box); three critics (``main``, ``critic_x``, ``critic_y``).
    Also estimates the entropies h(X) = h(P_X') − D(P_X‖P_X') (in the units of the input,
    standardisation undone) with ``standardize=True``; with the default ranks ``entropies_``
    holds None (the normal scores' entropies say nothing of the data's).
    ``evaluation.bound`` evaluates each divergence;
    ``evaluation.pairs`` holds ``index``, ``reference_factor`` (20 draws per item) and
    ``min_reference`` (20,000)."""

    name: ClassVar[str] = "minee"
    summary: ClassVar[str] = "MI-NEE: mutual information from three reference divergences (nats)"
    training_bound: ClassVar[str] = "minee_loss"
    validation_bound: ClassVar[str] = "minee_loss"
    final_bound: ClassVar[str] = "dv"
    reads_reference: ClassVar[bool] = True
    pair_keys: ClassVar[tuple[str, ...]] = ("index", "reference_factor", "min_reference")
    negatives: str | dict[str, Any] = attrs.field(default="reference", validator=_sampler_name)
    reference: str = attrs.field(default="gaussian", validator=one_of("gaussian", "uniform"))
    # measured on R⁶ (truth 4.98): ma_rate 1 / factor 1 / patience 50 stop at 0.37× the truth,
    # the moving average + 4 reference draws per row + patience 100 reach 1.00× (docs/mi.md)
    reference_factor: float = attrs.field(default=4.0, validator=positive)
    ma_rate: float = attrs.field(default=0.01, validator=_rate)
    patience: int | None = attrs.field(default=100, validator=optional(positive_int))
    reference_fn: Any = transient_field(default=None)
    #: ranks, as every MI estimator: an estimate unchanged by a monotone map of a marginal
    #: (author27-3: benchmark-mi's half-cube 0.786 with the moments, 1.066 with ranks, truth
    #: 1.116; Gaussian rows as good or better, docs/mi.md).  The entropies are reported in
    #: the data's units with ``standardize=True`` only (with ranks they are None)
    standardize: bool | str = attrs.field(default="rank", validator=inputs.check_standardize)

    divergences_: dict[str, float] | None = attrs.field(init=False, default=None, repr=False)
    entropies_: dict[str, float | None] | None = attrs.field(init=False, default=None,
                                                             repr=False)

    def default_models(self):
        marginal = {"name": "mlp", "out_dim": 1, "hidden_dims": list(self.hidden_dims),
                    "activation": self.activation}
        return {**super().default_models(), "critic_x": dict(marginal), "critic_y": marginal}

    def model_context(self, name, x_dim, y_dim):
        return {"critic_x": {"in_dim": x_dim}, "critic_y": {"in_dim": y_dim}}.get(
            name, {"x_dim": x_dim, "y_dim": y_dim})

    def bound_options(self):
        return {"ma_rate": self.ma_rate}

    def sampler_options(self):
        return {**super().sampler_options(), "reference": self.reference,
                "reference_factor": self.reference_factor}

    def default_phases(self):
        phases = super().default_phases()
        for phase in phases:  # select on the sum of the critics' bounds, not on I (docs/mi.md)
            loss = (phase.get("validation") or {}).get("loss")
            if (loss.get("name") if isinstance(loss, dict) else loss) == self.validation_bound:
                phase["validation"]["metric"] = "d_sum"
        return phases

    def validation_sampler(self):
        if sampler_name(self.negatives) != "reference":
            return super().validation_sampler()
        # a table's own P' (`reference`, `margin`) holds in validation too: one reference
        options = {k: v for k, v in self.negatives.items() if k in ("reference", "margin")} \
            if isinstance(self.negatives, dict) else {}
        return {"name": "reference", "batch_size": None, "reference": self.reference,
                "reference_factor": VALIDATION_REFERENCE_FACTOR,
                "max_reference": VALIDATION_MAX_PAIRS, "index_key": "test_index",
                "fixed": True, "fixed_seed": self.seed, **options}

    def routine_spec(self):
        """The expanded routine; a training sampler given in ``phases`` (not through
        ``negatives``) is also the validation's, as the shortcut makes it, unless the phase
        gives its validation a sampler of its own — so that every divergence uses one
        reference (a plugin reference sampler in the train phase alone was validated against
        the built-in `reference`'s P': epoch 0 selected, 0.005 nats for a truth of 0.51)."""
        spec = super().routine_spec()
        given = {p.get("name"): p for p in self.phases or [] if isinstance(p, dict)}
        for phase in spec["phases"]:
            own = given.get(phase.get("name"), {})
            validation = phase.get("validation")
            own_validation = own.get("validation")
            if "sampler" not in own or not isinstance(validation, dict) or \
                    (isinstance(own_validation, dict) and "sampler" in own_validation):
                continue
            sampler = own["sampler"]
            table = {k: v for k, v in sampler.items() if k not in _PASS_KEYS} \
                if isinstance(sampler, dict) else sampler
            validation["sampler"] = attrs.evolve(self, negatives=table).validation_sampler()
        return spec

    def default_evaluation(self):
        index = "all_index" if self.evaluate_on == "all" else "test_index"
        return {"bound": self._bound(self.final_bound),
                "pairs": {"index": index, "reference_factor": evaluation.FINAL_REFERENCE_FACTOR,
                          "min_reference": evaluation.MIN_FINAL_REFERENCE}}

    def build(self, x, y, fresh=None):
        routine = super().build(x, y, fresh)
        self._refuse_row_bound(self.spec_["evaluation"].get("bound"))
        phase = routine.phases[0]
        missing = [m for m in ("fit_reference", "draw", "reference_entropies")
                   if not callable(getattr(phase.sampler, m, None))]
        yields = getattr(getattr(phase.sampler, "batch_type", None), "fields", ())
        if missing and "x_reference" in yields:  # (else the contract check names the field)
            raise ConfigError(
                f"minee.phases.train.sampler: MI-NEE's training sampler "
                f"{getattr(phase.sampler, 'name', phase.sampler)!r} has no "
                f"{', '.join(m + '(...)' for m in missing)}: the final estimate draws its "
                "reference pairs through them. Use the sampler \"reference\", or implement "
                "MI-NEE's reference protocol (docs/plugins.md, \"The batches of the MI "
                "samplers\").")
        # the final estimate reads all three critics: a training loss must train them all
        trains = getattr(phase.loss, "required_models", lambda: frozenset())()
        untrained = [m for m in ("critic_x", "critic_y") if m not in trains]
        if untrained:
            raise ConfigError(
                f"minee.phases.train.loss: {getattr(phase.loss, 'name', phase.loss)!r} trains "
                f"the model(s) {sorted(trains)}, but MI-NEE's estimate D_xy − D_x − D_y also "
                f"reads {untrained}, which nothing would train. Use a loss that trains the "
                "three critics (\"minee_loss\", or one of your own whose required_models() "
                "names main, critic_x and critic_y; docs/plugins.md, MI-NEE).")
        # one reference for every sampler (fitted to all data), so the divergences agree
        samplers = [s for s in (phase.sampler, getattr(phase.validation, "sampler", None))
                    if hasattr(s, "fit_reference")]
        if samplers:
            sample = inputs.in_memory_sample(x, y, self.seed)
            for sampler in samplers:
                sampler.fit_reference(*sample)
            _check_one_reference(samplers, sample[0].device)
        return routine

    def _refuse_row_bound(self, spec: Any) -> None:
        """A row bound (``rows = True``: InfoNCE's) in ``evaluation.bound``: MI-NEE scores each
        divergence against reference draws, which have no rows — refused before training
        (author24-3: the fit trained, then scores.py raised advising negatives = "all_pairs",
        which MI-NEE cannot take)."""
        if not getattr(_loss_class(spec), "rows", False):
            return
        name = spec.get("name") if isinstance(spec, dict) else spec
        raise ConfigError(
            f"minee.evaluation.bound: the bound {evaluation.block_label('loss', name)} has "
            "`rows = True` (each item scored against the other items of its batch), but MI-NEE "
            "scores each divergence, D(P_XY‖P_X'×P_Y'), D(P_X‖P_X'), D(P_Y‖P_Y'), against draws "
            "from its reference, which have no rows. Use a bound without `rows` (\"dv\", the "
            "default, \"nwj_loss\", \"smile_loss\", or one of yours).")

    def _complete_phases(self, spec, n_test):
        super()._complete_phases(spec, n_test)
        if self.reference_fn is None:
            return
        # a live ``reference_fn`` replaces the data form's string reference in the spec of
        # every sampler with a ``reference`` field, before the build
        for phase in spec["phases"]:
            for holder in (phase, phase.get("validation")):
                sampler = holder.get("sampler") if isinstance(holder, dict) else None
                if isinstance(sampler, dict) and "reference" in (
                        _fields_of("sampler", sampler.get("name")) or ()):
                    holder["sampler"] = {**sampler, "reference": self.reference_fn}

    def _final_estimate(self, routine, x, y, pairs):
        evaluation.minee_estimate(self, routine, x, y, pairs)

    def _interval(self, level):
        return evaluation.minee_interval(self, level)

    def summary_dict(self):
        return {**super().summary_dict(), "divergences_nats": self.divergences_,
                "entropies_nats": self.entropies_}


from .mi_problems import (CorrelatedGaussian, correlated_gaussian,  # noqa: E402 - public here too
                          dense_gaussian)
from .mi_crossfit import CrossFit, cross_fit  # noqa: E402 - public here too

__all__ = ["NeuralMIEstimator", "MINE", "MINEE", "InfoNCE", "NWJ", "SMILE", "MIEstimate",
           "MIConvergenceWarning", "seed_problem",
           "SEED_PROBLEM_N", "CorrelatedGaussian",
           "correlated_gaussian", "dense_gaussian", "CrossFit", "cross_fit"]
