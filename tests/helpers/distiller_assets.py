"""Tiny local data and sizes shared by the distiller tests: a generated image data set
with labels and prompts (registered in MMagic's DATASETS), the pixel U-Net's arguments."""
import torch
from mmagic.registry import DATASETS
from mmagic.structures import DataSample
from torch.utils.data import Dataset

IMG_SIZE = 16         # pixel UNet and SD images (SSIM's 11x11 window needs >= 11)
LATENT_IMG_SIZE = 8   # DiT images; the 2-level VAE halves them to 4x4 latents
NUM_CLASSES = 3
PROMPTS = ('a red cat', 'a blue dog', 'green tree')
UNET_KWARGS = dict(sample_size=IMG_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(8, 16), norm_num_groups=4,
                   down_block_types=('DownBlock2D', 'DownBlock2D'),
                   up_block_types=('UpBlock2D', 'UpBlock2D'))


@DATASETS.register_module(force=True)
class TinyGeneratedImageDataset(Dataset):
    """Deterministic coloured-blob images with class labels and prompts (test fixture).

    Items follow ``PackInputs``: ``inputs`` = uint8 image (3, H, W), ``data_samples`` =
    ``DataSample(gt_img, gt_label, prompt)``.
    """

    def __init__(self, num_images: int = 8, size: int = IMG_SIZE, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        base = torch.rand(num_images, 3, 1, 1, generator=gen)
        texture = torch.rand(num_images, 3, size, size, generator=gen) * 0.3
        self.images = ((base * 0.7 + texture).clamp(0, 1) * 255).to(torch.uint8)
        self.metainfo = dict(dataset_name='tiny_generated')

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, idx: int) -> dict:
        img = self.images[idx].clone()
        sample = DataSample(gt_img=img.clone(), prompt=PROMPTS[idx % len(PROMPTS)])
        sample.set_gt_label(idx % NUM_CLASSES)
        return dict(inputs=img, data_samples=sample)

    def get_data_info(self, idx: int) -> dict:
        """Label lookup used by MMagic's ``need_cond_input`` samplers."""
        return dict(gt_label=idx % NUM_CLASSES)


def save_model(model, folder) -> str:
    """``model.save_pretrained(folder)``; returns the folder as a string."""
    model.save_pretrained(str(folder))
    return str(folder)


def dsm_distiller_cfg(unet_folder: str, **overrides) -> dict:
    """A DSM-only distiller config around the pixel U-Net saved in ``unet_folder``, with an
    EMA (the strict-load and key-prefix tests)."""
    cfg = dict(type='DiffusionDistiller',
               teacher=dict(type='UNet2DModel', from_pretrained=unet_folder),
               noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
               losses=dict(dsm=dict(loss_weight=1.0)), ema=dict(momentum=0.5),
               data_preprocessor=dict(type='DataPreprocessor'))
    cfg.update(overrides)
    return cfg


def tiny_ema_distiller(ema: dict):
    """A DiffusionDistiller of a random pixel U-Net teacher (``UNET_KWARGS``, seed 0) with the
    given EMA config: the EMA and mode-switch tests, which run no forward."""
    from diffusers import UNet2DModel

    from mmdiff_2ndm.models import DiffusionDistiller
    torch.manual_seed(0)
    return DiffusionDistiller(
        teacher=UNet2DModel(**UNET_KWARGS),
        noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=10), ema=ema)
