"""Patches of the photographs shipped inside scikit-image: a second download-free data set."""
from typing import List, Sequence

import cv2
import numpy as np
from mmengine.dataset import BaseDataset

from mmagic.registry import DATASETS

#: Ten of scikit-image's bundled pictures (files inside the wheel, no download): five
#: photographs in colour, two in grey, three grey textures. The label of a patch is the
#: index of its picture here.
DEFAULT_IMAGES = ('astronaut', 'brick', 'camera', 'chelsea', 'coffee', 'coins', 'grass',
                  'gravel', 'hubble_deep_field', 'rocket')


@DATASETS.register_module()
class SkimagePatches(BaseDataset):
    """Small RGB patches cut from the pictures that ship with scikit-image.

    Natural-image statistics (edges, textures, colour) instead of the digits' strokes, at the
    same cost: no download, a few thousand 16x16 images. Each of ``images`` gives
    ``patches_per_image`` crops of ``crop_size`` pixels at seeded random positions, resized
    to ``image_size`` with area interpolation. The train split crops from the top 75 % of
    each picture's rows and the test split from the bottom 25 %, so that no test patch
    overlaps a train patch. Grey pictures are repeated over the three channels. Items are
    shaped like MMagic's ``CIFAR10`` items: ``gt`` (H, W, 3) uint8 RGB, ``gt_label`` (the
    picture's index in ``images``), ``gt_channel_order``.

    Args:
        image_size (int): Side of the returned square patches. Defaults to 16.
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        crop_size (int): Side of the crops before resizing. Defaults to 48.
        patches_per_image (int, optional): Crops per picture. Defaults to 400 for the train
            split and 100 for the test split.
        images (Sequence[str]): Names of ``skimage.data`` pictures. Defaults to
            ``DEFAULT_IMAGES``.
        seed (int): Seeds the crop positions (per split). Defaults to 0.
        **kwargs: Passed to :class:`mmengine.dataset.BaseDataset` (``pipeline``,
            ``test_mode``, ``indices``, ...).
    """

    TRAIN_SHARE = 0.75

    def __init__(self,
                 image_size: int = 16,
                 split: str = 'train',
                 crop_size: int = 48,
                 patches_per_image: int = None,
                 images: Sequence[str] = DEFAULT_IMAGES,
                 seed: int = 0,
                 **kwargs) -> None:
        if not isinstance(image_size, int) or image_size < 4:
            raise ValueError(f'image_size must be an int >= 4, got {image_size!r}.')
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        if not isinstance(crop_size, int) or crop_size < image_size:
            raise ValueError(f'crop_size must be an int >= image_size ({image_size}), got '
                             f'{crop_size!r}.')
        if patches_per_image is not None and (not isinstance(patches_per_image, int)
                                              or patches_per_image < 1):
            raise ValueError(f'patches_per_image must be an int >= 1, got '
                             f'{patches_per_image!r}.')
        images = tuple(images)
        if not images or len(set(images)) != len(images):
            raise ValueError(f'images must be distinct skimage.data names, got {images!r}.')
        self.image_size = image_size
        self.split = split
        self.crop_size = crop_size
        self.patches_per_image = patches_per_image or (400 if split == 'train' else 100)
        self.images = images
        self.seed = seed
        kwargs.setdefault('metainfo', dict(classes=images))
        super().__init__(**kwargs)

    def _picture(self, name: str) -> np.ndarray:
        """The named scikit-image picture as (H, W, 3) uint8 RGB."""
        from skimage import data
        loader = getattr(data, name, None)
        if loader is None or not callable(loader):
            raise ValueError(f'skimage.data has no picture {name!r}; choose names of '
                             'pictures that ship with scikit-image, e.g. '
                             f'{", ".join(DEFAULT_IMAGES)}.')
        picture = np.asarray(loader())
        if picture.ndim == 2:
            picture = np.repeat(picture[..., None], 3, axis=2)
        if picture.ndim != 3 or picture.shape[2] not in (3, 4) or picture.dtype != np.uint8:
            raise ValueError(f'skimage.data.{name}() is not an 8-bit grey or RGB(A) picture '
                             f'(shape {picture.shape}, {picture.dtype}).')
        return picture[..., :3]

    def load_data_list(self) -> List[dict]:
        """Crops and resizes the patches of every picture."""
        rng = np.random.default_rng([self.seed, 0 if self.split == 'train' else 1])
        data_list = []
        for label, name in enumerate(self.images):
            picture = self._picture(name)
            height, width = picture.shape[:2]
            boundary = int(round(height * self.TRAIN_SHARE))
            top, bottom = (0, boundary) if self.split == 'train' else (boundary, height)
            if bottom - top < self.crop_size or width < self.crop_size:
                raise ValueError(
                    f'The {self.split} region of skimage.data.{name}() ({bottom - top}x'
                    f'{width}) is smaller than crop_size={self.crop_size}.')
            rows = rng.integers(top, bottom - self.crop_size + 1, self.patches_per_image)
            cols = rng.integers(0, width - self.crop_size + 1, self.patches_per_image)
            for row, col in zip(rows, cols):
                crop = picture[row:row + self.crop_size, col:col + self.crop_size]
                patch = cv2.resize(crop, (self.image_size, self.image_size),
                                   interpolation=cv2.INTER_AREA)
                data_list.append(dict(gt=np.ascontiguousarray(patch), gt_label=label,
                                      gt_channel_order='RGB'))
        return data_list
