"""scikit-learn's handwritten digits as a tiny, download-free image data set."""
from typing import List, Optional, Sequence

import cv2
import numpy as np
from mmengine.dataset import BaseDataset

from mmagic.registry import DATASETS


@DATASETS.register_module()
class SklearnDigits(BaseDataset):
    """The 1,797 8x8 handwritten digits shipped inside scikit-learn, upscaled to RGB images.

    The data set needs no download (it is part of the ``scikit-learn`` wheel), which makes it
    the real-data set of the project's demo, evidence study and end-to-end tests. Each item is
    shaped like MMagic's ``CIFAR10`` items, so the usual pipelines (``Flip``, ``PackInputs``)
    apply: ``gt`` (H, W, 3) uint8 RGB, ``gt_label`` int in [0, 9], ``gt_channel_order``.

    Note:
        The 8x8 images hold 17 gray levels (0-16); they are scaled to [0, 255] and resized with
        bilinear interpolation, so the upscaled digits are smooth rather than blocky.

    Args:
        image_size (int): Side length of the returned square images. Defaults to 16.
        split (str): ``'train'`` (the first ``train_size`` images), ``'test'`` (the rest) or
            ``'all'``. Defaults to ``'all'``.
        train_size (int): Number of images in the train split. Defaults to 1500.
        classes (Sequence[int], optional): Keep only these digits. Defaults to all ten.
        **kwargs: Passed to :class:`mmengine.dataset.BaseDataset` (``pipeline``,
            ``test_mode``, ``indices``, ...).
    """

    METAINFO = dict(classes=tuple(str(digit) for digit in range(10)))

    def __init__(self,
                 image_size: int = 16,
                 split: str = 'all',
                 train_size: int = 1500,
                 classes: Optional[Sequence[int]] = None,
                 **kwargs) -> None:
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f'image_size must be an int >= 8 (the digits are 8x8), '
                             f'got {image_size!r}.')
        if split not in ('train', 'test', 'all'):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")
        if classes is not None and not set(classes) <= set(range(10)):
            raise ValueError(f'classes must be digits in 0..9, got {list(classes)!r}.')
        self.image_size = image_size
        self.split = split
        self.train_size = train_size
        self.keep_classes = None if classes is None else sorted(set(classes))
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        """Loads the digits from scikit-learn and upscales them."""
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.astype(np.float32) * (255.0 / 16.0)  # (N, 8, 8) in [0, 255]
        labels = digits.target
        if self.split == 'train':
            images, labels = images[:self.train_size], labels[:self.train_size]
        elif self.split == 'test':
            images, labels = images[self.train_size:], labels[self.train_size:]

        data_list = []
        for image, label in zip(images, labels):
            if self.keep_classes is not None and int(label) not in self.keep_classes:
                continue
            resized = cv2.resize(
                image, (self.image_size, self.image_size), interpolation=cv2.INTER_LINEAR)
            rgb = np.repeat(np.clip(resized, 0, 255).round().astype(np.uint8)[..., None], 3, 2)
            data_list.append(dict(gt=rgb, gt_label=int(label), gt_channel_order='RGB'))
        return data_list
