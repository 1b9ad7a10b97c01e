from .checkpoint import (CHECKPOINT_SAFE_GLOBALS, UnsafeCheckpointError, load_from_local,
                         safe_torch_load)

__all__ = ['CHECKPOINT_SAFE_GLOBALS', 'UnsafeCheckpointError', 'load_from_local', 'safe_torch_load']
