"""The data of an IMNN fit and how it reaches the routine's samplers (a helper module of
:mod:`infoblocks.recipes.imnn`; no recipe is defined here).

``IMNN.fit`` takes the simulations — a simulator callable or arrays — and hands them to every
sampler of its phases that defines ``with_source(simulator=, fiducial=, derivative=,
numerical_derivative=)`` (the built-in ``simulations`` sampler does); the validation sampler
gets the ``validation_*`` arrays, else the simulator (it draws its fixed set once with its own
seed), else the training arrays.
"""

from __future__ import annotations

from typing import Any


from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.phases import TrainingPhase

#: what ``with_source`` receives
SOURCE_KEYS = ("simulator", "fiducial", "derivative", "numerical_derivative")
#: what ``fit`` takes
FIT_KEYS = (*SOURCE_KEYS, "validation_fiducial", "validation_derivative",
            "validation_numerical_derivative")


def take_source(given: dict[str, Any], previous: dict[str, Any] | None,
                loaded: bool = False, own_source: bool = False) -> dict[str, Any]:
    """The simulations of this fit: ``given``, or the previous fit's when none are given
    (``loaded``: the recipe has trained weights but no simulations — it came from a file;
    ``own_source``: every sampler draws its own, so none are needed)."""
    if all(v is None for v in given.values()) and own_source and previous is None:
        return dict(given)
    if all(v is None for v in given.values()):
        if previous is None and loaded:
            raise ValidationError(
                "This IMNN was loaded from a file: a save keeps the weights and the fitted "
                "statistics, not the simulations. To continue training, pass them to fit "
                "again — fit(fiducial, derivative, ...) or fit(simulator=fn(generator, theta)) "
                "— with set_params(warm_start=True, epochs=...).")
        if previous is None:
            raise ValidationError(
                "IMNN needs simulations: fit(simulator=fn(generator, theta)) or the arrays "
                "fit(fiducial (n_s, ...), derivative (n_d, p, ...)) or fit(fiducial, "
                "numerical_derivative=(n_d, 2, p, ...)) with delta_theta set.")
        return previous  # a second fit trains on the same simulations
    if given["simulator"] is not None and given["fiducial"] is not None:
        raise ValidationError("Pass either `simulator` or `fiducial`/`derivative` arrays, "
                              "not both.")
    if given["simulator"] is None and given["fiducial"] is None:
        raise ValidationError("IMNN.fit needs `simulator` or `fiducial` (with `derivative` "
                              "or `numerical_derivative`); only validation arrays were given.")
    has_val = [given["validation_fiducial"] is not None,
               given["validation_derivative"] is not None
               or given["validation_numerical_derivative"] is not None]
    if any(has_val) and not all(has_val):
        raise ValidationError("Give `validation_fiducial` together with "
                              "`validation_derivative` (or `validation_numerical_derivative`).")
    if all(has_val):  # checked under their own names (the validation sampler's checks would
        _check_validation_arrays(given)  # name them `fiducial` / `derivative`: user13)
    return given


def _check_validation_arrays(given: dict[str, Any]) -> None:
    """The validation arrays' values and row counts, named as the user passed them."""
    from infoblocks.blocks.data import as_tensor

    fid = as_tensor(given["validation_fiducial"], "validation_fiducial", ndim=None)
    key = "validation_derivative" if given["validation_derivative"] is not None \
        else "validation_numerical_derivative"
    der = as_tensor(given[key], key, ndim=None)
    if key == "validation_derivative" and der.ndim and fid.ndim and der.shape[0] > fid.shape[0]:
        raise ValidationError(
            f"`validation_derivative` has {der.shape[0]} rows but `validation_fiducial` only "
            f"{fid.shape[0]}: derivative[i] is ∂d/∂θ of fiducial[i], so n_d ≤ n_s.")


def validation_source(source: dict[str, Any]) -> dict[str, Any]:
    """What the validation sampler draws from (see the module docstring)."""
    if source["validation_fiducial"] is not None:  # fixed validation arrays (any source)
        return {k: source[f"validation_{k}"] for k in SOURCE_KEYS if k != "simulator"}
    if source["simulator"] is not None:  # drawn once with the sampler's own seed
        return {"simulator": source["simulator"]}
    return {k: source[k] for k in SOURCE_KEYS}  # monitor det F on the training arrays


def draws_own_simulations(spec: dict[str, Any]) -> bool:
    """Whether every training sampler of the phases in ``spec`` is a registered sampler
    without ``with_source``: it simulates by itself, and ``fit`` takes no data (a validation
    sampler must then draw its own too: :func:`attach` says so)."""
    from infoblocks.blocks.assembly import _block_name
    from infoblocks.plugins.registry import get_registry

    registry = get_registry()
    samplers = [phase["sampler"] for phase in spec.get("phases", [])
                if phase.get("sampler") is not None]
    names = [_block_name(s) for s in samplers]
    return bool(names) and all(
        isinstance(n, str) and ("sampler", n) in registry
        and not hasattr(registry.get("sampler", n), "with_source") for n in names)


def attach(sampler: Any, source: dict[str, Any], path: str) -> Any:
    """``sampler.with_source(**source)``; a sampler without it must not be given data, and
    one with it must be given some."""
    if hasattr(sampler, "with_source") and all(source.get(k) is None for k in SOURCE_KEYS):
        raise ConfigError(
            f"{path}: sampler {sampler.name!r} simulates from what fit is given, and fit was "
            "given nothing (the training sampler draws its own simulations). Name a sampler "
            "that draws its own here too, e.g. `validation = { sampler = { name = \"...\", "
            "seed = 1 } }` in the phase, or pass simulations to fit.")
    if hasattr(sampler, "with_source"):
        return sampler.with_source(**{k: source.get(k) for k in SOURCE_KEYS})
    if any(source.get(k) is not None for k in SOURCE_KEYS):
        raise ConfigError(f"{path}: sampler {sampler.name!r} takes no simulations from fit "
                          "(it has no with_source method); fit it without data, or use a "
                          "sampler that implements with_source(...).")
    return sampler


def build_phases(recipe: Any, spec: dict[str, Any]) -> list[TrainingPhase]:
    """``recipe.build_phases(spec)`` with the samplers' settings (``theta_fid``, ``n_s`` ...)
    filled from the shortcuts into the fields a sampler named alone leaves out."""
    return recipe.build_phases(spec, sampler_context=recipe.sampler_spec(validation=False),
                               validation_context=recipe.sampler_spec(validation=True))


__all__ = ["SOURCE_KEYS", "FIT_KEYS", "take_source", "validation_source", "attach",
           "build_phases", "draws_own_simulations"]
