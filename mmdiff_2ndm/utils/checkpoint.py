"""Safe loading of MMEngine checkpoints on torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and MMEngine 0.10.7 checkpoints
contain a few non-tensor Python objects (the message hub's ``HistoryBuffer`` with numpy arrays
inside), so ``load_checkpoint`` and ``--resume`` fail with ``Unsupported global``. The usual
workaround, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, turns the safe unpickler off for everything,
which lets a downloaded checkpoint run arbitrary code. Instead, this module replaces MMEngine's
local-file checkpoint loader with one that keeps ``weights_only=True`` and allow-lists exactly the
data-only types MMEngine checkpoints contain.
"""
import os.path as osp
import pickle
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


class UnsafeCheckpointError(pickle.UnpicklingError):
    """Raised when a checkpoint holds pickled objects outside the allow-list."""


def _numpy_globals() -> List[Callable]:
    """Returns the numpy callables and types that pickled arrays and scalars reference."""
    # numpy 2 moved ``numpy.core`` to ``numpy._core``; pickles name whichever wrote them.
    multiarray_modules = []
    for name in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        try:
            multiarray_modules.append(__import__(name, fromlist=['_reconstruct']))
        except ImportError:
            continue
    allowed = [np.ndarray, np.dtype]
    for module in multiarray_modules:
        allowed += [module._reconstruct, module.scalar]
    # Arrays pickle their dtype by class (e.g. ``numpy.dtypes.Float64DType``).
    allowed += [type(np.dtype(code)) for code in np.typecodes['All'] if code not in 'Mm']
    allowed += [type(np.dtype('M8[s]')), type(np.dtype('m8[s]'))]
    return list(dict.fromkeys(allowed))


_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_statistic(owner: type, name: str) -> Callable:
    """Stands in for ``builtins.getattr`` while unpickling, limited to HistoryBuffer statistics.

    The message hub pickles ``HistoryBuffer._statistics_methods`` (``min``, ``max``, ``mean``,
    ``current`` and any registered with ``HistoryBuffer.register_statistics``) as
    ``getattr(HistoryBuffer, name)``. A general ``getattr`` would let a crafted file reach any
    attribute of any allow-listed type, so only these lookups are served.
    """
    # The built-in four are only put into ``_statistics_methods`` when a first buffer is
    # created, which a fresh process that loads a checkpoint has not done yet.
    if owner is HistoryBuffer and name in _BUILTIN_STATISTICS:
        return getattr(HistoryBuffer, name)
    if owner is HistoryBuffer and name in HistoryBuffer._statistics_methods:
        return HistoryBuffer._statistics_methods[name]
    raise pickle.UnpicklingError(
        f'getattr({getattr(owner, "__name__", owner)!r}, {name!r}) is not allowed: only '
        f'HistoryBuffer statistics methods may be looked up.')


#: Every non-tensor global an MMEngine checkpoint may reference: the message hub's history
#: buffers, their statistics methods, and the numpy arrays/scalars they and ``meta`` hold.
CHECKPOINT_SAFE_GLOBALS: List[Union[Callable, Tuple[Callable, str]]] = [
    HistoryBuffer, (_history_buffer_statistic, 'builtins.getattr')
] + _numpy_globals()


def safe_torch_load(filename: str,
                    map_location: Optional[Union[str, torch.device, Callable]] = None) -> dict:
    """Loads a checkpoint with torch's safe unpickler and the MMEngine allow-list.

    Args:
        filename (str): Path of a local checkpoint file.
        map_location (str | torch.device | Callable, optional): Passed to ``torch.load``.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        FileNotFoundError: When ``filename`` does not exist.
        UnsafeCheckpointError: When the file references a global outside
            :data:`CHECKPOINT_SAFE_GLOBALS` (nothing from the file is executed).
    """
    try:
        with torch.serialization.safe_globals(CHECKPOINT_SAFE_GLOBALS):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is long advice to turn the safe loader off; keep only its reason.
        paragraphs = [p.strip() for p in str(err).split('\n\n') if p.strip()]
        reason = next((p for p in paragraphs
                       if not p.startswith(('Weights only load failed', 'Check the doc'))),
                      repr(err))
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {filename!r}: it contains a pickled object that is '
            f'not plain data, and loading it could run code ({reason}). mmdiff-2ndm only '
            f'allow-lists tensors, containers, numpy arrays/scalars and mmengine '
            f'HistoryBuffer. If you trust the file, load it once with '
            f'torch.load(..., weights_only=False) and re-save its state dicts.') from err


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str,
                    map_location: Optional[Union[str, torch.device, Callable]] = None) -> dict:
    """MMEngine loader for local paths: :func:`safe_torch_load` with ``~`` expanded.

    Registered for the empty prefix, so ``load_checkpoint``, ``Runner.load_checkpoint`` and
    ``Runner.resume`` all go through it once :mod:`mmdiff_2ndm` is imported.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint file {filename!r} does not exist.')
    return safe_torch_load(filename, map_location=map_location)
