"""CLIP score: image-text agreement of text-to-image samples (MMagic 1.2 has none)."""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmagic.evaluation.metrics.base_gen_metric import GenerativeMetric
from mmagic.registry import METRICS
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ...utils.state_dict import from_pretrained_strictly

# CLIP's input normalisation (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD), RGB.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_HUB_ID = 'openai/clip-vit-large-patch14'


@METRICS.register_module()
class CLIPScore(GenerativeMetric):
    """CLIP score of generated images against the prompts they were sampled from.

    ``100 * max(cos(E_I, E_T), 0)`` per (image, prompt) pair, averaged over ``fake_nums``
    samples: Hessel et al. 2021 ("CLIPScore") with torchmetrics' weight of 100 instead of
    2.5. torchmetrics clamps the *mean* at 0 rather than each pair; the two agree whenever
    every cosine is positive (the usual case for a trained CLIP on real samples).

    The metric reads ``fake_img`` ((3, H, W) in [0, 255]) and ``prompt`` (str) of each
    model output; ``DiffusionDistiller`` stores the prompt it sampled from (its
    ``sample_prompts``, or ``prompt`` of the data samples / ``sample_kwargs``). Images are
    resized (bicubic, antialiased) so the short side is the CLIP model's image size,
    center-cropped, and normalised with CLIP's mean/std on the images' device, as
    ``CLIPImageProcessor`` does (up to its uint8 rounding). Prompts are truncated to the
    text encoder's context length. The metric samples in MMagic's 'Generative' group:
    with an FID metric of the same ``sample_model`` both score the same images.

    Per-sample scores are kept in ``fake_results`` as (1,) tensors, so MMagic's
    ``GenMetric`` gathers them from every rank (``fake_nums`` in all) under DDP.

    Args:
        fake_nums (int): Number of generated images to score.
        clip_path (str): Local folder of a ``transformers`` CLIP model with its tokenizer
            (``config.json``, weights, ``vocab.json``, ``merges.txt``), e.g. a download of
            hub id openai/clip-vit-large-patch14. Never downloaded.
        sample_model (str): Model to sample, 'ema' or 'orig'. Defaults to 'ema'.
        sample_kwargs (dict, optional): Further sampling arguments (e.g.
            ``num_inference_steps``). Defaults to None.
        img_channel_order (str): Channel order of ``fake_img``: 'BGR' (MMagic's
            convention for model outputs; its FID flips them too) or 'RGB'. Defaults to
            'BGR'.
        collect_device (str): Defaults to 'cpu'.
        prefix (str, optional): Defaults to 'CLIP'.
    """
    name = 'CLIPScore'

    def __init__(self,
                 fake_nums: int,
                 clip_path: str,
                 sample_model: str = 'ema',
                 sample_kwargs: Optional[dict] = None,
                 img_channel_order: str = 'BGR',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = 'CLIP') -> None:
        super().__init__(fake_nums, real_nums=0, fake_key=None, real_key=None,
                         need_cond_input=False, sample_model=sample_model,
                         collect_device=collect_device, prefix=prefix,
                         sample_kwargs=dict(sample_kwargs or {}))
        if img_channel_order.upper() not in ('BGR', 'RGB'):
            raise ValueError("CLIPScore: img_channel_order must be 'BGR' or 'RGB', got "
                             f'{img_channel_order!r}.')
        self.clip_path = check_clip_path(clip_path)
        self.img_channel_order = img_channel_order.upper()
        self.clip_model: Optional[nn.Module] = None
        self.tokenizer = None

    def prepare(self, module: nn.Module, dataloader: DataLoader) -> None:
        """Loads CLIP onto the evaluated model's device (once)."""
        super().prepare(module, dataloader)
        self._load_clip(self.data_preprocessor.device)

    def process(self, data_batch: Optional[dict], data_samples: Sequence[dict]) -> None:
        """Scores the batch's (image, prompt) pairs into ``fake_results``.

        Args:
            data_batch (dict, optional): The sampler's inputs (unused).
            data_samples (Sequence[dict]): Model outputs (``DataSample`` or its dict)
                with ``fake_img`` and ``prompt``.
        """
        remaining = self.fake_nums_per_device - len(self.fake_results)
        samples = list(data_samples)[:max(remaining, 0)]
        if not samples:
            return
        images, prompts = zip(*(self._image_and_prompt(s) for s in samples))
        scores = self.score(torch.stack(images), list(prompts))  # one batched CLIP pass
        self.fake_results.extend(scores.double().cpu().split(1))

    def compute_metrics(self, fake_results: list) -> dict:
        """Mean CLIP score over the gathered samples: ``{'score': float}``."""
        return dict(score=torch.cat(list(fake_results)).mean().item())

    @torch.no_grad()
    def score(self, images: Tensor, prompts: List[str]) -> Tensor:
        """Per-pair CLIP scores (B,) of images (B, 3, H, W) in [0, 255] and prompts.

        Args:
            images (Tensor): Images in [0, 255], channel order ``img_channel_order``.
            prompts (list[str]): One prompt per image.

        Returns:
            Tensor: ``100 * max(cos(image_embed, text_embed), 0)`` per pair.
        """
        if len(prompts) != images.shape[0]:
            raise ValueError(f'CLIPScore got {images.shape[0]} images but {len(prompts)} '
                             'prompts.')
        model = self._load_clip(images.device)
        pixels = self.preprocess(images)
        text = self.tokenize(prompts, images.device)
        image_embeds = model.get_image_features(pixel_values=pixels)
        text_embeds = model.get_text_features(**text)
        return clip_scores(image_embeds, text_embeds)

    def preprocess(self, images: Tensor) -> Tensor:
        """CLIP pixel values (B, 3, S, S) of images (B, 3, H, W) in [0, 255]."""
        if self.img_channel_order == 'BGR':
            images = images.flip(1)
        size = self.clip_model.config.vision_config.image_size
        return clip_pixels(images, size)

    def tokenize(self, prompts: List[str], device) -> dict:
        """``input_ids`` / ``attention_mask`` of the prompts, truncated to CLIP's context."""
        max_length = min(self.tokenizer.model_max_length,
                         self.clip_model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(prompts, padding=True, truncation=True,
                                max_length=max_length, return_tensors='pt')
        return dict(input_ids=tokens.input_ids.to(device),
                    attention_mask=tokens.attention_mask.to(device))

    def _load_clip(self, device) -> nn.Module:
        """The frozen CLIP model on ``device``, loaded from ``clip_path`` on first use."""
        if self.clip_model is None:
            self.clip_model, self.tokenizer = load_clip(self.clip_path)
        if _device_of(self.clip_model) != torch.device(device):
            self.clip_model.to(device)
        return self.clip_model

    def _image_and_prompt(self, sample) -> Tuple[Tensor, str]:
        """``fake_img`` (3, H, W) and ``prompt`` of one model output."""
        image = sample.get('fake_img')
        prompt = sample.get('prompt')
        if image is None or not isinstance(prompt, str):
            raise KeyError(
                'CLIPScore needs `fake_img` and a str `prompt` in every model output, got '
                f'keys {sorted(sample.keys())} (prompt={prompt!r}); DiffusionDistiller '
                'sets `prompt` when it samples with a text encoder.')
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f'CLIPScore expects fake_img of shape (3, H, W) or (1, H, W), '
                             f'got {tuple(image.shape)}.')
        return image.float().expand(3, -1, -1), prompt


def check_clip_path(clip_path: Optional[str]) -> str:
    """Returns ``clip_path`` if it is a local CLIP folder, else raises a clear error.

    Raises:
        FileNotFoundError: No folder, or no ``config.json`` in it.
    """
    if not clip_path or not osp.isfile(osp.join(clip_path, 'config.json')):
        raise FileNotFoundError(
            f'CLIPScore: `clip_path` {clip_path!r} is not a local CLIP model folder (it '
            'needs config.json, the weights and the tokenizer files). Download one once, '
            f'e.g. `huggingface-cli download {CLIP_HUB_ID} --local-dir {clip_path or "<dir>"}`'
            ', or point `clip_path` at your copy (configs/2ndm_mscoco_sd.py: the top-level '
            '`clip_path`, or --cfg-options on the metric\'s `clip_path`). Nothing is '
            'downloaded.')
    return clip_path


def load_clip(clip_path: str) -> Tuple[nn.Module, object]:
    """Frozen ``CLIPModel`` (eval mode) and ``CLIPTokenizer`` from a local folder."""
    from transformers import CLIPModel, CLIPTokenizer
    path = check_clip_path(clip_path)
    model = from_pretrained_strictly(CLIPModel, path, 'clip_path', local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval().requires_grad_(False), tokenizer


def clip_pixels(images: Tensor, size: int) -> Tensor:
    """Resize-short-side, center-crop and normalise RGB images in [0, 255] for CLIP.

    Args:
        images (Tensor): (B, 3, H, W) RGB in [0, 255].
        size (int): CLIP's input side (``vision_config.image_size``).

    Returns:
        Tensor: (B, 3, size, size) float pixel values.
    """
    images = images.float().clamp(0, 255) / 255.0
    height, width = images.shape[-2:]
    if min(height, width) != size:
        scale = size / min(height, width)
        new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
        images = F.interpolate(images, size=new_size, mode='bicubic', align_corners=False,
                               antialias=True).clamp(0, 1)
        height, width = new_size
    top, left = (height - size) // 2, (width - size) // 2
    images = images[..., top:top + size, left:left + size]
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def clip_scores(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """``100 * max(cos, 0)`` of paired embeddings (B, D), (B, D) -> (B,)."""
    cosine = F.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)
    return 100.0 * cosine.clamp(min=0)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
