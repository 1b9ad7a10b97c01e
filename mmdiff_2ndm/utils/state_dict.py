"""Shape checks of state dicts against models: the clear errors for weights that do not
fit (pruned into dense, dense into pruned, another depth, a missing key prefix).

Used wherever weights load: the distiller, its builders, the pruning hook and tools.
"""
from typing import Dict, List, Mapping

import torch
from torch import nn


def parameter_shapes(net: nn.Module) -> Dict[str, List[int]]:
    """Parameter name -> shape (as a list) of ``net``."""
    return {name: list(param.shape) for name, param in net.named_parameters()}


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
