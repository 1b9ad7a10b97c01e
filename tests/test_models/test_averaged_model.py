"""WarmupExponentialMovingAverage against its closed form, across a resume, and re-pointed
at a pruned student by the distiller and DiffusionPruningHook's shared path."""
import pytest
import torch
from torch import nn

from mmagic.registry import MODELS
from mmdiff_2ndm.models import WarmupExponentialMovingAverage, retarget_average

from helpers.distiller_assets import tiny_ema_distiller

MOMENTUM = 1e-3  # target decay 0.999


def _source(value: float) -> nn.Module:
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(value)
    return net


def _closed_form(values, decay_of) -> float:
    """EMA_0 = v_0; EMA_n = d_n EMA_{n-1} + (1 - d_n) v_n, in float64."""
    average = float(values[0])
    for n, value in enumerate(values[1:], start=1):
        d = decay_of(n)
        average = d * average + (1.0 - d) * float(value)
    return average


def test_decay_schedule_closed_form():
    ema = MODELS.build(dict(type='WarmupExponentialMovingAverage', momentum=MOMENTUM),
                       default_args=dict(model=_source(0.0)))
    assert isinstance(ema, WarmupExponentialMovingAverage)
    assert ema.decay(0) == 0.0  # the first update copies
    assert ema.decay(1) == pytest.approx(2 / 11)
    assert ema.decay(10) == pytest.approx(11 / 20)
    assert ema.decay(1000) == pytest.approx(1001 / 1010)  # still below 0.999
    assert ema.decay(10**6) == pytest.approx(1 - MOMENTUM)  # capped at the target
    with pytest.raises(ValueError, match='steps'):
        ema.decay(-1)


@pytest.mark.parametrize('num_updates', [1, 2, 11, 1001])
def test_average_matches_closed_form(num_updates):
    """After 1 / 2 / 11 / 1001 updates (the last one with decay d_0, d_1, d_10, d_1000)."""
    values = [float((7 * k) % 13) - 6.0 for k in range(num_updates)]
    ema = WarmupExponentialMovingAverage(_source(123.0), momentum=MOMENTUM)
    for value in values:
        ema.update_parameters(_source(value))
    expected = _closed_form(values, lambda n: min(1 - MOMENTUM, (1 + n) / (10 + n)))
    assert int(ema.steps) == num_updates
    # the starting weights (123) are gone after the first update
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_plain_ema_keeps_its_start_but_warmup_does_not():
    """The EMA-lag bug this class exists for: 1500 updates at decay 0.999 from step 0 keep
    0.999^1500 = 22 % of the initial weights; the warm-up keeps none of them."""
    from mmagic.models.base_models import ExponentialMovingAverage
    plain = ExponentialMovingAverage(_source(1.0), momentum=MOMENTUM)
    warm = WarmupExponentialMovingAverage(_source(1.0), momentum=MOMENTUM)
    plain.update_parameters(_source(1.0))  # update 0 copies the (pruned) start
    warm.update_parameters(_source(1.0))
    for _ in range(1499):
        plain.update_parameters(_source(0.0))
        warm.update_parameters(_source(0.0))
    assert plain.module.weight.item() == pytest.approx(0.999**1499, rel=1e-3)
    warm_share = _closed_form([1.0] + [0.0] * 1499,
                              lambda n: min(0.999, (1 + n) / (10 + n)))
    assert warm.module.weight.item() == pytest.approx(warm_share, rel=1e-3)
    assert warm.module.weight.item() < 0.01 < 0.2 < plain.module.weight.item()


def test_resume_continues_the_warmup_exactly():
    values = [float(k % 5) for k in range(30)]
    straight = WarmupExponentialMovingAverage(_source(0.0), momentum=0.05)
    for value in values:
        straight.update_parameters(_source(value))

    first = WarmupExponentialMovingAverage(_source(0.0), momentum=0.05)
    for value in values[:12]:
        first.update_parameters(_source(value))
    state = {k: v.clone() for k, v in first.state_dict().items()}
    resumed = WarmupExponentialMovingAverage(_source(99.0), momentum=0.05)
    resumed.load_state_dict(state)
    assert int(resumed.steps) == 12
    for value in values[12:]:
        resumed.update_parameters(_source(value))
    assert int(resumed.steps) == 30
    assert torch.equal(resumed.module.weight, straight.module.weight)


def test_retarget_keeps_settings_and_steps():
    ema = WarmupExponentialMovingAverage(nn.Linear(4, 4), momentum=0.01)
    for _ in range(3):
        ema.update_parameters(nn.Linear(4, 4))
    smaller = nn.Linear(4, 2)
    retarget_average(ema, smaller)
    assert ema.module.weight.shape == (2, 4) and int(ema.steps) == 3
    assert ema.momentum == 0.01
    assert not ema.module.weight.requires_grad
    ema.update_parameters(smaller)  # the cached avg_parameters point at the new tensors
    d = ema.decay(3)
    assert torch.allclose(ema.module.weight, smaller.weight.detach())  # copy, then lerp
    assert d == pytest.approx(4 / 13)
    with pytest.raises(TypeError, match='BaseAveragedModel'):
        retarget_average(nn.Linear(1, 1), smaller)


def test_distiller_retargets_its_warmup_ema_after_pruning():
    """build_student_ema builds the configured EMA once, then re-points it (steps kept)."""
    from mmdiff_2ndm.pruning import prune_denoiser
    distiller = tiny_ema_distiller(dict(type='WarmupExponentialMovingAverage', momentum=1e-3))
    ema = distiller.student_ema
    assert isinstance(ema, WarmupExponentialMovingAverage)
    for _ in range(2):
        distiller.training_state.end_step(distiller.student, ema, average=True)
    prune_denoiser(distiller.student, 0.5, 'magnitude', with_macs=False)
    distiller.build_student_ema()
    assert distiller.student_ema is ema and int(ema.steps) == 2
    student_shapes = {k: v.shape for k, v in distiller.student.state_dict().items()}
    assert {k: v.shape for k, v in ema.module.state_dict().items()} == student_shapes
    assert ema.module.conv_in.weight.shape[0] < 8  # the pruned width
    # averages the pruned student with decay d_2 = 3/12
    distiller.training_state.end_step(distiller.student, ema, average=True)
    assert int(ema.steps) == 3


def _update(ema: WarmupExponentialMovingAverage, source: nn.Module, value: float) -> None:
    with torch.no_grad():
        for tensor in (*source.parameters(), *source.buffers()):
            if tensor.is_floating_point():
                tensor.fill_(value)
    ema.update_parameters(source)


def test_interval_skips_the_updates_between():
    """interval=2: the update at steps 1 is skipped, steps 2 averages with d_2 = 3/12."""
    source = _source(0.0)
    ema = WarmupExponentialMovingAverage(source, momentum=MOMENTUM, interval=2)
    for value in (1.0, 2.0, 3.0):
        _update(ema, source, value)
    assert ema.module.weight.item() == pytest.approx(0.25 * 1.0 + 0.75 * 3.0)


def test_update_buffers_averages_the_buffers():
    """update_buffers=True: a running mean is averaged like a weight (d_1 = 2/11);
    False: copied."""
    for update_buffers, expected in ((True, 9 / 11), (False, 1.0)):
        source = nn.BatchNorm1d(1)
        ema = WarmupExponentialMovingAverage(source, momentum=MOMENTUM,
                                             update_buffers=update_buffers)
        _update(ema, source, 0.0)
        _update(ema, source, 1.0)
        assert ema.module.running_mean.item() == pytest.approx(expected), update_buffers


def test_device_places_the_average():
    ema = WarmupExponentialMovingAverage(_source(0.0), device=torch.device('meta'))
    assert ema.module.weight.device.type == 'meta'


class _WithBuffers(nn.Module):
    """Weights, a float buffer that BatchNorm updates, and an integer one."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.norm(self.linear(x))


@pytest.mark.parametrize('interval', [1, 3])
@pytest.mark.parametrize('update_buffers', [False, True])
def test_update_is_bitwise_mmengines_loop(interval, update_buffers):
    """The one-lerp-per-update path against MMEngine's per-tensor loop (with this class's
    avg_func): the same weights and buffers to the bit, update for update."""
    from mmengine.model import BaseAveragedModel
    torch.manual_seed(0)
    source = _WithBuffers()
    fast = WarmupExponentialMovingAverage(source, momentum=0.05, interval=interval,
                                          update_buffers=update_buffers)
    loop = WarmupExponentialMovingAverage(source, momentum=0.05, interval=interval,
                                          update_buffers=update_buffers)
    for _ in range(8):
        with torch.no_grad():
            for param in source.parameters():
                param.add_(torch.randn_like(param))
        source(torch.randn(5, 3))  # moves the running statistics and the batch count
        fast.update_parameters(source)
        BaseAveragedModel.update_parameters(loop, source)
        assert int(fast.steps) == int(loop.steps)
        mine, theirs = fast.module.state_dict(), loop.module.state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    # the average moved, and it is not the source (the decay is not 0)
    assert not torch.equal(fast.module.linear.weight, source.linear.weight)
    assert not torch.equal(fast.module.linear.weight, _WithBuffers().linear.weight)


@pytest.mark.parametrize('ema_type', ['MomentumAnnealingEMA', 'StochasticWeightAverage',
                                      'WarmupExponentialMovingAverage'])
def test_distiller_takes_any_mmengine_average(ema_type):
    """MMEngine's own averages lack MMagic's sync_buffers/sync_parameters: before
    start_iter the EMA is a copy of the student (steps not counted), from it on an average
    that copies the buffers."""
    distiller = tiny_ema_distiller(dict(type=ema_type, start_iter=2))
    ema, student = distiller.student_ema, distiller.student

    def nudge():
        with torch.no_grad():
            for param in student.parameters():
                param.add_(0.5)

    nudge()
    distiller.training_state.end_step(student, ema, average=True)  # step 1 < start_iter
    assert int(ema.steps) == 0
    assert all(torch.equal(ema.module.state_dict()[k], v)
               for k, v in student.state_dict().items())
    nudge()
    distiller.training_state.end_step(student, ema, average=True)  # update 0: a copy
    nudge()
    distiller.training_state.end_step(student, ema, average=True)  # update 1: an average
    assert int(ema.steps) == 2
    key = 'conv_in.weight'
    ema_weight, student_weight = ema.module.state_dict()[key], student.state_dict()[key]
    # between the copy of update 0 (student - 0.5) and the student now
    assert torch.all(ema_weight < student_weight)
    assert torch.all(ema_weight >= student_weight - 0.5 - 1e-6)
