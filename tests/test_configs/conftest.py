"""Tiny local stand-ins for every teacher, data set and the FID network of the configs.

Models are saved with ``save_pretrained`` in the folder layouts the configs name (a
diffusers model folder, a pipeline folder with ``transformer/``/``unet/``/``vae/``/
``text_encoder/``/``tokenizer/`` subfolders, a plain state dict, a transformers CLIP
folder for CLIPScore); data sets are a few generated images in the layouts the configs'
dataset classes read. Nothing is downloaded.
"""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

IMG = 12  # pixel side of every tiny image / model (SSIM, in TeacherFidelity, needs >= 11)
NUM_CLASSES = 3  # ImageNet-style tiny label set
PROMPTS = ('a red cat', 'a blue dog', 'green tree', 'a cat on a tree')
UNET = dict(sample_size=IMG, in_channels=3, out_channels=3, layers_per_block=1,
            block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
            up_block_types=('AttnUpBlock2D', 'UpBlock2D'), attention_head_dim=4)


class TinyFeatureNet(nn.Module):
    """Stand-in for the StyleGAN TorchScript Inception: 4 pooled random conv features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        x = x.float() / 127.5 - 1.0
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


def _vae(latent_channels: int):
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                         down_block_types=('DownEncoderBlock2D',) * 2,
                         up_block_types=('UpDecoderBlock2D',) * 2, sample_size=IMG)


def _images(folder: str, names, seed: int = 0) -> None:
    """Writes small non-square RGB images (the pipelines crop and resize them)."""
    rng = np.random.default_rng(seed)
    for name in names:
        path = osp.join(folder, name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        base = rng.integers(0, 255, (1, 1, 3))
        img = np.clip(base + rng.integers(-40, 40, (IMG + 2, IMG + 4, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path)


@pytest.fixture(scope='module', autouse=True)
def one_thread_per_module(single_thread):
    """Every module here runs tiny models: one thread (tests/conftest.py)."""
    yield


@pytest.fixture(scope='session')
def assets(tmp_path_factory, tiny_clip, compvis_ldm) -> dict:
    """Every tiny model folder, checkpoint and data set, built once per session.

    From tests/conftest.py: ``tiny_clip``, the CLIP model and tokenizer folder;
    ``compvis_ldm``, a CompVis LDM checkpoint, converted here as
    tools/convert_compvis_ldm.py does.
    """
    from mmdiff_2ndm.models.compvis_ldm import load_compvis_ldm, save_compvis_ldm
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    root = tmp_path_factory.mktemp('config_assets')
    out = {}

    torch.manual_seed(0)
    out['unet'] = str(root / 'unet')
    UNet2DModel(**UNET).save_pretrained(out['unet'])

    out['ldm'] = str(root / 'ldm4')  # ldm_path of 2ndm_imagenet_ldm.py
    save_compvis_ldm(load_compvis_ldm(compvis_ldm['ckpt'], compvis_ldm['config']), out['ldm'])

    out['dit_pixel'] = str(root / 'dit_pixel')
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=3,
                          out_channels=3, num_layers=1, sample_size=IMG, patch_size=2,
                          num_embeds_ada_norm=10, norm_num_groups=4
                          ).save_pretrained(out['dit_pixel'])

    out['dit_pipeline'] = str(root / 'dit_pipeline')  # facebook/DiT-XL-2-256 layout
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                          out_channels=8, num_layers=1, sample_size=IMG // 2, patch_size=2,
                          num_embeds_ada_norm=NUM_CLASSES, norm_num_groups=4
                          ).save_pretrained(osp.join(out['dit_pipeline'], 'transformer'))
    _vae(4).save_pretrained(osp.join(out['dit_pipeline'], 'vae'))

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
    _vae(4).save_pretrained(osp.join(sd, 'vae'))
    out['sd_student'] = str(root / 'sd_student')
    UNet2DConditionModel(block_out_channels=(8, 8), layers_per_block=1,
                         **sd_unet).save_pretrained(osp.join(out['sd_student'], 'unet'))
    # SD 1.x ships CLIP's tokenizer; the tiny SD pipeline reuses the tiny CLIP's, which
    # is also CLIPScore's model (`clip_path` of 2ndm_mscoco_sd.py).
    out['clip'] = tiny_clip
    tokenizer = CLIPTokenizer.from_pretrained(tiny_clip)
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

    # Image folder (CelebA / LSUN), nested to exercise recursive listing.
    out['folder'] = str(root / 'folder')
    _images(out['folder'], [f'sub{i % 2}/img{i}.png' for i in range(8)])

    # LSUN-style LMDB: key -> encoded image, plus the key list.
    import lmdb
    out['lmdb'] = str(root / 'lsun_lmdb')
    env = lmdb.open(out['lmdb'], map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(8):
            name = osp.join(out['folder'], f'sub{i % 2}/img{i}.png')
            with open(name, 'rb') as f:
                txn.put(f'key{i:04d}'.encode('ascii'), f.read())
    env.close()
    out['lmdb_keys'] = str(root / 'lmdb_keys.txt')
    with open(out['lmdb_keys'], 'w') as f:
        f.write('\n'.join(f'key{i:04d}' for i in range(8)) + '\n')

    # ImageNet layout: train/<class>/<img> and meta/train.txt "<path> <label>".
    out['imagenet'] = str(root / 'imagenet')
    names = [f'n0{i % NUM_CLASSES}/img{i}.png' for i in range(8)]
    _images(osp.join(out['imagenet'], 'train'), names, seed=1)
    os.makedirs(osp.join(out['imagenet'], 'meta'))
    with open(osp.join(out['imagenet'], 'meta', 'train.txt'), 'w') as f:
        f.write('\n'.join(f'{n} {i % NUM_CLASSES}' for i, n in enumerate(names)) + '\n')

    # MS-COCO layout: annotations/captions_{train,val}2014.json + image folders.
    out['coco'] = str(root / 'coco')
    os.makedirs(osp.join(out['coco'], 'annotations'))
    for split in ('train2014', 'val2014'):
        files = [f'COCO_{split}_{i:012d}.jpg' for i in range(4)]
        _images(osp.join(out['coco'], split), files, seed=2)
        ann = dict(images=[dict(id=i, file_name=n) for i, n in enumerate(files)],
                   annotations=[dict(id=10 * i + j, image_id=i, caption=PROMPTS[(i + j) % 4])
                                for i in range(4) for j in range(2)])
        with open(osp.join(out['coco'], 'annotations', f'captions_{split}.json'), 'w') as f:
            json.dump(ann, f)
    return out
