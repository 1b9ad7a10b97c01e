from .coco_caption_dataset import CocoCaptionDataset
from .digits_dataset import SklearnDigits

__all__ = ['CocoCaptionDataset', 'SklearnDigits']
