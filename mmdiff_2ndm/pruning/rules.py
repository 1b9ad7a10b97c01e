"""Per-family pruning rules: what must stay intact, how heads are declared, what to fix.

torch-pruning rewrites weights and ``in/out_features``-style attributes of the layers it
knows, but not the attributes that diffusers/mmagic blocks cache and read in ``forward``
(``Upsample2D.channels``, ``Attention.heads`` ...). ``fix_module_attributes`` restores them
from the pruned weights (plus the head counts, which weights alone cannot tell).

Family limits:

* ``unet2d`` / ``unet2d_condition``: everything but ``conv_out`` (its width is the image
  channels) is prunable; cross-attention ``to_k``/``to_v`` keep their input width because
  it is the text encoder's (a model input, never produced by a prunable layer). Resnets
  with ``resnet_time_scale_shift='scale_shift'`` are pruned per norm group in both
  chunks of their time projection (``structural._split_channel_groups``). NCSN++ skip
  blocks and added-KV attention (``SimpleCrossAttn*``) are refused with an error.
* ``dit``: only attention (head dims, or whole heads) and MLP hidden widths are pruned.
  The residual stream is kept, so the patch embedding, adaLN modulation, the final layer
  and the positional embedding stay intact.
* ``mmagic_unet``: ``DenoisingUnet`` with ``resblock_updown=False`` and not
  ``unet_type='stable'`` (``use_scale_shift_norm=True`` is pruned like diffusers'
  scale-shift resnets). Its attention (fused ``qkv`` and ``proj_out``) is never pruned,
  so the residual channels of every resolution that has an attention block keep their
  width; resblock inner widths and the embeddings are pruned.

diffusers configs keep describing the dense layout: pruned widths are non-uniform and no
config field that ``forward`` reads (``in_channels``, ``patch_size`` ...) changes. A pruned
model is rebuilt from that config plus its pruning record (``record.py``).
"""
from typing import Dict, List

import torch
from torch import Tensor, nn

# Attribute names are checked by class name so that this module imports without diffusers.
_RESAMPLE_CLASSES = ('Upsample2D', 'Downsample2D')
_SKIP_BLOCK_CLASSES = ('SkipDownBlock2D', 'AttnSkipDownBlock2D', 'SkipUpBlock2D',
                       'AttnSkipUpBlock2D')


def ignored_layers_for(net: nn.Module, family: str) -> List[nn.Module]:
    """Layers whose output width must not change for the family to keep working.

    Args:
        net (nn.Module): The bare denoiser.
        family (str): Its family (``denoiser_family``).

    Returns:
        list[nn.Module]: Layers to pass to torch-pruning as ``ignored_layers``.
    """
    if family in ('unet2d', 'unet2d_condition'):
        _check_diffusers_unet(net)
        return [net.conv_out]
    if family == 'dit':
        ignored = [net.pos_embed, net.proj_out_1, net.proj_out_2]
        for block in net.transformer_blocks:
            # adaLN: modulation and timestep/class embedders write the residual width.
            ignored.append(block.norm1)
            ignored.append(block.attn1.to_out[0])
            # The MLP's output projection (the last Linear; a Dropout may follow it).
            ignored.append([m for m in block.ff.net if isinstance(m, nn.Linear)][-1])
        return ignored
    if family == 'mmagic_unet':
        _check_mmagic_unet(net)
        ignored = [net.out]
        for module in net.modules():
            if type(module).__name__ in ('MultiHeadAttentionBlock', 'MultiHeadAttention'):
                ignored.extend([module.qkv, getattr(module, 'proj_out', None) or module.proj])
        return ignored
    raise ValueError(f'Unknown family {family!r}.')


def _check_diffusers_unet(net: nn.Module) -> None:
    """Raises for diffusers U-Net blocks torch-pruning cannot prune correctly."""
    skip_blocks = sorted({type(module).__name__ for module in net.modules()
                          if type(module).__name__ in _SKIP_BLOCK_CLASSES})
    if skip_blocks:
        raise ValueError(
            f'Pruning a {type(net).__name__} with {", ".join(skip_blocks)} is not supported: '
            "the NCSN++ skip path (FIR resampling into an image-channel skip, GroupNorms "
            'sized from their input width) couples channels torch-pruning cannot map. Prune '
            'a DDPM-style layout (DownBlock2D, AttnDownBlock2D, ResnetDownsampleBlock2D and '
            'their up blocks).')
    added_kv = [name for name, attn in attention_modules(net).items()
                if getattr(attn, 'add_k_proj', None) is not None]
    if added_kv:
        raise ValueError(
            f'Pruning a {type(net).__name__} with added-KV attention ({added_kv[0]}, e.g. '
            'SimpleCrossAttnDownBlock2D of unCLIP / DeepFloyd IF) is not supported: it '
            'concatenates projected text keys to the image keys along the sequence, a '
            'coupling of head dims torch-pruning does not trace. Use CrossAttn blocks '
            '(CrossAttnDownBlock2D ...), the Stable Diffusion layout.')


def check_group_norms(net: nn.Module) -> None:
    """Raises if pruning left a GroupNorm whose width is not a multiple of its groups.

    Args:
        net (nn.Module): The pruned bare denoiser.

    Raises:
        ValueError: Naming the first such GroupNorm (a layout whose channel coupling
            the pruner mapped wrongly), instead of the forward's bare RuntimeError.
    """
    for name, module in net.named_modules():
        if isinstance(module, nn.GroupNorm) and module.weight is not None and \
                module.weight.shape[0] % module.num_groups:
            raise ValueError(
                f'Pruning left GroupNorm {name!r} with {module.weight.shape[0]} channels, not '
                f'a multiple of its {module.num_groups} groups: this layout couples the '
                "norm's channels in a way the pruner does not map. Keep the layer that "
                "writes its input unpruned (prune_denoiser's ignored_layers), or report "
                'the layout.')


def _check_mmagic_unet(net: nn.Module) -> None:
    """Raises for DenoisingUnet layouts torch-pruning cannot prune correctly."""
    if getattr(net, 'unet_type', '') == 'stable':
        raise ValueError("Pruning DenoisingUnet(unet_type='stable') is not supported; use "
                         'diffusers UNet2DConditionModel for Stable Diffusion.')
    for module in net.modules():
        if getattr(module, 'updown', False):
            # measured on a 3-level toy (2 resblocks a level, 16x16): 547 s to build the
            # pruning groups, against 17 s for resblock_updown=False; the result was right
            raise ValueError('Pruning DenoisingUnet(resblock_updown=True) is not supported: '
                             "torch-pruning's dependency search does not scale over its "
                             'resampling resblocks (minutes on a toy model, far longer on '
                             'ADM); use resblock_updown=False.')


def attention_modules(net: nn.Module) -> Dict[str, nn.Module]:
    """Named diffusers ``Attention`` modules (the ones with ``to_q/to_k/to_v``)."""
    return {
        name: module
        for name, module in net.named_modules()
        if type(module).__name__ == 'Attention' and hasattr(module, 'to_q')
    }


def num_heads_for(net: nn.Module) -> Dict[nn.Module, int]:
    """torch-pruning's ``num_heads``: each q/k/v projection mapped to its head count.

    Without it torch-pruning removes arbitrary q/k/v channels and head reshapes break.
    """
    heads = {}
    for attn in attention_modules(net).values():
        for proj in (attn.to_q, attn.to_k, attn.to_v):
            heads[proj] = attn.heads
    return heads


def current_heads(net: nn.Module, num_heads: Dict[nn.Module, int]) -> Dict[str, int]:
    """Head count of every attention module after pruning, by module name.

    Args:
        net (nn.Module): The bare denoiser.
        num_heads (dict): torch-pruning's ``pruner.num_heads`` after ``step()`` (it
            decrements the counts when whole heads are removed).

    Returns:
        dict[str, int]: Attention module name -> heads.
    """
    return {name: int(num_heads.get(attn.to_q, attn.heads))
            for name, attn in attention_modules(net).items()}


def fix_module_attributes(net: nn.Module, heads: Dict[str, int],
                          example_inputs: Dict[str, Tensor]) -> None:
    """Restores the attributes that forward reads after torch-pruning changed widths.

    Args:
        net (nn.Module): The pruned bare denoiser (modified in place).
        heads (dict[str, int]): Attention module name -> head count after pruning.
        example_inputs (dict): ``example_denoiser_inputs`` of ``net``; one probe forward
            reads the channels that reach each resampler.
    """
    for name, attn in attention_modules(net).items():
        _fix_attention(attn, heads.get(name, attn.heads))
    _probe_resample_channels(net, example_inputs)
    for module in net.modules():
        if type(module).__name__ == 'ResnetBlock2D':
            module.in_channels = module.conv1.in_channels
            module.out_channels = module.conv2.out_channels


def _fix_attention(attn: nn.Module, heads: int) -> None:
    """Sets diffusers ``Attention`` head bookkeeping from the pruned projections."""
    inner_dim = attn.to_q.out_features
    if inner_dim % heads:
        raise RuntimeError(f'Pruned attention width {inner_dim} is not divisible by its '
                           f'{heads} heads; torch-pruning needs `num_heads` for this layer.')
    attn.heads = heads
    attn.sliceable_head_dim = heads
    attn.inner_dim = inner_dim
    if hasattr(attn, 'inner_kv_dim'):
        attn.inner_kv_dim = attn.to_k.out_features
    attn.query_dim = attn.to_q.in_features
    attn.cross_attention_dim = attn.to_k.in_features
    attn.out_dim = attn.to_out[0].out_features
    if getattr(attn, 'scale_qk', True):
        # SDPA (diffusers' default processor) scales by the actual head dim; the classic
        # processor reads `attn.scale`. Keep both processors computing the same function.
        attn.scale = (inner_dim // heads) ** -0.5


def _probe_resample_channels(net: nn.Module, example_inputs: Dict[str, Tensor]) -> None:
    """Sets ``channels``/``out_channels`` of resamplers from the tensors that reach them.

    A pre-hook runs before the resampler's own channel assert, so one forward suffices
    even when the resampler has no conv to read the width from.
    """
    from mmdiff_2ndm.models.denoisers import run_denoiser

    def set_channels(module: nn.Module, args) -> None:
        module.channels = args[0].shape[1]
        conv = getattr(module, 'conv', None)
        module.out_channels = (
            conv.out_channels if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
            else module.channels)

    handles = [
        module.register_forward_pre_hook(set_channels) for module in net.modules()
        if type(module).__name__ in _RESAMPLE_CLASSES
    ]
    if not handles:
        return
    try:
        with torch.no_grad():
            run_denoiser(net, **example_inputs)
    finally:
        for handle in handles:
            handle.remove()
