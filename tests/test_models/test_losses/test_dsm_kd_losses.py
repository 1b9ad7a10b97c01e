"""DSMLoss and KDLoss against their closed forms, and built from the registry."""
import pytest
import torch

import mmdiff_2ndm.models  # noqa: F401  (registers the losses)
from mmagic.registry import MODELS
from mmdiff_2ndm.models.losses import DSMLoss, KDLoss


def _pair(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_dsm_loss_equals_its_closed_form(reduction):
    pred, target = _pair()
    diff = (pred - target).pow(2)
    # 'sum': over C, H, W per sample (32 values), then the batch mean
    expected = diff.sum() / 3 if reduction == 'sum' else diff.sum() / (3 * 32)
    loss = DSMLoss(loss_weight=0.5, reduction=reduction)(pred, target)
    torch.testing.assert_close(loss, 0.5 * expected)


def test_kd_loss_equals_its_closed_form_and_spares_the_teacher():
    pred_s, pred_t = _pair(1)
    pred_s.requires_grad_(True)
    pred_t.requires_grad_(True)
    loss = KDLoss(loss_weight=2.0)(pred_s, pred_t)
    torch.testing.assert_close(loss, 2.0 * (pred_s - pred_t).pow(2).sum() / 3)
    loss.backward()
    torch.testing.assert_close(pred_s.grad, 2.0 * 2 * (pred_s - pred_t).detach() / 3)
    assert pred_t.grad is None  # the teacher's prediction is a constant target


def test_reduced_precision_inputs_are_summed_in_float32():
    pred = torch.full((1, 1, 64, 64), 300.0, dtype=torch.float16)
    loss = DSMLoss()(pred, torch.zeros_like(pred))  # 4096 * 300^2 overflows fp16
    assert loss.dtype == torch.float32 and loss.item() == 4096 * 300.0**2


def test_built_from_config_with_the_distillers_defaults():
    dsm = MODELS.build(dict(type='DSMLoss'))
    kd = MODELS.build(dict(type='KDLoss', loss_weight=0.3, reduction='mean'))
    assert (dsm.loss_weight, dsm.reduction) == (1.0, 'sum')
    assert (kd.loss_weight, kd.reduction) == (0.3, 'mean')
    with pytest.raises(ValueError, match="reduction must be one of .*'max'"):
        DSMLoss(reduction='max')


def test_distiller_builds_them_with_its_pixel_reduction():
    from diffusers import UNet2DModel
    teacher = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                          block_out_channels=(8, 8), norm_num_groups=4,
                          down_block_types=('DownBlock2D', 'DownBlock2D'),
                          up_block_types=('UpBlock2D', 'UpBlock2D'))
    model = MODELS.build(dict(
        type='DiffusionDistiller', teacher=teacher, pixel_reduction='mean',
        noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=10),
        losses=dict(dsm=dict(loss_weight=2.0), kd=dict(reduction='sum'))))
    assert isinstance(model.losses['dsm'], DSMLoss) and isinstance(model.losses['kd'], KDLoss)
    assert (model.losses['dsm'].loss_weight, model.losses['dsm'].reduction) == (2.0, 'mean')
    assert (model.losses['kd'].loss_weight, model.losses['kd'].reduction) == (1.0, 'sum')
    assert 'jacobian' not in model.losses
