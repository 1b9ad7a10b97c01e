"""Denoising score matching: the student's prediction against the scheduler's target."""
from torch import Tensor, nn

from mmagic.registry import MODELS

REDUCTIONS = ('sum', 'mean')


def squared_error(pred: Tensor, target: Tensor, reduction: str = 'sum') -> Tensor:
    """Squared error of two (B, ...) tensors, computed in float32 or wider.

    Args:
        pred (Tensor): Prediction (B, ...).
        target (Tensor): Target of the same shape.
        reduction (str): ``'sum'``: summed over the non-batch dims and averaged over
            the batch (the authors' convention); ``'mean'``: averaged over all.

    Returns:
        Tensor: The scalar error.
    """
    sq_err = (pred.float() - target.float()).pow(2)
    if reduction == 'mean':
        return sq_err.mean()
    return sq_err.flatten(1).sum(1).mean()


def check_reduction(reduction: str) -> str:
    """Returns ``reduction`` if it is one of ``REDUCTIONS``, else raises ValueError."""
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}.')
    return reduction


@MODELS.register_module()
class DSMLoss(nn.Module):
    """Denoising score matching, ``loss_weight * ||pred - target||^2``.

    ``target`` is what the training scheduler's parametrisation regresses: the noise
    (epsilon), the velocity (v-prediction) or x_0 (sample prediction).

    Args:
        loss_weight (float): Multiplies the error. Defaults to 1.0.
        reduction (str): ``'sum'`` (sum over C, H, W, mean over the batch) or
            ``'mean'``. Defaults to ``'sum'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'sum') -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The weighted error.

        Args:
            pred (Tensor): The student's prediction (B, C, H, W).
            target (Tensor): The regression target (B, C, H, W).

        Returns:
            Tensor: A scalar.
        """
        return self.loss_weight * squared_error(pred, target, self.reduction)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, reduction={self.reduction!r}'
