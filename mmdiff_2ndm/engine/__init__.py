"""MMEngine extensions of mmdiff-2ndm (hooks)."""
from .hooks import DiffusionPruningHook

__all__ = ['DiffusionPruningHook']
