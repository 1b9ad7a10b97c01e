from .checkpoint import (CHECKPOINT_SAFE_GLOBALS, UnsafeCheckpointError, load_from_local,
                         safe_torch_load)
from .distributed import has_accelerator, prepare_cpu_distributed

__all__ = [
    'CHECKPOINT_SAFE_GLOBALS', 'UnsafeCheckpointError', 'load_from_local', 'safe_torch_load',
    'has_accelerator', 'prepare_cpu_distributed'
]
