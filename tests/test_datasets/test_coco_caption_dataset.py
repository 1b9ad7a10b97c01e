"""CocoCaptionDataset: file names from the json, one item per kept caption."""
import json
import os.path as osp

import pytest

from mmdiff_2ndm.datasets import CocoCaptionDataset

IMAGES = [dict(id=9, file_name='a.jpg'), dict(id=25, file_name='b.jpg')]
CAPTIONS = [(9, 'a cat '), (9, 'a dog'), (25, 'a bus'), (9, 'a cow'), (25, 'a car')]


@pytest.fixture
def data_root(tmp_path) -> str:
    annotations = [dict(id=n, image_id=i, caption=c) for n, (i, c) in enumerate(CAPTIONS)]
    (tmp_path / 'ann').mkdir()
    with open(tmp_path / 'ann' / 'captions.json', 'w') as f:
        json.dump(dict(images=IMAGES, annotations=annotations), f)
    return str(tmp_path)


def _items(dataset):
    return [(osp.basename(d['gt_path']), d['prompt'])
            for d in (dataset.get_data_info(i) for i in range(len(dataset)))]


def test_every_caption_is_an_item_in_image_order(data_root):
    dataset = CocoCaptionDataset('ann/captions.json', data_root=data_root,
                                 data_prefix=dict(gt='images'))
    assert _items(dataset) == [('a.jpg', 'a cat'), ('a.jpg', 'a dog'), ('a.jpg', 'a cow'),
                               ('b.jpg', 'a bus'), ('b.jpg', 'a car')]
    assert dataset.get_data_info(0)['gt_path'] == osp.join(data_root, 'images', 'a.jpg')
    assert dataset.ann_file == osp.join(data_root, 'ann', 'captions.json')


def test_captions_per_image_keeps_the_first(data_root):
    dataset = CocoCaptionDataset('ann/captions.json', data_root=data_root,
                                 captions_per_image=1)
    assert _items(dataset) == [('a.jpg', 'a cat'), ('b.jpg', 'a bus')]
    assert dataset.get_data_info(0)['gt_path'] == osp.join(data_root, 'a.jpg')


def test_kwargs_reach_mmengines_base_dataset(data_root):
    dataset = CocoCaptionDataset('ann/captions.json', data_root=data_root, indices=2)
    assert _items(dataset) == [('a.jpg', 'a cat'), ('a.jpg', 'a dog')]
