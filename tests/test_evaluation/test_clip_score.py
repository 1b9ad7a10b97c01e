"""CLIPScore on a tiny random CLIP (``tiny_clip``, tests/conftest.py)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmagic.evaluation import Evaluator
from mmagic.registry import METRICS, MODELS
from mmagic.structures import DataSample
from torch.utils.data import DataLoader

import mmdiff_2ndm  # noqa: F401  (registers CLIPScore and DiffusionDistiller)
from mmdiff_2ndm.evaluation.metrics.clip_score import CLIP_MEAN, CLIP_STD, clip_pixels, clip_scores

PROMPTS = ('a red cat', 'a blue dog', 'green tree')
SIZE = 32  # the tiny CLIP's image size: no resize, so pixels are known in closed form


pytestmark = pytest.mark.usefixtures('single_thread')  # tests/conftest.py


def _images(num: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(num, 3, size, size, generator=gen) * 255


def _expected(clip_dir: str, bgr_images: torch.Tensor, prompts) -> torch.Tensor:
    """100 * max(cos, 0) straight from CLIPModel on hand-preprocessed inputs."""
    from transformers import CLIPModel, CLIPTokenizer
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    rgb = bgr_images.flip(1) / 255.0
    pixels = (rgb - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(
        1, 3, 1, 1)
    tokens = tokenizer(list(prompts), padding=True, truncation=True, return_tensors='pt')
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=tokens.input_ids,
                                       attention_mask=tokens.attention_mask)
    cosine = (image / image.norm(dim=-1, keepdim=True) * text /
              text.norm(dim=-1, keepdim=True)).sum(-1)
    return 100 * cosine.clamp(min=0)


def test_closed_form(tiny_clip):
    images, prompts = _images(3), list(PROMPTS)
    metric = METRICS.build(dict(type='CLIPScore', fake_nums=3, clip_path=tiny_clip))
    expected = _expected(tiny_clip, images, prompts)
    torch.testing.assert_close(metric.score(images, prompts), expected, atol=1e-4, rtol=1e-5)
    # Through process/compute_metrics: per-sample results, their mean
    metric.process(None, [dict(fake_img=i, prompt=p) for i, p in zip(images[:2], prompts)])
    metric.process(None, [DataSample(fake_img=images[2], prompt=prompts[2])])
    assert len(metric.fake_results) == 3
    score = metric.compute_metrics(metric.fake_results)['score']
    assert score == pytest.approx(expected.mean().item(), abs=1e-4)


def test_score_is_clamped_cosine_times_100():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    text = torch.tensor([[-1.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    torch.testing.assert_close(clip_scores(image, text),
                               torch.tensor([0.0, 100 / math.sqrt(2), 100.0]))


def test_rgb_order_and_fake_nums(tiny_clip):
    images = _images(3)
    rgb = METRICS.build(dict(type='CLIPScore', fake_nums=2, clip_path=tiny_clip,
                             img_channel_order='RGB'))
    torch.testing.assert_close(rgb.score(images.flip(1), list(PROMPTS)),
                               _expected(tiny_clip, images, PROMPTS), atol=1e-4, rtol=1e-5)
    rgb.process(None, [dict(fake_img=i, prompt=p) for i, p in zip(images, PROMPTS)])
    assert len(rgb.fake_results) == 2  # stops at fake_nums (per device)


def test_resize_and_crop_match_clip_image_processor():
    """Non-square images of other sizes: as CLIPImageProcessor, up to its uint8 rounding."""
    from transformers import CLIPImageProcessor
    processor = CLIPImageProcessor(size={'shortest_edge': SIZE},
                                   crop_size={'height': SIZE, 'width': SIZE})
    gen = torch.Generator().manual_seed(0)
    for height, width in ((40, 48), (48, 40), (12, 12)):
        smooth = torch.rand(1, 3, 4, 4, generator=gen) * 255
        image = F.interpolate(smooth, size=(height, width), mode='bilinear').round()
        reference = processor(images=[image[0].permute(1, 2, 0).numpy().astype(np.uint8)],
                              return_tensors='pt')['pixel_values']
        ours = clip_pixels(image, SIZE)
        assert ours.shape == reference.shape == (1, 3, SIZE, SIZE)
        torch.testing.assert_close(ours, reference, atol=0.03, rtol=0)  # ~2 uint8 levels


def _text_to_image_distiller(tiny_clip: str, tmp_path) -> torch.nn.Module:
    """A pixel-space text-conditioned distiller whose samples are CLIP-sized (32 px)."""
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    unet = str(tmp_path / 'unet')
    UNet2DConditionModel(
        sample_size=SIZE, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=2, down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D')).save_pretrained(unet)
    # The tiny CLIP folder doubles as the SD-style text encoder + tokenizer (as in SD 1.x).
    return MODELS.build(dict(
        type='DiffusionDistiller', teacher=dict(type='UNet2DConditionModel', from_pretrained=unet),
        text_encoder=tiny_clip, tokenizer=tiny_clip,
        noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
        sample_prompts=list(PROMPTS), num_inference_steps=2,
        losses=dict(dsm=dict(loss_weight=1.0)), ema=None))


def test_evaluator_on_distiller_samples(tiny_clip, tmp_path):
    """MMagic's generative evaluation: shared sampler -> val_step -> Evaluator -> score."""
    model = _text_to_image_distiller(tiny_clip, tmp_path)
    evaluator = Evaluator(metrics=[METRICS.build(dict(
        type='CLIPScore', fake_nums=3, clip_path=tiny_clip, sample_model='orig', prefix='CLIP'))])
    loader = DataLoader(list(range(4)), batch_size=2)  # only its batch size is used
    evaluator.prepare_metrics(model, loader)
    outputs = []
    for metrics, sampler in evaluator.prepare_samplers(model, loader):
        for data in sampler:
            samples = model.val_step(data)
            outputs += samples
            evaluator.process(samples, data, metrics)
    results = evaluator.evaluate()
    given = model.val_step(dict(inputs=dict(num_batches=2, sample_kwargs=dict(prompt='a dog'))))
    assert [s.prompt for s in given] == ['a dog', 'a dog']  # an explicit prompt is recorded

    # The distiller records the prompt each sample was drawn from (cycling sample_prompts).
    assert [s.prompt for s in outputs] == [PROMPTS[i % 3] for i in range(len(outputs))]
    assert outputs[0].fake_img.shape == (3, SIZE, SIZE)
    images = torch.stack([s.fake_img for s in outputs[:3]])
    expected = _expected(tiny_clip, images, [s.prompt for s in outputs[:3]])
    assert results['CLIP/score'] == pytest.approx(expected.mean().item(), abs=1e-4)


def test_missing_clip_path_names_key_and_fix(tmp_path):
    for path in (str(tmp_path / 'nowhere'), str(tmp_path), None):
        with pytest.raises(FileNotFoundError,
                           match=r'`clip_path`.*huggingface-cli download openai/clip-vit'):
            METRICS.build(dict(type='CLIPScore', fake_nums=2, clip_path=path))


def test_missing_prompt_is_explained(tiny_clip):
    metric = METRICS.build(dict(type='CLIPScore', fake_nums=2, clip_path=tiny_clip))
    with pytest.raises(KeyError, match='prompt'):
        metric.process(None, [dict(fake_img=_images(1)[0])])
