"""MMagic's data preprocessor for models that generate from noise in their own channel order."""
from typing import List, Optional, Sequence, Union

from mmagic.models.data_preprocessors import DataPreprocessor
from mmagic.registry import MODELS
from mmagic.structures import DataSample
from mmengine.utils import is_seq_of
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

    Its data samples come out as MMagic's, field for field, built without MMagic's
    copies of their metainfo (see :meth:`_preprocess_data_sample`).

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

    def _preprocess_data_sample(self, data_samples: Sequence[DataSample],
                                training: bool) -> Union[DataSample, Sequence[DataSample]]:
        """MMagic's conversion and normalisation of the data samples' images, stacked
        without copying their metainfo.

        MMagic writes each sample's normalisation metainfo with ``set_metainfo``, which
        deep-copies it (the mean and std tensors too), and ``DataSample.stack`` then
        deep-copies every metainfo list again: at batch 32 that was half of the
        preprocessor's time, about 3 % of a digits U-Net's iteration on one CPU thread
        (``tools/benchmark_preprocessor.py``). The samples here are the preprocessor's
        own, made by ``cast_data`` (``BaseDataElement.to``) from the loader's, and no
        one else holds them: their metainfo values move into the stacked sample as they
        are, and the mean and std are cloned per sample, as the copies gave. Samples
        without a ``data_keys`` field, or with different fields, take MMagic's path
        (its warning and its error).

        Args:
            data_samples (list[DataSample]): One per image.
            training (bool): Normalise into the model's order (True), or only convert
                to BGR (False), as MMagic does.

        Returns:
            DataSample | list[DataSample]: One stacked sample (``stack_data_sample``),
            else MMagic's result.
        """
        if not (self.stack_data_sample and self.data_keys and data_samples
                and is_seq_of(data_samples, DataSample) and _alike(data_samples)
                and all(key in data_samples[0] for key in self.data_keys)):
            return super()._preprocess_data_sample(data_samples, training)
        target_order, do_norm = (self.output_channel_order, True) if training else ('BGR', False)
        for sample in data_samples:
            for key in self.data_keys:
                image = sample.get(key)
                image, order = self._do_conversion(
                    image, self._parse_channel_order(key, image, sample), target_order)
                sample.set_data({key: self._do_norm(image, do_norm)})
                for name, value in ((f'{key}_enable_norm', self._enable_normalize),
                                    (f'{key}_output_channel_order', order),
                                    (f'{key}_mean', _clone(self.mean)),
                                    (f'{key}_std', _clone(self.std))):
                    sample.set_field(value, name, field_type='metainfo')
        metainfo = {name: [sample.get(name) for sample in data_samples]
                    for name in data_samples[0].metainfo_keys()}
        for sample in data_samples:
            for name in metainfo:
                delattr(sample, name)
        stacked = DataSample.stack(data_samples)
        for name, values in metainfo.items():
            stacked.set_field(values, name, field_type='metainfo')
        return stacked


def _alike(data_samples: Sequence[DataSample]) -> bool:
    """Whether all samples have the first one's data and metainfo fields."""
    data, meta = set(data_samples[0].keys()), set(data_samples[0].metainfo_keys())
    return all(set(sample.keys()) == data and set(sample.metainfo_keys()) == meta
               for sample in data_samples)


def _clone(value: Optional[Tensor]) -> Optional[Tensor]:
    """A copy of a (mean or std) buffer that later changes of the buffer leave alone."""
    return None if value is None else value.detach().clone()


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
