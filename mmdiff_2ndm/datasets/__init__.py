from .coco_caption_dataset import CocoCaptionDataset
from .digits_dataset import SklearnDigits
from .skimage_patches_dataset import SkimagePatches

__all__ = ['CocoCaptionDataset', 'SklearnDigits', 'SkimagePatches']
