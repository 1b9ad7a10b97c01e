"""MMEngine hooks of mmdiff-2ndm."""
from .pruning_hook import DiffusionPruningHook

__all__ = ['DiffusionPruningHook']
