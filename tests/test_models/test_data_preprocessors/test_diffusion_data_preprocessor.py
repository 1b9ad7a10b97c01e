"""DiffusionDataPreprocessor: generated samples go back to BGR from the model's order."""
import pytest
import torch
from mmagic.models.data_preprocessors import DataPreprocessor
from mmagic.structures import DataSample

from mmdiff_2ndm.models import DiffusionDataPreprocessor


def _red(order: str, batch: int = 2) -> torch.Tensor:
    """(B, 3, 4, 4) red in [0, 255], channels in ``order``."""
    images = torch.zeros(batch, 3, 4, 4)
    images[:, order.upper().index('R')] = 255
    return images


def _model_output(preprocessor, images: torch.Tensor) -> torch.Tensor:
    """``images`` normalised as the preprocessor normalises model inputs."""
    return (images - preprocessor.mean.view(1, -1, 1, 1)) / preprocessor.std.view(1, -1, 1, 1)


@pytest.mark.parametrize('data_samples', [None, DataSample(), [DataSample(), DataSample()]],
                         ids=['none', 'stacked', 'list'])
def test_generated_rgb_samples_return_as_bgr(data_samples):
    """Samples drawn from noise (no channel-order metainfo) are in the model's RGB."""
    preprocessor = DiffusionDataPreprocessor(output_channel_order='RGB')
    samples = _model_output(preprocessor, _red('RGB'))
    torch.testing.assert_close(preprocessor.destruct(samples, data_samples), _red('BGR'))
    # MMagic's own preprocessor takes them for BGR and hands them on as RGB.
    mmagic = DataPreprocessor(output_channel_order='RGB')
    torch.testing.assert_close(mmagic.destruct(samples, data_samples), _red('RGB'))


@pytest.mark.parametrize('loader_order', ['RGB', 'BGR'])
def test_images_reach_the_model_as_rgb_and_fid_as_bgr(loader_order):
    """A red ``gt_img`` of either loader order (CIFAR10: RGB, LoadImageFromFile: BGR)
    reaches the model as RGB and MMagic's FID real statistics (eval mode) as BGR."""
    preprocessor = DiffusionDataPreprocessor(output_channel_order='RGB')

    def batch():
        sample = DataSample(gt_img=_red(loader_order, batch=1)[0],
                            metainfo=dict(gt_channel_order=loader_order))
        return dict(inputs=dict(), data_samples=[sample])
    model_input = preprocessor(batch(), training=True)['data_samples'].gt_img
    torch.testing.assert_close(model_input, _model_output(preprocessor, _red('RGB', 1)))
    real = preprocessor(batch(), training=False)['data_samples'].gt_img
    torch.testing.assert_close(real, _red('BGR', 1))


def test_recorded_output_order_wins():
    """Outputs whose data samples record their order are destructed as MMagic does."""
    preprocessor = DiffusionDataPreprocessor(output_channel_order='RGB')
    samples = _model_output(preprocessor, _red('BGR'))
    recorded = DataSample(metainfo=dict(img_output_channel_order='BGR'))
    torch.testing.assert_close(preprocessor.destruct(samples, recorded), _red('BGR'))


def test_without_output_order_destruct_is_mmagics():
    """output_channel_order=None: the model works in the loader's order; nothing swaps."""
    preprocessor = DiffusionDataPreprocessor()
    samples = _model_output(preprocessor, _red('BGR'))
    torch.testing.assert_close(preprocessor.destruct(samples), _red('BGR'))


def test_kwargs_reach_mmagics_preprocessor():
    """``mean`` / ``std`` (MMagic's keywords) set the normalisation destruct undoes."""
    preprocessor = DiffusionDataPreprocessor(mean=[10.0] * 3, std=[2.0] * 3,
                                             output_channel_order='BGR')
    torch.testing.assert_close(preprocessor.destruct(torch.zeros(1, 3, 2, 2)),
                               torch.full((1, 3, 2, 2), 10.0))
