"""2 processes (gloo) == 1 process with the double batch, and exact kill-and-resume
(DSM + KD + feature KD + the Jacobian term)."""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch
from diffusers import UNet2DModel

from mmdiff_2ndm.utils import safe_torch_load

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))

CONFIG = """
_base_ = ['mmagic::_base_/gen_default_runtime.py']
custom_imports = dict(imports=['mmdiff_2ndm', 'rank_dump_hook'], allow_failed_imports=False)
default_scope = 'mmagic'

model = dict(
    type='DiffusionDistiller',
    teacher=dict(type='UNet2DModel', from_pretrained={teacher_path!r}),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
    num_inference_steps=2,
    # Feature KD of the width-pruned student (kept channels from the pruning record):
    # its gradients too must be one process's, its resume exact.
    losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0),
                feat=dict(type='FeatureKDLoss', layers='bk-sdm', loss_weight=10.0),
                jacobian=dict(type='2ndMatchLoss', loss_weight=0.1, mode={mode!r},
                              batch_fraction={batch_fraction})),
    per_sample_noise_seed={noise_seed},
    ema=dict(momentum=0.1),
    data_preprocessor=dict(type='DataPreprocessor'))
# As configs/_base_/runtime_2ndm.py; tools/train.py sets device_ids=None on CPU.
model_wrapper_cfg = dict(type='MMSeparateDistributedDataParallel', broadcast_buffers=False,
                         find_unused_parameters=False)
custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.5, importance='magnitude'),
                dict(type='RankDumpHook', out_dir={dump_dir!r}, kill_after_iter={kill})]
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='SklearnDigits', image_size=8, split='train',
                 pipeline=[dict(type='PackInputs', keys=['gt'])]))
optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    # SGD, not Adam: Adam's first steps are ~lr * sign(g), and some gradients are
    # float noise around 0 (biases right before a GroupNorm), whose sign depends on
    # the summation order; SGD keeps a 1e-7 gradient difference a 1e-7 difference.
    student=dict(type='OptimWrapper', accumulative_counts={accumulate},
                 optimizer=dict(type='SGD', lr=1e-3, momentum=0.9)))
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
def teacher_path(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp_teacher')
    torch.manual_seed(0)
    teacher = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
        up_block_types=('AttnUpBlock2D', 'UpBlock2D'))
    teacher.save_pretrained(str(root / 'teacher'))
    return str(root / 'teacher')


def _config(tmp_path, name, teacher_path, mode='vjp', batch_size=2, max_iters=3, kill=0,
            batch_fraction=1.0, accumulate=1, noise_seed=7):
    path = tmp_path / f'{name}.py'
    path.write_text(CONFIG.format(teacher_path=teacher_path, mode=mode, batch_size=batch_size,
                                  max_iters=max_iters, kill=kill,
                                  batch_fraction=batch_fraction, accumulate=accumulate,
                                  noise_seed=noise_seed,
                                  dump_dir=str(tmp_path / name / 'dump')))
    return str(path)


def _train(config, work_dir, nproc=1, *extra, expect_rc=0):
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    env.update(PYTHONPATH=os.pathsep.join([REPO, HERE]), OMP_NUM_THREADS='1')
    if nproc == 1:
        cmd = [sys.executable, 'tools/train.py', config]
    else:
        port = str(29500 + os.getpid() % 1000)
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
               f'--master_port={port}', 'tools/train.py', config, '--launcher', 'pytorch']
    start = time.time()
    result = subprocess.run(cmd + ['--work-dir', work_dir, *extra], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if 'Error' in line and 'Warning' not in line]
    log = '\n'.join(errors[-20:]) + '\n' + output[-3000:]
    assert (result.returncode == 0) == (expect_rc == 0), log
    print(f'{nproc} proc(s) {" ".join(extra)}: {time.time() - start:.1f} s')
    return result


def _dump(tmp_path, name, rank, iteration):
    return torch.load(str(tmp_path / name / 'dump' / f'rank{rank}_iter{iteration}.pth'),
                      map_location='cpu', weights_only=True)


def _assert_same(actual, expected, **tol):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=key, **tol)


def test_two_ranks_equal_one_process_and_exact_resume(tmp_path, teacher_path, mode='vjp'):
    # 1 process x batch 4 for 3 iterations.
    single = _config(tmp_path, 'single', teacher_path, mode, batch_size=4, max_iters=3)
    _train(single, str(tmp_path / 'single'))
    # 2 processes x batch 2 for 4 iterations (uninterrupted reference for the resume).
    double = _config(tmp_path, 'double', teacher_path, mode, batch_size=2, max_iters=4)
    _train(double, str(tmp_path / 'double'), 2)

    for iteration in (1, 3):
        ref = _dump(tmp_path, 'single', 0, iteration)
        ranks = [_dump(tmp_path, 'double', r, iteration) for r in (0, 1)]
        # The ranks saw disjoint halves of the single process's batch.
        assert sorted(ranks[0]['sample_idx'] + ranks[1]['sample_idx']) == \
            sorted(ref['sample_idx'])
        assert not set(ranks[0]['sample_idx']) & set(ranks[1]['sample_idx'])
        # Every rank holds the same student and EMA, bit for bit.
        _assert_same(ranks[1]['student'], ranks[0]['student'], rtol=0, atol=0)
        _assert_same(ranks[1]['ema'], ranks[0]['ema'], rtol=0, atol=0)
        # ... and the single process's, up to the reduction order of the all-reduce.
        _assert_same(ranks[0]['student'], ref['student'], rtol=1e-4, atol=1e-6)
        _assert_same(ranks[0]['ema'], ref['ema'], rtol=1e-4, atol=1e-6)
    # The student did train: iteration 3 moved far beyond the tolerance.
    first, third = _dump(tmp_path, 'single', 0, 1), _dump(tmp_path, 'single', 0, 3)
    assert max((first['student'][k] - third['student'][k]).abs().max()
               for k in first['student']) > 1e-3

    # Kill both ranks right after the iteration-2 checkpoint, then --resume to 4.
    killed = _config(tmp_path, 'killed', teacher_path, mode, batch_size=2, max_iters=4, kill=2)
    work_dir = str(tmp_path / 'killed')
    _train(killed, work_dir, 2, expect_rc=1)
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    assert not osp.exists(tmp_path / 'killed' / 'dump' / 'rank0_iter3.pth')
    resumed = _config(tmp_path, 'killed', teacher_path, mode, batch_size=2, max_iters=4)
    _train(resumed, work_dir, 2, '--resume')
    for rank in (0, 1):
        ref = _dump(tmp_path, 'double', rank, 4)
        out = _dump(tmp_path, 'killed', rank, 4)
        assert out['sample_idx'] == ref['sample_idx']
        _assert_same(out['student'], ref['student'], rtol=0, atol=0)
        _assert_same(out['ema'], ref['ema'], rtol=0, atol=0)


def test_forward_mode_two_forwards_and_accumulation_stay_synchronised(tmp_path, teacher_path):
    # Forward-mode J v, a Jacobian subset plus a plain forward of the rest
    # (batch_fraction=0.5), and 2-step gradient accumulation, under 2 processes.
    # Draws from the global RNG (no per_sample_noise_seed): the resume below is exact
    # through RNGStateHook's per-rank states.
    settings = dict(batch_size=4, batch_fraction=0.5, accumulate=2, noise_seed=None)
    cfg = _config(tmp_path, 'jvp', teacher_path, 'jvp', max_iters=4, **settings)
    _train(cfg, str(tmp_path / 'jvp'), 2)
    dumps = {(r, i): _dump(tmp_path, 'jvp', r, i) for r in (0, 1) for i in (1, 2, 3, 4)}
    for iteration in (1, 2, 3, 4):
        _assert_same(dumps[1, iteration]['student'], dumps[0, iteration]['student'],
                     rtol=0, atol=0)
    # Updates only at the ends of the accumulation windows (iterations 2 and 4).
    for before, after, moved in ((1, 2, True), (2, 3, False), (3, 4, True)):
        changed = any(not torch.equal(dumps[0, before]['student'][k],
                                      dumps[0, after]['student'][k])
                      for k in dumps[0, before]['student'])
        assert changed == moved, (before, after)

    # Kill both ranks after the iteration-2 checkpoint; --resume continues bit for bit.
    killed = _config(tmp_path, 'jvp_killed', teacher_path, 'jvp', max_iters=4, kill=2,
                     **settings)
    work_dir = str(tmp_path / 'jvp_killed')
    _train(killed, work_dir, 2, expect_rc=1)
    rng_states = safe_torch_load(osp.join(work_dir, 'iter_2.pth'))['meta']['torch_rng_states']
    assert len(rng_states) == 2 and not torch.equal(rng_states[0]['cpu'], rng_states[1]['cpu'])
    resumed = _config(tmp_path, 'jvp_killed', teacher_path, 'jvp', max_iters=4, **settings)
    _train(resumed, work_dir, 2, '--resume')
    for rank in (0, 1):
        _assert_same(_dump(tmp_path, 'jvp_killed', rank, 4)['student'],
                     dumps[rank, 4]['student'], rtol=0, atol=0)
