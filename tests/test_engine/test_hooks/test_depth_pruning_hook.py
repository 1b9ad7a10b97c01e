"""DiffusionPruningHook with depth pruning of a DiT (TinyFusion's learnable selection, then
channels): prune in the run, checkpoint, resume and test rebuild the same student."""
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiTTransformer2DModel
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmdiff_2ndm  # noqa: F401  (safe checkpoint loader)
from mmagic.models.base_models import ExponentialMovingAverage
from mmdiff_2ndm.engine.hooks import DiffusionPruningHook
from mmdiff_2ndm.models.denoisers import run_denoiser
from mmdiff_2ndm.utils import safe_torch_load

DIT = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
           num_layers=4, sample_size=8, patch_size=2, num_embeds_ada_norm=10)


class ToyLatents(Dataset):
    """Eight fixed 4x8x8 'latents' with class labels."""

    def __init__(self):
        self.latents = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.latents)

    def __getitem__(self, index):
        return dict(inputs=self.latents[index], labels=index % 10)


class ToyDiTDistiller(BaseModel):
    """A frozen DiT teacher, its student copy and EMA; keeps the records it was handed."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.teacher = DiTTransformer2DModel(**DIT).requires_grad_(False)
        self.student = DiTTransformer2DModel(**DIT)
        self.student.load_state_dict(self.teacher.state_dict())
        self.student_ema = ExponentialMovingAverage(self.student, momentum=0.1)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.records = []
        self.batches_seen = []

    def set_pruning_record(self, record):
        self.records.append(record)

    def _dsm(self, data, timesteps):
        latents, labels = data['inputs'], data['labels']
        noise = torch.randn_like(latents)
        x_t = self.scheduler.add_noise(latents, noise, timesteps)
        return F.mse_loss(run_denoiser(self.student, x_t, timesteps, labels), noise)

    def pruning_loss(self, data_batch, timesteps):
        self.batches_seen.append(data_batch['labels'].tolist())
        return self._dsm(data_batch, timesteps)

    def train_step(self, data, optim_wrapper):
        with optim_wrapper.optim_context(self):
            loss = self._dsm(data, torch.randint(0, 1000, (data['inputs'].shape[0],)))
        optim_wrapper.update_params(loss)
        self.student_ema.update_parameters(self.student)
        return dict(loss=loss)

    def val_step(self, data):
        timesteps = torch.full((data['inputs'].shape[0],), 500)
        return list(run_denoiser(self.student, data['inputs'], timesteps,
                                 data['labels']).mean(dim=(1, 2, 3)))

    test_step = val_step

    def forward(self, inputs, data_samples=None, mode='tensor'):
        raise NotImplementedError('train_step / val_step only')


class StudentOutputMetric(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.extend(float(v) for v in data_samples)

    def compute_metrics(self, results):
        return dict(student_mean=sum(results) / len(results))


def _hook():
    return DiffusionPruningHook(
        method='depth+width', ratio=0.5, importance='magnitude',
        depth_cfg=dict(keep=1, group_size=2, selector='learnable', steps=4))


def _runner(work_dir, max_iters=2, **kwargs):
    loader = dict(dataset=ToyLatents(), sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=4, collate_fn=dict(type='default_collate'))
    cfg = dict(
        model=ToyDiTDistiller(), work_dir=str(work_dir), default_scope='mmagic',
        train_dataloader=loader, optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        test_dataloader=loader, test_cfg=dict(), test_evaluator=[StudentOutputMetric()],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[_hook()],
        experiment_name=f'depth_{osp.basename(str(work_dir))}_{max_iters}',
        env_cfg=dict(dist_cfg=dict(backend='gloo')), log_level='WARNING')
    cfg.update(kwargs)
    return Runner(**cfg)


def test_depth_pruning_in_a_run_resumes_and_tests(tmp_path):
    runner = _runner(tmp_path)
    runner.train()
    model = runner.model
    student = model.student
    assert len(student.transformer_blocks) == 2 and len(model.teacher.transformer_blocks) == 4
    assert student.transformer_blocks[0].attn1.to_q.out_features == 8
    # the learnable search drew a new batch per step (4 steps over 2 batches of 4)
    assert model.batches_seen == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2
    record = model.records[0]
    assert all(r is record for r in model.records)
    assert record['settings']['depth']['selector'] == 'learnable'
    optim_params = {id(p) for g in runner.optim_wrapper.optimizer.param_groups
                    for p in g['params']}
    assert all(id(p) in optim_params for p in student.parameters())
    assert [p.shape for p in model.student_ema.module.parameters()] == \
        [p.shape for p in student.parameters()]
    summary = json.load(open(osp.join(tmp_path, 'pruning_summary.json')))
    assert summary['depth'] == record['depth']
    ckpt_path = osp.join(tmp_path, 'iter_2.pth')
    assert safe_torch_load(ckpt_path, map_location='cpu')['meta']['pruning'] == record

    resumed = _runner(tmp_path, max_iters=3, resume=True, load_from=ckpt_path)
    resumed.load_or_resume()
    assert resumed.iter == 2 and resumed.model.records == [record]
    assert resumed.model.batches_seen == []  # rebuilt from the record, no new search
    resumed.train()
    assert resumed.iter == 3

    tester = _runner(tmp_path / 'test', load_from=ckpt_path)
    metrics = tester.test()
    saved = safe_torch_load(ckpt_path, map_location='cpu')['state_dict']
    loaded = tester.model.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved if k.startswith('student'))
    assert metrics['student_mean'] == pytest.approx(runner.test()['student_mean'], rel=1e-6)


def test_depth_settings_are_checked_when_the_hook_is_built():
    with pytest.raises(ValueError, match='needs depth=dict'):
        DiffusionPruningHook(method='depth')
    with pytest.raises(ValueError, match='keep=4 blocks per group'):
        DiffusionPruningHook(method='depth', depth_cfg=dict(keep=4, group_size=2))
    with pytest.raises(ValueError, match='Unknown depth selector'):
        DiffusionPruningHook(method='depth', depth_cfg=dict(keep=1, group_size=2,
                                                            selector='nope'))
    with pytest.raises(ValueError, match='method='):
        DiffusionPruningHook(method='height')
