"""Output distillation: the student's prediction against the frozen teacher's."""
from torch import Tensor, nn

from mmagic.registry import MODELS

from .dsm_loss import check_reduction, squared_error


@MODELS.register_module()
class KDLoss(nn.Module):
    """Knowledge distillation of the denoiser output, ``loss_weight * ||S - T||^2``.

    The teacher's prediction is a constant target: it is detached here, so no gradient
    reaches the teacher whatever the caller's grad mode was.

    Args:
        loss_weight (float): Multiplies the error. Defaults to 1.0.
        reduction (str): ``'sum'`` (sum over C, H, W, mean over the batch) or
            ``'mean'``. Defaults to ``'sum'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'sum') -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)

    def forward(self, pred_S: Tensor, pred_T: Tensor) -> Tensor:  # noqa: N803 (mmrazor's names)
        """The weighted error.

        Args:
            pred_S (Tensor): The student's prediction (B, C, H, W).
            pred_T (Tensor): The teacher's prediction (B, C, H, W).

        Returns:
            Tensor: A scalar.
        """
        return self.loss_weight * squared_error(pred_S, pred_T.detach(), self.reduction)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, reduction={self.reduction!r}'
