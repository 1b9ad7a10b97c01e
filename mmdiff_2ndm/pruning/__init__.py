"""Structural pruning of diffusion denoisers (U-Net, DiT) and rebuilding from a record."""
from .benchmark import benchmark_models, format_table, sample_ddim
from .structural import count_params_macs, prune_denoiser, rebuild_pruned, search_ratio
from .importance import GRADIENT_IMPORTANCES, IMPORTANCES
from .record import (RECORD_FORMAT, check_record, check_shapes, check_state_dict_shapes,
                     parameter_shapes)

__all__ = [
    'prune_denoiser', 'rebuild_pruned', 'search_ratio', 'count_params_macs',
    'IMPORTANCES', 'GRADIENT_IMPORTANCES', 'RECORD_FORMAT', 'check_record',
    'check_shapes', 'check_state_dict_shapes', 'parameter_shapes', 'benchmark_models', 'format_table',
    'sample_ddim'
]
