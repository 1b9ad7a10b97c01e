"""MMEngine hooks of mmdiff-2ndm."""
from .pruning_hook import DiffusionPruningHook
from .rng_state_hook import RNGStateHook

__all__ = ['DiffusionPruningHook', 'RNGStateHook']
