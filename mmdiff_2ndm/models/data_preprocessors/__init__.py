from .diffusion_data_preprocessor import DiffusionDataPreprocessor

__all__ = ['DiffusionDataPreprocessor']
