"""Building the distiller's parts: the frozen teacher (and helpers), the student, the
losses."""
import copy
import logging
import os.path as osp
import re
import warnings
from typing import Dict, List, Optional, Union

from mmengine import print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict
from torch import nn

from mmagic.models.utils import build_module
from mmagic.registry import MODELS

from ...utils import checkpoint as _safe_checkpoint  # noqa: F401  (registers the safe loader)
from ...utils.state_dict import check_state_dict_shapes, describe_prefixes, key_prefixes
from ..denoisers import check_denoiser_inputs, unwrap_denoiser
from ..losses.loss_inputs import FORWARD_RUNNER_INPUT, loss_inputs
from ..losses.second_order_match_loss import SecondOrderMatchLoss
from ..losses.squared_error import SquaredErrorLoss

ModelType = Union[dict, nn.Module]
CkptType = Union[str, dict, None]

# Loss names whose config may leave out ``type`` (the historical trio).
DEFAULT_LOSS_TYPES = dict(dsm='DSMLoss', kd='KDLoss', jacobian='2ndMatchLoss')
# Distiller arguments of the Jacobian term's schedule, now options of its loss.
DEPRECATED_JACOBIAN_ARGS = dict(jacobian_scale='scale', jacobian_t_range='t_range',
                                jacobian_warmup_iters='warmup_iters')


def build_losses(losses: Optional[dict],
                 pixel_reduction: str = 'sum',
                 legacy_jacobian: Optional[dict] = None) -> Dict[str, nn.Module]:
    """Builds the distiller's open set of loss modules from its ``losses`` config.

    Args:
        losses (dict, optional): Any names, each a loss config (``type`` may be left
            out for ``DEFAULT_LOSS_TYPES``' names; ``inputs=dict(argument=field)``
            overrides what the loss consumes, see ``loss_inputs.py``), a built module,
            or None (off). None: ``dsm`` and ``kd`` with weight 1.
        pixel_reduction (str): The default ``reduction`` of DSM and KD (and of any
            other ``SquaredErrorLoss``).
        legacy_jacobian (dict, optional): Deprecated distiller arguments
            (``DEPRECATED_JACOBIAN_ARGS``) to move into the loss that runs the
            forwards.

    Returns:
        dict: Name -> module, the loss that runs the forwards (if any) first, the
        others in config order.
    """
    if losses is None:
        losses = dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0))
    if not isinstance(losses, dict):
        raise TypeError(f'losses must be a dict name -> loss config, got '
                        f'{type(losses).__name__}.')
    enabled = {name: cfg for name, cfg in losses.items() if cfg is not None}
    if not enabled:
        raise ValueError(f'All losses are switched off ({sorted(losses)}); enable at '
                         'least one.')
    built = {}
    for name, cfg in enabled.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f'Loss name {name!r} must be an identifier (it is logged as '
                             f'loss_<name>).')
        module = cfg if isinstance(cfg, nn.Module) else _build_loss(name, cfg,
                                                                    pixel_reduction)
        loss_inputs(module, name)  # declares what it consumes, in the known fields
        built[name] = module
    runners = [n for n, m in built.items() if FORWARD_RUNNER_INPUT in loss_inputs(m)]
    if len(runners) > 1:
        raise ValueError(f'Losses {runners} each run the forwards (they consume '
                         f"'{FORWARD_RUNNER_INPUT}'); keep one.")
    _migrate_legacy_jacobian(legacy_jacobian or {}, built, runners, enabled)
    return {name: built[name] for name in runners + [n for n in built if n not in runners]}


def _build_loss(name: str, cfg: dict, pixel_reduction: str) -> nn.Module:
    """Builds one loss config (defaults: type by name, DSM/KD reduction, and a
    non-finite Jacobian term returned to the distiller's step guard)."""
    cfg = dict(cfg)
    inputs = cfg.pop('inputs', None)
    if 'type' not in cfg:
        if name not in DEFAULT_LOSS_TYPES:
            raise ValueError(f'losses.{name} needs a `type` (a registered loss, e.g. '
                             "'FeatureKDLoss'); only "
                             f'{sorted(DEFAULT_LOSS_TYPES)} have a default type.')
        cfg['type'] = DEFAULT_LOSS_TYPES[name]
    loss_cls = MODELS.get(cfg['type']) if isinstance(cfg['type'], str) else cfg['type']
    if loss_cls is None:
        raise KeyError(f"losses.{name}: {cfg['type']!r} is not a registered loss; import "
                       'the module that registers it (custom_imports).')
    if isinstance(loss_cls, type) and issubclass(loss_cls, SquaredErrorLoss):
        cfg.setdefault('reduction', pixel_reduction)
    if isinstance(loss_cls, type) and issubclass(loss_cls, SecondOrderMatchLoss):
        # A non-finite term goes to the distiller's step guard, the one place that
        # skips updates.
        cfg.setdefault('nonfinite', 'return')
    module = MODELS.build(cfg)
    if inputs is not None:
        if not isinstance(inputs, dict):
            raise TypeError(f'losses.{name}.inputs must be a dict argument -> field, got '
                            f'{type(inputs).__name__}.')
        module.loss_inputs = dict(inputs)
    return module


def _migrate_legacy_jacobian(legacy: dict, built: Dict[str, nn.Module], runners: List[str],
                             configs: dict) -> None:
    """Moves deprecated distiller arguments of the Jacobian schedule into its loss."""
    if not legacy:
        return
    names = ', '.join(f'{arg}={value!r}' for arg, value in legacy.items())
    if not runners or not isinstance(built[runners[0]], SecondOrderMatchLoss):
        warnings.warn(f'DiffusionDistiller({names}) is deprecated and ignored: there is no '
                      '2ndMatchLoss in `losses`.', DeprecationWarning, stacklevel=3)
        print_log(f'Ignored the deprecated {names}: no 2ndMatchLoss in `losses`.',
                  'current', logging.WARNING)
        return
    name = runners[0]
    options = {DEPRECATED_JACOBIAN_ARGS[arg]: value for arg, value in legacy.items()}
    given = configs[name] if isinstance(configs[name], dict) else {}
    clashes = [opt for opt in options if opt in given]
    if clashes:
        raise ValueError(f'{names} clashes with losses.{name}.{clashes[0]}; set it in the '
                         'loss config only.')
    message = (f'DiffusionDistiller({names}) is deprecated: configure the Jacobian term in '
               f"its loss, losses.{name}=dict(type='2ndMatchLoss', "
               + ', '.join(f'{opt}={value!r}' for opt, value in options.items()) + ', ...).')
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    print_log(message, 'current', logging.WARNING)
    loss = built[name]
    merged = dict(scale=loss.scale, t_range=loss.t_range, warmup_iters=loss.warmup_iters)
    merged.update(options)
    checked = SecondOrderMatchLoss(**merged)  # validates them as the loss does
    loss.scale, loss.t_range, loss.warmup_iters = (checked.scale, checked.t_range,
                                                   checked.warmup_iters)


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
    check_denoiser_inputs(model)  # unsupported classes and configs fail here, not mid-training
    if teacher_ckpt is not None:
        load_weights(model, teacher_ckpt, 'teacher_ckpt')
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
    check_denoiser_inputs(model)
    if student_ckpt is not None:
        load_weights(model, student_ckpt, 'student_ckpt')
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
