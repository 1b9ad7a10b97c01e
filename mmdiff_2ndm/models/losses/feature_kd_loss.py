"""Feature-level distillation: student features matched to the teacher's (BK-SDM,
TinyFusion)."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmagic.registry import MODELS
from torch import Tensor, nn

from ..denoisers import example_denoiser_inputs, run_denoiser
from ..feature_recorder import FeatureRecorder
from .feature_points import (BlockMap, FeaturePoint, channel_dim, feature_points,
                             kept_output_channels)

REDUCTIONS = ('mean', 'sum')
SCHEDULES = ('constant', 'linear')
CONNECTORS = (None, 'conv1x1')


class _Nets:
    """Plain holder of the networks a loss was bound to (not registered as submodules)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, record: Optional[dict]):
        self.student, self.teacher, self.record = student, teacher, record


@MODELS.register_module()
class FeatureKDLoss(nn.Module):
    """Matches named intermediate outputs of the student to the teacher's.

    ``loss_weight * w(iteration) * sum over points of ||f_S - f_T||^2`` (per point: the
    mean over all elements for ``reduction='mean'``, BK-SDM's; or the sum over the
    non-batch elements averaged over the batch for ``'sum'``). The features are recorded
    by ``DiffusionDistiller`` with forward hooks in the forwards it already runs (with
    the Jacobian term on, the plain tensors of its primal pass), the teacher's detached.

    Width-pruned students have fewer channels at a point: the teacher's feature is
    compared at the channels the pruning record kept (found once, see
    :func:`kept_output_channels`), or, with ``connector='conv1x1'``, the student's
    feature goes through a learnable 1x1 map to the teacher's width (for students whose
    channels do not map, e.g. another architecture; built at bind time, trained by an
    ``optim_wrapper`` key ``losses``).

    Args:
        layers (str | Sequence[str] | dict): ``'auto'`` (the preset of the denoiser
            family), ``'bk-sdm'`` (every U-Net down/up block), ``'dit'`` (every DiT
            block), module names present in both nets, or a dict student name ->
            teacher name. Defaults to ``'auto'``.
        block_map (str | Sequence[int]): For ``'dit'``: ``'auto'``, ``'kept'`` (the
            depth-pruning record's kept blocks), ``'2i+1'`` (TinyFusion) or teacher
            indices per student block. Defaults to ``'auto'``.
        loss_weight (float): Multiplies the sum over points. Defaults to 1.0 (BK-SDM).
        reduction (str): ``'mean'`` or ``'sum'`` (see above). Defaults to ``'mean'``.
        mask_sigma (float, optional): TinyFusion's masking of massive activations:
            elements where the teacher's or the student's feature lies more than
            ``mask_sigma`` standard deviations from its per-sample mean are left out.
            Defaults to None (no mask).
        weight_schedule (str): ``'constant'``, or ``'linear'``: decays the weight to 0
            at ``schedule_iters`` (TinyFusion). Defaults to ``'constant'``.
        schedule_iters (int, optional): Length of the ``'linear'`` decay.
        connector (str, optional): None (channel selection from the pruning record) or
            ``'conv1x1'``. Defaults to None.
    """

    loss_inputs = dict(student_feats='student_feats', teacher_feats='teacher_feats',
                       iteration='iteration')  # see loss_inputs.py

    def __init__(self,
                 layers: Union[str, Sequence[str], Dict[str, str]] = 'auto',
                 block_map: BlockMap = 'auto',
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 mask_sigma: Optional[float] = None,
                 weight_schedule: str = 'constant',
                 schedule_iters: Optional[int] = None,
                 connector: Optional[str] = None) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}.')
        if weight_schedule not in SCHEDULES:
            raise ValueError(f'weight_schedule must be one of {SCHEDULES}, got '
                             f'{weight_schedule!r}.')
        if weight_schedule == 'linear' and (
                isinstance(schedule_iters, bool) or not isinstance(schedule_iters, int)
                or schedule_iters < 1):
            raise ValueError("weight_schedule='linear' needs schedule_iters, an int >= 1 "
                             f'(the iteration where the weight reaches 0); got '
                             f'{schedule_iters!r}.')
        if mask_sigma is not None and not float(mask_sigma) > 0:
            raise ValueError(f'mask_sigma must be > 0 or None, got {mask_sigma!r}.')
        if connector not in CONNECTORS:
            raise ValueError(f'connector must be one of {CONNECTORS}, got {connector!r}.')
        if not float(loss_weight) >= 0.0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight!r}.')
        self.layers = layers if isinstance(layers, (str, dict)) else list(layers)
        self.block_map = block_map
        self.loss_weight = float(loss_weight)
        self.reduction = reduction
        self.mask_sigma = None if mask_sigma is None else float(mask_sigma)
        self.weight_schedule = weight_schedule
        self.schedule_iters = schedule_iters
        self.connector = connector
        self.connectors = nn.ModuleDict()
        self.points: List[FeaturePoint] = []
        self._kept: Optional[Dict[str, Tensor]] = None
        self._nets: Optional[_Nets] = None

    def extra_repr(self) -> str:
        return (f'layers={self.layers!r}, loss_weight={self.loss_weight}, '
                f'reduction={self.reduction!r}, mask_sigma={self.mask_sigma}, '
                f'weight_schedule={self.weight_schedule!r}, connector={self.connector!r}')

    # ------------------------------------------------------------------ binding
    def bind(self, student: nn.Module, teacher: nn.Module,
             record: Optional[dict] = None) -> None:
        """Resolves the feature points for these nets (called by the distiller at build
        and whenever the student is pruned or rebuilt).

        Args:
            student (nn.Module): The bare student.
            teacher (nn.Module): The bare teacher.
            record (dict, optional): The student's pruning record.
        """
        if teacher is None:
            raise ValueError('FeatureKDLoss needs a teacher.')
        self.points = feature_points(student, teacher, self.layers, self.block_map, record)
        self._nets = _Nets(student, teacher, record)
        self._kept = None  # found at the first call, from the features' widths
        if self.connector is not None:
            self._build_connectors(student, teacher)

    def feature_layers(self) -> Tuple[List[str], List[str]]:
        """The student and the teacher layers whose outputs this loss consumes."""
        if not self.points:
            raise RuntimeError('FeatureKDLoss is not bound to a student and a teacher; '
                               'DiffusionDistiller binds it at build.')
        return [p[0] for p in self.points], [p[1] for p in self.points]

    def _build_connectors(self, student: nn.Module, teacher: nn.Module) -> None:
        """One learnable 1x1 map per point whose widths differ, sized by a probe forward
        (kept when it already fits, so that its trained weights survive a re-bind)."""
        widths = {}
        for net, names, role in ((student, [p[0] for p in self.points], 0),
                                 (teacher, [p[1] for p in self.points], 1)):
            with torch.no_grad(), FeatureRecorder(net, names) as recorder:
                run_denoiser(net, **example_denoiser_inputs(net))
                feats = recorder.features(1)
            for point in self.points:
                feature = feats[point[role]]
                widths.setdefault(point[0], [None, None, feature.dim()])[role] = \
                    feature.shape[channel_dim(feature)]
        for s_name, t_name in self.points:
            n_s, n_t, ndim = widths[s_name]
            key = s_name.replace('.', '_')
            if n_s == n_t:
                continue
            existing = self.connectors[key] if key in self.connectors else None
            if existing is not None:
                in_ch = existing.weight.shape[1]
                if in_ch != n_s:
                    raise ValueError(
                        f'The connector of {s_name!r} maps {in_ch} channels but the student '
                        f'now has {n_s}: connector=\'conv1x1\' needs a student whose width is '
                        'final at build (a student pruned at run start uses connector=None, '
                        "the pruning record's kept channels).")
                continue
            param = next(student.parameters())
            layer = nn.Conv2d(n_s, n_t, 1) if ndim == 4 else nn.Linear(n_s, n_t)
            self.connectors[key] = layer.to(device=param.device)

    # ------------------------------------------------------------------ the loss
    def forward(self, student_feats: Dict[str, Tensor], teacher_feats: Dict[str, Tensor],
                iteration: Optional[int] = None) -> Tensor:
        """The weighted feature term.

        Args:
            student_feats (dict): Student layer -> feature (B, C', ...).
            teacher_feats (dict): Teacher layer -> feature (B, C, ...).
            iteration (int, optional): The training iteration (``'linear'`` schedule).

        Returns:
            Tensor: A scalar.
        """
        weight = self.loss_weight * self.schedule_factor(iteration)
        pairs = [(s_name, student_feats[s_name], teacher_feats[t_name].detach())
                 for s_name, t_name in self.points]
        for s_name, student, teacher in pairs:
            if _without_channels(student) != _without_channels(teacher):
                raise ValueError(
                    f'Feature point {s_name!r}: student {tuple(student.shape)} and teacher '
                    f'{tuple(teacher.shape)} differ beyond their channels; pair layers of '
                    'the same resolution (layers=dict(student_name=teacher_name)).')
        if self._kept is None and any(
                s.shape != t.shape and s_name.replace('.', '_') not in self.connectors
                for s_name, s, t in pairs):
            self._kept = self._find_kept_channels(
                {s_name: (s.shape[channel_dim(s)], t.shape[channel_dim(t)])
                 for s_name, s, t in pairs})
        total = None
        for s_name, student, teacher in pairs:
            student, teacher = self.align(s_name, student, teacher)
            term = self._point_error(student.float(), teacher.float())
            total = term if total is None else total + term
        return weight * total

    def schedule_factor(self, iteration: Optional[int]) -> float:
        """1, or ``max(0, 1 - iteration / schedule_iters)`` for ``'linear'``."""
        if self.weight_schedule == 'constant':
            return 1.0
        if iteration is None:
            raise ValueError("weight_schedule='linear' needs the training iteration.")
        return max(0.0, 1.0 - iteration / self.schedule_iters)

    def align(self, s_name: str, student: Tensor, teacher: Tensor) -> Tuple[Tensor, Tensor]:
        """Brings a point's student and teacher features to one shape.

        Returns:
            tuple[Tensor, Tensor]: The student feature (through its connector, if any)
            and the teacher's (at the kept channels, if pruned).
        """
        if student.shape == teacher.shape:
            return student, teacher
        key = s_name.replace('.', '_')
        if key in self.connectors:
            connector = self.connectors[key]
            # Conv2d maps dim 1 of (B, C, H, W), Linear the last dim of (B, N, D)
            return connector(student.to(connector.weight.dtype)), teacher
        teacher = teacher.index_select(channel_dim(teacher),
                                       self._kept[s_name].to(teacher.device))
        if student.shape != teacher.shape:
            raise ValueError(f'Feature {s_name!r}: student {tuple(student.shape)} vs teacher '
                             f'{tuple(teacher.shape)} after channel selection.')
        return student, teacher

    def _find_kept_channels(self, widths: Dict[str, Tuple[int, int]]) -> Dict[str, Tensor]:
        """The teacher channels the pruning record kept at every point that differs."""
        nets = self._nets
        differing = [p for p in self.points if widths[p[0]][0] != widths[p[0]][1]]
        if nets is None or nets.record is None:
            s_name = differing[0][0]
            raise ValueError(
                f'Feature {s_name!r}: the student has {widths[s_name][0]} channels, the '
                f'teacher {widths[s_name][1]}, and no pruning record says which teacher '
                'channels it kept. Prune the student with DiffusionPruningHook / '
                "prune_model, or set connector='conv1x1'.")
        return kept_output_channels(nets.teacher, nets.record, differing, widths)

    def _point_error(self, student: Tensor, teacher: Tensor) -> Tensor:
        """The (masked) squared error of one point, reduced."""
        sq_err = (student - teacher).pow(2)
        if self.mask_sigma is None:
            if self.reduction == 'mean':
                return sq_err.mean()
            return sq_err.flatten(1).sum(1).mean()
        mask = (_within_sigma(teacher, self.mask_sigma)
                & _within_sigma(student.detach(), self.mask_sigma)).to(sq_err.dtype)
        sq_err = sq_err * mask
        if self.reduction == 'mean':
            return sq_err.sum() / mask.sum().clamp(min=1.0)
        return sq_err.flatten(1).sum(1).mean()


def _without_channels(feature: Tensor) -> Tuple[int, ...]:
    """The shape of a feature without its channel dimension."""
    shape = list(feature.shape)
    del shape[channel_dim(feature)]
    return tuple(shape)


def _within_sigma(feature: Tensor, k: float) -> Tensor:
    """True where an element lies within k standard deviations of its sample's mean."""
    flat = feature.flatten(1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, keepdim=True, unbiased=False)
    return ((flat - mean).abs() <= k * std).view_as(feature)
