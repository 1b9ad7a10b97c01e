"""Denoising score matching: the student's prediction against the scheduler's target."""
from torch import Tensor

from mmagic.registry import MODELS

from .squared_error import SquaredErrorLoss, squared_error


@MODELS.register_module()
class DSMLoss(SquaredErrorLoss):
    """Denoising score matching, ``loss_weight * ||pred - target||^2``.

    ``target`` is what the training scheduler's parametrisation regresses: the noise
    (epsilon), the velocity (v-prediction) or x_0 (sample prediction).

    Args:
        loss_weight (float): Multiplies the error. Defaults to 1.0.
        reduction (str): ``'sum'`` (sum over C, H, W, mean over the batch) or
            ``'mean'``. Defaults to ``'sum'``.
    """

    loss_inputs = dict(pred='student_out', target='target')  # see loss_inputs.py

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The weighted error.

        Args:
            pred (Tensor): The student's prediction (B, C, H, W).
            target (Tensor): The regression target (B, C, H, W).

        Returns:
            Tensor: A scalar.
        """
        return self.loss_weight * squared_error(pred, target, self.reduction)
