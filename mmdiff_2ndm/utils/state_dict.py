"""Shape checks of state dicts against models: the clear errors for weights that do not
fit (pruned into dense, dense into pruned, another depth, a missing key prefix).

Used wherever weights load: the distiller, its builders, the pruning hook, tools, and
(:func:`from_pretrained_strictly`) the text encoder and CLIP folders.
"""
from typing import Callable, Dict, Iterable, List, Mapping, Optional

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


def check_keys(expected: Iterable[str],
               state_dict: Mapping[str, object],
               prefix: str = '',
               what: str = 'checkpoint',
               hint: str = '') -> None:
    """Raises when ``state_dict`` misses a key of the model or holds one it does not have.

    The strict half that MMEngine's Runner (``strict=False``) leaves out: a missing key
    would keep its initial value, an extra one would be dropped, each with a warning
    only.

    Args:
        expected (Iterable[str]): Every state key of the model (without ``prefix``).
        state_dict (Mapping): Weights; keys outside ``prefix`` are not looked at.
        prefix (str): Key prefix of the model's state in ``state_dict``.
        what (str): Name of the source, for the message.
        hint (str): The fix, appended to the message.

    Raises:
        ValueError: Naming the number and the first of the missing and the unexpected
            keys.
    """
    expected = set(expected)
    found = {key[len(prefix):] for key in state_dict if key.startswith(prefix)}
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if not missing and not unexpected:
        return
    parts = [f'{len(keys)} {kind} key(s) ({", ".join(prefix + k for k in keys[:3])}'
             f'{", ..." if len(keys) > 3 else ""})'
             for kind, keys in (('missing', missing), ('unexpected', unexpected)) if keys]
    raise ValueError(f'{what} does not fit the model ({prefix or "root"!r}): '
                     f'{" and ".join(parts)}.{" " + hint if hint else ""}')


def from_pretrained_strictly(cls: type, folder: str, what: str,
                             allow_unexpected: Optional[Callable[[str], bool]] = None,
                             **kwargs) -> nn.Module:
    """``cls.from_pretrained(folder)`` that raises where transformers only warns.

    transformers initialises a weight missing from the folder at random and drops an
    extra one, with a log line each; a text encoder or CLIP model loaded that way would
    condition or score with random weights.

    Args:
        cls (type): A ``transformers`` (or ``diffusers``) model class.
        folder (str): Local model folder.
        what (str): The config key the folder came from, for the message.
        allow_unexpected (Callable[[str], bool], optional): True for a file key that may
            be left out on purpose (e.g. the projection heads of a whole ``CLIPModel``
            folder loaded as its ``CLIPTextModel``). Defaults to None (none may).
        **kwargs: Passed to ``from_pretrained``.

    Returns:
        nn.Module: The loaded model.

    Raises:
        ValueError: Naming the missing, unexpected and mismatched keys and the fix.
    """
    model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
    problems = {
        'missing': list(info.get('missing_keys') or []),
        'unexpected': [key for key in info.get('unexpected_keys') or []
                       if not (allow_unexpected and allow_unexpected(key))],
        'mismatched': [str(item[0]) for item in info.get('mismatched_keys') or []],
    }
    problems = {kind: sorted(keys) for kind, keys in problems.items() if keys}
    if problems:
        found = ' and '.join(f'{len(keys)} {kind} key(s) ({", ".join(keys[:3])}'
                             f'{", ..." if len(keys) > 3 else ""})'
                             for kind, keys in problems.items())
        raise ValueError(f'{what} {folder!r} does not hold the weights of a '
                         f'{cls.__name__}: {found}; point {what} at a folder saved by '
                         f'{cls.__name__}.save_pretrained (or the same model).')
    return model


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
