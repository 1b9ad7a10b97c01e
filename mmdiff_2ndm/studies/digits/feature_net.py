"""The proxy-FID feature network: a small classifier trained on the study's data.

Its 32-d penultimate features stand in for Inception's (download-free). On the digits it
classifies the digit, on scikit-image's patches (``SkimagePatches``) the picture a patch
was cut from. It ranks models by how data-like and class-balanced their samples are, like
Inception features do on natural images, but its FID values are not comparable with
published FIDs.
"""
import json
import os.path as osp
from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn


#: The study's data sets by name: DATASETS configs built with ``image_size`` and ``split``.
STUDY_DATASETS = {'digits': dict(type='SklearnDigits'), 'patches': dict(type='SkimagePatches')}


class DigitFeatureNet(nn.Module):
    """Classifier whose penultimate features stand in for Inception's.

    Call signature of the StyleGAN TorchScript Inception that MMagic's ``FID`` uses:
    ``net(img_uint8 (B, 3, H, W), return_features=True) -> (B, 32)``.

    Args:
        num_classes (int): Classes of the head. Defaults to 10 (digits; the patches'
            default ten pictures).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        """Class logits (B, num_classes), or with ``return_features`` the features (B, 32)."""
        feats = self.body(x.float() / 127.5 - 1.0)
        return feats if return_features else self.head(feats)


def load_images(image_size: int, split: str, dataset: str = 'digits') -> Tuple[Tensor, Tensor]:
    """uint8 images (N, 3, H, W) and labels (N,) of one of ``STUDY_DATASETS``."""
    from mmagic.registry import DATASETS

    import mmdiff_2ndm.datasets  # noqa: F401  (registers the study's data sets)
    if dataset not in STUDY_DATASETS:
        raise ValueError(f'dataset must be one of {sorted(STUDY_DATASETS)}, got {dataset!r}.')
    data = DATASETS.build(dict(STUDY_DATASETS[dataset], image_size=image_size, split=split,
                               lazy_init=False))
    items = [data.get_data_info(i) for i in range(len(data))]
    images = torch.from_numpy(np.stack([it['gt'] for it in items])).permute(0, 3, 1, 2)
    return images.contiguous(), torch.tensor([it['gt_label'] for it in items])


def train_feature_net(path: str, image_size: int, iters: int, dataset: str = 'digits') -> float:
    """Trains the proxy feature network, saves it as TorchScript, returns test accuracy."""
    torch.manual_seed(0)
    images, labels = load_images(image_size, 'train', dataset)
    net = DigitFeatureNet(num_classes=int(labels.max()) + 1)
    optim = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(iters):
        idx = torch.randint(0, images.shape[0], (128,))
        loss = nn.functional.cross_entropy(net(images[idx]), labels[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
    net.eval().requires_grad_(False)
    test_images, test_labels = load_images(image_size, 'test', dataset)
    with torch.no_grad():
        accuracy = (net(test_images).argmax(1) == test_labels).float().mean().item()
    torch.jit.script(net).save(path)
    return accuracy


def feature_net_files(work_dir: str, dataset: str = 'digits') -> Tuple[str, str]:
    """The proxy feature network of ``dataset`` in ``work_dir`` and its record (JSON with
    its test accuracy): ``feature_net.pt`` / ``.json`` for the digits,
    ``feature_net_<dataset>.pt`` / ``.json`` for another data set."""
    stem = 'feature_net' if dataset == 'digits' else f'feature_net_{dataset}'
    return osp.join(work_dir, f'{stem}.pt'), osp.join(work_dir, f'{stem}.json')


def prepare_feature_net(work_dir: str, iters: int, image_size: int = 16,
                        dataset: str = 'digits') -> str:
    """Trains the proxy feature network of ``dataset`` once (:func:`feature_net_files`);
    returns the network's path."""
    path, record = feature_net_files(work_dir, dataset)
    if not osp.exists(record):
        accuracy = train_feature_net(path, image_size, iters, dataset)
        with open(record, 'w') as f:
            json.dump(dict(test_accuracy=accuracy, dataset=dataset), f)
    return path
