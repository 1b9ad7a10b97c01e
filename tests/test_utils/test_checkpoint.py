"""Safe checkpoint loading: MMEngine checkpoints load, anything executable is refused."""
import os
import os.path as osp
import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from torch.utils.data import Dataset

from mmdiff_2ndm.utils import UnsafeCheckpointError, safe_torch_load


class _TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.linear(torch.stack(inputs)).pow(2).mean())


class _RandomVectors(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(inputs=torch.randn(3, generator=torch.Generator().manual_seed(index)))


def _train(work_dir, max_iters, resume=False):
    runner = Runner(
        model=_TinyModel(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=_RandomVectors(), sampler=dict(type='DefaultSampler'), batch_size=2),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-2)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        resume=resume,
        randomness=dict(seed=0),
        # a name of its own: runners built in one second would share a MessageHub
        experiment_name=f'safe_ckpt_{uuid.uuid4().hex}')
    runner.train()
    return runner


@pytest.fixture(autouse=True)
def _no_weights_only_override(monkeypatch):
    # The point of the module: no user-set environment variable is needed.
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
    monkeypatch.delenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', raising=False)


def test_mmengine_checkpoint_loads_and_resumes_with_safe_unpickler(tmp_path, monkeypatch):
    _train(str(tmp_path), max_iters=2)
    ckpt_path = osp.join(tmp_path, 'iter_2.pth')
    # Plain torch.load with the default (weights_only=True on torch >= 2.6) refuses it ...
    with pytest.raises(Exception, match='HistoryBuffer|getattr|Unsupported global'):
        torch.load(ckpt_path)
    # ... while mmengine's loader (now ours) reads it, message hub included.
    checkpoint = _load_checkpoint(ckpt_path, map_location='cpu')
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert checkpoint['meta']['iter'] == 2

    # A fresh process has created no HistoryBuffer yet, so no statistics are registered.
    monkeypatch.setattr(HistoryBuffer, '_statistics_methods', {})
    reloaded = _load_checkpoint(ckpt_path, map_location='cpu')
    assert reloaded['message_hub']['log_scalars']['train/loss'].mean() > 0

    runner = _train(str(tmp_path), max_iters=4, resume=True)
    assert runner.iter == 4
    assert runner.message_hub.get_scalar('train/loss').mean() > 0


class _RunsCode:
    """Unpickling this would create a file: the classic malicious-checkpoint payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker, ))


def test_checkpoint_with_code_is_refused_and_nothing_runs(tmp_path):
    marker = str(tmp_path / 'pwned')
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={'w': torch.zeros(1)}, meta=_RunsCode(marker)), path)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth.*not plain data'):
        _load_checkpoint(path, map_location='cpu')
    assert not osp.exists(marker)


class _ReachesOtherAttribute:

    def __reduce__(self):
        # getattr is allow-listed only for HistoryBuffer statistics methods.
        return (getattr, (HistoryBuffer, 'update'))


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    torch.save(dict(meta=_ReachesOtherAttribute()), path)
    with pytest.raises(UnsafeCheckpointError, match='update'):
        safe_torch_load(path)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        _load_checkpoint(str(tmp_path / 'nope.pth'))
