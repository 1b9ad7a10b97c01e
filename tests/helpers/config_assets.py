"""Tiny local stand-ins for every teacher, data set and the FID network of the configs.

Models are saved with ``save_pretrained`` in the folder layouts the configs name (a
diffusers model folder, a pipeline folder with ``transformer/``/``unet/``/``vae/``/
``text_encoder/``/``tokenizer/`` subfolders, a plain state dict, a transformers CLIP
folder for CLIPScore); data sets are a few generated images in the on-disk formats the
configs' dataset classes read (``helpers.data_formats``). Nothing is downloaded.
"""
import os.path as osp
from pathlib import Path

import torch

from .data_formats import IMG, NUM_CLASSES, random_rgb, write_data_formats, write_images
from .feature_net import TinyFeatureNet

UNET = dict(sample_size=IMG, in_channels=3, out_channels=3, layers_per_block=1,
            block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
            up_block_types=('AttnUpBlock2D', 'UpBlock2D'), attention_head_dim=4)


def tiny_vae(latent_channels: int):
    """A 2-level ``AutoencoderKL`` on IMG x IMG images."""
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                         down_block_types=('DownEncoderBlock2D',) * 2,
                         up_block_types=('UpDecoderBlock2D',) * 2, sample_size=IMG)


def write_config_assets(root: Path, clip_folder: str, compvis_ldm: dict) -> dict:
    """Every tiny model folder, checkpoint and data set of the configs, under ``root``.

    Args:
        root (Path): An empty folder.
        clip_folder (str): A tiny CLIP model and tokenizer folder
            (``helpers.clip.save_tiny_clip``).
        compvis_ldm (dict): A tiny CompVis LDM checkpoint
            (``helpers.compvis_ldm.write_compvis_ldm``), converted here as
            tools/convert_compvis_ldm.py does.

    Returns:
        dict: Paths by name: teachers, ``clip``, ``inception``, ``folder`` (a plain image
        folder) and ``data`` (``write_data_formats``).
    """
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from mmdiff_2ndm.models.compvis_ldm import load_compvis_ldm, save_compvis_ldm
    out = {}

    torch.manual_seed(0)
    out['unet'] = str(root / 'unet')
    UNet2DModel(**UNET).save_pretrained(out['unet'])

    out['ldm'] = str(root / 'ldm4')  # ldm_path of 2ndm_imagenet_ldm.py
    save_compvis_ldm(load_compvis_ldm(compvis_ldm['ckpt'], compvis_ldm['config']), out['ldm'])

    # Pixel DiTs take one image size: IMG for the shrunk pipelines, 32 for CIFAR-10's own.
    for key, size in (('dit_pixel', IMG), ('dit_pixel32', 32)):
        out[key] = str(root / key)
        DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=3,
                              out_channels=3, num_layers=1, sample_size=size, patch_size=2,
                              num_embeds_ada_norm=10, norm_num_groups=4
                              ).save_pretrained(out[key])

    # facebook/DiT-XL-2-256 layout; 4 blocks, so that the D14 config can keep 2 of 4
    out['dit_pipeline'] = str(root / 'dit_pipeline')
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                          out_channels=8, num_layers=4, sample_size=IMG // 2, patch_size=2,
                          num_embeds_ada_norm=NUM_CLASSES, norm_num_groups=4
                          ).save_pretrained(osp.join(out['dit_pipeline'], 'transformer'))
    tiny_vae(4).save_pretrained(osp.join(out['dit_pipeline'], 'vae'))

    # Stable Diffusion pipeline folder (teacher) and a student pipeline folder.
    sd = str(root / 'sd_pipeline')
    out['sd_pipeline'] = sd
    sd_unet = dict(sample_size=IMG // 2, in_channels=4, out_channels=4,
                   norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2,
                   down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                   up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'))
    # SD's two ResNet(+attention) pairs per stage: the config's BKSDMStudent removes one.
    UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=2,
                         **sd_unet).save_pretrained(osp.join(sd, 'unet'))
    tiny_vae(4).save_pretrained(osp.join(sd, 'vae'))
    out['sd_student'] = str(root / 'sd_student')
    UNet2DConditionModel(block_out_channels=(8, 8), layers_per_block=1,
                         **sd_unet).save_pretrained(osp.join(out['sd_student'], 'unet'))
    # SD 1.x ships CLIP's tokenizer; the tiny SD pipeline reuses the tiny CLIP's, which
    # is also CLIPScore's model (`clip_path` of 2ndm_mscoco_sd.py).
    out['clip'] = clip_folder
    tokenizer = CLIPTokenizer.from_pretrained(clip_folder)
    tokenizer.save_pretrained(osp.join(sd, 'tokenizer'))
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=0, eos_token_id=1, pad_token_id=1)
    ).save_pretrained(osp.join(sd, 'text_encoder'))

    out['inception'] = str(root / 'tiny_features.pt')
    # The StyleGAN TorchScript file holds frozen parameters (mmagic extracts the real
    # features outside no_grad and calls .numpy() on them).
    torch.jit.script(TinyFeatureNet().requires_grad_(False)).save(out['inception'])

    # A plain image folder (user configs on MMagic's unconditional data set files), nested
    # to exercise recursive listing, and every format the configs read.
    out['folder'] = str(root / 'folder')
    write_images(out['folder'], [f'sub{i % 2}/img{i}.png' for i in range(8)])
    out['data'] = write_data_formats(str(root / 'data'), random_rgb(1))
    return out
