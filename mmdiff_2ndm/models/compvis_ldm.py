"""CompVis latent-diffusion (LDM) checkpoints as diffusers models.

The class-conditional ImageNet LDM-4 (``cin256-v2`` in CompVis/latent-diffusion) was
never released in diffusers form. Its U-Net is an ``openaimodel.UNetModel`` whose spatial
transformers cross-attend to a learned class embedding (``ClassEmbedder``: 1001 x 512,
label 1000 is the null label), and its first stage is a VQ-f4 autoencoder. In diffusers
terms that is a ``UNet2DConditionModel`` (400.9M parameters, the paper's count), a
``VQModel`` and an embedding table, which :func:`convert_compvis_ldm` builds from the
checkpoint and its YAML config. The key mapping is diffusers' own
(``convert_from_ckpt.convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint``);
this module adds the class embedding, the VQ codebook and the configs.
:func:`load_compvis_ldm` and :func:`save_compvis_ldm` read the checkpoint + YAML and write
the folders ``configs/2ndm_imagenet_ldm.py`` loads (``tools/convert_compvis_ldm.py``).
"""
import os
import os.path as osp
from typing import Dict, Optional

import torch
import yaml
from mmagic.registry import MODELS
from torch import Tensor, nn

from mmdiff_2ndm.utils.checkpoint import safe_torch_load

UNET_PREFIX = 'model.diffusion_model.'
#: Where :func:`save_compvis_ldm` writes each part, relative to its output folder.
SAVED_PARTS = dict(unet='unet', vqvae='vqvae', class_embedder='class_embedder.pth')
VQ_PREFIX = 'first_stage_model.'
CLASS_EMBEDDING_KEY = 'cond_stage_model.embedding.weight'


@MODELS.register_module()
class ClassEmbedder(nn.Module):
    """LDM's class conditioning: a label table whose rows are cross-attention context.

    Args:
        num_embeddings (int): Rows, the null label included (1001 for ImageNet LDM-4:
            labels 0-999 and the null label 1000). Defaults to 1001.
        embed_dim (int): Context width, the U-Net's ``cross_attention_dim``.
            Defaults to 512.
        checkpoint (str, optional): File with the table, as written by
            ``tools/convert_compvis_ldm.py`` (``class_embedder.pth``). Defaults to None
            (random rows: only for training from scratch).
    """

    def __init__(self,
                 num_embeddings: int = 1001,
                 embed_dim: int = 512,
                 checkpoint: Optional[str] = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embed_dim)
        if checkpoint is not None:
            self.load_table(checkpoint)

    @property
    def num_embeddings(self) -> int:
        """Rows of the table, the null label included."""
        return self.embedding.num_embeddings

    def load_table(self, checkpoint: str) -> None:
        """Loads the table from a converted checkpoint (strict, safe unpickler).

        Raises:
            FileNotFoundError: When ``checkpoint`` does not exist.
            ValueError: When its table is missing or has another shape than this
                embedder, or when it holds other keys.
        """
        path = osp.expanduser(checkpoint)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'ClassEmbedder checkpoint {checkpoint!r} does not exist; convert the CompVis '
                'LDM checkpoint with tools/convert_compvis_ldm.py and point `checkpoint` at '
                'its class_embedder.pth.')
        state = safe_torch_load(path, map_location='cpu')
        state = state.get('state_dict', state)
        table = state.get('embedding.weight')
        if table is None or tuple(table.shape) != tuple(self.embedding.weight.shape):
            found = None if table is None else tuple(table.shape)
            raise ValueError(
                f'{checkpoint!r} holds a class table of shape {found}, this ClassEmbedder is '
                f'{tuple(self.embedding.weight.shape)}; set num_embeddings/embed_dim to the '
                "checkpoint's (LDM-4 ImageNet: 1001 x 512).")
        extra = sorted(key for key in state if key != 'embedding.weight')
        if extra:
            raise ValueError(
                f'{checkpoint!r} holds more than the class table ({len(extra)} other key(s): '
                f'{", ".join(extra[:3])}); point `checkpoint` at the class_embedder.pth '
                'written by tools/convert_compvis_ldm.py, not at a whole model.')
        self.load_state_dict(state, strict=True)

    def forward(self, labels: Tensor) -> Tensor:
        """Labels (B,) -> context (B, 1, D) for the U-Net's cross-attention."""
        return self.embedding(labels.long())[:, None]


def load_compvis_checkpoint(path: str) -> Dict[str, Tensor]:
    """The flat state dict of a CompVis (PyTorch Lightning) checkpoint.

    Loaded with torch's safe unpickler: a checkpoint that pickles code is refused.
    """
    if not osp.isfile(osp.expanduser(path)):
        raise FileNotFoundError(f'CompVis checkpoint {path!r} does not exist (the LDM model '
                                "zoo's model.ckpt).")
    checkpoint = safe_torch_load(osp.expanduser(path), map_location='cpu')
    return checkpoint.get('state_dict', checkpoint)


def _params(original_config: dict, key: str) -> dict:
    """``model.params.<key>.params`` of a parsed LDM YAML, or a ValueError naming it."""
    try:
        return original_config['model']['params'][key]['params']
    except (KeyError, TypeError) as err:
        raise ValueError(f'The LDM config has no model.params.{key}.params; give the YAML '
                         'that came with the checkpoint (e.g. cin256-v2.yaml).') from err


def unet_config(original_config: dict) -> dict:
    """diffusers ``UNet2DConditionModel`` keywords of an LDM spatial-transformer U-Net."""
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import \
        create_unet_diffusers_config
    unet = _params(original_config, 'unet_config')
    if not unet.get('use_spatial_transformer') or unet.get('context_dim') is None:
        raise ValueError('Only LDMs whose U-Net cross-attends (use_spatial_transformer: true '
                         'with a context_dim, e.g. cin256-v2) convert to UNet2DConditionModel.')
    first_stage = _params(original_config, 'first_stage_config')['ddconfig']
    image_size = int(first_stage['resolution'])
    return create_unet_diffusers_config(original_config, image_size=image_size)


def vq_config(original_config: dict) -> dict:
    """diffusers ``VQModel`` keywords of the LDM's VQ first stage."""
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import \
        create_vae_diffusers_config
    first_stage = _params(original_config, 'first_stage_config')
    if 'n_embed' not in first_stage:
        raise ValueError('The first stage has no codebook (n_embed); only VQ first stages '
                         '(VQModelInterface) convert to VQModel.')
    ddconfig = first_stage['ddconfig']
    if ddconfig.get('attn_resolutions'):
        raise ValueError('VQModel has attention only in its middle block; this first stage '
                         f"also attends at resolutions {ddconfig['attn_resolutions']}.")
    config = create_vae_diffusers_config(original_config, image_size=int(ddconfig['resolution']))
    config.update(
        num_vq_embeddings=int(first_stage['n_embed']),
        vq_embed_dim=int(first_stage['embed_dim']),
        # LatentDiffusion multiplies latents by scale_factor (1.0 unless configured);
        # diffusers' VQModel default (0.18215) is the SD VAE's.
        scaling_factor=float(original_config['model']['params'].get('scale_factor', 1.0)))
    return config


def convert_compvis_ldm(state_dict: Dict[str, Tensor], original_config: dict,
                        extract_ema: bool = False) -> Dict[str, nn.Module]:
    """Builds the diffusers U-Net, VQ autoencoder and class embedder of an LDM.

    Args:
        state_dict (dict): Flat state dict of the LatentDiffusion checkpoint
            (``model.diffusion_model.*``, ``first_stage_model.*``,
            ``cond_stage_model.embedding.weight``).
        original_config (dict): The parsed YAML config of the checkpoint.
        extract_ema (bool): Take the U-Net from the ``model_ema.*`` weights.
            Defaults to False.

    Returns:
        dict: ``unet`` (``UNet2DConditionModel``), ``vqvae`` (``VQModel``) and
        ``class_embedder`` (:class:`ClassEmbedder`), weights loaded strictly.

    Raises:
        ValueError: When the checkpoint lacks a part or does not fit the config.
    """
    from diffusers import UNet2DConditionModel, VQModel
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
        convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint)
    for prefix in (UNET_PREFIX, VQ_PREFIX):
        if not any(key.startswith(prefix) for key in state_dict):
            raise ValueError(f'No {prefix}* weights in the checkpoint; is it a LatentDiffusion '
                             'checkpoint?')
    if CLASS_EMBEDDING_KEY not in state_dict:
        raise ValueError(f'No {CLASS_EMBEDDING_KEY} in the checkpoint: the LDM is not '
                         'class-conditioned through a ClassEmbedder.')
    if extract_ema and sum(key.startswith('model_ema.') for key in state_dict) == 0:
        raise ValueError('extract_ema=True, but the checkpoint has no model_ema.* weights.')

    unet_kwargs = unet_config(original_config)
    unet = UNet2DConditionModel(**unet_kwargs)
    # diffusers' converter pops the keys it consumes: give it a copy.
    try:
        unet_state = convert_ldm_unet_checkpoint(dict(state_dict), unet_kwargs,
                                                 extract_ema=extract_ema)
    except KeyError as err:
        raise ValueError(f'The U-Net weights do not fit the config: no {err}; is the YAML '
                         "the checkpoint's own?") from err
    _load_strict(unet, unet_state, 'U-Net')

    vq_kwargs = vq_config(original_config)
    vqvae = VQModel(**vq_kwargs)
    try:
        vq_state = convert_ldm_vae_checkpoint(state_dict, vq_kwargs)
    except KeyError as err:
        raise ValueError(f'The VQ autoencoder weights do not fit the config: no {err}; is '
                         "the YAML the checkpoint's own?") from err
    vq_state['quantize.embedding.weight'] = state_dict[VQ_PREFIX + 'quantize.embedding.weight']
    _load_strict(vqvae, vq_state, 'VQ autoencoder')

    table = state_dict[CLASS_EMBEDDING_KEY]
    class_embedder = ClassEmbedder(num_embeddings=table.shape[0], embed_dim=table.shape[1])
    if table.shape[1] != unet_kwargs['cross_attention_dim']:
        raise ValueError(f'The class embedding is {table.shape[1]}-d but the U-Net '
                         f"cross-attends to {unet_kwargs['cross_attention_dim']}-d context.")
    class_embedder.embedding.weight.data.copy_(table)
    return dict(unet=unet, vqvae=vqvae, class_embedder=class_embedder)


def _load_strict(module: nn.Module, state_dict: Dict[str, Tensor], what: str) -> None:
    """Loads every weight, or names what does not fit the config."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state_dict)
                        if tuple(expected[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or mismatched:
        raise ValueError(
            f'The {what} weights do not fit the config: missing {missing[:5]}, unexpected '
            f'{unexpected[:5]}, shape mismatch {mismatched[:5]} '
            f'({len(missing)}/{len(unexpected)}/{len(mismatched)} in all); is the YAML the '
            "checkpoint's own?")
    module.load_state_dict(state_dict, strict=True)


def load_compvis_ldm(checkpoint: str, config: str,
                     extract_ema: bool = False) -> Dict[str, nn.Module]:
    """Reads a CompVis LDM checkpoint and its YAML config and converts them.

    Args:
        checkpoint (str): The LDM's ``model.ckpt``.
        config (str): Its YAML config (e.g. ``cin256-v2.yaml``).
        extract_ema (bool): See :func:`convert_compvis_ldm`. Defaults to False.

    Returns:
        dict: The parts of :func:`convert_compvis_ldm`.
    """
    if not osp.isfile(osp.expanduser(config)):
        raise FileNotFoundError(f'LDM config {config!r} does not exist (the YAML shipped with '
                                'the checkpoint, e.g. configs/latent-diffusion/cin256-v2.yaml).')
    with open(osp.expanduser(config)) as f:
        original_config = yaml.safe_load(f)
    return convert_compvis_ldm(load_compvis_checkpoint(checkpoint), original_config,
                               extract_ema=extract_ema)


def save_compvis_ldm(parts: Dict[str, nn.Module], out_dir: str) -> Dict[str, str]:
    """Writes converted parts where ``configs/2ndm_imagenet_ldm.py`` reads them.

    Args:
        parts (dict): ``unet``, ``vqvae`` (``save_pretrained`` folders) and
            ``class_embedder`` (a checkpoint :class:`ClassEmbedder` loads).
        out_dir (str): Output folder, created if needed.

    Returns:
        dict: The path written for each part (see :data:`SAVED_PARTS`).
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: osp.join(out_dir, rel) for name, rel in SAVED_PARTS.items()}
    parts['unet'].save_pretrained(paths['unet'])
    parts['vqvae'].save_pretrained(paths['vqvae'])
    torch.save(dict(state_dict=parts['class_embedder'].state_dict()), paths['class_embedder'])
    return paths
