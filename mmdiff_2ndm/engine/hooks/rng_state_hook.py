"""Each rank's torch RNG state in checkpoints, so that ``--resume`` continues exactly."""
import logging
from typing import List, Optional, Tuple

import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from mmagic.registry import HOOKS

CHECKPOINT_KEY = 'torch_rng_states'


def _rng_state() -> dict:
    state = dict(cpu=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def _checkpoint_due(runner) -> bool:
    """Whether an iteration-based CheckpointHook saves after this iteration."""
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and not hook.by_epoch and (
                hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or
                (hook.save_last and hook.is_last_train_iter(runner))):
            return True
    return False


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves every rank's torch RNG state with each checkpoint and restores it on resume.

    The distiller draws timesteps, noise, label dropout and Jacobian directions from
    torch's global generator (unless ``per_sample_noise_seed`` ties them to the data).
    MMEngine checkpoints hold no RNG state, so a resumed run would draw differently
    from the uninterrupted one. With this hook it draws the same: the state saved at
    iteration k is put back right before iteration k + 1 (after MMEngine's resume has
    re-seeded and replayed the data loader, and before any other hook of that
    iteration), which is where the uninterrupted run continued from it.

    Only torch's CPU and CUDA generators are restored. NumPy's and Python's are not on
    purpose: MMEngine replays the data loader up to iteration k on resume (from the
    run's seed), which brings the data pipeline's NumPy/Python draws (e.g. random
    flips) to where they were; restoring them as well would skip ahead twice.

    ``tools/train.py`` registers the hook when the config does not; with MMagic's own
    train tool add ``dict(type='RNGStateHook')`` to ``custom_hooks``.

    Args:
        strict (bool): Raise when a resumed checkpoint has no RNG states or was saved
            by a different number of ranks. Defaults to False: log a warning (the run
            goes on with freshly seeded generators, as without this hook).
    """

    # First among the hooks of an iteration: nothing may draw before the restore.
    priority = 'HIGHEST'

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self._pending: Optional[dict] = None
        self._gathered: Optional[Tuple[int, List[dict]]] = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Gathers every rank's state when the CheckpointHook is about to save.

        MMEngine saves on rank 0 only (``before_save_checkpoint`` runs there alone), so
        the collective happens here, on all ranks, ahead of the CheckpointHook
        (``'VERY_LOW'``), and only at the iterations it saves.
        """
        if get_dist_info()[1] > 1 and _checkpoint_due(runner):
            self._gathered = (runner.iter, all_gather_object(_rng_state()))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Stores the RNG states of all ranks (rank order)."""
        if get_dist_info()[1] == 1:
            states = [_rng_state()]
        elif self._gathered is not None and self._gathered[0] == runner.iter:
            states = self._gathered[1]
        else:
            return  # a save outside the iteration schedule: resume warns
        checkpoint.setdefault('meta', {})[CHECKPOINT_KEY] = states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keeps this rank's state when the checkpoint resumes training."""
        if not getattr(runner, '_resume', False):
            return  # load_from initialises weights only; draws start from the seed
        states: Optional[List[dict]] = checkpoint.get('meta', {}).get(CHECKPOINT_KEY)
        rank, world_size = get_dist_info()
        problem = None
        if states is None:
            problem = 'the checkpoint holds no RNG states (saved without RNGStateHook)'
        elif len(states) != world_size:
            problem = (f'the checkpoint holds the RNG states of {len(states)} ranks, this '
                       f'run has {world_size}')
        if problem is not None:
            message = (f'RNGStateHook: {problem}; random draws after the resume will differ '
                       'from the uninterrupted run. Set model.per_sample_noise_seed for '
                       'draws that do not depend on RNG states.')
            if self.strict:
                raise RuntimeError(message)
            print_log(message, logger='current', level=logging.WARNING)
            return
        self._pending = states[rank]

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Puts the saved state back, once, before the first resumed iteration."""
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state['cpu'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state['cuda'])
