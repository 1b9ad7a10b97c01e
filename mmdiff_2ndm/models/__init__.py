from . import denoisers, losses  # noqa: F401  (registers the loss)
from .block_removal import block_removed_unet  # registers MODELS: 'BKSDMStudent'
from .compvis_ldm import ClassEmbedder, convert_compvis_ldm
from .distillers import DiffusionDistiller

__all__ = ['ClassEmbedder', 'DiffusionDistiller', 'block_removed_unet', 'convert_compvis_ldm']
