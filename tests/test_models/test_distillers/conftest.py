"""Tiny local fixtures for distiller tests: models saved to tmp folders, a TorchScript
feature network standing in for Inception. Nothing is downloaded. Sizes and the tiny
data set are in ``helpers.distiller_assets`` (imported here, which registers the data
set for configs that name it)."""
import pytest
import torch

from helpers.clip import save_clip_tokenizer
from helpers.distiller_assets import (IMG_SIZE, LATENT_IMG_SIZE, NUM_CLASSES, PROMPTS,
                                      UNET_KWARGS, save_model)
from helpers.feature_net import TinyFeatureNet


@pytest.fixture(scope='session')
def feature_net_path(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp('feature_net') / 'tiny_features.pt')
    # frozen like Tero's Inception: MMagic extracts real features without no_grad
    torch.jit.script(TinyFeatureNet().requires_grad_(False).eval()).save(path)
    return path


@pytest.fixture(scope='session')
def unet2d_folder(tmp_path_factory) -> str:
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    unet = UNet2DModel(**UNET_KWARGS)
    return save_model(unet, tmp_path_factory.mktemp('unet2d'))


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
    return dict(dit=save_model(dit, tmp_path_factory.mktemp('dit')),
                vae=save_model(vae, tmp_path_factory.mktemp('vae')))


@pytest.fixture(scope='session')
def sd_folders(tmp_path_factory) -> dict:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=IMG_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=2, down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'))
    tok_dir = tmp_path_factory.mktemp('tokenizer')
    words = sorted({w for p in PROMPTS for w in p.split()})
    vocab_size = save_clip_tokenizer(str(tok_dir), words=words, max_length=8)
    text_config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)
    text_encoder = CLIPTextModel(text_config)
    return dict(unet=save_model(unet, tmp_path_factory.mktemp('sd_unet')),
                text_encoder=save_model(text_encoder, tmp_path_factory.mktemp('text_encoder')),
                tokenizer=str(tok_dir))
