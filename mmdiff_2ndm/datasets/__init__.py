from .coco_caption_dataset import CocoCaptionDataset
from .data_preprocessor import DiffusionDataPreprocessor
from .digits_dataset import SklearnDigits

__all__ = ['CocoCaptionDataset', 'DiffusionDataPreprocessor', 'SklearnDigits']
