"""The squared error of two predictions, shared by the DSM and KD losses."""
from torch import Tensor, nn

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


class SquaredErrorLoss(nn.Module):
    """Base of the weighted squared-error losses: holds ``loss_weight`` and ``reduction``.

    Args:
        loss_weight (float): Multiplies the error. Defaults to 1.0.
        reduction (str): ``'sum'`` (sum over C, H, W, mean over the batch) or
            ``'mean'``. Defaults to ``'sum'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'sum') -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}.')
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, reduction={self.reduction!r}'
