from . import denoisers, losses  # noqa: F401  (registers the loss)
from .block_removal import block_removed_unet  # registers MODELS: 'BKSDMStudent'
from .distillers import DiffusionDistiller

__all__ = ['DiffusionDistiller', 'block_removed_unet']
