"""MMagic's data preprocessor for models that generate from noise in their own channel order."""
from typing import List, Union

from mmagic.models.data_preprocessors import DataPreprocessor
from mmagic.registry import MODELS
from mmagic.structures import DataSample
from torch import Tensor


@MODELS.register_module()
class DiffusionDataPreprocessor(DataPreprocessor):
    """:class:`mmagic.models.DataPreprocessor` that knows the order of generated samples.

    MMagic's ``destruct`` reads the channel order of a model output from the
    ``<key>_output_channel_order`` metainfo that ``forward`` writes when it converts an
    input image. Images generated from noise (FID, IS, teacher fidelity, visualisation)
    come with no such metainfo, and ``destruct`` then takes them for BGR and hands them
    on unconverted. With ``output_channel_order='RGB'`` (the pretrained diffusion
    teachers work in RGB) the metrics would receive RGB samples, while FID's real
    statistics are computed on ``gt_img`` converted to BGR by ``forward(training=False)``:
    every generated image would be colour-swapped relative to the real ones.

    Here an output without that metainfo is read as being in ``output_channel_order``,
    the order the model sees its inputs in and so generates in; ``destruct`` then returns
    it in MMagic's BGR, as it does for outputs computed from inputs.

    Note:
        The input side needs the image's order in the metainfo: pack it as MMagic's
        generative data sets do, ``PackInputs()`` (the image goes to ``gt_img`` with its
        ``gt_channel_order``, set by ``LoadImageFromFile`` and by ``CIFAR10``).
        ``PackInputs(keys=['gt'])`` makes it a bare input tensor, which MMagic's
        preprocessor looks up under ``img_channel_order``: never set, so it assumes BGR
        and swaps an RGB data set (``CIFAR10``) into BGR.

    Args:
        output_channel_order (str, optional): 'RGB' or 'BGR', the order the model works
            in; None keeps the loader's order. Defaults to None.
        **kwargs: Passed to :class:`mmagic.models.DataPreprocessor` (``mean``, ``std``,
            ``data_keys``, ...).
    """

    def destruct(self,
                 outputs: Tensor,
                 data_samples: Union[List[DataSample], DataSample, None] = None,
                 key: str = 'img') -> Union[list, Tensor]:
        """De-normalises ``outputs`` into [0, 255] BGR (generated ones: from the model's
        order)."""
        order_key = f'{key}_output_channel_order'
        if self.output_channel_order is not None and not _has_metainfo(data_samples, order_key):
            # Padding info, the only other metainfo destruct reads, is written together
            # with the order, so none is lost here.
            data_samples = DataSample(metainfo={order_key: self.output_channel_order})
        return super().destruct(outputs, data_samples, key)


def _has_metainfo(data_samples: Union[List[DataSample], DataSample, None],
                  name: str) -> bool:
    """Whether ``data_samples`` (one, a stacked one or a list) carry metainfo ``name``."""
    if data_samples is None:
        return False
    if isinstance(data_samples, (list, tuple)):
        return bool(data_samples) and all(name in sample.metainfo_keys()
                                          for sample in data_samples)
    return name in data_samples.metainfo_keys()


__all__ = ['DiffusionDataPreprocessor']
