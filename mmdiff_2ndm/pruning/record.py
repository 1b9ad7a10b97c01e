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
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

RECORD_FORMAT = 'mmdiff_2ndm.pruning/v1'
_REQUIRED_KEYS = ('format', 'family', 'history', 'heads', 'shapes')


def parameter_shapes(net: nn.Module) -> Dict[str, List[int]]:
    """Parameter name -> shape (as a list) of ``net``."""
    return {name: list(param.shape) for name, param in net.named_parameters()}


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


def shape_mismatches(expected: Mapping[str, List[int]],
                     actual: Mapping[str, List[int]]) -> List[str]:
    """Human-readable lines for every parameter whose shape differs (or is missing)."""
    lines = []
    for name, shape in expected.items():
        if name not in actual:
            lines.append(f'{name}: missing (expected {tuple(shape)})')
        elif list(actual[name]) != list(shape):
            lines.append(f'{name}: {tuple(actual[name])} vs expected {tuple(shape)}')
    return lines


def key_prefixes(expected: Mapping[str, List[int]],
                 state_dict: Mapping[str, torch.Tensor]) -> Dict[str, bool]:
    """Key prefixes under which ``state_dict`` holds every tensor of ``expected``.

    A checkpoint of a whole distiller holds a denoiser several times (e.g.
    ``student.model.``, ``student_ema.module.model.``); these are the prefixes to load
    it with.

    Args:
        expected (Mapping): Tensor name -> shape of the model.
        state_dict (Mapping): Weights.

    Returns:
        dict: Prefix (``''`` or ending in ``'.'``) -> whether every shape matches too,
        in the order the prefixes first occur in ``state_dict``. Empty when
        ``expected`` is.
    """
    names = set(expected)
    counts: Dict[str, int] = {}
    for key, value in state_dict.items():
        if not torch.is_tensor(value):
            continue
        for start in [0] + [i + 1 for i, char in enumerate(key) if char == '.']:
            if key[start:] in names:
                counts[key[:start]] = counts.get(key[:start], 0) + 1
    return {prefix: not shape_mismatches(expected, {
        name: list(state_dict[prefix + name].shape) for name in names})
            for prefix, count in counts.items() if names and count == len(names)}


def describe_prefixes(prefixes: Mapping[str, bool]) -> str:
    """``"'a.' (fits), 'b.' (other shapes)"`` for :func:`key_prefixes`' result."""
    return ', '.join(f'{prefix!r} ({"fits" if fits else "other shapes"})'
                     for prefix, fits in prefixes.items())


def check_state_dict_shapes(net: nn.Module,
                            state_dict: Mapping[str, torch.Tensor],
                            prefix: str = '',
                            what: str = 'checkpoint') -> None:
    """Raises a clear error when ``state_dict`` cannot load into ``net`` shape for shape.

    mmengine's ``load_checkpoint`` only warns on shape mismatches and keeps the random
    weights; a pruned checkpoint loaded into a dense model (or the reverse) must fail.

    Args:
        net (nn.Module): The module the weights are meant for.
        state_dict (Mapping): Weights, possibly for a larger model.
        prefix (str): Key prefix of ``net``'s weights in ``state_dict``
            (e.g. ``'student.'``). Keys without it are ignored.
        what (str): Name of the source, for the message.

    Raises:
        ValueError: If any of ``net``'s parameters has another shape in ``state_dict``,
            or if none is under ``prefix`` while all are under another prefix.
    """
    check_shapes(parameter_shapes(net), state_dict, prefix, what)


def check_shapes(expected: Mapping[str, List[int]],
                 state_dict: Mapping[str, torch.Tensor],
                 prefix: str = '',
                 what: str = 'checkpoint') -> None:
    """:func:`check_state_dict_shapes` for given shapes (e.g. a whole model's state,
    wrappers stripped).

    Args:
        expected (Mapping): Tensor name (without ``prefix``) -> shape of the model.
        state_dict (Mapping): Weights, possibly for a larger model.
        prefix (str): Key prefix of the model's tensors in ``state_dict``.
        what (str): Name of the source, for the message.

    Raises:
        ValueError: If a tensor of ``expected`` has another shape in ``state_dict``;
            the message names the first keys and the fix. Also if none of them is under
            ``prefix`` while all are under another prefix (the message names it).
    """
    actual = {
        key[len(prefix):]: list(value.shape)
        for key, value in state_dict.items() if key.startswith(prefix) and torch.is_tensor(value)
    }
    if expected and actual and not any(name in actual for name in expected):
        found = key_prefixes(expected, state_dict)
        if found:
            raise ValueError(
                f'{what} holds none of the model\'s {len(expected)} tensors under '
                f'{prefix or "root"!r}, but all of them under another key prefix: '
                f'{describe_prefixes(found)}; load the sub-state-dict under a fitting one.')
    _check_block_counts(expected, actual, prefix, what)
    expected = {name: shape for name, shape in expected.items() if name in actual}
    mismatches = shape_mismatches(expected, actual)
    if mismatches:
        numel_model = sum(torch.Size(shape).numel() for shape in expected.values())
        numel_ckpt = sum(torch.Size(actual[name]).numel() for name in expected)
        hint = ('the weights are smaller: a pruned checkpoint loaded into a dense model; '
                "add custom_hooks=[dict(type='DiffusionPruningHook')], which rebuilds the "
                "pruned student from the checkpoint's record (meta['pruning'], written by "
                'the hook and tools/prune.py) before the weights load (outside a Runner: '
                'rebuild_pruned(student, record) first)'
                if numel_ckpt < numel_model else
                'the weights are larger: a dense checkpoint loaded into a pruned model; '
                'load dense weights before pruning, or a checkpoint that holds a pruning record')
        raise ValueError(
            f'{what} does not fit the model ({prefix or "root"!r}): {len(mismatches)} '
            f'tensor shapes differ ({numel_ckpt} vs {numel_model} values); {hint}. '
            'First mismatches: ' + '; '.join(f'{prefix}{line}' for line in mismatches[:3]))


def _block_indices(names, module: str) -> set:
    """Indices ``i`` of the ``<...>.<module>.<i>.`` blocks named in ``names``."""
    found = set()
    for name in names:
        parts = name.split('.')
        for j, part in enumerate(parts[:-1]):
            if part == module and parts[j + 1].isdigit():
                found.add(int(parts[j + 1]))
    return found


def _check_block_counts(expected: Mapping[str, List[int]], actual: Mapping[str, List[int]],
                        prefix: str, what: str) -> None:
    """Raises when the weights hold another number of transformer blocks than the model.

    A depth-pruned checkpoint loaded into the dense model fits shape for shape on the
    blocks both have: only the block count tells them apart.
    """
    model_blocks = _block_indices(expected, 'transformer_blocks')
    ckpt_blocks = _block_indices(actual, 'transformer_blocks')
    if not model_blocks or not ckpt_blocks or len(model_blocks) == len(ckpt_blocks):
        return
    hint = ('a depth-pruned checkpoint loaded into a dense model; add custom_hooks=[dict('
            "type='DiffusionPruningHook')], which rebuilds the pruned student from the "
            "checkpoint's record (meta['pruning']) before the weights load (outside a "
            'Runner: rebuild_pruned(student, record) first)'
            if len(ckpt_blocks) < len(model_blocks) else
            'a checkpoint with more blocks than the (depth-pruned) model; load dense weights '
            'before pruning, or a checkpoint that holds its pruning record')
    raise ValueError(f'{what} does not fit the model ({prefix or "root"!r}): it holds '
                     f'{len(ckpt_blocks)} transformer_blocks, the model {len(model_blocks)}; '
                     f'{hint}.')

