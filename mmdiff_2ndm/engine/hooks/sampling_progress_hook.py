"""SamplingProgressHook: a progress bar over the batches sampled for metrics (FID, ...)."""
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from tqdm import tqdm

from mmagic.registry import HOOKS


@HOOKS.register_module()
class SamplingProgressHook(Hook):
    """Shows a ``tqdm`` bar (stderr) while validation or test generates images for the
    metrics: FID's 50k samples take hours and MMagic's loops print nothing meanwhile.

    Note:
        The total is the number of sampling batches that MMagic's ``MultiValLoop`` /
        ``MultiTestLoop`` compute from every metric's sampler before the first batch
        (``total_length``), or the data loader's length for MMEngine's plain loops. Only
        the main process draws the bar.

    Args:
        enabled (bool): Draw the bar. Defaults to True.
    """

    priority = 'VERY_LOW'

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self._bar: Optional[tqdm] = None

    # MMEngine's Hook routes before/after_{val,test}_iter and after_{val,test}_epoch to these
    # mode-generic methods; training iterations draw no samples and get no bar.
    def _before_iter(self, runner, batch_idx: int, data_batch=None, mode: str = 'train') -> None:
        """Opens the bar at the first validation / test batch."""
        if mode != 'train':
            self._open(getattr(runner, f'{mode}_loop'), mode)

    def _after_iter(self, runner, batch_idx: int, data_batch=None, outputs=None,
                    mode: str = 'train') -> None:
        """Advances the bar by one batch."""
        if mode != 'train':
            self._advance()

    def _after_epoch(self, runner, mode: str = 'train') -> None:
        """Closes the bar."""
        if mode != 'train':
            self._close()

    def _open(self, loop, mode: str) -> None:
        if self._bar is not None or not self.enabled or not is_main_process():
            return
        total = getattr(loop, '_total_length', None)  # MMagic's multi loops
        if not total:
            dataloader = getattr(loop, 'dataloader', None)
            total = len(dataloader) if dataloader is not None else None
        self._bar = tqdm(total=total, desc=f'{mode} sampling', unit='batch')

    def _advance(self) -> None:
        if self._bar is None:
            return
        if self._bar.total is not None and self._bar.n >= self._bar.total:
            # MMagic's metric samplers run one batch past their length when fake_nums is a
            # multiple of the batch size (`idx > max_length`); keep the bar's count honest.
            self._bar.total = self._bar.n + 1
        self._bar.update(1)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
