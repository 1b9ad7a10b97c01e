"""DiffusionDistiller options that only show when sampling or initialising: each one
changes what the distiller does (the option audit, tests/options_inventory.py)."""
import pytest

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller)
from mmagic.registry import MODELS

from helpers.distiller_assets import dsm_distiller_cfg

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.mark.parametrize('sample_with_ema', [True, False])
def test_sample_with_ema_picks_the_default_model(unet2d_folder, sample_with_ema):
    model = MODELS.build(dsm_distiller_cfg(unet2d_folder, sample_with_ema=sample_with_ema,
                                           num_inference_steps=1))
    out = model.generate(dict(num_batches=1))
    assert out[0].sample_model == ('ema' if sample_with_ema else 'orig')


def test_sample_shape_sets_the_noise(unet2d_folder):
    model = MODELS.build(dsm_distiller_cfg(unet2d_folder, sample_shape=(3, 4, 4)))
    assert tuple(model.noise_fn(num_batches=2).shape) == (2, 3, 4, 4)


def test_init_cfg_reaches_mmengines_base_module(unet2d_folder):
    init_cfg = dict(type='Constant', layer='Conv2d', val=0.0)
    model = MODELS.build(dsm_distiller_cfg(unet2d_folder, init_cfg=init_cfg))
    assert model.init_cfg == init_cfg


def test_data_preprocessor_replaces_the_default(unet2d_folder):
    """A preprocessor told the model works in RGB returns its samples flipped to MMagic's
    BGR; the default (no output order) returns them unconverted."""
    import torch
    cfg = dsm_distiller_cfg(unet2d_folder, num_inference_steps=1)
    default_cfg = {k: v for k, v in cfg.items() if k != 'data_preprocessor'}
    rgb_cfg = dict(cfg, data_preprocessor=dict(type='DiffusionDataPreprocessor',
                                               output_channel_order='RGB'))
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    unconverted, flipped = (MODELS.build(c).generate(dict(noise=noise))[0].fake_img
                            for c in (default_cfg, rgb_cfg))
    assert not torch.equal(unconverted, flipped)
    torch.testing.assert_close(flipped, unconverted.flip(0), rtol=0, atol=0)
