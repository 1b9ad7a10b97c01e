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


def _loader_batch(name: str) -> dict:
    """A collated batch of 5 as a dataloader hands it in: digits (MMagic's
    ``PackInputs(keys=['gt'])``, labels), patches (``PackInputs()``: the image only in
    the data samples) and captioned RGB images with a ``padding_size``-free metainfo."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    init_default_scope('mmagic')
    if name == 'captions':
        samples = []
        for index in range(5):
            sample = DataSample(gt_img=torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8),
                                metainfo=dict(gt_channel_order='RGB', sample_idx=index,
                                              ori_gt_shape=(4, 4, 3)))
            sample.set_data(dict(prompt=f'caption {index}'))
            samples.append(sample)
        return pseudo_collate([dict(inputs=dict(), data_samples=s) for s in samples])
    from mmagic.registry import DATASETS
    packing = dict(type='PackInputs', keys=['gt']) if name == 'digits' else dict(type='PackInputs')
    dataset = DATASETS.build(dict(type='SklearnDigits' if name == 'digits' else 'SkimagePatches',
                                  image_size=8, pipeline=[packing]))
    return pseudo_collate([dataset[index] for index in range(5)])


def _assert_same(got, expected) -> None:
    """Equal types and values, through lists, label data and tensors (bitwise)."""
    assert type(got) is type(expected), (type(got), type(expected))
    if isinstance(expected, DataSample) or hasattr(expected, 'metainfo_keys'):
        assert sorted(got.keys()) == sorted(expected.keys())
        assert sorted(got.metainfo_keys()) == sorted(expected.metainfo_keys())
        for key in expected.keys() + expected.metainfo_keys():
            _assert_same(getattr(got, key), getattr(expected, key))
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for each, other in zip(got, expected):
            _assert_same(each, other)
    elif torch.is_tensor(expected):
        assert got.dtype == expected.dtype and torch.equal(got, expected)
    else:
        assert got == expected


@pytest.mark.parametrize('training', [True, False], ids=['train', 'test'])
@pytest.mark.parametrize('order', [None, 'RGB', 'BGR'])
@pytest.mark.parametrize('name', ['digits', 'patches', 'captions'])
def test_data_samples_are_mmagics_field_for_field(name, order, training):
    """The stacked data samples equal MMagic's in every data and metainfo field, for
    real data sets' batches, both modes and each model order; the inputs too."""
    import copy
    batch = _loader_batch(name)
    ours = DiffusionDataPreprocessor(output_channel_order=order)(copy.deepcopy(batch), training)
    mmagic = DataPreprocessor(output_channel_order=order)(copy.deepcopy(batch), training)
    _assert_same(ours['data_samples'], mmagic['data_samples'])
    _assert_same(ours['inputs'], mmagic['inputs'])
    assert len(ours['data_samples'].metainfo_keys()) > 4  # normalisation metainfo written


def test_stacked_metainfo_owns_its_values():
    """The stacked mean and std are per-sample copies: changing the buffer afterwards
    (a ``load_state_dict``, a ``.to``) leaves them as they were written."""
    preprocessor = DiffusionDataPreprocessor()
    stacked = preprocessor(_loader_batch('digits'), True)['data_samples']
    means = stacked.metainfo['gt_img_mean']
    assert len({id(mean) for mean in means}) == len(means)
    preprocessor.mean.fill_(0.0)
    assert all(torch.all(mean == 127.5) for mean in means)


def test_unlike_samples_take_mmagics_path():
    """A sample without the image field gets MMagic's warning and its refusal to stack
    samples whose fields differ; with ``stack_data_sample=False`` the list is MMagic's."""
    import copy
    batch = _loader_batch('captions')
    batch['data_samples'][2] = DataSample(metainfo=dict(gt_channel_order='RGB'))
    with pytest.raises(AssertionError):
        DiffusionDataPreprocessor()(copy.deepcopy(batch), True)
    listed = _loader_batch('captions')
    ours = DiffusionDataPreprocessor(stack_data_sample=False)(copy.deepcopy(listed), True)
    mmagic = DataPreprocessor(stack_data_sample=False)(copy.deepcopy(listed), True)
    _assert_same(ours['data_samples'], mmagic['data_samples'])
