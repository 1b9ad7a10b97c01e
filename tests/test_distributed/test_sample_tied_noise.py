"""Sample-tied randomness (per_sample_noise_seed) and caller-given Jacobian directions."""
import pytest
import torch
from diffusers import UNet2DModel
from mmagic.structures import DataSample
from mmengine.logging import MessageHub
from torch import nn

from mmdiff_2ndm.models.distillers.diffusion_distiller import DiffusionDistiller
from mmdiff_2ndm.models.losses.jacobian_products import unit_directions
from mmdiff_2ndm.models.losses.second_order_match_loss import SecondOrderMatchLoss

NUM_T = 100


def _distiller(**kwargs):
    torch.manual_seed(0)
    teacher = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 8), norm_num_groups=4,
        down_block_types=('DownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'UpBlock2D'))
    cfg = dict(teacher=teacher, noise_scheduler=dict(type='DDPMScheduler',
                                                     num_train_timesteps=NUM_T),
               losses=dict(dsm=dict(loss_weight=1.0),
                           jacobian=dict(mode='vjp', num_projections=2)),
               per_sample_noise_seed=5)
    cfg.update(kwargs)
    return DiffusionDistiller(**cfg)


def _samples(indices):
    return [DataSample(metainfo=dict(sample_idx=i)) for i in indices]


def test_draws_follow_the_sample_not_the_batch_position():
    # The iteration comes from the current message hub, as in a Runner; a hub of this
    # test's own keeps other tests' iterations out.
    hub = MessageHub.get_instance('test_draws_follow_the_sample')
    hub.update_info('iter', 0)
    model = _distiller()
    x_0 = torch.zeros(3, 3, 8, 8)
    t_a, noise_a, dirs_a, drop_a = model._training_draws(x_0, _samples([3, 6, 7]))
    t_b, noise_b, dirs_b, drop_b = model._training_draws(x_0[:2], _samples([7, 3]))
    assert dirs_a.shape == (2, 3, 3, 8, 8)  # (K, B, C, H, W)
    for pos_a, pos_b in ((0, 1), (2, 0)):
        assert t_a[pos_a] == t_b[pos_b]
        assert torch.equal(noise_a[pos_a], noise_b[pos_b])
        assert torch.equal(dirs_a[:, pos_a], dirs_b[:, pos_b])
        assert drop_a[pos_a] == drop_b[pos_b]
    # Antithetic pairs by dataset index: items 6 and 7 get t and T-1-t.
    assert int(t_a[1]) + int(t_a[2]) == NUM_T - 1
    torch.testing.assert_close(dirs_a.flatten(2).norm(dim=2), torch.ones(2, 3))
    # Another iteration gives other draws for the same sample.
    hub.update_info('iter', 1)
    t_c, noise_c, _, _ = model._training_draws(x_0, _samples([3, 6, 7]))
    assert not torch.equal(noise_c, noise_a)


def _pairs_mirrored(ts: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> list:
    """Whether t[first[k]] + t[second[k]] == T - 1, per pair k."""
    return (ts[first] + ts[second] == NUM_T - 1).tolist()


@pytest.mark.parametrize('antithetic', [True, False])
def test_antithetic_pairing_is_on_exactly_when_asked(antithetic):
    """Pairs (t, T-1-t): by dataset index (items 2k, 2k+1) with per-sample seeding, by
    batch half (k, B/2 + k) with the global RNG; switched off, no pair is mirrored
    (for these seeds; by chance one pair in 100 is)."""
    model = _distiller(antithetic_timesteps=antithetic)
    tied = model._training_draws(torch.zeros(8, 3, 8, 8), _samples(range(8)))[0]
    torch.manual_seed(0)
    model.per_sample_noise_seed = None
    drawn = model.draws.timesteps(8, 'cpu')
    even, halves = torch.arange(0, 8, 2), torch.arange(4)
    for ts, first, second in ((tied, even, even + 1), (drawn, halves, halves + 4)):
        assert ts.min() >= 0 and ts.max() < NUM_T
        assert _pairs_mirrored(ts, first, second) == [antithetic] * 4, ts.tolist()


def test_losses_equal_for_any_split_of_the_batch():
    """The loss of a batch is the mean of its halves' losses: what 2 ranks average."""
    model = _distiller()
    model.train()
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    full = model.compute_losses(images, _samples([0, 1, 2, 3]))
    halves = [model.compute_losses(images[i:i + 2], _samples([i, i + 1])) for i in (0, 2)]
    for key, value in full.items():
        torch.testing.assert_close(value, (halves[0][key] + halves[1][key]) / 2, msg=key)


def test_errors():
    with pytest.raises(ValueError, match='per_sample_noise_seed'):
        _distiller(per_sample_noise_seed=-1)
    with pytest.raises(ValueError, match='per_sample_noise_seed'):
        _distiller(per_sample_noise_seed=1.5)
    model = _distiller()
    with pytest.raises(ValueError, match='sample_idx'):
        model._training_draws(torch.zeros(2, 3, 8, 8), [DataSample(), DataSample()])


@pytest.mark.parametrize('mode', ['jvp', 'vjp', 'first_order'])
@pytest.mark.parametrize('num_projections', [1, 2])
def test_loss_with_given_directions_equals_its_own_draw(mode, num_projections):
    torch.manual_seed(0)
    student, teacher = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
    x = torch.randn(4, 3, 5, 5)

    def student_fn(x, batch_index=None):
        return student(x)

    def teacher_fn(x, batch_index=None):
        return teacher(x)

    seeded = SecondOrderMatchLoss(mode=mode, num_projections=num_projections, seed=3)
    expected = seeded(student_fn, teacher_fn, x)
    v = unit_directions((num_projections * 4, 3, 5, 5), x, torch.Generator().manual_seed(3))
    loss = SecondOrderMatchLoss(mode=mode, num_projections=num_projections)
    actual = loss(student_fn, teacher_fn, x,
                  directions=v.view(num_projections, 4, 3, 5, 5))
    torch.testing.assert_close(actual, expected)
    with pytest.raises(ValueError, match='directions must have shape'):
        loss(student_fn, teacher_fn, x, directions=v[:1])
