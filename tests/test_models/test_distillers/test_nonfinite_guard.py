"""The distiller's step guard: a non-finite loss term or gradient skips the whole update."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller and 2ndMatchLoss)
from mmagic.registry import MODELS

from helpers.distiller_assets import UNET_KWARGS, TinyGeneratedImageDataset

pytestmark = pytest.mark.usefixtures('single_thread')

SIZE = 8  # the UNet is convolutional: 8 px images are 4x cheaper than its 16


@pytest.fixture(scope='module')
def teacher():
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(**UNET_KWARGS)


def _model(teacher, **overrides):
    cfg = dict(type='DiffusionDistiller', teacher=copy.deepcopy(teacher),
               noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
               losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0),
                           jacobian=dict(type='2ndMatchLoss', loss_weight=0.1, seed=0)),
               jacobian_scale='sigma', ema=dict(momentum=0.5),
               data_preprocessor=dict(type='DataPreprocessor'))
    cfg.update(overrides)
    torch.manual_seed(0)
    return MODELS.build(cfg)


def _batch(num: int = 4) -> dict:
    dataset = TinyGeneratedImageDataset(num_images=num, size=SIZE)
    items = [dataset[i] for i in range(num)]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items])


def _optim(model) -> OptimWrapperDict:
    return OptimWrapperDict(student=OptimWrapper(
        torch.optim.Adam(model.student.parameters(), lr=1e-3)))


def _state(model, optim) -> dict:
    """Student weights, EMA weights and Adam's state, cloned."""
    return dict(student=copy.deepcopy(model.student.state_dict()),
                ema=copy.deepcopy(model.student_ema.state_dict()),
                optim=copy.deepcopy(optim['student'].optimizer.state_dict()))


def _assert_same(a: dict, b: dict) -> None:
    for part in ('student', 'ema'):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    for index, state in a['optim']['state'].items():
        other = b['optim']['state'][index]
        for key in ('step', 'exp_avg', 'exp_avg_sq'):
            assert torch.equal(state[key], other[key]), (index, key)


def _poison(model, monkeypatch, target: str) -> None:
    """Makes the next train_step's ``target`` (a loss name or 'gradient') NaN, once."""
    if target == 'gradient':
        param = next(model.student.parameters())
        # NaN in one gradient entry only; every loss term stays finite.
        handle = []
        handle.append(param.register_hook(
            lambda grad: (handle.pop().remove(), grad.index_fill(0, torch.tensor([0]),
                                                                 float('nan')))[1]))
        return
    compute = model.compute_losses

    def poisoned(*args, **kwargs):
        monkeypatch.setattr(model, 'compute_losses', compute)
        losses = compute(*args, **kwargs)
        # + NaN: the loss is NaN but its gradient is not, so only the loss check sees it
        losses[target] = losses[target] + float('nan')
        return losses
    monkeypatch.setattr(model, 'compute_losses', poisoned)


@pytest.mark.parametrize('target', ['loss_dsm', 'loss_kd', 'loss_jacobian', 'gradient'])
def test_nonfinite_term_skips_the_whole_update(teacher, monkeypatch, target):
    model, optim, batch = _model(teacher), None, _batch()
    optim = _optim(model)
    model.train_step(batch, optim)  # Adam has moments, the EMA has moved
    before = _state(model, optim)

    _poison(model, monkeypatch, target)
    log_vars = model.train_step(batch, optim)
    assert log_vars['nonfinite_skip'].item() == 1.0
    assert model.step_guard.num_skipped_steps == 1
    _assert_same(before, _state(model, optim))
    assert all(p.grad is None or not p.grad.any() for p in model.student.parameters())

    log_vars = model.train_step(batch, optim)  # training continues
    assert log_vars['nonfinite_skip'].item() == 0.0
    after = _state(model, optim)
    assert not torch.equal(before['student']['conv_in.weight'],
                           after['student']['conv_in.weight'])
    assert not torch.equal(before['ema']['module.conv_in.weight'],
                           after['ema']['module.conv_in.weight'])
    assert model.step_guard.consecutive_skips == 0 and model.step_guard.num_skipped_steps == 1


def test_consecutive_skips_stop_the_run_naming_the_term(teacher, monkeypatch):
    model = _model(teacher, max_consecutive_skips=2)
    optim = _optim(model)
    for expected in (1, 2):
        _poison(model, monkeypatch, 'loss_kd')
        if expected < 2:
            model.train_step(_batch(), optim)
            continue
        with pytest.raises(FloatingPointError,
                           match=r'Non-finite loss_kd in 2 training step\(s\) in a row'):
            model.train_step(_batch(), optim)


def test_jacobian_overflow_reaches_the_guard_with_its_culprit(teacher, monkeypatch):
    """The loss hands its own non-finite term on (nonfinite='return'); the guard names it."""
    model = _model(teacher, max_consecutive_skips=1)
    assert model.losses['jacobian'].nonfinite == 'return'
    jacobian_terms = model.losses['jacobian']._jacobian_terms

    def overflowing(*args, **kwargs):
        student_out, teacher_out, term = jacobian_terms(*args, **kwargs)
        return student_out, teacher_out, term * float('inf')
    monkeypatch.setattr(model.losses['jacobian'], '_jacobian_terms', overflowing)
    with pytest.raises(FloatingPointError,
                       match=r'Non-finite loss_jacobian.*\(2ndMatchLoss: non-finite Jacobian'):
        model.train_step(_batch(), _optim(model))


def test_accumulation_skips_the_window(teacher, monkeypatch):
    """With accumulative_counts=2 a NaN in the first micro-batch skips the update."""
    model = _model(teacher, losses=dict(dsm=dict(loss_weight=1.0)))
    optim = OptimWrapperDict(student=OptimWrapper(
        torch.optim.Adam(model.student.parameters(), lr=1e-3), accumulative_counts=2))
    before = _state(model, optim)
    _poison(model, monkeypatch, 'loss_dsm')
    assert model.train_step(_batch(), optim)['nonfinite_skip'].item() == 0.0  # no update yet
    assert model.train_step(_batch(), optim)['nonfinite_skip'].item() == 1.0
    _assert_same(before, _state(model, optim))


@pytest.mark.parametrize('value', [0, -1, 1.5, True])
def test_invalid_max_consecutive_skips(teacher, value):
    with pytest.raises(ValueError, match='max_consecutive_skips'):
        _model(teacher, max_consecutive_skips=value)


def test_gradients_under_a_loss_scaler_are_left_to_it(teacher, monkeypatch):
    """AmpOptimWrapper's GradScaler skips inf steps itself (and lowers its scale then):
    the guard must still call step, or the scale would never come down in fp16."""
    model = _model(teacher, losses=dict(dsm=dict(loss_weight=1.0)))
    optim = _optim(model)
    optim['student'].loss_scaler = torch.amp.GradScaler('cpu')  # as AmpOptimWrapper has
    steps = []
    monkeypatch.setattr(optim['student'], 'step', lambda **kwargs: steps.append(1))
    _poison(model, monkeypatch, 'gradient')
    assert model.train_step(_batch(), optim)['nonfinite_skip'].item() == 0.0
    assert steps == [1]


@pytest.mark.parametrize('entry, nonfinite', [
    (float('inf'), True), (-float('inf'), True), (float('nan'), True),
    # finite, though the gradients' 2-norm overflows float32: not a reason to skip
    (3e38, False)])
def test_gradient_check_is_entrywise(entry, nonfinite):
    from mmdiff_2ndm.models.distillers.student_update import StepGuard
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (5, 0, 7)]  # one empty
    for param in params:
        param.grad = torch.full_like(param, 3e38)
    params[2].grad[4] = entry
    losses = dict(loss_dsm=torch.tensor(1.0))
    names, skip = StepGuard().check(losses, OptimWrapper(torch.optim.SGD(params, lr=1)),
                                    params, update=True)
    assert names == (['gradient'] if nonfinite else [])
    assert skip is nonfinite
