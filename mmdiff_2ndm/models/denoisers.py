"""One calling convention for the denoiser families this project prunes and distils.

Families (``denoiser_family``):

* ``'unet2d'``: diffusers ``UNet2DModel`` (pixel DDPM; optional class embedding).
* ``'unet2d_condition'``: diffusers ``UNet2DConditionModel`` (Stable Diffusion).
* ``'dit'``: diffusers ``DiTTransformer2DModel`` (class-conditional latent DiT).
* ``'mmagic_unet'``: mmagic ``DenoisingUnet`` (returns a dict, not a tensor).

Every model may arrive wrapped (DDP, mmengine wrappers, mmagic's ``DiffusersWrapper``);
``unwrap_denoiser`` strips those so that family checks and config reads see the bare net.
"""
from typing import Dict, Optional

import torch
from torch import Tensor, nn

FAMILIES = ('unet2d', 'unet2d_condition', 'dit', 'mmagic_unet')

# Class names, not classes: importing diffusers/mmagic here would make this module
# (and everything that imports it) pay their import time and hard-depend on mmagic.
_FAMILY_BY_CLASS = {
    'UNet2DModel': 'unet2d',
    'UNet2DConditionModel': 'unet2d_condition',
    'DiTTransformer2DModel': 'dit',
    'DenoisingUnet': 'mmagic_unet',
}


def strip_model_wrappers(module: nn.Module) -> nn.Module:
    """The module inside any (nested) DDP-style mmengine wrappers.

    Unlike :func:`unwrap_denoiser` it keeps mmagic's ``DiffusersWrapper``: the result is
    the module as the distiller holds it (``student.model.*`` state-dict keys).
    """
    while _is_mmengine_wrapper(module):
        module = module.module
    return module


def unwrap_denoiser(model: nn.Module) -> nn.Module:
    """Strips DDP / mmengine model wrappers and mmagic's ``DiffusersWrapper``.

    Args:
        model (nn.Module): A denoiser, possibly wrapped (several layers deep).

    Returns:
        nn.Module: The bare network whose class is one of the supported families
        (or whatever remains once no known wrapper is left).
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif _is_mmengine_wrapper(model):
            model = model.module
        elif _is_diffusers_wrapper(model):
            model = model.model
        elif hasattr(model, '_orig_mod'):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def _is_diffusers_wrapper(model: nn.Module) -> bool:
    """True for mmagic's ``DiffusersWrapper``.

    mmagic registers each diffusers class through a subclass named like the wrapped class
    (e.g. ``UNet2DModel``), so the check walks the MRO instead of the class name.
    """
    return (any(cls.__name__ == 'DiffusersWrapper' for cls in type(model).__mro__)
            and isinstance(model._modules.get('model'), nn.Module))


def _is_mmengine_wrapper(model: nn.Module) -> bool:
    """True for mmengine's registered model wrappers (MMDDP, MMSeparateDDP, FSDP...)."""
    try:
        from mmengine.model import is_model_wrapper
    except ImportError:  # mmengine is optional for pure-torch use
        return False
    return is_model_wrapper(model)


def denoiser_family(model: nn.Module) -> str:
    """Names the family of a (possibly wrapped) denoiser.

    Args:
        model (nn.Module): The denoiser.

    Returns:
        str: One of ``FAMILIES``.

    Raises:
        TypeError: If the bare network is not of a supported class.
    """
    net = unwrap_denoiser(model)
    for cls in type(net).__mro__:
        if cls.__name__ in _FAMILY_BY_CLASS:
            return _FAMILY_BY_CLASS[cls.__name__]
    raise TypeError(
        f'Unsupported denoiser class {type(net).__name__!r}; supported are '
        f'{sorted(_FAMILY_BY_CLASS)} (optionally wrapped in DDP, an mmengine '
        'model wrapper or mmagic DiffusersWrapper).')


def check_denoiser_inputs(model: nn.Module) -> str:
    """Raises for a supported class whose config needs inputs ``run_denoiser`` never passes.

    ``run_denoiser`` gives a diffusers U-Net the noisy input, the timesteps and one
    condition: integer class labels to ``UNet2DModel``, text states to
    ``UNet2DConditionModel``. A config that also needs float class vectors, class labels
    beside the text or SDXL's ``added_cond_kwargs`` would fail at its first forward,
    deep in diffusers, after the weights are loaded; here it fails when built.

    Args:
        model (nn.Module): The denoiser, possibly wrapped.

    Returns:
        str: Its family (``denoiser_family``).

    Raises:
        TypeError: As :func:`denoiser_family`.
        ValueError: Naming the config field that asks for the missing input.
    """
    family = denoiser_family(model)
    net = unwrap_denoiser(model)
    name = type(net).__name__
    if family == 'unet2d_condition':
        if getattr(net, 'class_embedding', None) is not None:
            raise ValueError(
                f'{name}(num_class_embeds={_config_get(net, "num_class_embeds")}, '
                f'class_embed_type={_config_get(net, "class_embed_type")!r}) needs class '
                'labels beside the text states; the distiller conditions a '
                'UNet2DConditionModel on text only. Use neither.')
        addition = _config_get(net, 'addition_embed_type')
        if addition not in (None, 'text'):  # 'text' embeds the text states themselves
            raise ValueError(
                f'{name}(addition_embed_type={addition!r}) needs added_cond_kwargs (SDXL: '
                'pooled text embeddings and size/crop time ids; image embeddings), which '
                'the distiller does not pass: such U-Nets are not supported.')
    elif family == 'unet2d' and _config_get(net, 'class_embed_type') is not None:
        raise ValueError(
            f"{name}(class_embed_type={_config_get(net, 'class_embed_type')!r}) embeds a "
            'float class input that the distiller does not pass (it passes integer labels, '
            'to an nn.Embedding); use num_class_embeds=N with class_embed_type=None.')
    return family


def _config_get(net: nn.Module, key: str, default=None):
    """Reads a diffusers config entry."""
    return getattr(net.config, key, default)


def _sample_hw(sample_size) -> tuple:
    """(H, W) from a diffusers ``sample_size`` (int or pair)."""
    if isinstance(sample_size, (tuple, list)):
        return int(sample_size[0]), int(sample_size[1])
    return int(sample_size), int(sample_size)


def run_denoiser(model: nn.Module,
                 x_t: Tensor,
                 timesteps: Tensor,
                 condition: Optional[Tensor] = None) -> Tensor:
    """Calls any supported denoiser and returns its noise/velocity prediction.

    Args:
        model (nn.Module): The denoiser, possibly wrapped. Wrappers are called, not
            bypassed, so that DDP gradient synchronisation still happens.
        x_t (Tensor): Noisy input, (B, C, H, W).
        timesteps (Tensor): Integer timesteps, (B,) (a scalar is broadcast).
        condition (Tensor, optional): Class labels (B,) for DiT and class-conditional
            UNets, encoder hidden states (B, L, D) for ``UNet2DConditionModel``,
            None for unconditional models.

    Returns:
        Tensor: The prediction, (B, C, H, W) with C = ``x_t.shape[1]``; for
        learned-variance models only the first C channels (the eps part).
    """
    family = denoiser_family(model)
    net = unwrap_denoiser(model)
    if timesteps.dim() == 0:
        timesteps = timesteps.expand(x_t.shape[0])
    if family == 'unet2d':
        out = model(x_t, timesteps, class_labels=condition, return_dict=False)[0]
    elif family == 'unet2d_condition':
        if condition is None:
            raise ValueError('UNet2DConditionModel needs `condition` = encoder hidden '
                             'states (B, L, D); got None.')
        out = model(x_t, timesteps, encoder_hidden_states=condition, return_dict=False)[0]
    elif family == 'dit':
        if condition is None:
            raise ValueError('DiTTransformer2DModel needs `condition` = class labels (B,) '
                             f'in [0, {_config_get(net, "num_embeds_ada_norm")}); got None.')
        out = model(x_t, timestep=timesteps, class_labels=condition, return_dict=False)[0]
    elif getattr(net, 'unet_type', '') == 'stable':  # mmagic's latent, text-conditioned UNet
        out = _mmagic_eps(model(x_t, timesteps, encoder_hidden_states=condition))
    else:  # mmagic_unet, pixel space, optionally class-conditional
        out = _mmagic_eps(model(x_t, timesteps, label=condition))
    # Learned-sigma models (DiT out_channels = 2C, learned-variance UNets) stack the
    # variance after the eps channels.
    return out[:, :x_t.shape[1]]


def _mmagic_eps(outputs) -> Tensor:
    """Picks the eps prediction from mmagic ``DenoisingUnet`` outputs (dict or tensor)."""
    if torch.is_tensor(outputs):
        return outputs
    for key in ('eps_t_pred', 'sample', 'x_0_pred', 'v_t_pred'):
        if key in outputs:
            return outputs[key]
    raise KeyError(f'DenoisingUnet returned keys {sorted(outputs)}; expected one of '
                   "'eps_t_pred', 'sample', 'x_0_pred', 'v_t_pred'.")


def example_denoiser_inputs(model: nn.Module,
                            batch_size: int = 1,
                            seq_len: int = 77,
                            seed: int = 0) -> Dict[str, Optional[Tensor]]:
    """Builds deterministic inputs of the right shapes, read from the model config.

    Args:
        model (nn.Module): The denoiser, possibly wrapped.
        batch_size (int): B. Defaults to 1.
        seq_len (int): L of the encoder hidden states for ``UNet2DConditionModel``.
            Defaults to 77 (CLIP's context length).
        seed (int): Seed of a private generator (the global RNG is not touched).
            Defaults to 0.

    Returns:
        dict: ``x_t`` (B, C, H, W), ``timesteps`` (B,) long, ``condition`` (class
        labels (B,), hidden states (B, L, D) or None), on the model's device.
    """
    family = denoiser_family(model)
    net = unwrap_denoiser(model)
    param = next(net.parameters())
    gen = torch.Generator().manual_seed(seed)
    condition = None
    num_timesteps = 1000
    if family == 'mmagic_unet':
        if getattr(net, 'unet_type', '') == 'stable':
            raise ValueError("example_denoiser_inputs does not support DenoisingUnet with "
                             "unet_type='stable' (its text width is not stored on the "
                             'module); build the inputs by hand.')
        channels = net.in_channels
        height = width = net.image_size
        num_classes = getattr(net, 'num_classes', 0) or 0
        if num_classes > 0:
            condition = torch.randint(0, num_classes, (batch_size,), generator=gen)
    else:
        channels = _config_get(net, 'in_channels')
        height, width = _sample_hw(_config_get(net, 'sample_size'))
        if family == 'unet2d':
            num_classes = _config_get(net, 'num_class_embeds')
            if num_classes:
                condition = torch.randint(0, num_classes, (batch_size,), generator=gen)
        elif family == 'dit':
            num_classes = _config_get(net, 'num_embeds_ada_norm')
            condition = torch.randint(0, num_classes, (batch_size,), generator=gen)
        else:  # unet2d_condition
            dim = _config_get(net, 'encoder_hid_dim') or _config_get(net, 'cross_attention_dim')
            if isinstance(dim, (tuple, list)):
                dim = dim[0]
            condition = torch.randn(batch_size, seq_len, dim, generator=gen)
    x_t = torch.randn(batch_size, channels, height, width, generator=gen)
    timesteps = torch.randint(0, num_timesteps, (batch_size,), generator=gen)
    x_t = x_t.to(device=param.device, dtype=param.dtype)
    timesteps = timesteps.to(param.device)
    if condition is not None:
        condition = condition.to(param.device)
        if condition.is_floating_point():
            condition = condition.to(param.dtype)
    return dict(x_t=x_t, timesteps=timesteps, condition=condition)
