"""Averaged copies of the student: an EMA whose decay warms up, re-pointing an average at
a new (e.g. freshly pruned) student, and setting an average to the student."""
import copy
from typing import Optional

import torch
from mmengine.model import BaseAveragedModel
from torch import Tensor, nn

from mmagic.models.base_models import ExponentialMovingAverage
from mmagic.registry import MODELS


@MODELS.register_module()
class WarmupExponentialMovingAverage(ExponentialMovingAverage):
    """Exponential moving average whose decay ramps up from 0 to ``1 - momentum``.

    The update that follows ``n`` earlier updates (``n = steps``, a buffer, so it is saved
    in checkpoints and restored by ``--resume``) averages with

    .. math::
        d_n = \\min(1 - \\text{momentum}, (1 + n) / (10 + n))

    the schedule of diffusers' ``EMAModel``: update 0 copies the model (as every mmengine
    ``BaseAveragedModel`` does), update 1 keeps 2/11 of the average, update 10 keeps
    11/20, and the target decay is reached after about ``10 / momentum`` updates. A plain
    EMA with decay ``d`` still holds ``d^n`` of the weights it started from after ``n``
    updates (22 % at 0.999 after 1500): the warm-up makes the average of a short run, or
    of a run whose student was just pruned, follow the trained weights instead of its
    initialisation. Over a long run (e.g. 100k iterations at 0.9999) the two agree.

    Args:
        model (nn.Module): The model to average.
        momentum (float): ``1 -`` the target decay. Defaults to 1e-4 (decay 0.9999).
        interval (int): Update every ``interval`` calls (mmengine's meaning).
            Defaults to 1.
        device (torch.device, optional): Where the average lives. Defaults to None
            (where ``model`` is).
        update_buffers (bool): Average the buffers too instead of copying them.
            Defaults to False.
    """

    def __init__(self,
                 model: nn.Module,
                 momentum: float = 1e-4,
                 interval: int = 1,
                 device: Optional[torch.device] = None,
                 update_buffers: bool = False) -> None:
        super().__init__(model, momentum=momentum, interval=interval, device=device,
                         update_buffers=update_buffers)

    def decay(self, steps: int) -> float:
        """The decay of the update that follows ``steps`` earlier updates (0: a copy)."""
        steps = int(steps)
        if steps < 0:
            raise ValueError(f'steps must be >= 0, got {steps}.')
        if steps == 0:
            return 0.0
        return min(1.0 - self.momentum, (1.0 + steps) / (10.0 + steps))

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        """``averaged = d * averaged + (1 - d) * source`` with the warmed-up decay."""
        averaged_param.lerp_(source_param, 1.0 - self.decay(steps))

    def update_parameters(self, model: nn.Module) -> None:
        """MMEngine's update (the first one copies, ``interval`` skips the updates between,
        buffers are copied unless averaged), with the decay computed once per update and
        every tensor averaged by one ``torch._foreach_lerp_``.

        Per tensor that is the ``lerp_`` of :meth:`avg_func`, so the average is bitwise
        MMEngine's. Its loop called :meth:`avg_func`, and so the decay, once per tensor:
        about 4 % of a batch-2 iteration of the digits student on the CPU
        (``tools/benchmark_host_overhead.py``).

        Args:
            model (nn.Module): The model whose parameters are averaged.
        """
        steps = int(self.steps)
        if steps == 0 or steps % self.interval != 0:
            super().update_parameters(model)
            return
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        pairs = [(averaged.data, source[name].data.to(averaged.device))
                 for name, averaged in self.avg_parameters.items()
                 if averaged.dtype.is_floating_point]
        if pairs:
            averaged, sources = zip(*pairs)
            torch._foreach_lerp_(list(averaged), list(sources), 1.0 - self.decay(steps))
        if not self.update_buffers:
            self.sync_buffers(model)
        self.steps += 1


def retarget_average(average: nn.Module, source: nn.Module) -> None:
    """Makes an mmengine ``BaseAveragedModel`` average ``source`` (e.g. a pruned student).

    Its ``module`` becomes a copy of ``source`` on the average's device; its settings
    (momentum, interval) and ``steps`` counter stay, so a warm-up continues where it was.
    ``avg_parameters`` caches the old tensors, so it is rebuilt. This is the one path by
    which the distiller and ``DiffusionPruningHook`` point an existing EMA at a new student.

    Args:
        average (nn.Module): The ``BaseAveragedModel`` to re-point.
        source (nn.Module): The model it averages from now on (unwrapped).

    Raises:
        TypeError: If ``average`` is not a ``BaseAveragedModel``.
    """
    if not isinstance(average, BaseAveragedModel):
        raise TypeError('The EMA copy must be an mmengine BaseAveragedModel (e.g. '
                        "dict(type='WarmupExponentialMovingAverage')), got "
                        f'{type(average).__name__}.')
    device = next(average.module.parameters()).device
    average.module = copy.deepcopy(source).requires_grad_(False).to(device)
    average.avg_parameters = (average.module.state_dict() if average.update_buffers
                              else dict(average.module.named_parameters()))


def copy_into_average(average: BaseAveragedModel, source: nn.Module) -> None:
    """Sets an average's weights and buffers to ``source``'s without counting an update
    (its ``steps`` stay): what the distiller does before the EMA's ``start_iter``.

    MMagic's averages have ``sync_parameters`` for this; MMEngine's own (e.g.
    ``MomentumAnnealingEMA``, ``StochasticWeightAverage``) have none, so this works on every
    ``BaseAveragedModel``.

    Args:
        average (BaseAveragedModel): The average; its ``module`` has ``source``'s keys and
            shapes.
        source (nn.Module): The model it averages (unwrapped).
    """
    average.module.load_state_dict(source.state_dict())
