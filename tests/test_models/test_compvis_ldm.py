"""CompVis class-conditional LDM -> diffusers (mmdiff_2ndm.models.compvis_ldm, the tool).

The ``compvis_ldm`` fixture (tests/conftest.py) writes a tiny LatentDiffusion checkpoint
whose weights come from known diffusers models under CompVis names; conversion must give
those models back, weight for weight and output for output.
"""
import os.path as osp
import subprocess
import sys

import pytest
import torch
import yaml

import mmdiff_2ndm  # noqa: F401  (registers ClassEmbedder)
from mmdiff_2ndm.models.compvis_ldm import (ClassEmbedder, convert_compvis_ldm,
                                            load_compvis_checkpoint, load_compvis_ldm,
                                            unet_config, vq_config)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CIN256_V2 = dict(model=dict(params=dict(
    timesteps=1000,
    unet_config=dict(params=dict(
        image_size=64, in_channels=3, out_channels=3, model_channels=192,
        attention_resolutions=[8, 4, 2], num_res_blocks=2, channel_mult=[1, 2, 3, 5],
        num_heads=1, use_spatial_transformer=True, transformer_depth=1, context_dim=512)),
    first_stage_config=dict(params=dict(embed_dim=3, n_embed=8192, ddconfig=dict(
        double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3, ch=128,
        ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0))))))


pytestmark = pytest.mark.usefixtures('single_thread')  # tests/conftest.py


def _assert_same_weights(converted, reference):
    ref = reference.state_dict()
    got = converted.state_dict()
    assert sorted(got) == sorted(ref)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=0, msg=key)


def test_cin256_layout_is_the_papers_400_9m_unet():
    """cin256-v2.yaml (values of the released config) gives the paper's 400.9M U-Net."""
    from diffusers import UNet2DConditionModel, VQModel
    kwargs = unet_config(CIN256_V2)
    assert kwargs['cross_attention_dim'] == 512 and kwargs['attention_head_dim'] == 1
    assert kwargs['down_block_types'] == ('DownBlock2D', 'CrossAttnDownBlock2D',
                                          'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D')
    with torch.device('meta'):
        unet = UNet2DConditionModel(**kwargs)
        vq = VQModel(**vq_config(CIN256_V2))
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 400.9
    assert vq.config.scaling_factor == 1.0 and vq.config.num_vq_embeddings == 8192
    assert vq.config.latent_channels == 3 and len(vq.config.block_out_channels) == 3  # f4


def test_conversion_gives_the_source_models_back(compvis_ldm, tmp_path):
    out = tmp_path / 'converted'
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'convert_compvis_ldm.py'), compvis_ldm['ckpt'],
         compvis_ldm['config'], str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    from diffusers import UNet2DConditionModel, VQModel
    unet = UNet2DConditionModel.from_pretrained(str(out / 'unet'))
    vqvae = VQModel.from_pretrained(str(out / 'vqvae'))
    embedder = ClassEmbedder(num_embeddings=4, embed_dim=8,
                             checkpoint=str(out / 'class_embedder.pth'))
    _assert_same_weights(unet, compvis_ldm['unet'])
    _assert_same_weights(vqvae, compvis_ldm['vqvae'])
    torch.testing.assert_close(embedder.embedding.weight, compvis_ldm['table'], rtol=0, atol=0)
    assert vqvae.config.scaling_factor == 1.0

    # Outputs, not just names: label 1 as context, the null label's row is the last one.
    labels = torch.tensor([1, 3])
    context = embedder(labels)
    assert context.shape == (2, 1, 8)
    torch.testing.assert_close(context[1, 0], compvis_ldm['table'][3])
    x = torch.randn(2, 3, 6, 6)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, context).sample,
                                   compvis_ldm['unet'](x, t, context).sample)
        image = torch.rand(1, 3, 12, 12) * 2 - 1
        latents = vqvae.encode(image).latents
        torch.testing.assert_close(latents, compvis_ldm['vqvae'].encode(image).latents)
        assert latents.shape == (1, 3, 6, 6)
        torch.testing.assert_close(vqvae.decode(latents).sample,
                                   compvis_ldm['vqvae'].decode(latents).sample)


def _config(**unet_changes):
    config = yaml.safe_load(yaml.safe_dump(CIN256_V2))
    config['model']['params']['unet_config']['params'].update(unet_changes)
    return config


def test_bad_inputs_are_named(compvis_ldm, tmp_path):
    with open(compvis_ldm['config']) as f:
        config = yaml.safe_load(f)
    state = load_compvis_checkpoint(compvis_ldm['ckpt'])

    with pytest.raises(ValueError, match='use_spatial_transformer'):
        unet_config(_config(use_spatial_transformer=False))
    with pytest.raises(ValueError, match='unet_config'):
        unet_config(dict(model=dict(params={})))

    broken = dict(state)
    broken.pop('model.diffusion_model.out.2.weight')
    with pytest.raises(ValueError, match='U-Net weights do not fit'):
        convert_compvis_ldm(broken, config)

    wider = yaml.safe_load(yaml.safe_dump(config))
    wider['model']['params']['unet_config']['params']['model_channels'] = 64
    with pytest.raises(ValueError, match='do not fit the config'):
        convert_compvis_ldm(state, wider)

    no_table = {k: v for k, v in state.items() if not k.startswith('cond_stage_model.')}
    with pytest.raises(ValueError, match='ClassEmbedder'):
        convert_compvis_ldm(no_table, config)
    with pytest.raises(ValueError, match='model_ema'):
        convert_compvis_ldm(state, config, extract_ema=True)

    with pytest.raises(FileNotFoundError, match='model zoo'):
        load_compvis_checkpoint(str(tmp_path / 'missing.ckpt'))
    with pytest.raises(FileNotFoundError, match='YAML shipped with the checkpoint'):
        load_compvis_ldm(compvis_ldm['ckpt'], str(tmp_path / 'missing.yaml'))
    with pytest.raises(FileNotFoundError, match='convert_compvis_ldm.py'):
        ClassEmbedder(checkpoint=str(tmp_path / 'missing.pth'))
    table = tmp_path / 'table.pth'
    torch.save(dict(state_dict={'embedding.weight': torch.zeros(4, 8)}), table)
    with pytest.raises(ValueError, match=r'1001 x 512'):
        ClassEmbedder(num_embeddings=1001, embed_dim=512, checkpoint=str(table))


def test_a_checkpoint_that_pickles_code_is_refused(tmp_path):
    from mmdiff_2ndm.utils.checkpoint import UnsafeCheckpointError
    path = tmp_path / 'evil.ckpt'
    torch.save(dict(state_dict={}, callbacks=[ClassEmbedder]), path)  # a pickled class
    with pytest.raises(UnsafeCheckpointError):
        load_compvis_checkpoint(str(path))
