"""DiffusionPruningHook driven by mmengine's Runner: prune, checkpoint, resume, test."""
import copy
import io
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmdiff_2ndm  # noqa: F401  (safe checkpoint loader)
from mmagic.models.archs import DiffusersWrapper
from mmagic.models.base_models import ExponentialMovingAverage
from mmagic.registry import HOOKS, MODELS
from mmdiff_2ndm.engine.hooks import DiffusionPruningHook
from mmdiff_2ndm.models.denoisers import run_denoiser, unwrap_denoiser
from mmdiff_2ndm.pruning import prune_model
from mmdiff_2ndm.utils import safe_torch_load

UNET_CFG = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
    block_out_channels=(32, 64), norm_num_groups=8,
    down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
    up_block_types=('AttnUpBlock2D', 'UpBlock2D'), attention_head_dim=16)


class ToyImages(Dataset):
    """Eight fixed 3x8x8 'images'."""

    def __init__(self):
        self.images = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return dict(inputs=self.images[index])


class ToyDistiller(BaseModel):
    """A frozen teacher, a student copy (optionally mmagic-wrapped) and its EMA."""

    def __init__(self, with_ema: bool = True, wrapped: bool = False, with_loss: bool = True,
                 unet_cfg: dict = UNET_CFG):
        super().__init__()
        torch.manual_seed(0)
        self.teacher = UNet2DModel(**unet_cfg).requires_grad_(False)
        if wrapped:  # mmagic's DiffusersWrapper around the same architecture
            self.student = MODELS.build(dict(type='UNet2DModel', **unet_cfg))
            self.student.model.load_state_dict(self.teacher.state_dict())
        else:
            self.student = copy.deepcopy(self.teacher).requires_grad_(True)
        if with_ema:
            self.student_ema = ExponentialMovingAverage(self.student, momentum=0.1)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.with_loss = with_loss

    def pruning_loss(self, data_batch: dict, timesteps: torch.Tensor) -> torch.Tensor:
        if not self.with_loss:
            raise AssertionError('not used')
        images = self.data_preprocessor(data_batch, True)['inputs']
        noise = torch.randn_like(images)
        x_t = self.scheduler.add_noise(images, noise, timesteps)
        return F.mse_loss(run_denoiser(self.student, x_t, timesteps), noise)

    def train_step(self, data, optim_wrapper):
        images = self.data_preprocessor(data, True)['inputs']
        with optim_wrapper.optim_context(self):
            timesteps = torch.randint(0, 1000, (images.shape[0],))
            noise = torch.randn_like(images)
            x_t = self.scheduler.add_noise(images, noise, timesteps)
            loss = F.mse_loss(run_denoiser(self.student, x_t, timesteps), noise)
        optim_wrapper.update_params(loss)
        if hasattr(self, 'student_ema'):
            self.student_ema.update_parameters(self.student)
        return dict(loss=loss)

    def _sample_mean(self, data):
        images = self.data_preprocessor(data, False)['inputs']
        timesteps = torch.full((images.shape[0],), 500)
        return run_denoiser(self.student, images, timesteps).mean(dim=(1, 2, 3))

    def val_step(self, data):
        return list(self._sample_mean(data))

    test_step = val_step

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return run_denoiser(self.student, inputs, torch.zeros(inputs.shape[0], dtype=torch.long))


class StudentOutputMetric(BaseMetric):
    """Mean student output: depends on every pruned weight that was loaded."""

    def process(self, data_batch, data_samples):
        self.results.extend(float(v) for v in data_samples)

    def compute_metrics(self, results):
        return dict(student_mean=sum(results) / len(results))


def _runner(work_dir, model, max_iters=2, hook=None, **kwargs):
    loader = dict(dataset=ToyImages(), sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=4, collate_fn=dict(type='default_collate'))
    cfg = dict(
        model=model, work_dir=str(work_dir), default_scope='mmagic',
        train_dataloader=loader, optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        test_dataloader=loader, test_cfg=dict(), test_evaluator=[StudentOutputMetric()],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[hook or DiffusionPruningHook(ratio=0.5, importance='diff-pruning',
                                                   prune_cfg=dict(timesteps=[0, 500]))],
        experiment_name=f'prune_{osp.basename(str(work_dir))}_{max_iters}',
        env_cfg=dict(dist_cfg=dict(backend='gloo')), log_level='WARNING')
    cfg.update(kwargs)
    return Runner(**cfg)


def _student(runner):
    return unwrap_denoiser(runner.model.student)


def test_registered():
    assert HOOKS.get('DiffusionPruningHook') is DiffusionPruningHook
    with pytest.raises(ValueError, match='importance'):
        DiffusionPruningHook(importance='l1')


# scale-shift resnets (ADM, consistency models): their chunked time projection is pruned
# through the same hook, checkpoint, resume and test paths
SCALE_SHIFT_CFG = dict(UNET_CFG, resnet_time_scale_shift='scale_shift')


@pytest.mark.parametrize('wrapped,unet_cfg', [(False, UNET_CFG), (True, UNET_CFG),
                                              (False, SCALE_SHIFT_CFG)],
                         ids=['bare', 'wrapped', 'scale_shift'])
def test_train_resume_and_test(tmp_path, wrapped, unet_cfg):
    runner = _runner(tmp_path, ToyDistiller(wrapped=wrapped, unet_cfg=unet_cfg))
    dense_params = sum(p.numel() for p in _student(runner).parameters())
    runner.train()
    student = _student(runner)
    pruned_params = sum(p.numel() for p in student.parameters())
    assert pruned_params < 0.5 * dense_params
    # The wrapper is kept around the pruned net; the teacher stays dense.
    assert isinstance(runner.model.student, DiffusersWrapper) == wrapped
    assert unwrap_denoiser(runner.model.student) is not runner.model.student or not wrapped
    assert sum(p.numel() for p in runner.model.teacher.parameters()) == dense_params
    # The optimizer trains the pruned tensors, the EMA averages the pruned student.
    optim_params = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']}
    assert all(id(p) in optim_params for p in student.parameters())
    ema = unwrap_denoiser(runner.model.student_ema.module)
    assert [p.shape for p in ema.parameters()] == [p.shape for p in student.parameters()]
    assert int(runner.model.student_ema.steps) == 2
    summary = json.load(open(osp.join(tmp_path, 'pruning_summary.json')))
    assert summary['stats']['params_after'] == pruned_params
    assert summary['settings']['importance'] == 'diff-pruning'

    ckpt_path = osp.join(tmp_path, 'iter_2.pth')
    record = safe_torch_load(ckpt_path, map_location='cpu')['meta']['pruning']
    assert record['stats']['params_after'] == pruned_params
    # The record is plain data: torch's safe loader alone reads it.
    buffer = io.BytesIO()
    torch.save(record, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == record
    saved_state = copy.deepcopy(runner.optim_wrapper.optimizer.state_dict()['state'])
    saved_ema = {k: v.clone() for k, v in runner.model.student_ema.state_dict().items()}

    # --resume: a fresh dense model gets the pruned shapes before weights and optimizer load.
    resumed = _runner(tmp_path, ToyDistiller(wrapped=wrapped, unet_cfg=unet_cfg), max_iters=3,
                      resume=True, load_from=ckpt_path)
    resumed.load_or_resume()
    assert resumed.iter == 2
    loaded_state = resumed.optim_wrapper.optimizer.state_dict()['state']
    assert loaded_state.keys() == saved_state.keys()
    for key in saved_state:
        torch.testing.assert_close(loaded_state[key]['exp_avg'], saved_state[key]['exp_avg'])
    for key, value in resumed.model.student_ema.state_dict().items():
        torch.testing.assert_close(value, saved_ema[key])
    resumed.train()
    assert resumed.iter == 3
    assert int(resumed.model.student_ema.steps) == 3

    # tools/test.py path: Runner.test with load_from rebuilds the pruned student and loads
    # the trained pruned weights: bitwise the checkpoint's (not the pruned dense init),
    # and the score of the run that wrote them (its model still in memory).
    tester = _runner(tmp_path / 'test', ToyDistiller(wrapped=wrapped, unet_cfg=unet_cfg),
                     load_from=ckpt_path)
    metrics = tester.test()
    saved = safe_torch_load(ckpt_path, map_location='cpu')['state_dict']
    loaded = tester.model.state_dict()
    student_keys = [k for k in saved if k.startswith('student')]
    assert student_keys and all(torch.equal(loaded[k], saved[k]) for k in student_keys)
    assert metrics['student_mean'] == pytest.approx(runner.test()['student_mean'], rel=1e-6)
    assert sum(p.numel() for p in _student(tester).parameters()) == pruned_params


def test_shape_mismatch_errors(tmp_path):
    runner = _runner(tmp_path, ToyDistiller(with_ema=False),
                     hook=DiffusionPruningHook(ratio=0.5, importance='magnitude'))
    runner.train()
    ckpt_path = osp.join(tmp_path, 'iter_2.pth')
    ckpt = safe_torch_load(ckpt_path, map_location='cpu')

    # Pruned checkpoint without its record into a dense model.
    del ckpt['meta']['pruning']
    torch.save(ckpt, osp.join(tmp_path, 'no_record.pth'))
    tester = _runner(tmp_path / 'a', ToyDistiller(with_ema=False),
                     load_from=osp.join(tmp_path, 'no_record.pth'),
                     hook=DiffusionPruningHook(importance='magnitude'))
    with pytest.raises(ValueError, match='pruned checkpoint loaded into a dense model'):
        tester.test()

    # Dense checkpoint (no record) while the hook is configured to prune.
    dense = ToyDistiller(with_ema=False)
    torch.save(dict(meta=dict(), state_dict=dense.state_dict()), osp.join(tmp_path, 'dense.pth'))
    tester = _runner(tmp_path / 'c', ToyDistiller(with_ema=False),
                     load_from=osp.join(tmp_path, 'dense.pth'),
                     hook=DiffusionPruningHook(importance='magnitude'))
    with pytest.raises(ValueError, match='no pruning record'):
        tester.test()

    # Dense checkpoint into a student the hook has pruned.
    pruned_runner = _runner(tmp_path / 'b', ToyDistiller(with_ema=False),
                            hook=DiffusionPruningHook(ratio=0.5, importance='magnitude'))
    pruned_runner.call_hook('before_run')
    with pytest.raises(ValueError, match='dense checkpoint loaded into a pruned model'):
        pruned_runner.load_checkpoint(osp.join(tmp_path, 'dense.pth'))


def test_gradient_importance_needs_pruning_loss(tmp_path):

    class NoLoss(ToyDistiller):
        pruning_loss = None

    runner = _runner(tmp_path, NoLoss(with_ema=False),
                     hook=DiffusionPruningHook(importance='taylor'))
    with pytest.raises(TypeError, match='pruning_loss'):
        runner.train()


def test_hook_options_reach_the_pruning(tmp_path):
    """A model holding its student as ``net`` and the EMA as ``net_ema``: the hook prunes
    that student as ``prune_model`` does with the hook's ratio, importance and
    ``prune_cfg`` (a GroupNorm ratio other than the ratio), and re-points that EMA."""

    class Renamed(ToyDistiller):

        def __init__(self):
            super().__init__()
            self.net = self._modules.pop('student')
            self.net_ema = self._modules.pop('student_ema')

    model = Renamed()
    dense = sum(p.numel() for p in model.net.parameters())
    runner = _runner(tmp_path, model, hook=DiffusionPruningHook(
        ratio=0.5, importance='magnitude', student_key='net', ema_key='net_ema',
        prune_cfg=dict(groupnorm_ratio=0.25)))
    hook = next(h for h in runner.hooks if isinstance(h, DiffusionPruningHook))
    runner.call_hook('before_run')
    assert sum(p.numel() for p in model.net.parameters()) < dense
    width = dict(ratio=0.5, importance='magnitude', groupnorm_ratio=0.25)
    expected = prune_model(Renamed(), width=width, student_key='net', ema_key='net_ema',
                           progress=False)
    assert hook.record['shapes'] == expected['shapes']
    assert hook.record['history'] == expected['history']
    assert [p.shape for p in model.net_ema.module.parameters()] == \
        [p.shape for p in model.net.parameters()]
