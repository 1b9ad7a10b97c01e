"""What the denoisers are conditioned on: class labels, text states or nothing."""
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import get_dist_info
from torch import Tensor, nn

from mmagic.models.utils import build_module
from mmagic.registry import MODELS

from ...utils.state_dict import from_pretrained_strictly
from ..denoisers import denoiser_family, unwrap_denoiser
from . import batch_fields
from .batch_fields import Device, Samples
from .builders import ModelType, frozen


class Conditioner:
    """Turns labels or prompts into the condition both denoisers take, and makes the
    null condition of classifier-free guidance.

    The frozen networks it builds (``text_encoder``, ``class_embedder``) are
    registered on the distiller, which owns their weights (and checkpoint keys); this
    object keeps references to them.

    Args:
        reference_net (nn.Module): The teacher, or the student without one: its family
            and config decide class handling.
        nets (Sequence[nn.Module]): Teacher and student, whose DiT label dropout is
            switched off (the conditioner drops labels once, for both).
        text_encoder (str | dict | nn.Module, optional): Frozen text encoder (a string
            is a local ``CLIPTextModel`` folder).
        tokenizer (str, optional): Local tokenizer folder; required with
            ``text_encoder``.
        class_embedder (dict | nn.Module, optional): Frozen label table for a
            class-conditional cross-attention U-Net.
        num_classes (int, optional): Number of classes (the null label is
            ``num_classes``); read from DiT or the class embedder when None.
        label_drop_prob (float): Training probability of the null label / empty prompt.
        sample_prompts (Sequence[str], optional): Prompts cycled for sampling.
    """

    def __init__(self, reference_net: nn.Module, nets: Sequence[nn.Module],
                 text_encoder: Optional[Union[str, ModelType]] = None,
                 tokenizer: Optional[str] = None,
                 class_embedder: Optional[ModelType] = None,
                 num_classes: Optional[int] = None,
                 label_drop_prob: float = 0.0,
                 sample_prompts: Optional[Sequence[str]] = None) -> None:
        self.label_drop_prob = label_drop_prob
        self.sample_prompts = list(sample_prompts) if sample_prompts else None
        self.next_prompt = 0
        self.tokenizer, self.text_encoder = _build_text_encoder(text_encoder, tokenizer)
        self.class_embedder = self._build_class_embedder(class_embedder, reference_net)
        self.num_classes = self._resolve_num_classes(num_classes, reference_net, nets)

    def _build_class_embedder(self, class_embedder: Optional[ModelType],
                              reference_net: nn.Module) -> Optional[nn.Module]:
        """Builds the frozen label table of a class-conditional cross-attention U-Net."""
        if class_embedder is None:
            return None
        if self.text_encoder is not None:
            raise ValueError('class_embedder and text_encoder both make the cross-attention '
                             'context; give one of them.')
        if isinstance(class_embedder, dict) and not class_embedder.get('checkpoint'):
            raise ValueError(
                'class_embedder has no weights: give `checkpoint` (the class_embedder.pth '
                'written by tools/convert_compvis_ldm.py); the teacher was trained with its '
                'own table, a random one cannot be distilled from.')
        module = build_module(class_embedder, MODELS)
        if not isinstance(getattr(module, 'embedding', None), nn.Embedding):
            raise TypeError('class_embedder must hold its table as `embedding` (nn.Embedding), '
                            f'like ClassEmbedder; got {type(module).__name__}.')
        family = denoiser_family(reference_net)
        if family != 'unet2d_condition':
            raise ValueError('class_embedder feeds cross-attention, but the denoiser family '
                             f'is {family!r}; it needs a UNet2DConditionModel.')
        return frozen(module)

    def _resolve_num_classes(self, num_classes: Optional[int], reference_net: nn.Module,
                             nets: Sequence[nn.Module]) -> Optional[int]:
        """Reads the class count and takes label dropout over from DiT."""
        if self.class_embedder is not None:
            rows = int(self.class_embedder.embedding.num_embeddings)
            if num_classes is not None and int(num_classes) != rows - 1:
                raise ValueError(f'num_classes={num_classes} does not fit the class_embedder '
                                 f'({rows} rows = {rows - 1} classes + the null label).')
            return rows - 1
        net = unwrap_denoiser(reference_net)
        if denoiser_family(net) == 'dit':
            table = int(net.config.num_embeds_ada_norm)
            num_classes = table if num_classes is None else int(num_classes)
            # DiT drops labels inside its LabelEmbedding in train mode, independently
            # per network; teacher and student must see the same (dropped) labels for
            # KD, so the conditioner drops them once and the embeddings never do.
            for module in [m for n in nets for m in n.modules()]:
                if type(module).__name__ == 'LabelEmbedding':
                    module.dropout_prob = 0.0
        return num_classes

    def training_condition(self, data_samples: Samples, batch: int, device: Device,
                           drop: bool = True,
                           drop_u: Optional[Tensor] = None) -> Optional[Tensor]:
        """Labels (B,) or text states (B, L, D), with CFG dropout shared by both nets.

        Args:
            data_samples: The batch's samples (``gt_label`` or ``prompt``).
            batch (int): B.
            device: Where the condition goes.
            drop (bool): Apply ``label_drop_prob``. Defaults to True.
            drop_u (Tensor, optional): Uniforms (B,) for the dropout decisions
                (per-sample seeding); drawn from the global RNG when None.

        Returns:
            Tensor | None: The condition, None for an unconditional denoiser.
        """
        drop_prob = self.label_drop_prob if drop else 0.0
        if self.text_encoder is not None:
            prompts = batch_fields.field(data_samples, 'prompt')
            if prompts is None:
                raise ValueError('A text-conditioned distiller needs `prompt` in the data '
                                 'samples of each batch.')
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            if drop_prob > 0:
                keep = (torch.rand(len(prompts)) if drop_u is None else drop_u.cpu()) \
                    >= drop_prob
                prompts = [p if k else '' for p, k in zip(prompts, keep.tolist())]
            return self.encode_prompts(prompts, device)
        if self.num_classes is None:
            return None
        label_ids = batch_fields.labels(data_samples, batch, device)
        if label_ids is None:
            raise ValueError('A class-conditioned distiller needs `gt_label` in the data '
                             'samples of each batch.')
        if drop_prob > 0:
            dropped = (torch.rand(batch, device=device) if drop_u is None
                       else drop_u.to(device)) < drop_prob
            label_ids = torch.where(dropped, torch.full_like(label_ids, self.num_classes),
                                    label_ids)
        return self.embed_labels(label_ids)

    def sampling_condition(self, data_samples: Samples, sample_kwargs: dict, batch: int,
                           device: Device
                           ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[List[str]]]:
        """Condition, null condition (None for unconditional) and the prompts (B) used.

        Prompts come from ``sample_kwargs['prompt']``, the data samples, or
        ``sample_prompts``; labels from ``sample_kwargs['labels']``, the data samples, or
        uniformly at random.
        """
        if self.text_encoder is not None:
            prompts = sample_kwargs.get('prompt') or batch_fields.field(data_samples, 'prompt')
            if prompts is None:
                prompts = self._next_sample_prompts(batch)
            prompts = [prompts] * batch if isinstance(prompts, str) else list(prompts)
            return (self.encode_prompts(prompts, device),
                    self.encode_prompts([''] * batch, device), prompts)
        if self.num_classes is None:
            return None, None, None
        label_ids = sample_kwargs.get('labels')
        if label_ids is not None:
            label_ids = torch.as_tensor(label_ids, device=device).long().reshape(-1)
        else:
            label_ids = batch_fields.labels(data_samples, batch, device)
        if label_ids is None:
            label_ids = torch.randint(0, self.num_classes, (batch,), device=device)
        return (self.embed_labels(label_ids),
                self.embed_labels(torch.full_like(label_ids, self.num_classes)), None)

    def _next_sample_prompts(self, batch: int) -> List[str]:
        """The next ``batch`` of ``sample_prompts``, cycling across calls.

        All prompts get their turn (e.g. 30k COCO captions for FID), not only the first
        ``batch``; ranks take interleaved blocks, so W ranks together cover what one
        process would.
        """
        if not self.sample_prompts:
            raise ValueError('Text-conditioned sampling needs prompts: set '
                             '`sample_prompts` or pass sample_kwargs["prompt"].')
        rank, world_size = get_dist_info()
        start = self.next_prompt + rank * batch
        prompts = [self.sample_prompts[(start + i) % len(self.sample_prompts)]
                   for i in range(batch)]
        self.next_prompt = (self.next_prompt + world_size * batch) % len(self.sample_prompts)
        return prompts

    def embed_labels(self, label_ids: Tensor) -> Tensor:
        """Labels as the denoiser takes them: context (B, 1, D) through the class
        embedder, or the labels (B,) themselves."""
        if self.class_embedder is None:
            return label_ids
        with torch.no_grad():
            return self.class_embedder(label_ids)

    @torch.no_grad()
    def encode_prompts(self, prompts: List[str], device: Device) -> Tensor:
        """Frozen text encoder states (B, L, D) of the prompts."""
        tokens = self.tokenizer(prompts, padding='max_length', truncation=True,
                                max_length=self.tokenizer.model_max_length,
                                return_tensors='pt')
        return self.text_encoder(tokens.input_ids.to(device))[0]


def _build_text_encoder(text_encoder, tokenizer) -> Tuple:
    """Loads the frozen tokenizer and text encoder (local folders, configs or modules)."""
    if text_encoder is None and tokenizer is None:
        return None, None
    if text_encoder is None or tokenizer is None:
        raise ValueError('Text conditioning needs both `text_encoder` and `tokenizer` '
                         f'(got text_encoder={text_encoder!r}, tokenizer={tokenizer!r}).')
    from transformers import AutoTokenizer, CLIPTextModel
    if isinstance(tokenizer, str):
        if not osp.isdir(tokenizer):
            raise FileNotFoundError(f'tokenizer folder {tokenizer!r} does not exist.')
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if isinstance(text_encoder, str):
        if not osp.isdir(text_encoder):
            raise FileNotFoundError(f'text_encoder folder {text_encoder!r} does not exist.')
        # A whole CLIPModel folder may stand in: its vision tower and projection heads
        # are left out on purpose, the text tower must load in full.
        text_encoder = from_pretrained_strictly(
            CLIPTextModel, text_encoder, 'text_encoder',
            allow_unexpected=lambda key: not key.startswith('text_model.'))
    elif isinstance(text_encoder, dict):
        text_encoder = MODELS.build(text_encoder)
    return tokenizer, frozen(text_encoder)
