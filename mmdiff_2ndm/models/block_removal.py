"""BK-SDM block-removal students of a Stable Diffusion 1.x/2.x U-Net, from the teacher.

BK-SDM (Kim et al., "BK-SDM: A Lightweight, Fast, and Cheap Version of Stable
Diffusion", arXiv 2305.15798, 2023; later titled "BK-SDM: Architecturally Compressed
Stable Diffusion for Efficient Text-to-Image Generation") removes whole residual and
attention blocks from the diffusers ``UNet2DConditionModel`` of SD (``layers_per_block=2``)
and initialises the compact U-Net with the teacher's weights of the blocks it keeps:

* ``'base'``: one ResNet(+attention) pair less in every stage. Each down stage keeps
  its first pair (teacher ``resnets.0``/``attentions.0``) and its downsampler; each up
  stage keeps the first and the last of its three pairs (student pair 0 <- teacher
  pair 0, student pair 1 <- teacher pair 2: the middle pair is removed) and its
  upsampler. In diffusers terms the student has ``layers_per_block=1``.
* ``'small'``: ``'base'`` without the mid block (diffusers ``mid_block_type=None``:
  the mid block is skipped in ``forward``).
* ``'tiny'``: ``'small'`` without the innermost stage: the last down block (SD: the
  lowest-resolution ``DownBlock2D``) and the first up block (SD: ``UpBlock2D``) are
  removed. Student up block ``i`` is teacher up block ``i + 1`` (pairs 0 <- 0,
  1 <- 2, upsampler copied); the new last down block is final, so the teacher's
  downsampler of that stage is dropped.

Everything else (``conv_in``, time embedding, the mid block of ``'base'``,
``conv_norm_out``, ``conv_out``) is copied under its own name.

Source, checked for this implementation: the authors' code, github.com/Nota-NetsPresso/
BK-SDM, ``src/kd_train_text_to_image.py`` (``copy_weight_from_teacher``: the
student-to-teacher key renames ``up_blocks.i.{resnets,attentions}.1 <-
up_blocks.i.{resnets,attentions}.2`` for bk_base/bk_small and ``up_blocks.i.* <-
up_blocks.(i+1).*`` with the same pair renames for bk_tiny; every other key by name)
and ``src/unet_config/bk_{base,small,tiny}/config.json`` (``layers_per_block: 1``;
``mid_block_type: null`` for small and tiny; tiny: ``block_out_channels
[320, 640, 1280]``, three ``CrossAttnDownBlock2D`` and three ``CrossAttnUpBlock2D``).
On SD 1.4 the U-Nets have 0.86B (teacher), 0.58B (base), 0.49B (small) and 0.33B
(tiny) parameters by the authors' model card; diffusers counts 0.860B, 0.579B, 0.482B
and 0.323B for these layouts. The code here is written anew.

The students are *initialisations*: BK-SDM's published models are these networks after
the authors' distillation pretraining (LAION-Aesthetics, output- and feature-level KD).
"""
import inspect
import re
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from mmagic.registry import MODELS

from .denoisers import unwrap_denoiser

VARIANTS = ('base', 'small', 'tiny')
DOWN_BLOCK_TYPES = ('CrossAttnDownBlock2D', 'DownBlock2D')
UP_BLOCK_TYPES = ('CrossAttnUpBlock2D', 'UpBlock2D')
# Config entries that hold one value per stage, in down-block order (tiny drops the last).
_PER_STAGE_KEYS = ('block_out_channels', 'down_block_types', 'only_cross_attention',
                   'attention_head_dim', 'num_attention_heads', 'cross_attention_dim',
                   'layers_per_block', 'transformer_layers_per_block')
_UP_KEY = re.compile(r'^up_blocks\.(\d+)\.(.*)$', re.S)
_PAIR_KEY = re.compile(r'^(resnets|attentions)\.(\d+)\.(.*)$', re.S)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f'Unknown BK-SDM variant {variant!r}; allowed are {list(VARIANTS)}.')


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (tuple, list))


def block_removed_config(teacher_config: Mapping[str, Any], variant: str) -> Dict[str, Any]:
    """The ``UNet2DConditionModel`` keyword arguments of a BK-SDM student.

    Args:
        teacher_config (Mapping): The teacher's diffusers config (``unet.config``).
        variant (str): One of ``VARIANTS``.

    Returns:
        dict: Constructor keywords of the student (private ``_*`` entries dropped).

    Raises:
        ValueError: For an unknown variant or a teacher layout outside BK-SDM's
            (``layers_per_block`` other than 2, block types other than SD's
            ``CrossAttn``/plain ``Down``/``UpBlock2D``, per-layer transformer depths,
            ``'tiny'`` on a single-stage U-Net).
    """
    from diffusers import UNet2DConditionModel
    _check_variant(variant)
    init_args = inspect.signature(UNet2DConditionModel.__init__).parameters
    config = {k: (list(v) if _is_sequence(v) else v) for k, v in teacher_config.items()
              if k in init_args and k != 'self'}

    layers = config.get('layers_per_block', 2)
    if any(n != 2 for n in (layers if _is_sequence(layers) else [layers])):
        raise ValueError('BK-SDM block removal needs a teacher with layers_per_block=2 '
                         f'(SD 1.x/2.x); got layers_per_block={layers!r}.')
    down_types = list(config['down_block_types'])
    up_types = list(config['up_block_types'])
    bad = [t for t in down_types if t not in DOWN_BLOCK_TYPES]
    bad += [t for t in up_types if t not in UP_BLOCK_TYPES]
    if bad:
        raise ValueError(f'BK-SDM block removal supports down blocks {DOWN_BLOCK_TYPES} and up '
                         f'blocks {UP_BLOCK_TYPES} (the SD U-Net); the teacher has {bad}.')
    depth = config.get('transformer_layers_per_block', 1)
    if (_is_sequence(depth) and any(_is_sequence(d) for d in depth)) or \
            config.get('reverse_transformer_layers_per_block') is not None:
        raise ValueError('BK-SDM block removal does not support per-layer '
                         '`transformer_layers_per_block` / '
                         '`reverse_transformer_layers_per_block` (SDXL-style) teachers.')

    config['layers_per_block'] = (
        [1] * len(layers) if _is_sequence(layers) else 1)
    if variant in ('small', 'tiny'):
        config['mid_block_type'] = None
    if variant == 'tiny':
        num_stages = len(down_types)
        if num_stages < 2:
            raise ValueError("BK-SDM 'tiny' removes the innermost stage; the teacher has "
                             f'only {num_stages} stage(s).')
        for key in _PER_STAGE_KEYS:
            value = config.get(key)
            if _is_sequence(value):
                if len(value) != num_stages:
                    raise ValueError(f'config {key}={value!r} does not hold one entry per '
                                     f'stage ({num_stages}).')
                config[key] = value[:-1]
        config['up_block_types'] = up_types[1:]  # up blocks run innermost first
    return config


def teacher_key(student_key: str, variant: str) -> str:
    """The teacher state-dict key whose tensor initialises ``student_key``.

    Args:
        student_key (str): A key of the student's ``state_dict``.
        variant (str): One of ``VARIANTS``.

    Returns:
        str: The teacher's key (the same key outside the up blocks).
    """
    _check_variant(variant)
    match = _UP_KEY.match(student_key)
    if match is None:  # conv_in, time embedding, down blocks, mid block, conv_out
        return student_key
    block = int(match.group(1)) + (1 if variant == 'tiny' else 0)
    rest = match.group(2)
    pair = _PAIR_KEY.match(rest)
    if pair is not None:
        index = int(pair.group(2))
        if index > 1:
            raise ValueError(f'{student_key!r}: a BK-SDM student up block has two pairs.')
        # Pair 0 is the teacher's first, pair 1 its last (the middle one is removed).
        rest = f'{pair.group(1)}.{2 * index}.{pair.group(3)}'
    return f'up_blocks.{block}.{rest}'


@torch.no_grad()
def copy_teacher_weights(student: nn.Module, teacher: nn.Module, variant: str) -> nn.Module:
    """Copies the teacher's tensors into every parameter and buffer of the student.

    Args:
        student (nn.Module): A BK-SDM student of ``variant`` (possibly wrapped).
        teacher (nn.Module): The SD U-Net it was derived from (possibly wrapped).
        variant (str): One of ``VARIANTS``.

    Returns:
        nn.Module: ``student`` (weights changed in place).

    Raises:
        RuntimeError: If a student tensor has no teacher tensor, or one of another shape
            (the student is not the ``variant`` of this teacher).
    """
    student_net = unwrap_denoiser(student)
    source = unwrap_denoiser(teacher).state_dict()
    target = student_net.state_dict()
    missing, mismatched = [], []
    mapped = {}
    for key, tensor in target.items():
        src_key = teacher_key(key, variant)
        if src_key not in source:
            missing.append(f'{key} <- {src_key}')
        elif source[src_key].shape != tensor.shape:
            mismatched.append(f'{key} {tuple(tensor.shape)} <- {src_key} '
                              f'{tuple(source[src_key].shape)}')
        else:
            mapped[key] = source[src_key]
    if missing or mismatched:
        raise RuntimeError(
            f'The student is not the BK-SDM {variant!r} variant of this teacher: '
            f'{len(missing)} tensor(s) without a teacher tensor {missing[:5]}, '
            f'{len(mismatched)} of another shape {mismatched[:5]}.')
    for key, tensor in target.items():
        tensor.copy_(mapped[key])
    return student


def _sd_unet(teacher: Optional[nn.Module], owner: str) -> nn.Module:
    """The bare diffusers ``UNet2DConditionModel`` inside ``teacher``."""
    from diffusers import UNet2DConditionModel
    net = unwrap_denoiser(teacher) if teacher is not None else None
    if not isinstance(net, UNet2DConditionModel):
        raise TypeError(f'{owner} needs a diffusers UNet2DConditionModel teacher, got '
                        f'{type(net).__name__}.')
    return net


def _init_from_teacher(student: nn.Module, net: nn.Module, variant: str) -> None:
    """Moves the bare ``student`` to the teacher's device and copies its weights."""
    param = next(net.parameters(), None)
    if param is not None:
        student.to(param.device)
    copy_teacher_weights(student, net, variant)


def block_removed_unet(teacher: nn.Module, variant: str = 'base') -> nn.Module:
    """Builds the BK-SDM ``variant`` of an SD U-Net, initialised from the teacher.

    Args:
        teacher (UNet2DConditionModel): The SD 1.x/2.x U-Net (``layers_per_block=2``),
            bare or wrapped (mmagic ``DiffusersWrapper``, DDP).
        variant (str): ``'base'``, ``'small'`` or ``'tiny'`` (module docstring).
            Defaults to ``'base'``.

    Returns:
        UNet2DConditionModel: The bare student, on the teacher's device, with the
        default (float32) parameter dtype; every parameter and buffer holds the
        teacher's tensor of the corresponding kept module.
    """
    from diffusers import UNet2DConditionModel
    net = _sd_unet(teacher, 'BK-SDM block removal')
    student = UNet2DConditionModel(**block_removed_config(net.config, variant))
    _init_from_teacher(student, net, variant)
    return student


def bk_sdm_student(teacher: Optional[nn.Module] = None, variant: str = 'base') -> nn.Module:
    """Registered as ``MODELS: 'BKSDMStudent'``: a distiller student from its teacher.

    ``DiffusionDistiller`` passes its built teacher as ``teacher`` (builders with
    ``derives_from_teacher = True``), so a config only names the variant::

        student=dict(type='BKSDMStudent', variant='base')

    Args:
        teacher (nn.Module): The built (loaded) SD U-Net teacher.
        variant (str): ``'base'``, ``'small'`` or ``'tiny'``. Defaults to ``'base'``.

    Returns:
        nn.Module: The student in mmagic's ``UNet2DConditionModel`` wrapper (as a
        student loaded with ``from_pretrained``, so checkpoints hold the same
        ``student.model.*`` keys), marked initialised for ``init_weights``.
    """
    if teacher is None:
        raise ValueError("BKSDMStudent derives the student from the teacher, but none was "
                         'given (teacher=None); configure the teacher.')
    net = _sd_unet(teacher, 'BKSDMStudent')
    wrapper = MODELS.build(dict(type='UNet2DConditionModel',
                                **block_removed_config(net.config, variant)))
    _init_from_teacher(wrapper.model, net, variant)
    wrapper._is_init = True  # mmengine BaseModule: init_weights must keep these weights
    return wrapper


bk_sdm_student.derives_from_teacher = True
MODELS.register_module(name='BKSDMStudent', module=bk_sdm_student)
