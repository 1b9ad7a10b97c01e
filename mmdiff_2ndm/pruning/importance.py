"""Channel importance criteria (a table: name -> criterion), and the gradient
accumulation Taylor criteria need.

``taylor`` and ``diff-pruning`` both use torch-pruning's group Taylor score
``|w * dL/dw|``; they differ in which denoising losses the gradient accumulates:

* ``taylor``: the loss at every timestep of the schedule;
* ``diff-pruning`` (Fang et al., 2023): timesteps in schedule order (small t first, where
  an eps-predictor's loss is largest), stopping once a loss drops below
  ``thr * max_loss`` so that the near-noise steps, which carry little structure, do not
  dilute the score.

A new criterion is one ``register_importance`` call; ``prune_denoiser``,
``DiffusionPruningHook`` and ``tools/prune.py`` read the table. The depth selectors (which
whole blocks to keep) have their own table, ``depth.DEPTH_SELECTORS``.
"""
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn
from tqdm import tqdm


class ImportanceCriterion(NamedTuple):
    """One channel importance criterion.

    Attributes:
        build (callable): ``build() -> tp.importance.Importance``, a fresh torch-pruning
            importance object.
        needs_gradients (bool): Whether it reads ``.grad`` (accumulated from ``loss_fn``).
        stops_at_threshold (bool): Whether the accumulation stops at diff-pruning's
            loss threshold.
    """
    build: Callable[[], tp.importance.Importance]
    needs_gradients: bool = False
    stops_at_threshold: bool = False


IMPORTANCE_CRITERIA: Dict[str, ImportanceCriterion] = {}


def register_importance(name: str, build: Callable[[], tp.importance.Importance],
                        needs_gradients: bool = False,
                        stops_at_threshold: bool = False) -> ImportanceCriterion:
    """Adds a criterion to ``IMPORTANCE_CRITERIA``.

    Args:
        name (str): The name configs use (``importance=name``).
        build (callable): Returns a fresh torch-pruning importance object.
        needs_gradients (bool): The criterion reads accumulated gradients.
        stops_at_threshold (bool): The accumulation stops at diff-pruning's threshold.

    Returns:
        ImportanceCriterion: The registered entry.

    Raises:
        ValueError: If ``name`` is already registered.
    """
    if name in IMPORTANCE_CRITERIA:
        raise ValueError(f'Importance {name!r} is already registered.')
    criterion = ImportanceCriterion(build, needs_gradients, stops_at_threshold)
    IMPORTANCE_CRITERIA[name] = criterion
    return criterion


register_importance('magnitude', lambda: tp.importance.GroupMagnitudeImportance(p=2))
register_importance('taylor', tp.importance.GroupTaylorImportance, needs_gradients=True)
register_importance('diff-pruning', tp.importance.GroupTaylorImportance,
                    needs_gradients=True, stops_at_threshold=True)
register_importance('random', tp.importance.RandomImportance)


def get_importance(name: str) -> ImportanceCriterion:
    """The registered criterion ``name``.

    Raises:
        ValueError: If no criterion has that name (the message lists them).
    """
    if name not in IMPORTANCE_CRITERIA:
        raise ValueError(f'Unknown importance {name!r}; choose one of '
                         f'{tuple(IMPORTANCE_CRITERIA)} or register one with '
                         'mmdiff_2ndm.pruning.register_importance.')
    return IMPORTANCE_CRITERIA[name]


def build_importance(name: str) -> tp.importance.Importance:
    """Returns a fresh torch-pruning importance object for the criterion ``name``."""
    return get_importance(name).build()


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
