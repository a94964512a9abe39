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

import attrs

from infoblocks.blocks.config import structure
from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.phases import TrainingPhase, Validation
from infoblocks.plugins.registry import get_registry

#: what ``with_source`` receives
SOURCE_KEYS = ("simulator", "fiducial", "derivative", "numerical_derivative")
#: what ``fit`` takes
FIT_KEYS = (*SOURCE_KEYS, "validation_fiducial", "validation_derivative",
            "validation_numerical_derivative")


def take_source(given: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The simulations of this fit: ``given``, or the previous fit's when none are given."""
    if all(v is None for v in given.values()):
        if previous is None:
            raise ValidationError(
                "IMNN needs simulations: fit(simulator=fn(generator, theta)) or the arrays "
                "fit(fiducial (n_s, ...), derivative (n_d, p, ...)) or fit(fiducial, "
                "numerical_derivative=(n_d, 2, p, ...)) with delta_theta set.")
        return previous  # a second fit continues on the same simulations
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
    return given


def validation_source(source: dict[str, Any]) -> dict[str, Any]:
    """What the validation sampler draws from (see the module docstring)."""
    if source["validation_fiducial"] is not None:  # fixed validation arrays (any source)
        return {k: source[f"validation_{k}"] for k in SOURCE_KEYS if k != "simulator"}
    if source["simulator"] is not None:  # drawn once with the sampler's own seed
        return {"simulator": source["simulator"]}
    return {k: source[k] for k in SOURCE_KEYS}  # monitor det F on the training arrays


def attach(sampler: Any, source: dict[str, Any], path: str) -> Any:
    """``sampler.with_source(**source)``; a sampler without it must not be given data."""
    if hasattr(sampler, "with_source"):
        return sampler.with_source(**{k: source.get(k) for k in SOURCE_KEYS})
    if any(source.get(k) is not None for k in SOURCE_KEYS):
        raise ConfigError(f"{path}: sampler {sampler.name!r} takes no simulations from fit "
                          "(it has no with_source method); fit it without data, or use a "
                          "sampler that implements with_source(...).")
    return sampler


def fill_sampler(spec: Any, context: dict[str, Any]) -> Any:
    """A sampler spec with ``context`` (``theta_fid``, ``n_s`` ... from the recipe's
    shortcuts) filled into the fields its block has and the spec leaves out — so that a plugin
    sampler named alone (``sampler = {name = "my_sims"}``) gets them, as
    :meth:`~infoblocks.blocks.recipe.Recipe.build_model` fills ``in_dim``."""
    params = {"name": spec} if isinstance(spec, str) else spec
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        return spec
    cls = get_registry().get("sampler", params["name"])
    fields = {f.alias or f.name for f in attrs.fields(cls) if f.init} if attrs.has(cls) \
        else set()
    return {**params, **{k: v for k, v in context.items()
                         if k != "name" and k in fields and k not in params and v is not None}}


def build_phases(recipe: Any, spec: dict[str, Any]) -> list[TrainingPhase]:
    """``recipe.build_phases(spec)`` with the samplers' settings filled from the shortcuts
    (:func:`fill_sampler`) and each phase's ``validation`` built here: the core's
    ``build_phase`` cannot yet structure a phase whose validation is already built."""
    plain = [{k: v for k, v in p.items() if k != "validation"} for p in spec["phases"]]
    for p in plain:
        if "sampler" in p:
            p["sampler"] = fill_sampler(p["sampler"], recipe.sampler_spec(validation=False))
    phases = recipe.build_phases({**spec, "phases": plain})
    registry = get_registry()
    for phase, given in zip(phases, spec["phases"]):
        validation = given.get("validation")
        if validation is None:
            continue
        path = f"{recipe.name}.phases.{phase.name}.validation"
        if not isinstance(validation, dict):
            raise ConfigError(f"{path} must be a table, got {validation!r}.")
        validation = dict(validation)
        if "sampler" in validation:
            validation["sampler"] = fill_sampler(validation["sampler"],
                                                 recipe.sampler_spec(validation=True))
        for slot in ("sampler", "loss"):
            if slot in validation:
                validation[slot] = registry.build(slot, validation[slot], path=f"{path}.{slot}")
        phase.validation = structure(validation, Validation, path)
    return phases


__all__ = ["SOURCE_KEYS", "FIT_KEYS", "take_source", "validation_source", "attach",
           "fill_sampler", "build_phases"]
