from . import denoisers, losses  # noqa: F401  (registers the loss)
from .distillers import DiffusionDistiller

__all__ = ['DiffusionDistiller']
