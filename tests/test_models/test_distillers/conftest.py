"""Tiny local fixtures for distiller tests: models saved to tmp folders, a dataset, a
TorchScript feature network standing in for Inception. Nothing is downloaded."""
import json
import os.path as osp

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmagic.registry import DATASETS
from mmagic.structures import DataSample

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


class TinyFeatureNet(nn.Module):
    """Stand-in for Tero's Inception (``inception(img_uint8, return_features=True)``).

    Test fixture only: 4 random conv features, global-average-pooled, so that FID's
    covariance is full rank with a handful of images.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        x = x.float() / 127.5 - 1.0
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


@pytest.fixture(scope='session')
def feature_net_path(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp('feature_net') / 'tiny_features.pt')
    # frozen like Tero's Inception: MMagic extracts real features without no_grad
    torch.jit.script(TinyFeatureNet().requires_grad_(False).eval()).save(path)
    return path


def _save(model, folder) -> str:
    model.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope='session')
def unet2d_folder(tmp_path_factory) -> str:
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    unet = UNet2DModel(**UNET_KWARGS)
    return _save(unet, tmp_path_factory.mktemp('unet2d'))


@pytest.fixture(scope='session')
def dit_folders(tmp_path_factory) -> dict:
    from diffusers import AutoencoderKL, DiTTransformer2DModel
    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                out_channels=8, num_layers=1, sample_size=4, patch_size=2,
                                num_embeds_ada_norm=NUM_CLASSES, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                        down_block_types=('DownEncoderBlock2D',) * 2,
                        up_block_types=('UpDecoderBlock2D',) * 2, sample_size=LATENT_IMG_SIZE)
    return dict(dit=_save(dit, tmp_path_factory.mktemp('dit')),
                vae=_save(vae, tmp_path_factory.mktemp('vae')))


@pytest.fixture(scope='session')
def sd_folders(tmp_path_factory) -> dict:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=IMG_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=2, down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'))
    tok_dir = tmp_path_factory.mktemp('tokenizer')
    words = sorted({w for p in PROMPTS for w in p.split()})
    vocab = {'<|startoftext|>': 0, '<|endoftext|>': 1}
    for char in 'abcdefghijklmnopqrstuvwxyz':
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + '</w>', len(vocab))
    for word in words:
        vocab.setdefault(word + '</w>', len(vocab))
    with open(osp.join(tok_dir, 'vocab.json'), 'w') as f:
        json.dump(vocab, f)
    with open(osp.join(tok_dir, 'merges.txt'), 'w') as f:
        f.write('#version: 0.2\n')
    tokenizer = CLIPTokenizer(osp.join(tok_dir, 'vocab.json'), osp.join(tok_dir, 'merges.txt'),
                              model_max_length=8)
    tokenizer.save_pretrained(str(tok_dir))
    text_config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)
    text_encoder = CLIPTextModel(text_config)
    return dict(unet=_save(unet, tmp_path_factory.mktemp('sd_unet')),
                text_encoder=_save(text_encoder, tmp_path_factory.mktemp('text_encoder')),
                tokenizer=str(tok_dir))
