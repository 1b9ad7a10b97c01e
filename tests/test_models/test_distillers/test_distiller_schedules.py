"""DiffusionDistiller without a teacher (plain DDPM training) and the Jacobian term's
timestep range and weight warm-up."""
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper, OptimWrapperDict

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller and 2ndMatchLoss)
from mmagic.registry import MODELS
from mmdiff_2ndm.models.denoisers import unwrap_denoiser
from mmdiff_2ndm.models.distillers.batch_fields import images as batch_images

from helpers.distiller_assets import UNET_KWARGS, TinyGeneratedImageDataset

SCHEDULER = dict(type='DDPMScheduler', num_train_timesteps=100)
JACOBIAN = dict(type='2ndMatchLoss', loss_weight=0.1, seed=0)


def _from_scratch(**overrides) -> dict:
    cfg = dict(type='DiffusionDistiller', teacher=None,
               student=dict(type='UNet2DModel', **UNET_KWARGS),
               noise_scheduler=SCHEDULER, num_inference_steps=2,
               losses=dict(dsm=dict(loss_weight=1.0), kd=None),
               ema=dict(momentum=0.5))
    cfg.update(overrides)
    return cfg


def _batch(num: int = 4, size: int = 8) -> dict:
    dataset = TinyGeneratedImageDataset(num_images=num, size=size)
    items = [dataset[i] for i in range(num)]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items])


def test_teacher_free_training_and_its_ema_as_a_later_teacher(tmp_path):
    torch.manual_seed(0)
    model = MODELS.build(_from_scratch())
    assert model.teacher is None
    optim = OptimWrapperDict(student=OptimWrapper(
        torch.optim.Adam(model.student.parameters(), lr=1e-3)))
    before = unwrap_denoiser(model.student).conv_in.weight.detach().clone()
    log_vars = model.train_step(_batch(), optim)
    assert set(log_vars) == {'loss', 'loss_dsm', 'nonfinite_skip'}
    assert torch.isfinite(log_vars['loss'])
    assert not torch.equal(before, unwrap_denoiser(model.student).conv_in.weight)

    samples = model.val_step(dict(inputs=dict(num_batches=2)))
    assert samples[0].fake_img.shape == (3, 16, 16) and samples[0].sample_model == 'ema'
    with pytest.raises(ValueError, match="sample_model='teacher' needs a teacher"):
        model.val_step(dict(inputs=dict(num_batches=1, sample_model='teacher')))
    with pytest.raises(ValueError, match='with_teacher.*teacher=None'):
        model.val_step(dict(inputs=dict(num_batches=1,
                                        sample_kwargs=dict(with_teacher=True))))

    # The run's EMA becomes the teacher of the next run, as the digits study does it.
    ckpt = str(tmp_path / 'teacher_run.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    distiller = MODELS.build(dict(
        type='DiffusionDistiller', teacher=dict(type='UNet2DModel', **UNET_KWARGS),
        teacher_ckpt=dict(filename=ckpt, prefix='student_ema.module.model.'),
        noise_scheduler=SCHEDULER))
    ema_net = unwrap_denoiser(model.student_ema.module).state_dict()
    loaded = unwrap_denoiser(distiller.teacher).state_dict()
    assert loaded.keys() == ema_net.keys()
    assert all(torch.equal(ema_net[k], loaded[k]) for k in ema_net)


@pytest.mark.parametrize('losses, match', [
    (dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0)), r"\['kd'\] need a teacher"),
    (dict(dsm=dict(loss_weight=1.0), kd=None, jacobian=JACOBIAN),
     r"\['jacobian'\] need a teacher"),
])
def test_error_teacher_free_with_teacher_losses(losses, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(_from_scratch(losses=losses))


def test_error_neither_teacher_nor_student():
    with pytest.raises(ValueError, match='teacher=None needs a `student`'):
        MODELS.build(_from_scratch(student=None))


def _distiller(**overrides):
    teacher = dict(type='UNet2DModel', **UNET_KWARGS)
    torch.manual_seed(0)
    net = MODELS.build(teacher)
    cfg = dict(type='DiffusionDistiller', teacher=net, noise_scheduler=SCHEDULER,
               losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0),
                           jacobian=JACOBIAN))
    cfg.update(overrides)
    return MODELS.build(cfg)


def _jacobian(**schedule) -> dict:
    """The 2ndMatch loss config with its schedule options."""
    return dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0),
                jacobian=dict(JACOBIAN, **schedule))


def test_jacobian_t_range_zeroes_weights_outside():
    model = _distiller(losses=_jacobian(t_range=(10, 50)))
    weights = model.losses['jacobian'].schedule_weights(
        torch.tensor([0, 9, 10, 30, 50, 51, 99]), 0)
    assert weights.tolist() == [0, 0, 1, 1, 1, 0, 0]
    # No timestep of a 100-step schedule is in range: the term is 0, DSM is unaffected.
    empty = _distiller(losses=_jacobian(t_range=(200, 300)))
    data = empty.data_preprocessor(_batch(), True)
    losses = empty.compute_losses(data['inputs'], data['data_samples'])
    assert losses['loss_jacobian'].item() == 0.0
    assert losses['loss_dsm'].item() > 0.0


def test_jacobian_warmup_ramps_linearly(monkeypatch):
    model = _distiller(losses=_jacobian(warmup_iters=10))
    loss = model.losses['jacobian']
    t = torch.tensor([5, 94])
    for it, expected in [(0, 0.0), (5, 0.5), (10, 1.0), (40, 1.0)]:
        assert loss.schedule_weights(t, it).tolist() == [expected, expected]
    # off by default: the paper's form
    assert _distiller().losses['jacobian'].schedule_weights(t, 5) is None
    # The distiller hands the loss the Runner's iteration (message hub 'iter').
    seen = {}
    schedule_weights = loss.schedule_weights

    def recording(timesteps, iteration):
        seen['iteration'] = iteration
        return schedule_weights(timesteps, iteration)
    monkeypatch.setattr(loss, 'schedule_weights', recording)
    MessageHub.get_instance('test_jacobian_warmup').update_info('iter', 7)
    data = model.data_preprocessor(_batch(), True)
    model.compute_losses(data['inputs'], data['data_samples'])
    assert seen['iteration'] == 7


@pytest.mark.parametrize('schedule, match', [
    (dict(t_range=(50, 10)), 't_range'),
    (dict(t_range=(1, 2, 3)), 't_range'),
    (dict(warmup_iters=-1), 'warmup_iters'),
    (dict(scale='sigma2'), 'scale'),
])
def test_error_bad_jacobian_schedule(schedule, match):
    with pytest.raises(ValueError, match=match):
        _distiller(losses=_jacobian(**schedule))


def test_deprecated_distiller_schedule_moves_into_the_loss():
    """jacobian_scale / _t_range / _warmup_iters still work, with a warning, and give the
    loss-config form's numbers bit for bit."""
    with pytest.warns(DeprecationWarning, match="scale='sigma'"):
        old = _distiller(jacobian_scale='sigma', jacobian_t_range=(0, 60),
                         jacobian_warmup_iters=3)
    new = _distiller(losses=_jacobian(scale='sigma', t_range=(0, 60), warmup_iters=3))
    term = old.losses['jacobian']
    assert (term.scale, term.t_range, term.warmup_iters) == ('sigma', (0, 60), 3)
    results = []
    for model in (old, new):
        data = model.data_preprocessor(_batch(), True)
        torch.manual_seed(0)
        results.append(model.compute_losses(data['inputs'], data['data_samples']))
    assert list(results[0]) == list(results[1]) == ['loss_jacobian', 'loss_dsm', 'loss_kd']
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key
    with pytest.raises(ValueError, match='clashes with losses.jacobian.scale'):
        _distiller(jacobian_scale='sigma', losses=_jacobian(scale='sigma'))
    with pytest.raises(ValueError, match='t_range'):
        _distiller(jacobian_t_range=(5, 1))


def _fixed_draws(model, monkeypatch, timesteps):
    """Fixes the timesteps; the noise is then compute_losses' first draw after a seed."""
    monkeypatch.setattr(model.draws, 'timesteps', lambda batch, device: timesteps)
    data = model.data_preprocessor(_batch(), True)
    torch.manual_seed(0)
    losses = model.compute_losses(data['inputs'], data['data_samples'])
    x_0 = batch_images(data['inputs'])
    torch.manual_seed(0)
    return losses, x_0, torch.randn_like(x_0)


def _alpha_bar(timesteps):
    """DDPM's linear betas (1e-4 .. 0.02 over 100 steps) by hand: (B, 1, 1, 1)."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100), 0)[timesteps].view(-1, 1, 1, 1)


def test_sigma_scale_reaches_the_jacobian_loss(monkeypatch):
    """scale='sigma' scales the terms by sqrt(1 - alpha_bar_t) per sample."""
    model = _distiller(losses=_jacobian(scale='sigma'))
    seen = {}
    loss = model.losses['jacobian']
    reduce = loss._reduce

    def recording(term, scale, *args, **kwargs):
        seen['scale'] = scale
        return reduce(term, scale, *args, **kwargs)
    monkeypatch.setattr(loss, '_reduce', recording)
    timesteps = torch.tensor([0, 10, 50, 99])
    _fixed_draws(model, monkeypatch, timesteps)
    torch.testing.assert_close(seen['scale'], (1 - _alpha_bar(timesteps)).sqrt().flatten())


@pytest.mark.parametrize('prediction_type', ['epsilon', 'sample'])
def test_dsm_and_kd_equal_their_closed_forms(monkeypatch, prediction_type):
    """loss_dsm = ||eps_S(x_t) - target||^2 (target: the noise, or x_0) and
    loss_kd = ||eps_S(x_t) - eps_D(x_t)||^2, pixel-summed and batch-averaged, with
    x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps by hand."""
    model = _distiller(noise_scheduler=dict(SCHEDULER, prediction_type=prediction_type),
                       losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0)))
    with torch.no_grad():  # a student that is not its teacher's copy
        for param in model.student.parameters():
            param.add_(0.01 * torch.randn_like(param))
    timesteps = torch.tensor([0, 10, 50, 99])
    losses, x_0, noise = _fixed_draws(model, monkeypatch, timesteps)
    alpha_bar = _alpha_bar(timesteps)
    x_t = alpha_bar.sqrt() * x_0 + (1 - alpha_bar).sqrt() * noise
    with torch.no_grad():
        student = unwrap_denoiser(model.student)(x_t, timesteps).sample
        teacher = unwrap_denoiser(model.teacher)(x_t, timesteps).sample
    target = noise if prediction_type == 'epsilon' else x_0
    for key, reference in (('loss_dsm', target), ('loss_kd', teacher)):
        expected = (student - reference).pow(2).flatten(1).sum(1).mean()
        torch.testing.assert_close(losses[key].detach(), expected, msg=key)
