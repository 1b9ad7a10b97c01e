"""MS-COCO caption annotations plus their image folder as a text-to-image data set."""
import os.path as osp
from collections import defaultdict
from typing import List, Optional

import mmengine
from mmengine.dataset import BaseDataset

from mmagic.registry import DATASETS


@DATASETS.register_module()
class CocoCaptionDataset(BaseDataset):
    """Images and captions from a COCO ``captions_*.json`` and the image folder.

    MMagic's ``MSCoCoDataset`` derives file names from image ids with the 2014 naming
    scheme and stores the caption as ``gt_prompt``, which ``PackInputs`` does not pack;
    this class reads the file names from the json's ``images`` list (any split, 2014 or
    2017, or a custom caption file in COCO format) and yields ``gt_path`` plus ``prompt``,
    so that ``LoadImageFromFile(key='gt')`` and ``PackInputs`` give ``gt_img`` and
    ``DataSample.prompt``.

    Args:
        ann_file (str): Caption json (``{"images": [{"id", "file_name"}], "annotations":
            [{"image_id", "caption"}]}``), relative to ``data_root``.
        data_root (str): Root of ``ann_file`` and ``data_prefix``. Defaults to ''.
        data_prefix (dict): ``dict(gt=<image folder>)``. Defaults to ``dict(gt='')``.
        captions_per_image (int, optional): Keep the first N captions of each image
            (one item per caption); None keeps all (about 5 per image). Use 1 for an
            evaluation set of one prompt per image. Defaults to None.
        **kwargs: Passed to :class:`mmengine.dataset.BaseDataset` (``pipeline``,
            ``indices``, ``test_mode``, ...).
    """

    METAINFO = dict(dataset_type='text_image_dataset', task_name='text2image')

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: Optional[dict] = None,
                 captions_per_image: Optional[int] = None,
                 **kwargs) -> None:
        if captions_per_image is not None and (
                isinstance(captions_per_image, bool) or not isinstance(captions_per_image, int)
                or captions_per_image < 1):
            raise ValueError('captions_per_image must be None (all captions) or an int >= 1, '
                             f'got {captions_per_image!r}.')
        data_prefix = dict(gt='') if data_prefix is None else dict(data_prefix)
        if set(data_prefix) != {'gt'}:
            raise ValueError(f'data_prefix must be dict(gt=<image folder>), got {data_prefix!r}.')
        self.captions_per_image = captions_per_image
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        """Pairs every kept caption with its image path, in the json's image order."""
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'COCO caption file {self.ann_file!r} does not exist; set '
                                    'ann_file (relative to data_root) to a captions_*.json.')
        ann = mmengine.load(self.ann_file)
        if not isinstance(ann, dict) or 'images' not in ann or 'annotations' not in ann:
            raise ValueError(f'{self.ann_file!r} is not a COCO caption file: it needs the keys '
                             '"images" and "annotations".')
        file_names = {img['id']: img['file_name'] for img in ann['images']}
        captions = defaultdict(list)
        for item in ann['annotations']:
            if item['image_id'] not in file_names:
                raise ValueError(f'{self.ann_file!r}: caption {item.get("id")} refers to image '
                                 f'id {item["image_id"]}, which is not in "images".')
            captions[item['image_id']].append(item['caption'].strip())

        data_list = []
        for image_id, file_name in file_names.items():
            kept = captions.get(image_id, [])[:self.captions_per_image]
            gt_path = osp.join(self.data_prefix['gt'], file_name)
            for caption in kept:
                data_list.append(dict(gt_path=gt_path, prompt=caption, image_id=image_id))
        return data_list
