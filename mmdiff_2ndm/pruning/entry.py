"""The one pruning entry point, without a Runner: ``prune_model``.

``DiffusionPruningHook`` (in a run), ``tools/prune.py`` (one shot) and ``init_distiller``
(rebuild for sampling / export) all call it. It takes a distiller (anything with a
``student`` attribute, e.g. ``DiffusionDistiller``) or a bare / wrapped denoiser, and
either computes a pruning record (``method``: ``'width'``, ``'depth'`` or
``'depth+width'``, depth first) or replays a given one. For a distiller it then points
the student's EMA at the pruned student and hands the record to
``model.set_pruning_record`` (where the distiller has it, e.g. for a feature loss that
maps student block ``i`` to teacher block ``kept[i]``).
"""
import contextlib
import json
import os.path as osp
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mmdiff_2ndm.models.averaged_model import retarget_average
from mmdiff_2ndm.models.denoisers import (FAMILIES, denoiser_family, strip_model_wrappers,
                                          unwrap_denoiser)
from .depth import DEPTH_SELECTORS, apply_depth, keep_patterns, select_blocks
from .importance import get_importance
from .record import RECORD_FORMAT, check_record, parameter_shapes
from .rules import current_heads
from .structural import count_params_macs, prune_denoiser, rebuild_pruned

METHODS = ('width', 'depth', 'depth+width')
SUMMARY_FILE = 'pruning_summary.json'


def check_prune_settings(method: str, width: Optional[dict], depth: Optional[dict]) -> None:
    """Raises ValueError for settings ``prune_model`` cannot run (before any model work).

    Args:
        method (str): One of ``METHODS``.
        width (dict, optional): ``prune_denoiser`` keywords (``ratio``, ``importance``...).
        depth (dict, optional): ``select_blocks`` keywords (``keep``, ``group_size``,
            ``selector``...).
    """
    if method not in METHODS:
        raise ValueError(f'method={method!r}; choose one of {METHODS}.')
    if 'width' not in method and width:
        raise ValueError(f'method={method!r} removes no channels, but width settings '
                         f'{sorted(width)} were given; use method=\'depth+width\'.')
    if 'width' in method:
        width = width or {}
        get_importance(width.get('importance', 'magnitude'))
        ratio = width.get('ratio', 0.3)
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f'ratio={ratio} must lie in [0, 1) (fraction of channels removed).')
    if 'depth' not in method:
        if depth:
            raise ValueError(f'method={method!r} removes no blocks, but depth settings were '
                             "given; use method='depth' or 'depth+width'.")
        return
    if not depth or 'keep' not in depth or 'group_size' not in depth:
        raise ValueError(f'method={method!r} needs depth=dict(keep=N, group_size=M, '
                         "selector='output'|'cosine'|'learnable'): keep N of every M blocks.")
    keep_patterns(int(depth['group_size']), int(depth['keep']))
    selector = depth.get('selector', 'output')
    if selector not in DEPTH_SELECTORS:
        raise ValueError(f'Unknown depth selector {selector!r}; choose one of '
                         f'{tuple(DEPTH_SELECTORS)}.')


def needs_loss_fn(method: str, width: Optional[dict], depth: Optional[dict]) -> bool:
    """Whether ``prune_model`` needs ``loss_fn`` (a gradient importance, or a depth
    selector without given calibration inputs)."""
    needed = 'width' in method and get_importance(
        (width or {}).get('importance', 'magnitude')).needs_gradients
    if 'depth' in method:
        depth = depth or {}
        selector = DEPTH_SELECTORS[depth.get('selector', 'output')]
        needed = needed or selector.needs_loss or depth.get('calibration') is None
    return needed


def _is_denoiser(model: nn.Module) -> bool:
    try:
        return denoiser_family(model) in FAMILIES
    except TypeError:
        return False


def prune_model(model: nn.Module,
                method: str = 'width',
                *,
                record: Optional[dict] = None,
                width: Optional[dict] = None,
                depth: Optional[dict] = None,
                loss_fn: Optional[Callable[[Tensor], Tensor]] = None,
                student_key: str = 'student',
                ema_key: str = 'student_ema',
                with_macs: bool = True,
                progress: bool = True) -> dict:
    """Prunes a distiller's student (or a denoiser) in place and returns the record.

    Works inside ``torch.no_grad()`` / ``inference_mode()``.

    Args:
        model (nn.Module): A distiller (has ``student_key``) or a denoiser (possibly
            wrapped).
        method (str): ``'width'`` (channels / head dims over torch-pruning),
            ``'depth'`` (whole DiT blocks) or ``'depth+width'`` (blocks first, then
            channels of the kept blocks). Ignored when ``record`` is given.
            Defaults to ``'width'``.
        record (dict, optional): Replay this record (no importance is computed) instead
            of computing one; what resume, test, sampling and other DDP ranks do.
        width (dict, optional): ``prune_denoiser`` keywords: ``ratio`` (default 0.3),
            ``importance`` (default ``'magnitude'``), ``groupnorm_ratio``, ``target``...
        depth (dict, optional): ``select_blocks`` keywords: ``keep`` and ``group_size``
            (keep N of every M blocks), ``selector`` (``'output'``, ``'cosine'``,
            ``'learnable'``), ``calibration``, ``timesteps``, ``seed`` and the
            selector's options; ``loss_fn`` here overrides the one below for the depth
            step (e.g. one that cycles through batches for the learnable search).
        loss_fn (callable, optional): ``loss_fn(t) -> scalar`` running the student on
            real data (the DSM loss), for gradient importances and depth selectors.
        student_key (str): The distiller's student attribute. Defaults to ``'student'``.
        ema_key (str): The distiller's EMA attribute. Defaults to ``'student_ema'``.
        with_macs (bool): Count MACs before / after. Defaults to True.
        progress (bool): Show progress bars. Defaults to True.

    Returns:
        dict: The plain-data pruning record (``record.py``), also for a replayed one.

    Raises:
        TypeError: If ``model`` is neither a distiller nor a supported denoiser.
        ValueError: For bad settings (the message names the fix), or a record that does
            not fit the model.
    """
    is_distiller = not _is_denoiser(model) and hasattr(model, student_key)
    if not is_distiller and not _is_denoiser(model):
        raise TypeError(f'prune_model takes a distiller with a {student_key!r} attribute or '
                        f'a denoiser; got {type(model).__name__}.')
    target = getattr(model, student_key) if is_distiller else model
    if record is not None:
        check_record(record)
        rebuild_pruned(target, record)
    else:
        check_prune_settings(method, width, depth)
        with _without_ddp(model, student_key, is_distiller):
            record = _prune(unwrap_denoiser(target), method, dict(width or {}),
                            dict(depth or {}), loss_fn, with_macs, progress)
    if is_distiller:
        _point_ema_at_student(model, student_key, ema_key)
        if callable(getattr(model, 'set_pruning_record', None)):
            model.set_pruning_record(record)
    return record


@contextlib.contextmanager
def _without_ddp(model: nn.Module, student_key: str, is_distiller: bool):
    """Lets ``loss_fn`` run the student without its DDP wrapper (restored afterwards).

    Only rank 0 computes the pruning: a backward through DDP there would wait forever
    for the other ranks' gradient all-reduce.
    """
    wrapped = getattr(model, student_key) if is_distiller else None
    bare = strip_model_wrappers(wrapped) if wrapped is not None else None
    if bare is None or bare is wrapped:
        yield
        return
    setattr(model, student_key, bare)
    try:
        yield
    finally:
        setattr(model, student_key, wrapped)


def _prune(net: nn.Module, method: str, width: dict, depth: dict,
           loss_fn: Optional[Callable], with_macs: bool, progress: bool) -> dict:
    """Computes and applies the pruning of ``net`` (bare denoiser); returns the record."""
    before = count_params_macs(net, with_macs=with_macs)
    depth_part = depth_info = None
    if 'depth' in method:
        depth_loss_fn = depth.pop('loss_fn', None) or loss_fn
        depth_part, depth_info = select_blocks(net, loss_fn=depth_loss_fn, progress=progress,
                                               **depth)
        apply_depth(net, depth_part)
    if 'width' in method:
        _, record = prune_denoiser(net, loss_fn=loss_fn, with_macs=with_macs, **width)
    else:
        record = dict(format=RECORD_FORMAT, family=denoiser_family(net), history=[],
                      heads=current_heads(net, {}), shapes=parameter_shapes(net),
                      settings={}, stats={})
    record['settings']['method'] = method
    if depth_part is not None:
        record['depth'] = depth_part
        record['settings']['depth'] = _plain(depth_info)
    after = count_params_macs(net, with_macs=with_macs)
    record['stats'] = dict(params_before=before['params'], params_after=after['params'],
                           macs_before=before['macs'], macs_after=after['macs'])
    check_record(record)
    return record


def _plain(value):
    """``value`` with tuples as lists and numbers as Python numbers (JSON-safe)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if torch.is_tensor(value):
        return value.tolist()
    return value


def _point_ema_at_student(model: nn.Module, student_key: str, ema_key: str) -> None:
    """Re-points the student's EMA when its architecture differs from the student's."""
    ema = getattr(model, ema_key, None)
    if ema is None:
        return
    student = strip_model_wrappers(getattr(model, student_key))
    if parameter_shapes(unwrap_denoiser(ema.module)) != parameter_shapes(
            unwrap_denoiser(student)):
        retarget_average(ema, student)


def distiller_loss_fn(model: nn.Module, dataloader: DataLoader,
                      cycle: bool = False) -> Callable[[Tensor], Tensor]:
    """``loss_fn(t)``: the distiller's ``pruning_loss`` (student DSM) on real batches.

    Batches come from a loader of its own (same dataset, batch size, collate function and
    worker count, no shuffling), so the training loader's order is untouched.

    Args:
        model (nn.Module): A distiller with ``pruning_loss(data_batch, timesteps)``.
        dataloader (DataLoader): The training loader (its dataset is read).
        cycle (bool): A new batch per call, cycling through the data set (the learnable
            depth search), instead of the first batch every time (the gradient
            importances compare losses across timesteps on one batch). Defaults to False.

    Returns:
        callable: ``loss_fn(t)`` with ``t`` a 0-d LongTensor, broadcast over the batch.
    """
    if not callable(getattr(model, 'pruning_loss', None)):
        raise TypeError(
            f'This pruning needs {type(model).__name__}.pruning_loss(data_batch, timesteps) '
            "-> scalar (the student DSM loss); the model has none. Use importance='magnitude'"
            " or 'random' for width, depth calibration inputs, or add the method.")
    loader = DataLoader(dataloader.dataset, batch_size=dataloader.batch_size, shuffle=False,
                        num_workers=dataloader.num_workers, collate_fn=dataloader.collate_fn)
    state = dict(iterator=None, batch=None)

    def next_batch():
        if state['batch'] is not None and not cycle:
            return state['batch']
        try:
            batch = next(state['iterator'])
        except (StopIteration, TypeError):  # exhausted, or not started
            state['iterator'] = iter(loader)
            batch = next(state['iterator'])
        state['batch'] = batch
        return batch

    def loss_fn(t: Tensor) -> Tensor:
        data_batch = next_batch()
        batch_size = _batch_size(data_batch)
        timesteps = t.repeat(batch_size) if batch_size else t
        return model.pruning_loss(data_batch, timesteps)

    return loss_fn


def data_losses(model: nn.Module, method: str, width: Optional[dict],
                depth: Optional[dict], dataloader: Callable[[], DataLoader]
                ) -> Tuple[Optional[Callable[[Tensor], Tensor]], Optional[dict]]:
    """The ``loss_fn`` and ``depth`` arguments of ``prune_model`` for a distiller trained
    on ``dataloader()`` (built only when the settings need data).

    Gradient importances and one-shot depth selectors read the first batch; a depth
    selector that trains (``'learnable'``) gets its own ``loss_fn`` that draws a new
    batch per step.

    Args:
        model (nn.Module): The distiller (with ``pruning_loss``).
        method (str): One of ``METHODS``.
        width (dict, optional): Width settings.
        depth (dict, optional): Depth settings.
        dataloader (callable): Returns the training loader.

    Returns:
        tuple: ``(loss_fn, depth)``, ``loss_fn`` None when no data are needed.
    """
    if depth is not None:
        depth = _schedule_defaults(model, depth)
    if not needs_loss_fn(method, width, depth):
        return None, depth
    loader = dataloader()
    loss_fn = distiller_loss_fn(model, loader)
    if depth is not None and DEPTH_SELECTORS[depth.get('selector', 'output')].needs_loss:
        depth = dict(depth, loss_fn=distiller_loss_fn(model, loader, cycle=True))
    return loss_fn, depth


def _schedule_defaults(model: nn.Module, depth: dict) -> dict:
    """Depth settings whose timesteps default to the distiller's training schedule."""
    scheduler = getattr(model, 'noise_scheduler', None)
    steps = getattr(getattr(scheduler, 'config', None), 'num_train_timesteps', None)
    if steps is None:
        return depth
    depth = dict(depth)
    if DEPTH_SELECTORS[depth.get('selector', 'output')].needs_loss:
        depth.setdefault('num_train_timesteps', int(steps))
    else:
        depth.setdefault('timesteps', list(range(0, int(steps), max(1, int(steps) // 10))))
    return depth


def _batch_size(data_batch) -> Optional[int]:
    """Batch size of a dataloader batch (``inputs`` tensor, list or dict of them)."""
    inputs = data_batch.get('inputs') if isinstance(data_batch, dict) else None
    if isinstance(inputs, dict) and inputs:
        inputs = next(iter(inputs.values()))
    if torch.is_tensor(inputs):
        return inputs.shape[0]
    if isinstance(inputs, (list, tuple)):
        return len(inputs)
    return None


def pruning_summary(record: dict) -> Dict:
    """What ``pruning_summary.json`` holds: stats, settings, heads and kept blocks."""
    summary = dict(stats=record['stats'], settings=record['settings'], heads=record['heads'])
    if record.get('depth') is not None:
        summary['depth'] = record['depth']
    return summary


def format_stats(record: dict) -> str:
    """A before / after table of the record's params and MACs (and kept blocks)."""
    stats = record['stats']
    lines = ['Pruning (student):', f'{"":8}{"dense":>16}{"pruned":>16}{"kept":>8}']
    for key in ('params', 'macs'):
        before, after = stats[f'{key}_before'], stats[f'{key}_after']
        if before:
            lines.append(f'{key:8}{before:16,.0f}{after:16,.0f}{after / before:8.3f}')
    if record.get('depth') is not None:
        depth = record['depth']
        lines.append(f"blocks: kept {len(depth['kept'])} of {depth['num_blocks']} "
                     f"{depth['module']}: {depth['kept']}")
    return '\n'.join(lines)


def write_summary(record: dict, work_dir: str) -> str:
    """Writes ``<work_dir>/pruning_summary.json``; returns its path."""
    path = osp.join(work_dir, SUMMARY_FILE)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(pruning_summary(record), f, indent=2)
    return path
