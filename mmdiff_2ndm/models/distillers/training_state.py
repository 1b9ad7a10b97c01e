"""Training state: the iteration counter and the student EMA (built, re-pointed, updated)."""
import copy
from typing import Optional

from mmengine.logging import MessageHub
from mmengine.model import BaseAveragedModel
from torch import nn

from mmagic.registry import MODELS

from ..averaged_model import copy_into_average, retarget_average


class TrainingState:
    """Counts training steps and keeps the student EMA's schedule.

    Args:
        ema (dict, optional): The EMA config: any MMEngine ``BaseAveragedModel``
            (``type`` defaults to MMagic's ``ExponentialMovingAverage``; MMEngine's own,
            e.g. ``MomentumAnnealingEMA``, work too; ``start_iter``: before it the EMA
            copies the student). None: no EMA.
    """

    def __init__(self, ema: Optional[dict] = None) -> None:
        self.ema_cfg = copy.deepcopy(ema)
        self.ema_start = 0
        self.num_train_steps = 0  # train_step calls, skipped updates included

    def iteration(self) -> int:
        """Index (from 0) of the training iteration being run.

        The Runner's iteration (message hub ``'iter'``) when there is one, so that a
        resumed run continues the count; otherwise this model's own step count.
        """
        curr_iter = MessageHub.get_current_instance().get_info('iter')
        return self.num_train_steps if curr_iter is None else int(curr_iter)

    def ema_of(self, student: nn.Module,
               ema: Optional[nn.Module] = None) -> Optional[nn.Module]:
        """The configured EMA of ``student``: built the first time; an existing average
        is re-pointed at ``student`` (e.g. after pruning) with its settings and steps.

        Args:
            student (nn.Module): The bare student.
            ema (nn.Module, optional): The current EMA, if any.

        Returns:
            nn.Module | None: The EMA (``ema`` itself when there is no config).
        """
        if self.ema_cfg is None:
            return ema
        if isinstance(ema, BaseAveragedModel):
            retarget_average(ema, student)
            return ema
        cfg = copy.deepcopy(self.ema_cfg)
        cfg.setdefault('type', 'ExponentialMovingAverage')
        self.ema_start = int(cfg.pop('start_iter', 0))
        return MODELS.build(cfg, default_args=dict(model=student))

    def end_step(self, student: nn.Module, ema: Optional[nn.Module], average: bool) -> None:
        """Counts a training step, averaging ``student`` into ``ema`` when asked.

        Before ``start_iter`` the EMA copies the student instead.

        Args:
            student (nn.Module): The bare student, after its optimizer step.
            ema (nn.Module, optional): The student EMA.
            average (bool): False for a step whose update was skipped: the EMA keeps
                its weights.
        """
        if average and isinstance(ema, BaseAveragedModel):
            step = self.iteration() + 1
            if step >= self.ema_start:
                ema.update_parameters(student)  # copies the buffers, unless it averages them
            else:
                copy_into_average(ema, student)
        self.num_train_steps += 1
