"""The one exception family of infoblocks.

Every error a user can meet through the public API derives from :class:`InfoblocksError`.
The concrete classes also derive from the matching builtin (``ValueError``, ``LookupError``,
...) so that ``except ValueError`` in user code keeps working.  Messages name the argument,
the value received and the fix.
"""

from __future__ import annotations


class InfoblocksError(Exception):
    """Base of every error raised on purpose by infoblocks."""


class ValidationError(InfoblocksError, ValueError):
    """User input (arrays, hyperparameters) is invalid: wrong shape, NaN, out of range."""


class ConfigError(InfoblocksError, ValueError):
    """A recipe or block description (dict / TOML) cannot be turned into objects."""


class UnknownParameterError(ConfigError, TypeError):
    """A constructor keyword the recipe or block does not have (with the close matches)."""


class RegistryError(InfoblocksError, LookupError):
    """A (kind, name) is unknown, or two plugins claim the same name."""


class BlockError(InfoblocksError):
    """A block raised while it ran (a loss, sampler, relation ... in a phase or a global): the
    message names where (``phase 'main'``), the block and its origin, the original exception
    and the line it was raised at; raised ``from`` the original and also an instance of the
    original's type.  Raised as such for infoblocks' own blocks (``built-in loss
    'mine_loss'``, often a setting the block cannot work with); see :class:`PluginError`."""


class PluginError(BlockError):
    """A plugin failed to load or returned something that is not a block; or a block that is
    not infoblocks' own — a plugin's, a user's class or torch module — raised while it ran
    (``loss 'x' (plugin 'pkg')``)."""


class ContractError(ValidationError):
    """Two blocks of a phase do not fit: a batch field, a global or a model is missing."""


class SizeLimitError(ValidationError):
    """An operation would build an array larger than the configured limit (e.g. densifying)."""


class NumericalError(InfoblocksError, FloatingPointError):
    """Training produced a non-finite value or a singular matrix."""


class NotFittedError(InfoblocksError, AttributeError):
    """A result was requested from a recipe or routine before ``fit`` / ``train``."""


__all__ = [
    "UnknownParameterError",
    "InfoblocksError",
    "ValidationError",
    "ConfigError",
    "RegistryError",
    "BlockError",
    "PluginError",
    "SizeLimitError",
    "NumericalError",
    "NotFittedError",
]
