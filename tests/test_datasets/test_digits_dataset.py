"""SklearnDigits: each option changes the items, against scikit-learn's own arrays."""
import numpy as np
from sklearn.datasets import load_digits

from mmdiff_2ndm.datasets import SklearnDigits

DIGITS = load_digits()


def test_image_size_8_is_the_scaled_source_image():
    """At 8x8 the bilinear resize is the identity: the item is 255/16 of the source."""
    item = SklearnDigits(image_size=8).get_data_info(0)
    expected = np.clip(DIGITS.images[0] * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    assert item['gt'].shape == (8, 8, 3)
    np.testing.assert_array_equal(item['gt'], np.repeat(expected[..., None], 3, 2))
    assert SklearnDigits(image_size=12).get_data_info(0)['gt'].shape == (12, 12, 3)


def test_split_and_train_size_cut_the_source_order():
    train = SklearnDigits(split='train', train_size=100)
    test = SklearnDigits(split='test', train_size=100)
    assert len(train) == 100 and len(test) == len(DIGITS.target) - 100
    assert [train.get_data_info(i)['gt_label'] for i in range(100)] == \
        DIGITS.target[:100].tolist()
    assert test.get_data_info(0)['gt_label'] == int(DIGITS.target[100])
    assert len(SklearnDigits()) == len(DIGITS.target)  # 'all'


def test_classes_keep_only_those_digits():
    dataset = SklearnDigits(classes=[3, 7])
    labels = [dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))]
    assert labels == [int(t) for t in DIGITS.target if t in (3, 7)]


def test_kwargs_reach_mmengines_base_dataset():
    """``indices`` (a BaseDataset keyword) keeps the first N items."""
    assert len(SklearnDigits(indices=5)) == 5
