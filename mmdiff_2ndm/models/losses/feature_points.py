"""Where the feature term compares student and teacher: layer pairs and kept channels.

A *feature point* is a pair ``(student layer, teacher layer)`` of module names of the
bare denoisers whose outputs are compared. Presets per denoiser family:

* ``'bk-sdm'`` (U-Nets: ``UNet2DModel``, ``UNet2DConditionModel``): the output of every
  ``down_blocks.i`` and ``up_blocks.i`` (BK-SDM's points; 8 on SD's U-Net). A student
  with fewer stages (BK-SDM-Tiny) keeps its down blocks' names and takes the teacher's
  up blocks counted from the outermost: student ``up_blocks.i`` <- teacher
  ``up_blocks.(i + n_teacher - n_student)`` (6 points on SD); its last down block, which
  no longer downsamples, is matched with the teacher's state before the downsampler.
* ``'dit'`` (``DiTTransformer2DModel``): the output of every ``transformer_blocks.i``,
  student block ``i`` <- teacher block ``block_map[i]``.

A width-pruned student has fewer channels than the teacher at the same point; the
channels the pruning record kept are found by replaying the record on a copy of the
teacher whose every parameter row holds its own index (:func:`kept_output_channels`).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..denoisers import denoiser_family, unwrap_denoiser

LAYER_PRESETS = ('auto', 'bk-sdm', 'dit')
BLOCK_MAPS = ('auto', 'kept', '2i+1')
FeaturePoint = Tuple[str, str]
BlockMap = Union[str, Sequence[int]]


def kept_blocks_of(record: Optional[dict]) -> Optional[List[int]]:
    """The teacher block indices a depth-pruned student kept (``record['depth']``)."""
    depth = (record or {}).get('depth')
    return None if depth is None else [int(i) for i in depth['kept']]


def _num_children(net: nn.Module, name: str) -> int:
    module = getattr(net, name, None)
    return 0 if module is None else len(module)


def unet_block_points(student: nn.Module, teacher: nn.Module) -> List[FeaturePoint]:
    """BK-SDM's points: every down and up block output (see the module docstring)."""
    n_down_s, n_down_t = (_num_children(n, 'down_blocks') for n in (student, teacher))
    n_up_s, n_up_t = (_num_children(n, 'up_blocks') for n in (student, teacher))
    if not n_down_s or n_down_s > n_down_t or n_up_s > n_up_t:
        raise ValueError(
            f"layers='bk-sdm' needs U-Nets whose student has at most the teacher's stages; "
            f'student has {n_down_s} down / {n_up_s} up blocks, teacher {n_down_t} / '
            f'{n_up_t}. Give the layer pairs as layers=dict(student_name=teacher_name).')
    points = [(f'down_blocks.{i}', _down_point(student, teacher, i)) for i in range(n_down_s)]
    offset = n_up_t - n_up_s
    points += [(f'up_blocks.{i}', f'up_blocks.{i + offset}') for i in range(n_up_s)]
    return points


def _down_point(student: nn.Module, teacher: nn.Module, index: int) -> str:
    """The teacher layer of student ``down_blocks.index``: the same block, or, when the
    teacher's block downsamples and the student's (now final) one does not (BK-SDM-Tiny),
    the teacher's last layer before its downsampler."""
    name = f'down_blocks.{index}'
    s_block, t_block = student.get_submodule(name), teacher.get_submodule(name)
    if getattr(t_block, 'downsamplers', None) is None or \
            getattr(s_block, 'downsamplers', None) is not None:
        return name
    attentions = getattr(t_block, 'attentions', None)
    if attentions is not None and len(attentions):
        return f'{name}.attentions.{len(attentions) - 1}'
    return f'{name}.resnets.{len(t_block.resnets) - 1}'


def dit_block_points(student: nn.Module, teacher: nn.Module, block_map: BlockMap,
                     record: Optional[dict]) -> List[FeaturePoint]:
    """Every DiT block output, student block i <- teacher block ``map[i]``.

    Args:
        student (nn.Module): The bare student DiT.
        teacher (nn.Module): The bare teacher DiT.
        block_map (str | Sequence[int]): ``'kept'``: the teacher blocks the depth-pruning
            record kept; ``'2i+1'``: TinyFusion's map for a half-depth student; a list:
            teacher index per student block; ``'auto'``: ``'kept'`` for a depth-pruned
            student, the identity for equal depths.
        record (dict, optional): The student's pruning record.

    Returns:
        list[tuple[str, str]]: The feature points.
    """
    n_s = _num_children(student, 'transformer_blocks')
    n_t = _num_children(teacher, 'transformer_blocks')
    kept = kept_blocks_of(record)
    if isinstance(block_map, str):
        if block_map not in BLOCK_MAPS:
            raise ValueError(f'block_map must be one of {BLOCK_MAPS} or a list of teacher '
                             f'block indices, got {block_map!r}.')
        if block_map == 'auto':
            block_map = 'kept' if kept is not None else list(range(n_s))
            if kept is None and n_s != n_t:
                raise ValueError(
                    f'The student DiT has {n_s} blocks, the teacher {n_t}, and no depth-'
                    "pruning record says which were kept: set block_map='2i+1' "
                    '(TinyFusion) or a list of teacher block indices.')
        if block_map == 'kept':
            if kept is None:
                raise ValueError("block_map='kept' needs a depth-pruned student (a pruning "
                                 "record with 'depth'); this student has none.")
            block_map = kept
        elif block_map == '2i+1':
            block_map = [2 * i + 1 for i in range(n_s)]
    block_map = [int(i) for i in block_map]
    if len(block_map) != n_s or not all(0 <= i < n_t for i in block_map):
        raise ValueError(f'block_map {block_map} must give one teacher block in [0, {n_t}) '
                         f'for each of the {n_s} student blocks.')
    return [(f'transformer_blocks.{i}', f'transformer_blocks.{j}')
            for i, j in enumerate(block_map)]


def feature_points(student: nn.Module, teacher: nn.Module,
                   layers: Union[str, Sequence[str], Dict[str, str]],
                   block_map: BlockMap = 'auto',
                   record: Optional[dict] = None) -> List[FeaturePoint]:
    """Resolves a layer spec into ``(student layer, teacher layer)`` pairs.

    Args:
        student (nn.Module): The student denoiser (wrappers are stripped).
        teacher (nn.Module): The teacher denoiser.
        layers (str | Sequence[str] | dict): A preset from ``LAYER_PRESETS``
            (``'auto'``: by the denoiser family), module names present in both, or a
            dict student name -> teacher name.
        block_map (str | Sequence[int]): DiT block map (see :func:`dit_block_points`).
        record (dict, optional): The student's pruning record.

    Returns:
        list[tuple[str, str]]: The feature points, every name an existing module.
    """
    student, teacher = unwrap_denoiser(student), unwrap_denoiser(teacher)
    if isinstance(layers, str):
        if layers not in LAYER_PRESETS:
            raise ValueError(f'layers must be one of {LAYER_PRESETS}, a list of module '
                             f'names or a dict student name -> teacher name; got {layers!r}.')
        family = denoiser_family(student)
        if layers == 'auto':
            layers = {'unet2d': 'bk-sdm', 'unet2d_condition': 'bk-sdm',
                      'dit': 'dit'}.get(family)
            if layers is None:
                raise ValueError(f"layers='auto' has no preset for {family!r} denoisers; "
                                 'give module names, e.g. layers=[...] or a dict.')
        points = (unet_block_points(student, teacher) if layers == 'bk-sdm' else
                  dit_block_points(student, teacher, block_map, record))
    elif isinstance(layers, dict):
        points = [(str(s), str(t)) for s, t in layers.items()]
    else:
        points = [(str(name), str(name)) for name in layers]
    if not points:
        raise ValueError('FeatureKDLoss got no layers to compare.')
    for net, role, names in ((student, 'student', [p[0] for p in points]),
                             (teacher, 'teacher', [p[1] for p in points])):
        modules = dict(net.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f'The {role} ({type(net).__name__}) has no module(s) {missing}; '
                             'check the layer names (print(net) lists them).')
    return points


def channel_dim(feature: Tensor) -> int:
    """The channel dimension of a feature: 1 for (B, C, H, W), -1 for tokens (B, N, D)."""
    return 1 if feature.dim() == 4 else -1


def _output_leaf(student: nn.Module, teacher: nn.Module, point: FeaturePoint,
                 student_channels: int, teacher_channels: int) -> str:
    """The last-registered layer inside the point whose weight rows are the point's
    output channels, in both nets (e.g. a block's last conv or linear).

    Raises:
        ValueError: If no such layer exists.
    """
    s_name, t_name = point
    teacher_modules = dict(teacher.named_modules())
    candidates = []
    for sub_name, module in student.get_submodule(s_name).named_modules():
        weight = getattr(module, 'weight', None)
        if not isinstance(weight, Tensor) or weight.dim() < 1 or not sub_name:
            continue
        twin = teacher_modules.get(f'{t_name}.{sub_name}')
        t_weight = getattr(twin, 'weight', None)
        if (weight.shape[0] == student_channels and isinstance(t_weight, Tensor)
                and t_weight.shape[0] == teacher_channels):
            candidates.append(sub_name)
    if not candidates:
        raise ValueError(
            f'Cannot tell which teacher channels the student kept at {s_name!r} '
            f'({student_channels} vs {teacher_channels} channels): no layer inside it '
            "writes them in both nets. Use connector='conv1x1' for this student.")
    return candidates[-1]


@torch.no_grad()
def kept_output_channels(teacher: nn.Module, record: dict, points: Sequence[FeaturePoint],
                         channels: Dict[str, Tuple[int, int]]) -> Dict[str, Tensor]:
    """The teacher channels (indices, ascending) a pruned student kept at each point.

    Replays ``record`` on a float32 copy of the dense teacher in which row ``i`` (dim 0)
    of every parameter holds the value ``i``; after the replay a kept row still holds
    its teacher index. The rows of the layer that writes the point's output
    (:func:`_output_leaf`) are the point's channels.

    Args:
        teacher (nn.Module): The dense teacher (not modified).
        record (dict): The student's pruning record.
        points (Sequence[tuple[str, str]]): The feature points to resolve.
        channels (dict): Student layer -> (student channels, teacher channels).

    Returns:
        dict: Student layer -> LongTensor of teacher channel indices.
    """
    from mmdiff_2ndm.pruning import rebuild_pruned  # the replay lives with the pruning

    dense = unwrap_denoiser(teacher)
    # trainable again: torch-pruning traces the dependency graph through grad_fn
    tagged = copy.deepcopy(dense).float().requires_grad_(True)
    for param in tagged.parameters():
        if param.dim() >= 1:
            index = torch.arange(param.shape[0], dtype=param.dtype, device=param.device)
            param.copy_(index.view(-1, *([1] * (param.dim() - 1))).expand_as(param))
    rebuild_pruned(tagged, record)
    kept = {}
    for point in points:
        s_name, t_name = point
        n_s, n_t = channels[s_name]
        leaf = _output_leaf(tagged, dense, (s_name, t_name), n_s, n_t)
        rows = tagged.get_submodule(f'{s_name}.{leaf}').weight.flatten(1)[:, 0]
        index = rows.round().long()
        if index.numel() != n_s or bool((index[1:] <= index[:-1]).any()) or \
                int(index.max()) >= n_t:
            raise ValueError(f'The pruning record does not map {s_name!r} onto the '
                             f"teacher's {t_name!r} channel by channel; use "
                             "connector='conv1x1'.")
        kept[s_name] = index
    return kept
