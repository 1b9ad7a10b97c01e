"""Output distillation: the student's prediction against the frozen teacher's."""
from torch import Tensor

from mmagic.registry import MODELS

from .squared_error import SquaredErrorLoss, squared_error


@MODELS.register_module()
class KDLoss(SquaredErrorLoss):
    """Knowledge distillation of the denoiser output, ``loss_weight * ||S - T||^2``.

    The teacher's prediction is a constant target: it is detached here, so no gradient
    reaches the teacher whatever the caller's grad mode was.

    Args:
        loss_weight (float): Multiplies the error. Defaults to 1.0.
        reduction (str): ``'sum'`` (sum over C, H, W, mean over the batch) or
            ``'mean'``. Defaults to ``'sum'``.
    """

    loss_inputs = dict(pred_S='student_out', pred_T='teacher_out')  # see loss_inputs.py

    def forward(self, pred_S: Tensor, pred_T: Tensor) -> Tensor:  # noqa: N803 (mmrazor's names)
        """The weighted error.

        Args:
            pred_S (Tensor): The student's prediction (B, C, H, W).
            pred_T (Tensor): The teacher's prediction (B, C, H, W).

        Returns:
            Tensor: A scalar.
        """
        return self.loss_weight * squared_error(pred_S, pred_T.detach(), self.reduction)
