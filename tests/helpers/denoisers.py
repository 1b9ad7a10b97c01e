"""Tiny and published-layout denoisers for the pruning tests (random weights)."""
import torch
from diffusers import AutoencoderKL, DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel

from mmdiff_2ndm.models.layouts import DDPM_CIFAR10_32


# SD 1.x's U-Net layout (four stages, CrossAttn x3 + a plain innermost down block, the
# mirror for the up blocks, layers_per_block=2) at 8-16 channels: BK-SDM's block removal
# applies to it.
SD_TYPES = dict(
    down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                      'DownBlock2D'),
    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                    'CrossAttnUpBlock2D'))
TINY_SD = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
               block_out_channels=(8, 16, 16, 16), norm_num_groups=4, cross_attention_dim=8,
               attention_head_dim=2, **SD_TYPES)


def cifar10_ddpm() -> UNet2DModel:
    """The google/ddpm-cifar10-32 architecture (35.7M params), random weights."""
    torch.manual_seed(0)
    return UNet2DModel(**DDPM_CIFAR10_32)


def tiny_unet(**kwargs) -> UNet2DModel:
    """A 2-level UNet2DModel with attention, small enough for per-test pruning."""
    torch.manual_seed(0)
    cfg = dict(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
        up_block_types=('AttnUpBlock2D', 'UpBlock2D'), attention_head_dim=16)
    cfg.update(kwargs)
    return UNet2DModel(**cfg)


def dit(num_layers: int, heads: int, head_dim: int) -> DiTTransformer2DModel:
    """A DiT (diffusers layout, 32x32x4 latents, 1000 classes, learned sigma)."""
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4, out_channels=8,
        num_layers=num_layers, sample_size=32, patch_size=2, num_embeds_ada_norm=1000)


def sd_unet(**kwargs) -> UNet2DConditionModel:
    """SD-1.x UNet layout (widths 320/640, 8 heads, 768-d text) at reduced depth; keyword
    arguments override its config (e.g. narrower widths for per-test pruning)."""
    torch.manual_seed(0)
    cfg = dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(320, 640),
        down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
    cfg.update(kwargs)
    return UNet2DConditionModel(**cfg)


def save_tiny_latent_dit(root, num_layers: int, head_dim: int) -> tuple:
    """Saves a class-conditional latent DiT (3 classes, 4x4x4 latents) and the tiny VAE of
    8x8 images in diffusers folders under ``root``; returns (dit folder, vae folder)."""
    torch.manual_seed(0)
    dit_folder, vae_folder = str(root / 'dit'), str(root / 'vae')
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=head_dim, in_channels=4,
                          out_channels=8, num_layers=num_layers, sample_size=4, patch_size=2,
                          num_embeds_ada_norm=3).save_pretrained(dit_folder)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                  layers_per_block=1, norm_num_groups=4,
                  down_block_types=('DownEncoderBlock2D',) * 2,
                  up_block_types=('UpDecoderBlock2D',) * 2,
                  sample_size=8).save_pretrained(vae_folder)
    return dit_folder, vae_folder
