"""The distiller's open loss set: any registered loss under any name, each input computed
once, features recorded in the forwards that run anyway."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import nn

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller and its losses)
from mmagic.registry import MODELS
from mmdiff_2ndm.models.denoisers import run_denoiser, unwrap_denoiser
from mmdiff_2ndm.pruning import prune_denoiser, rebuild_pruned

from helpers.distiller_assets import UNET_KWARGS, TinyGeneratedImageDataset

SCHEDULER = dict(type='DDPMScheduler', num_train_timesteps=100)
POINTS = ('down_blocks.0', 'down_blocks.1', 'up_blocks.0', 'up_blocks.1')


@MODELS.register_module(force=True)
class _RecordingLoss(nn.Module):
    """Keeps what the distiller hands it; returns 0."""

    loss_inputs = dict(student_out='student_out', teacher_out='teacher_out', x_t='x_t',
                       timesteps='timesteps', target='target', sigma_t='sigma_t')

    def forward(self, **fields):
        self.seen = fields
        return fields['student_out'].sum() * 0


def _batch(num: int = 4) -> dict:
    dataset = TinyGeneratedImageDataset(num_images=num)
    items = [dataset[i] for i in range(num)]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items])


def _distiller(losses: dict, pruned: bool = False, **overrides):
    torch.manual_seed(0)
    teacher = MODELS.build(dict(type='UNet2DModel', **UNET_KWARGS))
    model = MODELS.build(dict(type='DiffusionDistiller', teacher=teacher,
                              noise_scheduler=SCHEDULER, losses=losses,
                              data_preprocessor=dict(type='DataPreprocessor'), **overrides))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a student that is not its teacher's copy
        for param in model.student.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    if pruned:
        _, record = prune_denoiser(model.student, 0.5, 'magnitude')
        model.set_pruning_record(record)
    return model


def _losses(model, seed: int = 0):
    data = model.data_preprocessor(_batch(), True)
    torch.manual_seed(seed)
    return model.compute_losses(data['inputs'], data['data_samples'])


def _hand_features(model, x_t, timesteps):
    """The block outputs of both nets on x_t, by plain torch hooks."""
    feats = []
    for net in (model.student, model.teacher):
        bare, out = unwrap_denoiser(net), {}
        handles = [bare.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: out.__setitem__(name, o[0] if isinstance(o, tuple)
                                                       else o)) for name in POINTS]
        with torch.no_grad():
            run_denoiser(net, x_t, timesteps)
        for handle in handles:
            handle.remove()
        feats.append(out)
    return feats


def test_each_input_is_what_it_says():
    model = _distiller(dict(rec=dict(type='_RecordingLoss'), dsm=dict(loss_weight=1.0)))
    losses = _losses(model)
    assert list(losses) == ['loss_rec', 'loss_dsm']
    seen = model.losses['rec'].seen
    with torch.no_grad():
        student = run_denoiser(model.student, seen['x_t'], seen['timesteps'])
        teacher = run_denoiser(model.teacher, seen['x_t'], seen['timesteps'])
    torch.testing.assert_close(seen['student_out'], student)
    torch.testing.assert_close(seen['teacher_out'], teacher)
    assert seen['student_out'].requires_grad and not seen['teacher_out'].requires_grad
    alpha_bar = model.noise_scheduler.alphas_cumprod[seen['timesteps']]
    torch.testing.assert_close(seen['sigma_t'], (1 - alpha_bar).sqrt())
    # DSM consumes the same target (epsilon: the noise of x_t)
    torch.testing.assert_close(losses['loss_dsm'],
                               (student - seen['target']).pow(2).flatten(1).sum(1).mean())


def test_any_registered_loss_with_an_inputs_map():
    """mmagic's L1Loss as output distillation, next to the recording loss."""
    model = _distiller(dict(rec=dict(type='_RecordingLoss'),
                            l1=dict(type='L1Loss', loss_weight=2.0,
                                    inputs=dict(pred='student_out', target='teacher_out'))))
    losses = _losses(model)
    seen = model.losses['rec'].seen
    expected = 2.0 * (seen['student_out'] - seen['teacher_out']).abs().mean()
    torch.testing.assert_close(losses['loss_l1'], expected)


def test_feature_term_on_the_forwards_that_run_anyway():
    """loss_feat equals the hand-recorded features' term, with one student and one
    teacher forward per iteration."""
    model = _distiller(dict(rec=dict(type='_RecordingLoss'),
                            feat=dict(type='FeatureKDLoss', layers='bk-sdm')))
    calls = []
    for net in (model.student, model.teacher):
        unwrap_denoiser(net).register_forward_pre_hook(lambda m, i: calls.append(m))
    losses = _losses(model)
    assert len(calls) == 2
    seen = model.losses['rec'].seen
    student, teacher = _hand_features(model, seen['x_t'], seen['timesteps'])
    expected = sum((student[p] - teacher[p]).pow(2).mean() for p in POINTS)
    torch.testing.assert_close(losses['loss_feat'], expected)
    losses['loss_feat'].backward()
    assert unwrap_denoiser(model.student).down_blocks[0].resnets[0].conv1.weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())


@pytest.mark.parametrize('jacobian', [
    dict(mode='jvp'),
    dict(mode='jvp', batch_fraction=0.5, num_projections=2),
    dict(mode='vjp', batch_fraction=0.5),
])
def test_feature_term_is_the_same_inside_the_jacobian_pass(jacobian):
    """The Jacobian pass doubles as the forwards; the features it records are the plain
    ones (primal of the dual tensors; sub-batches put back in order)."""
    feat = dict(type='FeatureKDLoss', layers='bk-sdm')
    plain = _losses(_distiller(dict(feat=feat)))['loss_feat']
    model = _distiller(dict(jac=dict(type='2ndMatchLoss', seed=0, **jacobian), feat=feat))
    with_jacobian = _losses(model)
    assert list(with_jacobian) == ['loss_jac', 'loss_feat']
    torch.testing.assert_close(with_jacobian['loss_feat'], plain, rtol=1e-5, atol=1e-7)
    with_jacobian['loss_feat'].backward()
    grad = unwrap_denoiser(model.student).up_blocks[1].resnets[0].conv2.weight.grad
    assert grad is not None and not getattr(grad, '_fw_grad', None)


def test_width_pruned_student_compares_kept_channels_and_rebinds():
    model = _distiller(dict(rec=dict(type='_RecordingLoss'),
                            feat=dict(type='FeatureKDLoss', layers='bk-sdm')), pruned=True)
    losses = _losses(model)
    seen = model.losses['rec'].seen
    student, teacher = _hand_features(model, seen['x_t'], seen['timesteps'])
    kept = model.losses['feat']._kept
    assert all(student[p].shape[1] == kept[p].numel() < teacher[p].shape[1] for p in POINTS)
    expected = sum((student[p] - teacher[p][:, kept[p]]).pow(2).mean() for p in POINTS)
    torch.testing.assert_close(losses['loss_feat'], expected)
    # A rebuilt student (resume, tools) re-binds: the kept channels are found again.
    rebuilt = _distiller(dict(feat=dict(type='FeatureKDLoss', layers='bk-sdm')))
    rebuild_pruned(rebuilt.student, model.pruning_record)
    rebuilt.set_pruning_record(model.pruning_record)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(_losses(rebuilt)['loss_feat'], losses['loss_feat'])
    assert all(torch.equal(rebuilt.losses['feat']._kept[p], kept[p]) for p in POINTS)


def test_connector_needs_and_steps_its_optimizer():
    torch.manual_seed(0)
    teacher = MODELS.build(dict(type='UNet2DModel', **UNET_KWARGS))
    student = dict(type='UNet2DModel', **dict(UNET_KWARGS, block_out_channels=(4, 8)))
    model = MODELS.build(dict(
        type='DiffusionDistiller', teacher=teacher, student=student,
        noise_scheduler=SCHEDULER,
        losses=dict(dsm=dict(), feat=dict(type='FeatureKDLoss', connector='conv1x1')),
        data_preprocessor=dict(type='DataPreprocessor')))
    connectors = model.losses['feat'].connectors
    assert len(connectors) == 4
    assert any(key.startswith('losses.feat.connectors.') for key in model.state_dict())
    student_only = OptimWrapperDict(student=OptimWrapper(
        torch.optim.SGD(model.student.parameters(), lr=0.1)))
    with pytest.raises(KeyError, match="no key 'losses'"):
        model.train_step(_batch(), student_only)
    optim = OptimWrapperDict(
        student=OptimWrapper(torch.optim.SGD(model.student.parameters(), lr=0.1)),
        losses=OptimWrapper(torch.optim.SGD(model.losses.parameters(), lr=0.1)))
    before = copy.deepcopy(connectors.state_dict())
    log_vars = model.train_step(_batch(), optim)
    assert set(log_vars) >= {'loss_dsm', 'loss_feat'}
    assert any(not torch.equal(before[k], v) for k, v in connectors.state_dict().items())


def test_feature_term_under_autocast():
    """AMP: bf16 features are compared in float32, close to the float32 term."""
    model = _distiller(dict(dsm=dict(), feat=dict(type='FeatureKDLoss', layers='bk-sdm')),
                       pruned=True)
    reference = _losses(model)['loss_feat']
    with torch.autocast('cpu', dtype=torch.bfloat16):
        autocast = _losses(model)['loss_feat']
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, reference, rtol=0.05, atol=0)
