"""SkimagePatches: every option changes the items, against scikit-image's own pictures."""
import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope
from skimage import data

from mmdiff_2ndm.datasets import SkimagePatches
from mmdiff_2ndm.datasets.skimage_patches_dataset import DEFAULT_IMAGES


def _find(picture: np.ndarray, crop: np.ndarray) -> list:
    """Top-left corners where ``crop`` lies in ``picture`` (exact match)."""
    windows = np.lib.stride_tricks.sliding_window_view(picture, crop.shape)[:, :, 0]
    rows, cols = np.nonzero((windows == crop).all(axis=(2, 3, 4)))
    return list(zip(rows.tolist(), cols.tolist()))


def test_crop_size_equal_to_image_size_gives_the_pictures_pixels():
    """Without resizing, each patch is a crop of its picture: colour kept, grey repeated
    over the channels, train crops in the top 75 % of the rows, test crops below."""
    for split in ('train', 'test'):
        dataset = SkimagePatches(image_size=8, crop_size=8, patches_per_image=3,
                                 images=('coins', 'chelsea'), split=split)
        assert len(dataset) == 6
        for index in range(6):
            item = dataset.get_data_info(index)
            name = ('coins', 'chelsea')[item['gt_label']]
            picture = getattr(data, name)()
            picture = picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, 2)
            assert item['gt'].shape == (8, 8, 3) and item['gt'].dtype == np.uint8
            assert item['gt_channel_order'] == 'RGB'
            boundary = int(round(picture.shape[0] * 0.75))
            hits = _find(picture, item['gt'])
            assert hits, (split, name)
            rows = [row for row, _ in hits]
            if split == 'train':
                assert min(rows) + 8 <= boundary
            else:
                assert max(rows) >= boundary


def test_resize_is_area_interpolation_of_the_crop():
    dataset = SkimagePatches(image_size=4, crop_size=8, patches_per_image=2,
                             images=('camera', ))
    exact = SkimagePatches(image_size=8, crop_size=8, patches_per_image=2,
                           images=('camera', ))  # same seed: the same crops
    for index in range(2):
        crop = exact.get_data_info(index)['gt']
        expected = cv2.resize(crop, (4, 4), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(dataset.get_data_info(index)['gt'], expected)


def test_defaults_labels_sizes_and_seed():
    train, test = SkimagePatches(), SkimagePatches(split='test')
    assert len(train) == 400 * len(DEFAULT_IMAGES) and len(test) == 100 * len(DEFAULT_IMAGES)
    labels = [train.get_data_info(i)['gt_label'] for i in range(len(train))]
    assert labels == [label for label in range(len(DEFAULT_IMAGES)) for _ in range(400)]
    assert train.metainfo['classes'] == DEFAULT_IMAGES
    assert train.get_data_info(0)['gt'].shape == (16, 16, 3)
    same = SkimagePatches(seed=0).get_data_info(5)['gt']
    other = SkimagePatches(seed=1).get_data_info(5)['gt']
    np.testing.assert_array_equal(train.get_data_info(5)['gt'], same)
    assert not np.array_equal(same, other)


def test_bad_options_name_the_problem():
    with pytest.raises(ValueError, match="no picture 'nope'"):
        SkimagePatches(images=('nope', ))
    with pytest.raises(ValueError, match='smaller than crop_size=200'):
        SkimagePatches(images=('coins', ), crop_size=200, split='test')
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        SkimagePatches(split='all')
    with pytest.raises(ValueError, match='crop_size must be an int >= image_size'):
        SkimagePatches(image_size=16, crop_size=8)
    with pytest.raises(ValueError, match='distinct'):
        SkimagePatches(images=('coins', 'coins'))


def test_pipeline_packs_the_items():
    init_default_scope('mmagic')
    dataset = SkimagePatches(patches_per_image=1, images=('astronaut', ),
                             pipeline=[dict(type='PackInputs', keys=['gt'])])
    packed = dataset[0]
    assert tuple(packed['inputs'].shape) == (3, 16, 16)
