"""tools/train.py end to end: a user config inheriting MMagic's runtime, train, resume, test."""
import os
import os.path as osp
import subprocess
import sys

import mmengine
import pytest
import torch
from diffusers import UNet2DModel

from mmdiff_2ndm.utils import safe_torch_load

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# What a user writes: inherit MMagic's generative runtime, load the plugin by custom_imports.
USER_CONFIG = """
_base_ = ['mmagic::_base_/gen_default_runtime.py']
custom_imports = dict(imports=['mmdiff_2ndm'], allow_failed_imports=False)
default_scope = 'mmagic'

teacher_path = {teacher_path!r}
model = dict(
    type='DiffusionDistiller',
    teacher=dict(type='UNet2DModel', from_pretrained=teacher_path),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
    num_inference_steps=2,
    # any names: BK-SDM's feature KD and the sigma-scaled Jacobian term beside DSM and KD
    losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0),
                feat=dict(type='FeatureKDLoss', layers='bk-sdm', loss_weight=10.0),
                jac=dict(type='2ndMatchLoss', loss_weight=0.1, mode='vjp', scale='sigma')),
    ema=dict(type='WarmupExponentialMovingAverage', momentum=0.1),
    data_preprocessor=dict(type='DataPreprocessor'))
custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.5, importance='magnitude')]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='SklearnDigits', image_size=16, split='train',
                 pipeline=[dict(type='PackInputs', keys=['gt'])]))
optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    student=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3)))
train_cfg = dict(by_epoch=False, max_iters=2, val_interval=10000)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='SklearnDigits', image_size=16, split='test',
                 pipeline=[dict(type='PackInputs', keys=['gt'])]))
test_evaluator = dict(type='Evaluator', metrics=[dict(type='TeacherFidelity', fake_nums=4)])
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'), cudnn_benchmark=False)
randomness = dict(seed=0)
"""


@pytest.fixture(scope='module')
def user_config(tmp_path_factory):
    root = tmp_path_factory.mktemp('train_tool')
    teacher = UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
        up_block_types=('AttnUpBlock2D', 'UpBlock2D'))
    teacher.save_pretrained(str(root / 'teacher'))
    path = root / 'user_config.py'
    path.write_text(USER_CONFIG.format(teacher_path=str(root / 'teacher')))
    return str(path)


def _tool(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    # The package is found through custom_imports as a user has it installed.
    env['PYTHONPATH'] = REPO
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def _check(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_resume_and_test_through_tools(user_config, tmp_path):
    work_dir = str(tmp_path / 'work')
    logged = _check(_tool('tools/train.py', user_config, '--work-dir', work_dir))
    assert all(f'{key}: ' in logged.stdout + logged.stderr
               for key in ('loss_dsm', 'loss_kd', 'loss_feat', 'loss_jac'))
    ckpt2 = safe_torch_load(osp.join(work_dir, 'iter_2.pth'), map_location='cpu')
    assert ckpt2['meta']['iter'] == 2
    assert 'pruning' in ckpt2['meta'], 'pruned checkpoint must carry its pruning record'
    pruned_width = ckpt2['state_dict']['student.model.conv_in.weight'].shape[0]
    assert pruned_width < 8

    result = _check(_tool('tools/train.py', user_config, '--work-dir', work_dir, '--resume',
                          '--cfg-options', 'train_cfg.max_iters=4'))
    assert 'resumed' in (result.stdout + result.stderr).lower()
    ckpt4 = safe_torch_load(osp.join(work_dir, 'iter_4.pth'), map_location='cpu')
    assert ckpt4['meta']['iter'] == 4
    assert ckpt4['state_dict']['student.model.conv_in.weight'].shape[0] == pruned_width
    # Adam continued from the resumed state: 4 steps, not 2 fresh ones.
    adam_state = ckpt4['optimizer']['student']['state']
    assert {int(s['step']) for s in adam_state.values()} == {4}
    assert not torch.equal(ckpt2['state_dict']['student.model.conv_in.weight'],
                           ckpt4['state_dict']['student.model.conv_in.weight'])
    # The resumed run drew the same timesteps, noise and directions as an uninterrupted
    # one (RNGStateHook, registered by tools/train.py): bitwise the same weights.
    assert len(ckpt2['meta']['torch_rng_states']) == 1
    straight_dir = str(tmp_path / 'straight')
    _check(_tool('tools/train.py', user_config, '--work-dir', straight_dir,
                 '--cfg-options', 'train_cfg.max_iters=4'))
    straight = safe_torch_load(osp.join(straight_dir, 'iter_4.pth'), map_location='cpu')
    for key, value in straight['state_dict'].items():
        assert torch.equal(value, ckpt4['state_dict'][key]), key
    # the EMA's warm-up step count went on from 2 (WarmupExponentialMovingAverage)
    assert int(ckpt2['state_dict']['student_ema.steps']) == 2
    assert int(ckpt4['state_dict']['student_ema.steps']) == 4

    # tools/export.py writes the (pruned) student of a run with an open loss set for
    # diffusers; the loss modules stay behind.
    export_dir = str(tmp_path / 'export')
    _check(_tool('tools/export.py', user_config, osp.join(work_dir, 'iter_4.pth'),
                 export_dir))
    from mmdiff_2ndm import load_student
    exported = load_student(export_dir)
    assert exported.conv_in.weight.shape[0] == pruned_width

    # tools/test.py rebuilds the pruned student from the checkpoint before loading it.
    out_file = str(tmp_path / 'metrics.json')
    _check(_tool('tools/test.py', user_config, osp.join(work_dir, 'iter_4.pth'), '--work-dir',
                 str(tmp_path / 'test'), '--out', out_file))
    assert osp.isfile(out_file)
    # --sample-model scores the raw student instead of the EMA: other samples, other SSIM
    raw_file = str(tmp_path / 'metrics_raw.json')
    _check(_tool('tools/test.py', user_config, osp.join(work_dir, 'iter_4.pth'), '--work-dir',
                 str(tmp_path / 'test_raw'), '--out', raw_file, '--sample-model', 'orig'))
    ema_scores, raw_scores = mmengine.load(out_file), mmengine.load(raw_file)
    assert sorted(ema_scores) == sorted(raw_scores)
    assert ema_scores != raw_scores
    # Without the hook the dense student cannot take the pruned weights: an error naming
    # the keys and the fix, not MMEngine's shape warning and a score of the dense init.
    result = _tool('tools/test.py', user_config, osp.join(work_dir, 'iter_4.pth'),
                   '--work-dir', str(tmp_path / 'test_no_hook'), '--cfg-options',
                   'custom_hooks=[]')
    assert result.returncode != 0
    assert "pruned checkpoint loaded into a dense model; add custom_hooks=[dict(type='" \
        "DiffusionPruningHook')]" in result.stderr, result.stderr[-3000:]
    assert 'First mismatches: student.model.' in result.stderr


def _load_train_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location('train_tool', osp.join(REPO, 'tools/train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_amp_and_resume_arguments_update_the_config(user_config, tmp_path, monkeypatch):
    from mmengine.config import Config
    train_tool = _load_train_tool()
    parse = train_tool.parse_args
    sys_argv = sys.argv
    try:
        sys.argv = ['train.py', user_config, '--amp', '--resume', user_config]
        args = parse()
    finally:
        sys.argv = sys_argv
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='--amp needs a CUDA'):
            train_tool.merge_args(Config.fromfile(user_config), args)
        # The config rewrite itself is device independent.
        monkeypatch.setattr(train_tool, 'has_accelerator', lambda: True)
    cfg = train_tool.merge_args(Config.fromfile(user_config), args)
    assert cfg.optim_wrapper.student.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.student.loss_scale == 'dynamic'
    assert cfg.resume is True and cfg.load_from == user_config
    assert cfg.work_dir == osp.join('./work_dirs', 'user_config')

    cfg = Config.fromfile(user_config)
    cfg.optim_wrapper.student.type = 'MyWrapper'
    args.resume = None
    with pytest.raises(ValueError, match='optim_wrapper.student.*MyWrapper'):
        train_tool.merge_args(cfg, args)
    args.amp, args.resume = False, str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        train_tool.merge_args(Config.fromfile(user_config), args)
