"""A tiny class-conditional LDM in CompVis's own format, written from diffusers models.

The LatentDiffusion state dict + YAML of cin256-v2's layout: spatial-transformer U-Net,
VQ first stage, ClassEmbedder. Channels are multiples of 32: CompVis's GroupNorm always
has 32 groups.
"""
import os.path as osp

import torch

LDM_NUM_CLASSES = 3  # + the null label = 4 rows
LDM_CONFIG = dict(model=dict(
    target='ldm.models.diffusion.ddpm.LatentDiffusion',
    params=dict(
        linear_start=0.0015, linear_end=0.0195, timesteps=1000, first_stage_key='image',
        cond_stage_key='class_label', image_size=6, channels=3, conditioning_key='crossattn',
        unet_config=dict(
            target='ldm.modules.diffusionmodules.openaimodel.UNetModel',
            params=dict(image_size=6, in_channels=3, out_channels=3, model_channels=32,
                        attention_resolutions=[2], num_res_blocks=1, channel_mult=[1, 2],
                        num_heads=1, use_spatial_transformer=True, transformer_depth=1,
                        context_dim=8)),
        first_stage_config=dict(
            target='ldm.models.autoencoder.VQModelInterface',
            params=dict(embed_dim=3, n_embed=16, ddconfig=dict(
                double_z=False, z_channels=3, resolution=12, in_channels=3, out_ch=3, ch=32,
                ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0))),
        cond_stage_config=dict(
            target='ldm.modules.encoders.modules.ClassEmbedder',
            params=dict(n_classes=LDM_NUM_CLASSES + 1, embed_dim=8, key='class_label')))))

_LDM_RESNET = {'norm1': 'in_layers.0', 'conv1': 'in_layers.2', 'time_emb_proj': 'emb_layers.1',
               'norm2': 'out_layers.0', 'conv2': 'out_layers.3',
               'conv_shortcut': 'skip_connection'}
_VQ_ATTENTION = {'group_norm': 'norm', 'to_q': 'q', 'to_k': 'k', 'to_v': 'v',
                 'to_out.0': 'proj_out'}


def _rename(state: dict, old: str, new: str, table: dict = None) -> dict:
    """Entries of ``state`` under ``old.`` renamed to ``new.`` (sub-names via ``table``)."""
    out = {}
    for key, value in state.items():
        if not key.startswith(old + '.'):
            continue
        rest = key[len(old) + 1:]
        for src, dst in (table or {}).items():
            if rest.startswith(src + '.'):
                rest = dst + rest[len(src):]
                break
        out[f'{new}.{rest}'] = value
    return out


def compvis_unet_state(unet) -> dict:
    """A diffusers UNet2DConditionModel's weights under CompVis openaimodel names.

    Written from the openaimodel layout (input_blocks / middle_block / output_blocks,
    ResBlock in_layers/emb_layers/out_layers, SpatialTransformer), independently of the
    diffusers converter it checks.
    """
    sd, cfg = unet.state_dict(), unet.config
    out = {}
    out.update(_rename(sd, 'time_embedding.linear_1', 'time_embed.0'))
    out.update(_rename(sd, 'time_embedding.linear_2', 'time_embed.2'))
    out.update(_rename(sd, 'conv_in', 'input_blocks.0.0'))
    levels = len(cfg.block_out_channels)
    k = 1
    for i, kind in enumerate(cfg.down_block_types):
        for j in range(cfg.layers_per_block):
            out.update(_rename(sd, f'down_blocks.{i}.resnets.{j}', f'input_blocks.{k}.0',
                               _LDM_RESNET))
            if 'CrossAttn' in kind:
                out.update(_rename(sd, f'down_blocks.{i}.attentions.{j}', f'input_blocks.{k}.1'))
            k += 1
        if i < levels - 1:
            out.update(_rename(sd, f'down_blocks.{i}.downsamplers.0.conv',
                               f'input_blocks.{k}.0.op'))
            k += 1
    out.update(_rename(sd, 'mid_block.resnets.0', 'middle_block.0', _LDM_RESNET))
    out.update(_rename(sd, 'mid_block.attentions.0', 'middle_block.1'))
    out.update(_rename(sd, 'mid_block.resnets.1', 'middle_block.2', _LDM_RESNET))
    k = 0
    for i, kind in enumerate(cfg.up_block_types):
        for j in range(cfg.layers_per_block + 1):
            out.update(_rename(sd, f'up_blocks.{i}.resnets.{j}', f'output_blocks.{k}.0',
                               _LDM_RESNET))
            slot = 1
            if 'CrossAttn' in kind:
                out.update(_rename(sd, f'up_blocks.{i}.attentions.{j}', f'output_blocks.{k}.1'))
                slot = 2
            if j == cfg.layers_per_block and i < levels - 1:
                out.update(_rename(sd, f'up_blocks.{i}.upsamplers.0.conv',
                                   f'output_blocks.{k}.{slot}.conv'))
            k += 1
    out.update(_rename(sd, 'conv_norm_out', 'out.0'))
    out.update(_rename(sd, 'conv_out', 'out.2'))
    assert len(out) == len(sd), 'every U-Net weight has a CompVis name'
    return out


def compvis_vq_state(vq) -> dict:
    """A diffusers VQModel's weights under CompVis/taming first-stage names."""
    sd = vq.state_dict()
    resnet = {'conv_shortcut': 'nin_shortcut'}
    out = {}
    for part in ('encoder', 'decoder'):
        for name in ('conv_in', 'conv_out'):
            out.update(_rename(sd, f'{part}.{name}', f'{part}.{name}'))
        out.update(_rename(sd, f'{part}.conv_norm_out', f'{part}.norm_out'))
        out.update(_rename(sd, f'{part}.mid_block.resnets.0', f'{part}.mid.block_1'))
        out.update(_rename(sd, f'{part}.mid_block.resnets.1', f'{part}.mid.block_2'))
        attention = _rename(sd, f'{part}.mid_block.attentions.0', f'{part}.mid.attn_1',
                            _VQ_ATTENTION)
        # CompVis attends with 1x1 convolutions where diffusers uses linear layers.
        out.update({k: v[:, :, None, None] if v.dim() == 2 else v
                    for k, v in attention.items()})
    blocks = len(vq.config.block_out_channels)
    for i in range(blocks):
        for j in range(vq.config.layers_per_block):
            out.update(_rename(sd, f'encoder.down_blocks.{i}.resnets.{j}',
                               f'encoder.down.{i}.block.{j}', resnet))
        out.update(_rename(sd, f'encoder.down_blocks.{i}.downsamplers.0.conv',
                           f'encoder.down.{i}.downsample.conv'))
        # CompVis numbers decoder levels from the lowest resolution up.
        for j in range(vq.config.layers_per_block + 1):
            out.update(_rename(sd, f'decoder.up_blocks.{i}.resnets.{j}',
                               f'decoder.up.{blocks - 1 - i}.block.{j}', resnet))
        out.update(_rename(sd, f'decoder.up_blocks.{i}.upsamplers.0.conv',
                           f'decoder.up.{blocks - 1 - i}.upsample.conv'))
    for name in ('quant_conv', 'post_quant_conv', 'quantize'):
        out.update(_rename(sd, name, name))
    assert len(out) == len(sd), 'every VQ weight has a CompVis name'
    return out


def write_compvis_ldm(root: str) -> dict:
    """Writes a tiny CompVis class-conditional LDM checkpoint and config to ``root``.

    Returns:
        dict: ``ckpt`` (Lightning-style ``{'state_dict': ..., 'global_step': ...}``),
        ``config`` (YAML path), ``unet`` / ``vqvae`` (the diffusers models the weights
        came from) and ``table`` (the class embedding, (4, 8)).
    """
    import yaml
    from diffusers import UNet2DConditionModel, VQModel
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
        create_unet_diffusers_config, create_vae_diffusers_config)
    params = LDM_CONFIG['model']['params']
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**create_unet_diffusers_config(LDM_CONFIG, image_size=12))
    first_stage = params['first_stage_config']['params']
    vqvae = VQModel(**create_vae_diffusers_config(LDM_CONFIG, image_size=12),
                    num_vq_embeddings=first_stage['n_embed'],
                    vq_embed_dim=first_stage['embed_dim'], scaling_factor=1.0)
    # Perturbed norms and biases (default: ones/zeros), so that no mix-up can hide.
    with torch.no_grad():
        for p in [*unet.parameters(), *vqvae.parameters()]:
            p.add_(torch.randn_like(p) * 0.05)
    table = torch.randn(LDM_NUM_CLASSES + 1, 8)
    state = {f'model.diffusion_model.{k}': v for k, v in compvis_unet_state(unet).items()}
    state.update({f'first_stage_model.{k}': v for k, v in compvis_vq_state(vqvae).items()})
    state['cond_stage_model.embedding.weight'] = table
    state['betas'] = torch.linspace(0.0015, 0.0195, 1000)  # LatentDiffusion buffers
    ckpt, config = osp.join(root, 'model.ckpt'), osp.join(root, 'config.yaml')
    torch.save(dict(state_dict=state, global_step=1234, epoch=5), ckpt)
    with open(config, 'w') as f:
        yaml.safe_dump(LDM_CONFIG, f)
    return dict(ckpt=ckpt, config=config, unet=unet, vqvae=vqvae, table=table)
