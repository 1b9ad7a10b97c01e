from .diffusion_distiller import DiffusionDistiller

__all__ = ['DiffusionDistiller']
