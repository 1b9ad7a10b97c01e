"""Structural pruning of diffusion denoisers (U-Net, DiT): channels and whole DiT blocks,
one entry point (``prune_model``) and rebuilding from a plain-data record."""
from .benchmark import benchmark_models, format_table, sample_ddim
from .depth import (DEPTH_MODULES, DEPTH_SELECTORS, apply_depth, block_map,
                    register_depth_selector, select_blocks)
from .entry import (METHODS, check_prune_settings, data_losses, distiller_loss_fn,
                    format_stats, needs_loss_fn, prune_model, pruning_summary, write_summary)
from .importance import IMPORTANCE_CRITERIA, get_importance, register_importance
from .record import (RECORD_FORMAT, check_record, check_shapes, check_state_dict_shapes,
                     kept_blocks, parameter_shapes)
from .structural import count_params_macs, prune_denoiser, rebuild_pruned, search_ratio

__all__ = [
    'prune_model', 'METHODS', 'check_prune_settings', 'needs_loss_fn', 'distiller_loss_fn',
    'data_losses',
    'pruning_summary', 'format_stats', 'write_summary', 'prune_denoiser', 'rebuild_pruned',
    'search_ratio', 'count_params_macs', 'IMPORTANCE_CRITERIA', 'get_importance',
    'register_importance', 'DEPTH_MODULES', 'DEPTH_SELECTORS', 'register_depth_selector',
    'select_blocks', 'apply_depth', 'block_map', 'kept_blocks', 'RECORD_FORMAT',
    'check_record', 'check_shapes', 'check_state_dict_shapes', 'parameter_shapes',
    'benchmark_models', 'format_table', 'sample_ddim'
]
