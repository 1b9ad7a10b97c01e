"""Building the distiller's parts: the frozen teacher (and helpers), the student, the
losses."""
import copy
import os.path as osp
import re
from typing import Dict, List, Optional, Union

from mmengine import print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict
from torch import nn

from mmagic.models.utils import build_module
from mmagic.registry import MODELS

from ...pruning.record import check_state_dict_shapes, describe_prefixes, key_prefixes
from ...utils import checkpoint as _safe_checkpoint  # noqa: F401  (registers the safe loader)
from ..denoisers import denoiser_family, unwrap_denoiser

ModelType = Union[dict, nn.Module]
CkptType = Union[str, dict, None]

LOSS_KEYS = ('dsm', 'kd', 'jacobian')
LOSS_TYPES = dict(dsm='DSMLoss', kd='KDLoss', jacobian='2ndMatchLoss')


def build_losses(losses: Optional[dict],
                 pixel_reduction: str = 'sum') -> Dict[str, Optional[nn.Module]]:
    """Builds the distiller's loss modules from its ``losses`` config.

    Args:
        losses (dict, optional): Keys from ``LOSS_KEYS``, each a loss config (its
            ``type`` defaults to ``LOSS_TYPES``), a built module, or None (off). None:
            ``dsm`` and ``kd`` with weight 1.
        pixel_reduction (str): The default ``reduction`` of DSM and KD.

    Returns:
        dict: ``dsm``, ``kd``, ``jacobian`` -> module or None.
    """
    if losses is None:
        losses = dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0))
    if not isinstance(losses, dict):
        raise TypeError(f'losses must be a dict with keys from {LOSS_KEYS}, '
                        f'got {type(losses).__name__}.')
    unknown = sorted(set(losses) - set(LOSS_KEYS))
    if unknown:
        raise ValueError(f'Unknown loss key(s) {unknown} in `losses`; allowed keys are '
                         f'{list(LOSS_KEYS)} (set a value to None to switch it off).')
    if all(losses.get(k) is None for k in LOSS_KEYS):
        raise ValueError('All losses are switched off; enable at least one of '
                         f'{list(LOSS_KEYS)}.')
    built = {}
    for key in LOSS_KEYS:
        cfg = losses.get(key)
        if cfg is not None and not isinstance(cfg, nn.Module):
            cfg = dict(cfg)
            cfg.setdefault('type', LOSS_TYPES[key])
            if key == 'jacobian':
                # A non-finite term goes to the distiller's step guard, the one place
                # that skips updates.
                cfg.setdefault('nonfinite', 'return')
            else:
                cfg.setdefault('reduction', pixel_reduction)
            cfg = MODELS.build(cfg)
        built[key] = cfg
    return built


def mark_initialised(module: nn.Module) -> None:
    """Keeps ``init_weights`` from re-initialising loaded weights."""
    for sub in module.modules():
        if isinstance(sub, BaseModule):
            sub._is_init = True


def frozen(module: nn.Module) -> nn.Module:
    """Freezes a helper network: no gradients, eval mode, no re-initialisation.

    Frozen networks hold no trainable parameter, so ``MMSeparateDistributedDataParallel``
    leaves them unwrapped.
    """
    module.requires_grad_(False)
    module.eval()
    mark_initialised(module)
    return module


def build_teacher(teacher: Optional[ModelType], teacher_ckpt: CkptType,
                  student: Optional[ModelType],
                  teacher_losses: List[str]) -> Optional[nn.Module]:
    """Builds the teacher, loads its weights and freezes it.

    Args:
        teacher (dict | nn.Module, optional): Config or module; None trains the
            student from scratch.
        teacher_ckpt (str | dict, optional): See :func:`load_weights`.
        student (dict | nn.Module, optional): The student config (required without a
            teacher).
        teacher_losses (list[str]): The enabled losses that need a teacher.

    Returns:
        nn.Module | None: The frozen teacher.
    """
    if teacher is None:
        if student is None:
            raise ValueError('teacher=None needs a `student` config to train from '
                             'scratch; give a teacher or a student.')
        if teacher_losses:
            raise ValueError(f'The losses {teacher_losses} need a teacher, but '
                             'teacher=None; switch them off (losses=dict(dsm=..., '
                             'kd=None)) or give a teacher.')
        if teacher_ckpt is not None:
            raise ValueError('teacher_ckpt is given but teacher=None; give the teacher '
                             'config too.')
        return None
    has_pretrained = isinstance(teacher, dict) and bool(teacher.get('from_pretrained'))
    if not isinstance(teacher, nn.Module) and not has_pretrained and teacher_ckpt is None:
        raise ValueError(
            'The teacher has no weights: give `teacher_ckpt` (an MMEngine checkpoint), '
            "`from_pretrained=<local diffusers folder>` in the teacher config, or a built "
            'module. A randomly initialised teacher cannot be distilled from.')
    model = build_module(teacher, MODELS)
    if teacher_ckpt is not None:
        load_weights(model, teacher_ckpt, 'teacher_ckpt')
    denoiser_family(model)  # unsupported classes fail here, not mid-training
    return frozen(model)


def build_student(student: Optional[ModelType], student_ckpt: CkptType,
                  teacher: Optional[nn.Module]) -> nn.Module:
    """Copies the teacher (``student=None``) or builds the configured student.

    A builder flagged ``derives_from_teacher`` (e.g. ``'BKSDMStudent'``) gets the
    built teacher as ``teacher=``.

    Returns:
        nn.Module: The trainable student.
    """
    if student is None:
        model = copy.deepcopy(teacher)
    else:
        builder = student.get('type') if isinstance(student, dict) else None
        if isinstance(builder, str):
            builder = MODELS.get(builder)
        from_teacher = bool(getattr(builder, 'derives_from_teacher', False))
        default_args = dict(teacher=teacher) if from_teacher else None
        model = build_module(student, MODELS, default_args=default_args)
        has_pretrained = isinstance(student, dict) and bool(student.get('from_pretrained'))
        if (student_ckpt is None and not has_pretrained and not from_teacher
                and not isinstance(student, nn.Module)):
            print_log('The student has no checkpoint; it starts from random weights.',
                      'current')
    if student_ckpt is not None:
        load_weights(model, student_ckpt, 'student_ckpt')
    denoiser_family(model)
    if student is None or student_ckpt is not None:
        mark_initialised(model)
    model.requires_grad_(True)
    return model


def load_weights(module: nn.Module, ckpt: Union[str, dict], role: str) -> None:
    """Loads an MMEngine checkpoint into the bare denoiser, strictly.

    Args:
        module (nn.Module): The (possibly wrapped) denoiser.
        ckpt (str | dict): Path, or ``dict(filename=..., prefix=...)`` to take a
            sub-state-dict (e.g. ``prefix='student.model.'``).
        role (str): Name of the config key, for error messages.

    Raises:
        ValueError: If the weights do not load as given but do under a key prefix of
            the file (the message names the prefixes and the config to write), or if
            their shapes do not fit.
    """
    if isinstance(ckpt, dict):
        unknown = set(ckpt) - {'filename', 'prefix'}
        if 'filename' not in ckpt or unknown:
            raise ValueError(f'{role} as a dict takes keys filename (required) and prefix; '
                             f'got {sorted(ckpt)}.')
        filename, prefix = ckpt['filename'], ckpt.get('prefix')
    elif isinstance(ckpt, str):
        filename, prefix = ckpt, None
    else:
        raise TypeError(f'{role} must be a path or dict(filename=..., prefix=...), '
                        f'got {type(ckpt).__name__}.')
    if '://' not in filename and not osp.isfile(osp.expanduser(filename)):
        raise FileNotFoundError(f'{role} {filename!r} does not exist; give the path of an '
                                'MMEngine checkpoint (or use from_pretrained for a '
                                'diffusers folder).')
    net = unwrap_denoiser(module)
    checkpoint = _load_checkpoint(filename, map_location='cpu')
    whole = checkpoint.get('state_dict', checkpoint)
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state_dict = {key[len(prefix):]: value for key, value in whole.items()
                      if key.startswith(prefix)}
    else:
        state_dict = {re.sub(r'^module\.', '', key): value for key, value in whole.items()}
    expected = {key: list(value.shape) for key, value in net.state_dict().items()}
    if set(state_dict) != set(expected):
        found = key_prefixes(expected, whole)
        fits = [p for p, fit in found.items() if fit]
        if fits and (prefix or '') not in fits:
            # the EMA first: it is what a finished run is scored as
            best = next((p for p in fits if 'ema' in p), fits[0])
            given = f'prefix {prefix!r}' if prefix else 'no prefix'
            raise ValueError(
                f'{role} {filename!r} does not fit the network with {given}: its keys carry '
                f'a prefix; found {describe_prefixes(found)}; {best!r} fits: write '
                f'{role}=dict(filename={filename!r}, prefix={best!r}).')
    try:
        check_state_dict_shapes(net, state_dict, what=f'{role} {filename!r}')
    except ValueError as error:
        raise ValueError(f'{error}. {role} loads into the network as configured; a pruned '
                         "run's weights load with load_from=<checkpoint> and "
                         'DiffusionPruningHook instead.') from None
    load_state_dict(net, state_dict, strict=True)
