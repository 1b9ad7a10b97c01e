"""MMEngine hooks of mmdiff-2ndm."""
from .pruning_hook import DiffusionPruningHook
from .rng_state_hook import RNGStateHook
from .sampling_progress_hook import SamplingProgressHook
from .visualization_hook import DistillerVisualizationHook

__all__ = ['DiffusionPruningHook', 'DistillerVisualizationHook', 'RNGStateHook',
           'SamplingProgressHook']
