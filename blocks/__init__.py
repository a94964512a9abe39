"""Building blocks and the engine that runs them.  Knows nothing of recipes."""

from .data import Dataset
from .errors import (BlockError, ConfigError, InfoblocksError, NotFittedError, NumericalError,
                     PluginError, RegistryError, SizeLimitError, ValidationError)
from .optim import LeanAdam
from .phases import TrainingPhase, Validation
from .routine import GlobalRelation, Routine

__all__ = [
    "Dataset", "Routine", "GlobalRelation", "TrainingPhase", "Validation", "InfoblocksError",
    "ValidationError", "ConfigError", "RegistryError", "BlockError", "PluginError",
    "SizeLimitError", "NumericalError", "NotFittedError", "LeanAdam",
]
