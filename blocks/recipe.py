"""The Recipe base: a user-facing attrs class of hyperparameters that builds a Routine.

Recipes are data: :meth:`Recipe.to_dict` / :meth:`Recipe.from_dict` round-trip through cattrs
(unknown keys are rejected with the path of the key), and :meth:`to_toml` / :meth:`from_toml`
write and read the same dict as a TOML file runnable by ``infoblocks run``.  Fields that hold
live objects (a simulator, a custom encoder module) are marked ``transient`` and are left out.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar

import attrs
import cattrs
import numpy as np
from cattrs.gen import make_dict_structure_fn, override

from .base import Block
from .errors import ConfigError, NotFittedError

#: key of the recipe name in dict / TOML form
RECIPE_KEY = "recipe"

TRANSIENT = {"transient": True}


def transient_field(**kwargs: Any) -> Any:
    """An attrs field left out of ``to_dict`` (live objects: modules, callables)."""
    return attrs.field(metadata=TRANSIENT, **kwargs)


def _converter_for(cls: type) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    omitted = {f.name: override(omit=True) for f in attrs.fields(cls)
               if f.metadata.get("transient") or not f.init}
    conv.register_structure_hook(
        cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **omitted))
    # tuples written to TOML come back as lists; accept either
    return conv


def _plain(value: Any) -> Any:
    """Values as TOML/JSON-friendly data (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@attrs.define(kw_only=True)
class Recipe(Block):
    """Base of recipes.  Subclasses add hyperparameter fields and implement :meth:`build`
    plus a convenience API (``fit`` ...).  ``demo`` runs the embedded problem with a known
    answer and writes a figure; ``run`` is what ``infoblocks run`` calls."""

    kind: ClassVar[str] = "recipe"
    #: one-line description shown by ``infoblocks list recipe`` and ``infoblocks demo``
    summary: ClassVar[str] = ""

    def build(self, *data: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ data form

    def to_dict(self) -> dict[str, Any]:
        """``{"recipe": name, **hyperparameters}`` (transient fields left out; None dropped)."""
        out: dict[str, Any] = {RECIPE_KEY: self.name}
        for f in attrs.fields(type(self)):
            if f.metadata.get("transient") or not f.init:
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = _plain(cattrs.unstructure(value))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Structure a dict made by :meth:`to_dict` (the ``recipe`` key is optional but, when
        present, must match).  Unknown keys and wrong types raise :class:`ConfigError`."""
        data = dict(data)
        name = data.pop(RECIPE_KEY, cls.name)
        if name != cls.name:
            raise ConfigError(f"This dict describes recipe {name!r}, not {cls.name!r}; "
                              "use infoblocks.plugins.registry.recipe_from_dict for any recipe.")
        try:
            return _converter_for(cls).structure(data, cls)
        except cattrs.BaseValidationError as exc:
            problems = "; ".join(cattrs.transform_error(exc, path=cls.name,
                                                        format_exception=_format_exception))
            raise ConfigError(f"Invalid {cls.name!r} recipe: {problems}") from None
        except (ValueError, TypeError) as exc:  # raised by field validators
            raise ConfigError(f"Invalid {cls.name!r} recipe: {exc}") from None

    def to_toml(self, path: str | Path | None = None) -> str:
        import tomli_w

        text = tomli_w.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_toml(cls, path: str | Path) -> Recipe:
        return cls.from_dict(read_toml(path))

    # ------------------------------------------------------------------ command line

    def run(self, data: list[np.ndarray], out_dir: Path) -> dict[str, Any]:
        """Fit on ``data`` (the arrays given with ``--data``), save into ``out_dir``, and
        return a summary dict (printed and written as JSON by the CLI)."""
        raise NotImplementedError(f"Recipe {self.name!r} cannot be run from a config file.")

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """Run the embedded demo problem; write a figure into ``out_dir``; return numbers."""
        raise NotImplementedError(f"Recipe {cls.name!r} has no demo.")

    @classmethod
    def has_demo(cls) -> bool:
        return cls.demo.__func__ is not Recipe.demo.__func__  # type: ignore[attr-defined]

    def _check_fitted(self, attribute: str = "routine_") -> None:
        if getattr(self, attribute, None) is None:
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit() first.")


def _format_exception(exc: BaseException, type_: Any) -> str:
    """cattrs' message for a field, except that our validators' messages are kept whole."""
    from cattrs.v import format_exception

    from .errors import InfoblocksError

    return str(exc) if isinstance(exc, InfoblocksError) else format_exception(exc, type_)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file with an error that names the file and line on a syntax error."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


__all__ = ["Recipe", "RECIPE_KEY", "read_toml", "transient_field"]
