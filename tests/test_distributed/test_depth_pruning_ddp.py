"""Depth pruning (TinyFusion's learnable search) under 2 gloo ranks: every rank holds the
same shallower student, and a killed run resumes bit for bit from the pruned checkpoint."""
import os.path as osp

import pytest
import torch
from diffusers import DiTTransformer2DModel

from mmdiff_2ndm.utils import safe_torch_load
from test_ddp_equivalence import _assert_same, _dump, _train

CONFIG = """
_base_ = ['mmagic::_base_/gen_default_runtime.py']
custom_imports = dict(imports=['mmdiff_2ndm', 'rank_dump_hook'], allow_failed_imports=False)
default_scope = 'mmagic'

model = dict(
    type='DiffusionDistiller',
    teacher=dict(type='DiTTransformer2DModel', from_pretrained={teacher_path!r}),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
    num_inference_steps=2,
    losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0)),
    ema=dict(momentum=0.1),
    data_preprocessor=dict(type='DataPreprocessor'))
model_wrapper_cfg = dict(type='MMSeparateDistributedDataParallel', broadcast_buffers=False,
                         find_unused_parameters=False)
custom_hooks = [
    dict(type='DiffusionPruningHook', method='depth',
         depth_cfg=dict(keep=1, group_size=2, selector='learnable', steps=3,
                        num_train_timesteps=100)),
    dict(type='RankDumpHook', out_dir={dump_dir!r}, kill_after_iter={kill})]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='SklearnDigits', image_size=8, split='train',
                 pipeline=[dict(type='PackInputs', keys=['gt'])]))
optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=1e-3, momentum=0.9)))
train_cfg = dict(by_epoch=False, max_iters={max_iters}, val_interval=10000)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'), cudnn_benchmark=False)
randomness = dict(seed=0)
"""


@pytest.fixture(scope='module')
def dit_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp_dit_teacher')
    torch.manual_seed(0)
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=4, in_channels=3,
                          out_channels=3, num_layers=4, sample_size=8, patch_size=2,
                          num_embeds_ada_norm=10).save_pretrained(str(root / 'dit'))
    return str(root / 'dit')


def _config(tmp_path, name, teacher_path, max_iters, kill=0):
    path = tmp_path / f'{name}.py'
    path.write_text(CONFIG.format(teacher_path=teacher_path, max_iters=max_iters, kill=kill,
                                  dump_dir=str(tmp_path / name / 'dump')))
    return str(path)


def test_two_ranks_prune_alike_and_resume_exactly(tmp_path, dit_teacher):
    reference = _config(tmp_path, 'reference', dit_teacher, max_iters=3)
    _train(reference, str(tmp_path / 'reference'), 2)
    ranks = [_dump(tmp_path, 'reference', r, 3) for r in (0, 1)]
    assert len({k.split('.')[1] for k in ranks[0]['student']
                if k.startswith('transformer_blocks.')}) == 2
    _assert_same(ranks[1]['student'], ranks[0]['student'], rtol=0, atol=0)
    _assert_same(ranks[1]['ema'], ranks[0]['ema'], rtol=0, atol=0)

    killed = _config(tmp_path, 'killed', dit_teacher, max_iters=3, kill=2)
    work_dir = str(tmp_path / 'killed')
    _train(killed, work_dir, 2, expect_rc=1)
    record = safe_torch_load(osp.join(work_dir, 'iter_2.pth'))['meta']['pruning']
    assert record['depth']['num_blocks'] == 4 and len(record['depth']['kept']) == 2
    _train(_config(tmp_path, 'killed', dit_teacher, max_iters=3), work_dir, 2, '--resume')
    for rank in (0, 1):
        out = _dump(tmp_path, 'killed', rank, 3)
        _assert_same(out['student'], ranks[rank]['student'], rtol=0, atol=0)
        _assert_same(out['ema'], ranks[rank]['ema'], rtol=0, atol=0)
