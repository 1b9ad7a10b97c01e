"""Reading a preprocessed batch: images, class labels, prompts and dataset indices."""
from typing import Any, List, Optional, Sequence, Union

import torch
from mmagic.structures import DataSample
from torch import Tensor

# Stacked (one DataSample of B) or listed (B DataSamples), as the preprocessor leaves them.
Samples = Optional[Union[DataSample, Sequence[DataSample]]]
Device = Union[str, torch.device]


def field(data_samples: Samples, key: str) -> Any:
    """A field of the (stacked or listed) data samples, or None where any lacks it."""
    if data_samples is None:
        return None
    if isinstance(data_samples, (list, tuple)):
        values = [getattr(s, key, None) for s in data_samples]
        return None if any(v is None for v in values) else values
    return getattr(data_samples, key, None)


def labels(data_samples: Samples, batch: int, device: Device) -> Optional[Tensor]:
    """Class labels (B,) long from ``gt_label`` of the data samples, or None.

    Raises:
        ValueError: When the number of labels is not ``batch``.
    """
    value = field(data_samples, 'gt_label')
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = [getattr(v, 'label', v) for v in value]
        value = torch.stack([torch.as_tensor(v).reshape(-1)[0] for v in value])
    value = getattr(value, 'label', value)
    label_ids = torch.as_tensor(value, device=device).long().reshape(-1)
    if label_ids.numel() != batch:
        raise ValueError(f'Got {label_ids.numel()} labels for a batch of {batch}.')
    return label_ids


def sample_indices(data_samples: Samples, batch: int) -> List[int]:
    """Dataset indices (``sample_idx`` of mmengine's metainfo), one per sample.

    Raises:
        ValueError: When a sample has none, or their number is not ``batch``.
    """
    indices = field(data_samples, 'sample_idx')
    if indices is None:
        raise ValueError('per_sample_noise_seed needs `sample_idx` in the metainfo of '
                         'every data sample (mmengine BaseDataset sets it; keep it in '
                         'PackInputs), or set per_sample_noise_seed=None.')
    indices = [int(i) for i in (indices if isinstance(indices, (list, tuple))
                                else torch.as_tensor(indices).reshape(-1))]
    if len(indices) != batch:
        raise ValueError(f'Got {len(indices)} sample_idx for a batch of {batch}.')
    return indices


def images(inputs: Union[Tensor, dict, list], data_samples: Samples = None) -> Tensor:
    """The image batch (B, 3, H, W) from preprocessed inputs.

    Looked up in ``inputs`` (``'img'``, ``'gt'``, ``'gt_img'``), else in the data
    samples' ``gt_img``: MMagic's ``PackInputs()`` with its default keys (as in
    MMagic's ``unconditional_imgs_*`` dataset files) leaves a ``gt`` image there, and
    the data preprocessor normalises it like an input.

    Raises:
        KeyError: When neither holds an image.
    """
    if isinstance(inputs, dict):
        for key in ('img', 'gt', 'gt_img'):
            if key in inputs:
                return inputs[key]
        stacked = field(data_samples, 'gt_img')
        if isinstance(stacked, (list, tuple)):
            stacked = torch.stack(list(stacked))
        if torch.is_tensor(stacked):
            return stacked
        raise KeyError(f'No image in inputs (keys {sorted(inputs)}) or in the data '
                       "samples' gt_img; pack the image as one of 'img', 'gt', "
                       "'gt_img' (MMagic's PackInputs(), which keeps the image's "
                       'channel order with it).')
    if isinstance(inputs, (list, tuple)):
        return torch.stack(list(inputs))
    return inputs
