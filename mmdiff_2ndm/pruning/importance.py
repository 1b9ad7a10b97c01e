"""Channel importance criteria, and the gradient accumulation Taylor criteria need.

``taylor`` and ``diff-pruning`` both use torch-pruning's group Taylor score
``|w * dL/dw|``; they differ in which denoising losses the gradient accumulates:

* ``taylor``: the loss at every timestep of the schedule;
* ``diff-pruning`` (Fang et al., 2023): timesteps in schedule order (small t first, where
  an eps-predictor's loss is largest), stopping once a loss drops below
  ``thr * max_loss`` so that the near-noise steps, which carry little structure, do not
  dilute the score.
"""
from typing import Callable, List, Optional, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn
from tqdm import tqdm

IMPORTANCES = ('magnitude', 'taylor', 'diff-pruning', 'random')
GRADIENT_IMPORTANCES = ('taylor', 'diff-pruning')


def build_importance(name: str) -> tp.importance.Importance:
    """Returns the torch-pruning importance object for ``name`` (one of ``IMPORTANCES``)."""
    if name == 'magnitude':
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name in GRADIENT_IMPORTANCES:
        return tp.importance.GroupTaylorImportance()
    if name == 'random':
        return tp.importance.RandomImportance()
    raise ValueError(f'Unknown importance {name!r}; choose one of {IMPORTANCES}.')


def accumulate_gradients(net: nn.Module,
                         loss_fn: Callable[[Tensor], Tensor],
                         timesteps: Sequence[int],
                         stop_threshold: Optional[float] = None,
                         progress: bool = True) -> List[int]:
    """Accumulates ``d loss_fn(t) / d params`` into ``.grad`` over timesteps.

    Args:
        net (nn.Module): The bare denoiser whose parameters receive gradients.
        loss_fn (callable): ``loss_fn(t)`` with ``t`` a 0-d LongTensor (one timestep,
            broadcast over the caller's batch), returning a scalar loss that depends on
            ``net``'s parameters (e.g. the DSM loss on a real training batch).
        timesteps (Sequence[int]): Timesteps in the order they are visited.
        stop_threshold (float, optional): Stop after the first loss below
            ``stop_threshold * max_loss_so_far`` (diff-pruning). None visits all.
        progress (bool): Show a progress bar over the timesteps (stderr). Defaults to
            True.

    Returns:
        list[int]: The timesteps whose gradients were accumulated.
    """
    device = next(net.parameters()).device
    was_training = net.training
    requires_grad = {p: p.requires_grad for p in net.parameters()}
    # Dropout would make the score depend on the RNG state; eval mode keeps it exact.
    net.eval()
    for param in net.parameters():
        param.requires_grad_(True)
        param.grad = None
    used, max_loss = [], 0.0
    bar = tqdm(timesteps, desc='pruning gradients', unit='t', disable=not progress)
    try:
        for t in bar:
            loss = loss_fn(torch.tensor(int(t), dtype=torch.long, device=device))
            if loss.dim() != 0:
                raise ValueError(f'loss_fn must return a scalar, got shape {tuple(loss.shape)}.')
            loss.backward()
            used.append(int(t))
            value = float(loss.detach())
            max_loss = max(max_loss, value)
            if stop_threshold is not None and value < stop_threshold * max_loss:
                break
    finally:
        bar.close()
        net.train(was_training)
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)
    return used
