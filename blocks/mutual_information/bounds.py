"""MI bounds: each defined once, as a function of critic scores, and used by the training
loss, the held-out validation and the final all-pairs estimate alike.

The bound protocol (what a bound block implements — :class:`MIBound` is the base):

* ``bound(scores) -> Tensor`` — **required.** The MI lower bound in nats, written only with the
  reductions of a scores object (``mean_joint``, ``mean_negatives``, ``log_mean_exp``,
  ``row_log_mean_exp``, ``mean_items``, ``joint``; see :mod:`.scores`).  It is what the loss
  reports as metric ``mi`` on every batch, what validation tracks (``val_mi``, maximised) and
  what the recipe's final estimate evaluates over all pairs of the held-out set, with bootstrap
  weights for the interval.  A bound written this way works in all three places unchanged.
* ``objective(scores, mi, state) -> Tensor | (Tensor, metrics)`` — optional: the scalar that
  training minimises (default ``−mi``); MINE's corrected gradient and SMILE's JS gradient live
  here.  Extra metrics are recorded beside ``mi``.
* ``on_phase_start(state)`` — optional: reset the block's own state (MINE's moving average).
* ``rows: ClassVar[bool]`` — True when the bound needs row-structured negatives (InfoNCE): it
  then scores all pairs of the joint batch and ignores explicit negative pairs (the MI recipes
  and InfoMax refuse a sampler yielding them beside such a bound: ``refuse_ignored_negatives``).
* ``hand_gradients(joint, negatives, grad_joint, grad_negatives, state) -> (value, mi,
  metrics)`` — optional, an optimisation: the training value (as ``objective`` returns it), the
  bound and the extra metrics, computed without autograd, with ∂value/∂joint and
  ∂value/∂negatives written into ``grad_joint`` / ``grad_negatives`` (tensors shaped as the
  scores).  Where the block's own class defines it, the batch holds
  explicit negative pairs (``x_all``, ``y_all``) and the critic offers ``hand_plan`` (a plain
  joint MLP, :class:`~.critics.JointCriticNet`), one training step runs no autograd graph: the
  critic's forward, this method and the critic's backward by hand (:mod:`.fast_mlp`), the
  gradients handed to the parameters by one node (:class:`~.fast_mlp.HandGradients`).  A
  subclass that does not define it (say, one that changes ``objective``) takes autograd's path.

Contract: consumes ``x``, ``y`` (+ ``x_marginal``, ``y_marginal`` or ``x_all``, ``y_all`` when
the sampler yields them: explicit negative pairs; without them the negatives are the
off-diagonal pairs of the batch); uses model ``critic`` (``"main"``); reports ``mi``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from ..base import not_implemented
from ..errors import ValidationError
from ..losses import Loss, LossOutput, get_model
from ..state import TrainState
from ..validators import positive
from .fast_mlp import HandGradients, hand_backward, hand_forward
from .scores import BatchScores, check_bound_value, critic_output, critic_pairwise

# ====================================================================== the bound functions


def dv_bound(s: Any) -> torch.Tensor:
    """Donsker–Varadhan: mean t(joint) − log mean e^{t(negatives)}."""
    return s.mean_joint() - s.log_mean_exp()


def nwj_bound(s: Any) -> torch.Tensor:
    """Nguyen–Wainwright–Jordan: mean t(joint) − e^{−1} mean e^{t(negatives)}."""
    return s.mean_joint() - torch.exp(s.log_mean_exp() - 1.0)


def smile_bound(s: Any, clip: float = 5.0) -> torch.Tensor:
    """SMILE: DV with the negatives' scores clipped to [−clip, clip]."""
    return s.mean_joint() - s.log_mean_exp(clip=clip)


def infonce_bound(s: Any) -> torch.Tensor:
    """InfoNCE: mean_i [t_ii − log mean_{j ∈ {i} ∪ negatives(i)} e^{t_ij}]  (≤ log of the row
    size)."""
    return s.mean_items(s.joint - s.row_log_mean_exp())


def js_value(s: Any) -> torch.Tensor:
    """The Jensen–Shannon (f-GAN) objective −mean softplus(−t(joint)) − mean softplus(t(neg));
    its optimal critic is log p/(p_X p_Y).  Not an MI bound: a training signal."""
    softplus = nn.functional.softplus
    return -s.mean_joint(lambda t: softplus(-t)) - s.mean_negatives(softplus)


#: name -> the one definition of each built-in bound (``PairScores.bound("dv")``)
BOUND_FUNCTIONS = {"dv": dv_bound, "nwj": nwj_bound, "infonce": infonce_bound,
                   "smile": smile_bound}


def _rate(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValidationError(
            f"`{attribute.name}` must be in (0, 1] (the weight of the newest batch in the moving "
            f"average; 1 = no averaging), got {value!r}.")


def _optional_positive(instance, attribute, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not 0 < value < math.inf):
        raise ValidationError(f"`{attribute.name}` must be a positive number or None, got "
                              f"{value!r}.")


def log_average_step(previous: torch.Tensor | None, current: torch.Tensor,
                     rate: float) -> torch.Tensor:
    """log of the moving average of e^{current}: logaddexp(log(1 − rate) + previous,
    log(rate) + current); ``previous`` None starts it at ``current`` (detached)."""
    current = current.detach()
    if previous is None or rate >= 1:
        return current
    return torch.logaddexp(previous + math.log1p(-rate), current + math.log(rate))


def _exp(x: float) -> float:
    """e^x as torch gives it: inf past float64's range (``math.exp`` raises there), so a critic
    that diverges meets the engine's NumericalError, not an OverflowError."""
    return math.exp(x) if x < 709.0 else math.inf


def _critic_slot(name: str, state: TrainState | None) -> str:
    """```models.main``` and, where the routine built it from a registered block, ``model
    'x' (plugin 'p')``: how a critic's shape error names it."""
    block = getattr(state, "model_blocks", {}).get(name) if state is not None else None
    if not isinstance(block, str):
        return f"`models.{name}`"
    plugin = ""
    try:
        from infoblocks.plugins.registry import get_registry

        entry = get_registry().entry("model", block)
        plugin = "" if entry.plugin == "builtin" else f" (plugin {entry.plugin!r})"
    except Exception:  # noqa: BLE001 - informative only
        pass
    return f"`models.{name}` = model {block!r}{plugin}"


# ====================================================================== the blocks


@attrs.define
class MIBound(Loss):
    """Base of the bounds on P_XY against P_X × P_Y (see the module docstring for the protocol).

    ``critic`` names the routine's critic model, called as ``critic(x, y) -> (n,)`` (and
    ``critic.pairwise(x, y) -> (n, m)`` when it has one, for in-batch negatives)."""

    consumes: ClassVar[frozenset[str]] = frozenset({"x", "y"})
    reports: ClassVar[frozenset[str]] = frozenset({"mi"})
    #: the bound needs row-structured (in-batch) negatives
    rows: ClassVar[bool] = False
    #: ``bound(scores)`` is unchanged when every score moves by one constant (DV, InfoNCE);
    #: False (NWJ, SMILE's clip): a critic needs a free constant — a critic without one
    #: (InfoMax's ``gaussian_channel_critic``) then gets a learnt offset
    shift_invariant: ClassVar[bool] = False
    critic: str = "main"

    def required_models(self) -> frozenset[str]:
        return frozenset({self.critic})

    def bound(self, scores: Any) -> torch.Tensor:
        raise not_implemented(self, "bound")

    def objective(self, scores: Any, mi: torch.Tensor, state: TrainState) -> Any:
        return -mi

    def scores(self, batch: dict[str, torch.Tensor], models: nn.ModuleDict,
               state: TrainState | None = None) -> BatchScores:
        """Critic scores of the batch: explicit negative pairs when the batch has them (one
        critic call on ``x_all``/``y_all`` when present), else all pairs of the batch.  A
        sharded batch (torch.distributed) holds this rank's rows and, for in-batch negatives,
        every column of the batch (``y_columns``, the joint column of each row in
        ``columns``); the reductions then run over the whole batch (:class:`BatchScores`)."""
        critic = get_model(models, self.critic)
        dist = None if state is None else state.dist
        x, y = batch["x"], batch["y"]
        if self.rows or "x_marginal" not in batch:
            if dist is not None and dist.active and "y_columns" not in batch:
                raise ValidationError(
                    f"Bound {getattr(self, 'name', type(self).__name__)!r} scores in-batch "
                    "negatives, which need every column of the batch under torch.distributed, "
                    "but the sampler's shard holds only its own pairs (no `y_columns`). A "
                    "sampler of your own: let its `shard` keep `y_columns` = every y of the "
                    "batch and `columns` = the joint column of each kept row (docs/plugins.md, "
                    "\"Under torchrun\" in the MI section); or use the built-in in-batch "
                    "sampler (negatives = \"all_pairs\").")
            matrix = critic_pairwise(critic, x, batch.get("y_columns", y),
                                     lambda: _critic_slot(self.critic, state))
            return BatchScores.from_matrix(matrix, batch.get("columns"), dist=dist)
        b = len(x)
        if "x_all" in batch:  # joint and negative rows already side by side
            x_all, y_all = batch["x_all"], batch["y_all"]
        else:
            x_all, y_all = torch.cat([x, batch["x_marginal"]]), torch.cat([y, batch["y_marginal"]])
        t = critic_output(critic, critic(x_all, y_all), (len(x_all),), "forward(x, y)",
                          lambda: _critic_slot(self.critic, state))
        # one backward node, not two slices; split_with_sizes skips Tensor.split's Python wrapper
        joint, negatives = t.split_with_sizes([b, len(t) - b])
        return BatchScores(joint, negatives, dist=dist)

    def __call__(self, batch, models, state):
        out = self._hand_call(batch, models, state)
        if out is not None:
            return out
        scores = self.scores(batch, models, state)
        mi = self.bound(scores)
        if not isinstance(mi, torch.Tensor) or mi.ndim:
            check_bound_value(self, mi, (), "a training or validation batch")
        out = self.objective(scores, mi, state)
        value, extra = out if isinstance(out, tuple) else (out, {})
        return LossOutput(value, {"mi": mi.detach(), **extra})

    def _hand_call(self, batch, models, state) -> LossOutput | None:
        """One training step's value with its gradients computed by hand (see the module
        docstring, ``hand_gradients``); None where autograd's path applies."""
        if "hand_gradients" not in type(self).__dict__ or self.rows or "x_all" not in batch \
                or "x_marginal" not in batch or not torch.is_grad_enabled() \
                or (state is not None and state.dist.active):
            return None
        x, y = batch["x_all"], batch["y_all"]
        hand_plan = getattr(get_model(models, self.critic), "hand_plan", None)
        found = None if hand_plan is None else hand_plan(x, y)
        if found is None:
            return None
        plan, params = found
        if plan.layers[-1][0].out_features != 1:
            return None
        b = len(batch["x"])
        torch._C._set_grad_enabled(False)  # (no context object: ~20 µs of a 0.5 ms step)
        try:
            t, saved = hand_forward(plan, params, torch.cat([x, y], -1))
            grad = torch.empty_like(t)
            sizes = [b, len(t) - b]
            value, mi, metrics = self.hand_gradients(*t.view(-1).split_with_sizes(sizes),
                                                     *grad.view(-1).split_with_sizes(sizes),
                                                     state)
            grads = hand_backward(plan, params, saved, grad)
        finally:
            torch._C._set_grad_enabled(True)
        pairs = [(p, g) for p, g in zip(params, grads) if p is not None]
        value = HandGradients.apply(value, [g for _, g in pairs], *[p for p, _ in pairs])
        return LossOutput(value, {"mi": mi, **metrics}, gradients=pairs)


@attrs.define
class DVLoss(MIBound):
    """Donsker–Varadhan bound, minimised as its negative.

    I ≥ E_P[t] − log E_{P_X×P_Y}[e^t];  L = −(mean t(joint) − logmeanexp t(negatives)).
    """

    name: ClassVar[str] = "dv"
    whole_batch: ClassVar[bool] = True
    shift_invariant: ClassVar[bool] = True

    def bound(self, scores):
        return dv_bound(scores)

    def hand_gradients(self, joint, negatives, grad_joint, grad_negatives, state):
        lse = torch.logsumexp(negatives, 0)
        mi = joint.mean() - (lse - math.log(negatives.numel()))
        grad_joint.fill_(-1.0 / joint.numel())
        torch.exp(negatives - lse, out=grad_negatives)
        return -mi, mi, {}


@attrs.define
class MINELoss(DVLoss):
    """DV bound with MINE's bias-corrected gradient, the moving average kept in the log domain.

    With a_j = logmeanexp t(negatives) of batch j, the moving average of E[e^t] is tracked as
    log m̄_j = logaddexp(log(1 − ma_rate) + log m̄_{j−1}, log(ma_rate) + a_j), log m̄_0 = a_0.
    **Convention:** ``ma_rate`` weights the *newest* batch (the notebook's β = 1 − ma_rate
    weights the old average); ``ma_init`` is m̄ before the first batch (the notebook's 1.0;
    None: the first batch's value).  Under torch.distributed a_j is the whole batch's (one
    reduction over the ranks), so the average is the same on every rank.
    Loss L_j = −mean t(joint) + exp(a_j − log m̄_j) with m̄ held constant: its gradient is
    −∇E_P[t] + ∇E_Q[e^t] / m̄_j, never an ``exp`` of a raw critic value.  Metric ``mi`` is
    the plain DV value of the batch (its bound is DV).  The average is this block's own
    attribute :attr:`log_average`, reset by :meth:`on_phase_start` and not
    updated without grad (validation).
    """

    name: ClassVar[str] = "mine_loss"
    ma_rate: float = attrs.field(default=0.01, validator=_rate)
    #: the average before the first batch, m̄_{−1} (None: start at the first batch's value,
    #: log m̄_0 = a_0; the MINE notebook starts at 1.0)
    ma_init: float | None = attrs.field(default=None, validator=_optional_positive)
    log_average: torch.Tensor | None = attrs.field(init=False, default=None, eq=False,
                                                   repr=False)

    def on_phase_start(self, state):
        self.log_average = None

    def checkpoint_state(self):
        return {} if self.log_average is None else {"log_average": self.log_average}

    def restore_state(self, saved):
        self.log_average = saved.get("log_average")

    def objective(self, scores, mi, state):
        current = scores.log_mean_exp()  # the whole batch's, on every rank (torch.distributed)
        previous = self.log_average
        if previous is None and self.ma_init is not None:
            previous = current.new_tensor(math.log(self.ma_init))
        log_ma = log_average_step(previous, current, self.ma_rate)
        if torch.is_grad_enabled():
            self.log_average = log_ma
        return torch.exp(current - log_ma) - scores.mean_joint()

    def hand_gradients(self, joint, negatives, grad_joint, grad_negatives, state):
        # the scalars on the host (one read each; a GPU would wait here, the hand path runs on
        # the CPU only): log m̄ as float64, e^{t − max} once for the bound and the gradient
        m = negatives.numel()
        top = float(negatives.max())
        shifted = torch.sub(negatives, top, out=grad_negatives).exp_()
        total = float(shifted.sum())
        current = math.log(total) + top - math.log(m)
        mean_joint = float(joint.mean())
        previous = self.log_average
        previous = (None if self.ma_init is None else math.log(self.ma_init)) \
            if previous is None else float(previous)
        if previous is None or self.ma_rate >= 1:
            log_ma = current
        else:
            a, c = previous + math.log1p(-self.ma_rate), current + math.log(self.ma_rate)
            log_ma = max(a, c) + math.log1p(math.exp(-abs(a - c)))
        self.log_average = torch.scalar_tensor(log_ma, dtype=negatives.dtype)
        ratio = _exp(current - log_ma)
        # ∂/∂t_i of exp(current − log m̄) = e^{t_i − log m̄} / m = e^{t_i − max} · ratio / total
        shifted.mul_(ratio / total)
        grad_joint.fill_(-1.0 / joint.numel())
        return (torch.scalar_tensor(ratio - mean_joint, dtype=joint.dtype),
                torch.scalar_tensor(mean_joint - current, dtype=joint.dtype), {})


@attrs.define
class NWJLoss(MIBound):
    """Nguyen–Wainwright–Jordan (f-divergence) bound, minimised as its negative.

    I ≥ E_P[t] − e^{−1} E_{P_X×P_Y}[e^t];  the optimal critic is 1 + log p/(p_X p_Y).
    Unbiased mini-batch gradients, higher variance than DV.
    """

    name: ClassVar[str] = "nwj_loss"
    whole_batch: ClassVar[bool] = True

    def bound(self, scores):
        return nwj_bound(scores)

    def hand_gradients(self, joint, negatives, grad_joint, grad_negatives, state):
        m = negatives.numel()
        lme = torch.logsumexp(negatives, 0) - math.log(m)
        mi = joint.mean() - torch.exp(lme - 1.0)
        grad_joint.fill_(-1.0 / joint.numel())
        torch.exp(negatives - (1.0 + math.log(m)), out=grad_negatives)
        return -mi, mi, {}


@attrs.define
class InfoNCELoss(MIBound):
    """InfoNCE (contrastive) bound on all pairs of the batch, minimised as its negative.

    I ≥ mean_i [t_ii − log( (1/b) Σ_j e^{t_ij} )]  over a ``(b, b)`` score matrix.  The bound
    can never exceed **log b**: with b = 100 no estimate passes 4.6 nats, whatever the truth.
    Low variance, large bias when I approaches log b; use a batch with log b ≫ I.  Explicit
    negative pairs in the batch are ignored (the bound needs rows).  Also reports
    ``log_batch_cap``.
    """

    name: ClassVar[str] = "infonce_loss"
    whole_batch: ClassVar[bool] = True
    shift_invariant: ClassVar[bool] = True
    reports: ClassVar[frozenset[str]] = frozenset({"mi", "log_batch_cap"})
    rows: ClassVar[bool] = True

    def bound(self, scores):
        return infonce_bound(scores)

    def objective(self, scores, mi, state):
        cap = torch.tensor(math.log(scores.matrix.shape[1]))
        return -mi, {"log_batch_cap": cap}


@attrs.define
class SMILELoss(MIBound):
    """SMILE: DV value with e^t clipped to [e^{−τ}, e^{τ}] in the partition term, trained with
    the Jensen–Shannon (f-GAN) gradient.

    bound = mean t(joint) − log mean e^{clip(t(negatives), −τ, τ)};  the returned loss is
    −JS + stop_gradient(JS − bound) (see :func:`js_value`), so its gradient is the JS one (whose
    optimal critic is log p/(p_X p_Y)) and its value the clipped DV estimate.  ``clip`` = τ;
    large τ approaches DV, small τ lowers the variance.  Also reports ``js``.
    """

    name: ClassVar[str] = "smile_loss"
    whole_batch: ClassVar[bool] = True
    reports: ClassVar[frozenset[str]] = frozenset({"mi", "js"})
    clip: float = attrs.field(default=5.0, validator=positive)

    def bound(self, scores):
        return smile_bound(scores, self.clip)

    def objective(self, scores, mi, state):
        js = js_value(scores)
        return -js - (mi - js).detach(), {"js": js.detach()}

    def hand_gradients(self, joint, negatives, grad_joint, grad_negatives, state):
        b, m = joint.numel(), negatives.numel()
        clipped = negatives.clamp(-self.clip, self.clip)
        mi = joint.mean() - (torch.logsumexp(clipped, 0) - math.log(m))
        softplus, slope = nn.functional.softplus, torch.ops.aten.softplus_backward
        js = -softplus(-joint).mean() - softplus(negatives).mean()
        # ∂(−JS)/∂t: −σ(−t)/b on the joint scores, σ(t)/m on the negatives (softplus's own
        # backward, as autograd: the slope is 1 past its threshold 20)
        grad_joint.copy_(slope(joint.new_full((b,), -1.0 / b), -joint, 1.0, 20.0))
        grad_negatives.copy_(slope(negatives.new_full((m,), 1.0 / m), negatives, 1.0, 20.0))
        return -js - (mi - js), mi, {"js": js}


__all__ = ["MIBound", "DVLoss", "MINELoss", "NWJLoss", "InfoNCELoss", "SMILELoss",
           "dv_bound", "nwj_bound", "smile_bound", "infonce_bound", "js_value",
           "log_average_step", "BOUND_FUNCTIONS"]
