from . import denoisers, losses  # noqa: F401  (registers the loss)
from .averaged_model import WarmupExponentialMovingAverage, retarget_average
from .block_removal import block_removed_unet  # registers MODELS: 'BKSDMStudent'
from .compvis_ldm import ClassEmbedder, convert_compvis_ldm
from .data_preprocessors import DiffusionDataPreprocessor
from .distillers import DiffusionDistiller

__all__ = ['ClassEmbedder', 'DiffusionDataPreprocessor', 'DiffusionDistiller',
           'WarmupExponentialMovingAverage', 'block_removed_unet', 'convert_compvis_ldm',
           'retarget_average']
