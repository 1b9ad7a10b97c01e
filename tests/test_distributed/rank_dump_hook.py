"""Test-only hook: dumps every rank's student (and EMA) after each iteration; can kill the run."""
import os
import os.path as osp

import torch
from mmengine.dist import barrier, get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmagic.registry import HOOKS

from mmdiff_2ndm.models.denoisers import unwrap_denoiser


@HOOKS.register_module()
class RankDumpHook(Hook):
    """Saves ``rank{r}_iter{i}.pth`` (student and EMA state) into ``out_dir``.

    With ``kill_after_iter`` set, every rank exits abruptly (``os._exit``, no cleanup)
    after that iteration, once the CheckpointHook (higher priority) has saved.
    """
    priority = 'LOWEST'

    def __init__(self, out_dir: str, kill_after_iter: int = 0) -> None:
        self.out_dir = out_dir
        self.kill_after_iter = kill_after_iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = dict(student=unwrap_denoiser(model.student).state_dict(),
                     ema=model.student_ema.state_dict(),
                     sample_idx=[int(s.sample_idx) for s in data_batch['data_samples']])
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save(state, osp.join(self.out_dir, f'rank{get_rank()}_iter{runner.iter + 1}.pth'))
        if runner.iter + 1 == self.kill_after_iter:
            # Rank 0 saves the checkpoint; a rank that died earlier would make torchrun
            # terminate rank 0 mid-save, so every rank waits for all to get here first.
            barrier()
            os._exit(3)
