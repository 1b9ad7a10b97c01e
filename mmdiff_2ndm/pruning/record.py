"""The pruning record: plain data that rebuilds a pruned denoiser from its dense config.

A record is a dict of numbers, strings, lists and dicts only, so a checkpoint that holds
it loads with ``torch.load(weights_only=True)``. Keys:

* ``format``: ``RECORD_FORMAT``.
* ``family``: ``denoiser_family`` of the pruned net.
* ``history``: torch-pruning's pruning history, ``[[module_name, is_out_channel, [idx...]],
  ...]``, replayed on the dense net by ``DependencyGraph.load_pruning_history``.
* ``heads``: attention module name -> head count after pruning.
* ``shapes``: parameter name -> shape of the pruned net (rebuild check, mismatch errors).
* ``settings``: how it was made (ratio, importance, ...), for people.
* ``stats``: params / MACs before and after.
* ``depth`` (only for depth pruning): ``dict(module='transformer_blocks', kept=[teacher
  block indices kept, ascending], num_blocks=M)``; replayed before ``history`` (whose
  module names are the depth-pruned net's). Student block ``i`` is teacher block
  ``kept[i]`` (:func:`kept_blocks`).

In an mmengine checkpoint the record of ``model.<student_key>`` lives at
``checkpoint['meta']['pruning']`` (see ``DiffusionPruningHook``).
"""
from typing import List, Mapping, Optional

import torch

from ..utils.state_dict import (check_shapes, check_state_dict_shapes,  # noqa: F401
                                describe_prefixes, key_prefixes, parameter_shapes,
                                shape_mismatches)

RECORD_FORMAT = 'mmdiff_2ndm.pruning/v1'
_REQUIRED_KEYS = ('format', 'family', 'history', 'heads', 'shapes')


def to_plain_history(history) -> List[list]:
    """torch-pruning's history with tensors/tuples turned into lists of ints."""
    plain = []
    for module_name, is_out, idxs in history:
        if torch.is_tensor(idxs):
            idxs = idxs.tolist()
        plain.append([str(module_name), bool(is_out), [int(i) for i in idxs]])
    return plain


def check_record(record: Mapping) -> None:
    """Raises ValueError if ``record`` is not a pruning record this version can replay."""
    if not isinstance(record, Mapping):
        raise ValueError(f'A pruning record must be a dict, got {type(record).__name__}.')
    missing = [key for key in _REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f'Pruning record lacks keys {missing}; was it written by '
                         'mmdiff_2ndm.pruning?')
    if record['format'] != RECORD_FORMAT:
        raise ValueError(f"Pruning record format {record['format']!r} is not "
                         f'{RECORD_FORMAT!r}; re-prune with this version.')
    if record.get('depth') is not None:
        _check_depth(record['depth'])


def _check_depth(depth: Mapping) -> None:
    """Raises ValueError unless ``depth`` is a well-formed depth part of a record."""
    if not isinstance(depth, Mapping) or set(depth) != {'module', 'kept', 'num_blocks'}:
        raise ValueError(f'The depth part of a pruning record must be dict(module=..., '
                         f'kept=[...], num_blocks=M), got {depth!r}.')
    kept, num_blocks = depth['kept'], depth['num_blocks']
    if not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f'Pruning record: depth num_blocks={num_blocks!r} must be a '
                         'positive int.')
    if not kept or any(not isinstance(i, int) for i in kept) or \
            list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= num_blocks:
        raise ValueError(
            f'Pruning record: depth kept={kept!r} must be ascending, distinct block '
            f'indices in [0, {num_blocks}) (the teacher has {num_blocks} '
            f"{depth['module']}); the record is corrupt or for another model.")


def kept_blocks(record: Optional[Mapping]) -> Optional[List[int]]:
    """Teacher block index of each student block (``kept[i]`` for student block ``i``).

    Args:
        record (Mapping, optional): A pruning record, or None (dense student).

    Returns:
        list[int] | None: The kept teacher blocks, ascending; None when the record
        removes no blocks (no depth pruning, or no record).
    """
    if record is None or record.get('depth') is None:
        return None
    _check_depth(record['depth'])
    return list(record['depth']['kept'])
