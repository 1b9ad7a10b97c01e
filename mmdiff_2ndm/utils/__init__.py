from .checkpoint import (CHECKPOINT_SAFE_GLOBALS, UnsafeCheckpointError, load_from_local,
                         safe_torch_load)
from .distributed import prepare_cpu_distributed

__all__ = [
    'CHECKPOINT_SAFE_GLOBALS', 'UnsafeCheckpointError', 'load_from_local', 'safe_torch_load',
    'prepare_cpu_distributed'
]
