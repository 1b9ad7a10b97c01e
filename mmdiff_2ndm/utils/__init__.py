from .checkpoint import (CHECKPOINT_SAFE_GLOBALS, UnsafeCheckpointError, load_from_local,
                         safe_torch_load)
from .config_paths import check_local_paths, missing_local_paths
from .distributed import has_accelerator, prepare_cpu_distributed
from .runner_args import apply_runner_args, parse_runner_args, runner_arg_parser

__all__ = [
    'CHECKPOINT_SAFE_GLOBALS', 'UnsafeCheckpointError', 'load_from_local', 'safe_torch_load',
    'has_accelerator', 'prepare_cpu_distributed', 'check_local_paths', 'missing_local_paths',
    'runner_arg_parser', 'parse_runner_args', 'apply_runner_args'
]
