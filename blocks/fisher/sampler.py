"""The simulation sampler: fiducial simulations and their θ-derivatives, one batch per epoch.

It yields :data:`~infoblocks.blocks.contracts.SIMULATIONS` batches:

* ``"fiducial"`` ``(n_s, *S)`` — simulations at ``θ_fid``, and either
* ``"derivative"`` ``(n_d, p, *S)`` — ``∂d/∂θ`` of the first ``n_d`` fiducial simulations, or
* ``"numerical_derivative"`` ``(n_d, 2, p, *S)`` plus ``"delta_theta"`` ``(p,)`` —
  seed-matched simulations at ``θ_fid − δθ_k/2`` (index 0) and ``θ_fid + δθ_k/2`` (index 1)
  along each parameter ``k``.

Its configuration (``theta_fid``, ``n_s`` ...) is data; its *source* — a simulator callable or
arrays — is not: the IMNN recipe hands it the data given to ``fit`` through
:meth:`SimulationSampler.with_source`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
import torch
import torch.autograd.forward_ad as fwAD

from ..contracts import SIMULATIONS, BatchType
from ..data import as_tensor
from ..errors import ValidationError
from ..samplers import Sampler
from ..state import TrainState
from ..validators import one_of
from .statistics import (DELTA_THETA, DERIVATIVE, DERIVATIVE_MODES, FIDUCIAL, NUMERICAL,
                         as_theta)

#: torch's DeprecationWarning when forward-mode AD first scripts its decompositions (torch 2.13)
JIT_SCRIPT_DEPRECATION = "`torch.jit.script` is deprecated"


def _optional_delta(value: Any) -> tuple[float, ...] | None:
    return None if value is None else as_theta(value, "delta_theta")


TRANSIENT = {"transient": True}

@attrs.define
class SimulationSampler(Sampler):
    """One batch per epoch: fiducial simulations and their θ-derivatives
    (:data:`~infoblocks.blocks.contracts.SIMULATIONS` batches, see the module docstring).

    Sources (exactly one, given at construction or through :meth:`with_source`; checked
    when the phase starts):

    * ``simulator(generator, theta)``: ``batched=True`` — theta ``(n, p)`` → ``(n, *S)`` (fast
      path, one call per pass); ``batched=False`` — theta ``(p,)`` → ``(*S)`` (one call per
      simulation).  ``derivative_mode="autograd"`` gives ∂d/∂θ by forward-mode AD through θ
      (one pass per parameter, the generator state replayed so each pass sees the same random
      numbers); ``"numerical"`` simulates seed-matched at θ_fid ∓ δθ/2 (``delta_theta``).
      ``fresh=True`` draws ``n_s`` (``n_d`` with derivatives) new simulations every epoch;
      ``False`` draws once in ``setup``.  ``seed`` gives the sampler its own generator (a
      fixed validation set drawn once).
    * arrays: ``fiducial`` ``(n_s, *S)`` with ``derivative`` ``(n_d, p, *S)`` (∂d/∂θ of the
      first n_d fiducial simulations), or ``numerical_derivative`` ``(n_d, 2, p, *S)`` with
      ``delta_theta``.

    ``flatten`` reshapes every simulation to a vector (the default summary network flattens
    its input itself, so the IMNN recipe leaves it off).
    """

    name: ClassVar[str] = "simulations"
    batch_type: ClassVar[BatchType] = SIMULATIONS
    theta_fid: tuple[float, ...] = attrs.field(converter=as_theta)
    simulator: Callable[..., torch.Tensor] | None = attrs.field(default=None, metadata=TRANSIENT)
    batched: bool = True
    derivative_mode: str = attrs.field(default="autograd", validator=one_of(*DERIVATIVE_MODES))
    fiducial: Any = attrs.field(default=None, metadata=TRANSIENT, repr=False)
    derivative: Any = attrs.field(default=None, metadata=TRANSIENT, repr=False)
    numerical_derivative: Any = attrs.field(default=None, metadata=TRANSIENT, repr=False)
    delta_theta: tuple[float, ...] | None = attrs.field(default=None, converter=_optional_delta)
    n_s: int = 1000
    n_d: int = 1000
    fresh: bool = True
    seed: int | None = None
    flatten: bool = False
    _fixed: dict[str, torch.Tensor] | None = attrs.field(init=False, default=None, repr=False,
                                                         eq=False)
    _n_draws: int = attrs.field(init=False, default=0, repr=False, eq=False)
    #: the shape of one simulation at the first simulator call: later calls must match it
    _shape: tuple[int, ...] | None = attrs.field(init=False, default=None, repr=False, eq=False)
    _generator: torch.Generator | None = attrs.field(init=False, default=None, repr=False,
                                                     eq=False)

    def __attrs_post_init__(self) -> None:
        p = self.n_params
        given = self.fiducial is not None
        if self.simulator is not None and given:
            raise ValidationError("Give either a `simulator` or `fiducial` arrays, not both.")
        if self.simulator is not None and not callable(self.simulator):
            raise ValidationError(f"`simulator` must be callable as simulator(generator, theta), "
                                  f"got {type(self.simulator).__name__}.")
        if self.numerical:
            if self.delta_theta is None or len(self.delta_theta) != p:
                raise ValidationError(
                    f"Numerical derivatives need `delta_theta` with one step per parameter "
                    f"({p}), got {self.delta_theta!r}.")
            if any(d <= 0 for d in self.delta_theta):
                raise ValidationError(f"`delta_theta` must be positive, got {self.delta_theta}.")
        for name in ("n_s", "n_d"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValidationError(f"`{name}` must be an integer ≥ 2, got {value!r}.")
        if given:
            if (self.derivative is None) == (self.numerical_derivative is None):
                raise ValidationError("With `fiducial` arrays give exactly one of `derivative` "
                                      "(n_d, p, ...) and `numerical_derivative` (n_d, 2, p, ...).")
            self._check_arrays()
        elif self.simulator is not None and self.n_d > self.n_s:
            raise ValidationError(f"`n_d` = {self.n_d} exceeds `n_s` = {self.n_s}: derivatives "
                                  "are taken of the first n_d fiducial simulations.")

    # ------------------------------------------------------------------ the source

    def with_source(self, *, simulator: Callable[..., torch.Tensor] | None = None,
                    fiducial: Any = None, derivative: Any = None,
                    numerical_derivative: Any = None) -> SimulationSampler:
        """This sampler with a new source of simulations (validated as in the constructor).

        The protocol the IMNN recipe uses to hand the data of ``fit`` to every sampler of its
        phases that defines it; a plugin sampler that draws from its own source need not."""
        return attrs.evolve(self, simulator=simulator, fiducial=fiducial, derivative=derivative,
                            numerical_derivative=numerical_derivative)

    @property
    def has_source(self) -> bool:
        return self.simulator is not None or self.fiducial is not None

    def batch_fields(self, state: TrainState) -> frozenset[str]:
        if self.numerical:
            return frozenset({FIDUCIAL, NUMERICAL, DELTA_THETA})
        return frozenset({FIDUCIAL, DERIVATIVE})

    @property
    def n_params(self) -> int:
        return len(self.theta_fid)

    @property
    def numerical(self) -> bool:
        if self.fiducial is not None:
            return self.numerical_derivative is not None
        return self.derivative_mode == "numerical"

    # ------------------------------------------------------------------ fixed arrays

    def _check_arrays(self) -> None:
        p = self.n_params
        fid = as_tensor(self.fiducial, "fiducial", ndim=None)
        if fid.ndim < 2:
            raise ValidationError(f"`fiducial` must have shape (n_s, ...) with at least 2 "
                                  f"dimensions, got {tuple(fid.shape)}.")
        shape = tuple(fid.shape[1:])
        arrays = {FIDUCIAL: fid}
        if self.derivative is not None:
            der = as_tensor(self.derivative, "derivative", ndim=None)
            want, key = (p, *shape), DERIVATIVE
        else:
            der = as_tensor(self.numerical_derivative, "numerical_derivative", ndim=None)
            want, key = (2, p, *shape), NUMERICAL
        if der.ndim != len(want) + 1 or tuple(der.shape[1:]) != want:
            layout = "(n_d, p, ...)" if key == DERIVATIVE else "(n_d, 2, p, ...)"
            raise ValidationError(
                f"`{key}` must have shape {layout} = (n_d, {', '.join(map(str, want))}) for "
                f"{p} parameter(s) and simulations of shape {shape}, got {tuple(der.shape)}.")
        if key == DERIVATIVE and der.shape[0] > fid.shape[0]:
            raise ValidationError(
                f"`derivative` has {der.shape[0]} rows but `fiducial` only {fid.shape[0]}: "
                "derivative[i] is ∂d/∂θ of fiducial[i], so n_d ≤ n_s.")
        if fid.shape[0] < 2 or der.shape[0] < 1:
            raise ValidationError(f"Need at least 2 fiducial simulations and 1 derivative, got "
                                  f"{fid.shape[0]} and {der.shape[0]}.")
        arrays[key] = der
        if key == NUMERICAL:
            arrays[DELTA_THETA] = torch.tensor(self.delta_theta)
        self._fixed = self._flattened(arrays)

    def _flattened(self, arrays: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.flatten:
            return arrays
        lead = {FIDUCIAL: 1, DERIVATIVE: 2, NUMERICAL: 3}
        return {k: v.reshape(*v.shape[:lead[k]], -1) if k in lead else v
                for k, v in arrays.items()}

    @property
    def simulation_shape(self) -> tuple[int, ...] | None:
        """Shape of one simulation as given (before ``flatten``), when known."""
        if self.fiducial is not None:
            return tuple(as_tensor(self.fiducial, "fiducial", ndim=None).shape[1:])
        return None

    # ------------------------------------------------------------------ simulator

    def _call(self, generator: torch.Generator, theta: torch.Tensor) -> torch.Tensor:
        """Simulations at parameter rows ``theta`` (n, p) -> (n, *S)."""
        try:
            if self.batched:
                out = self.simulator(generator, theta)
            else:  # slow path: one call per simulation
                out = torch.stack([torch.as_tensor(self.simulator(generator, t)) for t in theta])
        except ValidationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user function; report it with context
            how = "theta of shape (n, p)" if self.batched else "theta of shape (p,)"
            raise ValidationError(
                f"`simulator(generator, theta)` failed when called with {how}: "
                f"{type(exc).__name__}: {exc}. With batched=False it is called once per "
                "simulation.") from exc
        if isinstance(out, torch.Tensor) and out.ndim == 1 and out.shape[0] == theta.shape[0]:
            raise ValidationError(
                f"`simulator` returned shape {tuple(out.shape)}, one number per simulation "
                f"without a feature axis; return (n, 1) for n = {theta.shape[0]} rows of theta "
                "(e.g. `out.unsqueeze(1)`): one simulation per row, its values along the other "
                "axes.")
        if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != theta.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValidationError(
                f"`simulator` must return a tensor of shape (n, ...) with n = {theta.shape[0]} "
                f"rows of theta (batched={self.batched}), got {got}.")
        if self._shape is None:
            self._shape = tuple(out.shape[1:])
        elif tuple(out.shape[1:]) != self._shape:  # (torch's matrix error in the network)
            raise ValidationError(
                f"`simulator` returned simulations of shape {tuple(out.shape[1:])}, but its "
                f"first ones had shape {self._shape}: the summary network takes one shape; "
                "return the same shape for every call and every theta.")
        return out

    def _theta_rows(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.theta_fid, device=device).expand(n, -1).clone()

    def simulate(self, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        """Draw one set of simulations (and derivatives) with ``generator``."""
        start = generator.get_state()
        theta = self._theta_rows(self.n_d, device)
        batch: dict[str, torch.Tensor] = {}
        if self.numerical:
            delta = torch.tensor(self.delta_theta, device=device)
            sides = []
            for sign in (-0.5, 0.5):
                per_param = []
                for k in range(self.n_params):
                    generator.set_state(start)  # seed-matched with the fiducial rows
                    shifted = theta.clone()
                    shifted[:, k] += sign * delta[k]
                    per_param.append(self._call(generator, shifted))
                sides.append(torch.stack(per_param, 1))
            batch[NUMERICAL] = torch.stack(sides, 1).detach()  # (n_d, 2, p, *S)
            batch[DELTA_THETA] = delta
            generator.set_state(start)
            head = self._call(generator, theta).detach()
        else:
            tangents = []
            for k in range(self.n_params):
                generator.set_state(start)  # every pass replays the same random numbers
                direction = torch.zeros_like(theta)
                direction[:, k] = 1.0
                with fwAD.dual_level(), warnings.catch_warnings():
                    # torch's forward AD scripts its own decompositions on first use and warns
                    # that torch.jit.script is deprecated: torch's concern, not the user's (under
                    # -W error it became a BlockError naming this sampler)
                    warnings.filterwarnings("ignore", JIT_SCRIPT_DEPRECATION, DeprecationWarning)
                    out = self._call(generator, fwAD.make_dual(theta, direction))
                    head, tangent = fwAD.unpack_dual(out)
                    # an all-zero tangent is no derivative either: a draw that is not
                    # differentiable in its rate (torch.poisson, torch.bernoulli) passes theta
                    # on with a zero tangent; checked on the first draw (a host sync)
                    if tangent is None or (self._n_draws == 0 and not bool(tangent.any())):
                        self._raise_no_derivative(k, tangent is None)
                    tangents.append(tangent.detach().clone())
                head = head.detach().clone()
            batch[DERIVATIVE] = torch.stack(tangents, 1)  # (n_d, p, *S)
        rest = self.n_s - self.n_d
        tail = [self._call(generator, self._theta_rows(rest, device)).detach()] if rest else []
        batch[FIDUCIAL] = torch.cat([head, *tail])
        # NaN / inf check: a host sync, so on an accelerator only for the first draw (later
        # non-finite values still stop training, as a non-finite loss at the epoch's end)
        if device.type == "cpu" or self._n_draws == 0:
            self._check_finite(batch)
        self._n_draws += 1
        return self._flattened(batch)

    def _raise_no_derivative(self, k: int, missing: bool) -> None:
        found = ("found no derivative" if missing else
                 f"gave ∂d/∂θ[{k}] = 0 for all {self.n_d} derivative simulations")
        step = tuple(round(0.1 * abs(t), 6) or 0.1 for t in self.theta_fid)
        raise ValidationError(
            f"The simulator's output does not depend on theta[{k}] (= {self.theta_fid[k]:g}) "
            f"through differentiable torch operations (forward-mode autograd {found}); a draw "
            "such as torch.poisson, torch.bernoulli or torch.multinomial is not differentiable "
            "in its parameters. Write the simulator with differentiable torch ops (e.g. "
            "reparameterised draws: theta + noise), or use derivative_mode='numerical' with "
            f"delta_theta, one step per parameter (e.g. delta_theta={step}).")

    @staticmethod
    def _check_finite(batch: dict[str, torch.Tensor]) -> None:
        for key, value in batch.items():
            if not bool(torch.isfinite(value).all()):
                raise ValidationError(
                    f"The simulator produced non-finite values (NaN or inf) in `{key}` "
                    f"({int((~torch.isfinite(value)).sum())} entries). Check the simulator at "
                    "theta_fid (and at theta_fid ± delta_theta/2 for numerical derivatives).")

    # ------------------------------------------------------------------ sampler API

    def _require_source(self) -> None:
        if not self.has_source:
            raise ValidationError(
                "SimulationSampler needs a `simulator` or `fiducial` arrays (with `derivative` "
                "or `numerical_derivative`): pass them to IMNN.fit(...), or to "
                "with_source(...) when using the sampler directly.")

    def setup(self, state: TrainState) -> None:
        self._require_source()
        if self.simulator is None:
            self._fixed = {k: v.to(state.device) for k, v in self._fixed.items()}
            return
        if self.seed is not None:
            self._generator = torch.Generator(device=state.device)
            self._generator.manual_seed(self.seed)
        if not self.fresh:
            self._fixed = self.simulate(self._generator or state.generator, state.device)

    def num_batches(self, state: TrainState) -> int:
        return 1

    def shard(self, batch: dict[str, torch.Tensor], rank: int, world_size: int
              ) -> dict[str, torch.Tensor]:
        """This process's simulations (torch.distributed): rows ``rank::world_size`` of the
        ``n_d`` fiducial simulations that have derivatives, with their derivative rows (so
        the shard's first rows are again the ones its derivatives belong to, and numerical
        derivatives stay seed-matched), then of the other ``n_s − n_d``.  The Fisher loss
        sums its statistics over the processes, so any split gives the loss of the whole
        set; ``delta_theta`` is shared."""
        out = dict(batch)
        fiducial = batch[FIDUCIAL]
        if DERIVATIVE in batch:
            n_d = batch[DERIVATIVE].shape[0]
            out[DERIVATIVE] = batch[DERIVATIVE][rank::world_size]
            out[FIDUCIAL] = torch.cat([fiducial[:n_d][rank::world_size],
                                       fiducial[n_d:][rank::world_size]])
        else:
            out[FIDUCIAL] = fiducial[rank::world_size]
            out[NUMERICAL] = batch[NUMERICAL][rank::world_size]
        return out

    def batches(self, state: TrainState) -> Iterator[dict[str, torch.Tensor]]:
        self._require_source()
        if self._fixed is not None and (self.simulator is None or not self.fresh):
            yield self._fixed
        elif self.simulator is not None and not self.fresh:
            self.setup(state)
            yield self._fixed
        else:
            yield self.simulate(self._generator or state.generator, state.device)

