"""A checkpoint whose shapes do not fit the distiller is an error on every load path.

MMEngine's Runner loads with ``strict=False`` and only warns about mismatched shapes;
the distiller refuses them itself, so ``load_from``, ``--resume``, ``tools/test.py``
(tests/test_tools) and MMagic's own tools fail with or without the pruning hook.
"""
import copy
import os.path as osp
import uuid

import pytest
import torch
from mmengine.runner import Runner

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller)
from mmagic.registry import MODELS
from mmdiff_2ndm.engine.hooks import DiffusionPruningHook
from mmdiff_2ndm.models.denoisers import unwrap_denoiser
from mmdiff_2ndm.utils import safe_torch_load

from helpers.distiller_assets import dsm_distiller_cfg as _model

pytestmark = pytest.mark.usefixtures('single_thread')

SIZE = 8
PRUNED_HINT = (r'pruned checkpoint loaded into a dense model; add custom_hooks=\['
               r"dict\(type='DiffusionPruningHook'\)\].*First mismatches: student\.model\.")


def _runner(work_dir: str, model: dict, hooks=(), **extra) -> Runner:
    cfg = dict(
        default_scope='mmagic', model=copy.deepcopy(model), work_dir=work_dir,
        train_dataloader=dict(
            batch_size=2, num_workers=0,
            dataset=dict(type='TinyGeneratedImageDataset', num_images=4, size=SIZE),
            sampler=dict(type='InfiniteSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=1),
        optim_wrapper=dict(constructor='MultiOptimWrapperConstructor',
                           student=dict(type='OptimWrapper',
                                        optimizer=dict(type='Adam', lr=1e-3))),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False)),
        custom_hooks=list(hooks), env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING', experiment_name=f'strict_{uuid.uuid4().hex}')
    cfg.update(extra)
    return Runner(**cfg)


@pytest.fixture(scope='module')
def pruned_ckpt(tmp_path_factory, unet2d_folder) -> str:
    """A one-iteration run whose student DiffusionPruningHook pruned by half."""
    work_dir = str(tmp_path_factory.mktemp('pruned_run'))
    runner = _runner(work_dir, _model(unet2d_folder),
                     hooks=[DiffusionPruningHook(ratio=0.5, importance='magnitude')])
    runner.train()
    return osp.join(work_dir, 'iter_1.pth')


def test_load_from_without_the_hook_raises(tmp_path, unet2d_folder, pruned_ckpt):
    runner = _runner(str(tmp_path), _model(unet2d_folder), load_from=pruned_ckpt)
    with pytest.raises(ValueError, match=PRUNED_HINT):
        runner.load_or_resume()


def test_resume_without_the_hook_raises(tmp_path, unet2d_folder, pruned_ckpt):
    runner = _runner(str(tmp_path), _model(unet2d_folder), load_from=pruned_ckpt,
                     resume=True, train_cfg=dict(by_epoch=False, max_iters=2))
    with pytest.raises(ValueError, match=PRUNED_HINT):
        runner.train()


def test_plain_load_state_dict_raises(unet2d_folder, pruned_ckpt):
    """torch's own non-strict load (any script outside a Runner) is refused too."""
    model = MODELS.build(_model(unet2d_folder))
    state_dict = safe_torch_load(pruned_ckpt, map_location='cpu')['state_dict']
    with pytest.raises(ValueError, match=PRUNED_HINT):
        model.load_state_dict(state_dict, strict=False)


def test_load_from_with_the_hook_loads_the_pruned_weights(tmp_path, unet2d_folder,
                                                          pruned_ckpt):
    runner = _runner(str(tmp_path), _model(unet2d_folder), load_from=pruned_ckpt,
                     hooks=[DiffusionPruningHook(ratio=0.5, importance='magnitude')])
    runner.call_hook('before_run')
    runner.load_or_resume()
    saved = safe_torch_load(pruned_ckpt, map_location='cpu')['state_dict']
    student = unwrap_denoiser(runner.model.student).state_dict()
    assert student.keys() == {k[len('student.model.'):] for k in saved
                              if k.startswith('student.model.')}
    for key, value in student.items():
        assert torch.equal(value, saved[f'student.model.{key}']), key


@pytest.mark.parametrize('role', ['teacher_ckpt', 'student_ckpt'])
def test_model_checkpoints_with_pruned_shapes_raise(unet2d_folder, pruned_ckpt, role):
    ckpt = dict(filename=pruned_ckpt, prefix='student.model.')
    overrides = {role: ckpt}
    if role == 'teacher_ckpt':  # weights from the checkpoint only
        overrides['teacher'] = dict(type='UNet2DModel', from_config=unet2d_folder)
    else:
        overrides['student'] = dict(type='UNet2DModel', from_config=unet2d_folder)
    with pytest.raises(ValueError, match=rf"{role} .*First mismatches: .*{role} loads "
                                         r'into the network as configured.*load_from'):
        MODELS.build(_model(unet2d_folder, **overrides))
