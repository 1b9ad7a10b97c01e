"""tools/sample.py and tools/export.py on a tiny pruned run: PNGs that resume to the same
bytes, and an exported student whose diffusers pipelines sample what the distiller samples."""
import hashlib
import importlib.util
import json
import os
import os.path as osp
from pathlib import Path
from typing import Dict, List, Tuple

import mmcv
import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, UNet2DModel

import mmdiff_2ndm
from mmdiff_2ndm.apis import export_student, index_noise, init_distiller, sample_to_folder
from mmdiff_2ndm.models.denoisers import unwrap_denoiser
from mmdiff_2ndm.pruning import parameter_shapes, prune_denoiser

from helpers.denoisers import save_tiny_latent_dit

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STEPS = 3
CONFIG = """
default_scope = 'mmagic'
custom_imports = dict(imports=['mmdiff_2ndm'], allow_failed_imports=False)
model = dict(
    type='DiffusionDistiller',
    teacher=dict(type={teacher_type!r}, from_pretrained={teacher!r}),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
    num_inference_steps={steps},
    data_preprocessor=dict(type='DataPreprocessor'),
    {extra})
"""


def _save_pruned_run(model, root: Path) -> Tuple[str, dict]:
    """Prunes the student by half (magnitude), moves its weights off the teacher's and saves
    a checkpoint as a finished run would; returns (checkpoint path, pruning record)."""
    _, record = prune_denoiser(model.student, 0.5, 'magnitude', with_macs=False)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = str(root / 'iter_2.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(pruning=record)), ckpt)
    return ckpt, record


def _write_config(path: str, teacher_type: str, teacher: str, steps: int, extra: str) -> str:
    """A distiller config with a local diffusers teacher and ``extra`` model keywords."""
    with open(path, 'w') as f:
        f.write(CONFIG.format(teacher_type=teacher_type, teacher=teacher, steps=steps,
                              extra=extra))
    return path


pytestmark = pytest.mark.usefixtures('single_thread')


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f'tool_{name}', osp.join(REPO, 'tools',
                                                                           f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> dict:
    """A config and a checkpoint as a pruned run writes them (record in meta['pruning']),
    with student, EMA and teacher all different."""
    root = tmp_path_factory.mktemp('run')
    torch.manual_seed(0)
    UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                block_out_channels=(8, 16), norm_num_groups=4,
                down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
                up_block_types=('AttnUpBlock2D', 'UpBlock2D'),
                attention_head_dim=4).save_pretrained(str(root / 'teacher'))
    config = _write_config(str(root / 'config.py'), 'UNet2DModel', str(root / 'teacher'), STEPS,
                           "ema=dict(type='WarmupExponentialMovingAverage', momentum=0.5)")
    model, _ = init_distiller(config)
    _, record = prune_denoiser(model.student, 0.5, 'magnitude', with_macs=False)
    model.build_student_ema()
    with torch.no_grad():
        for scale, net in ((0.05, model.student), (0.1, model.student_ema.module)):
            for p in net.parameters():
                p.add_(torch.randn_like(p) * scale)
    ckpt = str(root / 'iter_2.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(pruning=record)), ckpt)
    return dict(config=config, ckpt=ckpt, model=model, record=record)


def _digest(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_init_distiller_rebuilds_the_pruned_run(run):
    model, record = init_distiller(run['config'], run['ckpt'])
    assert record == run['record']
    for name, value in run['model'].state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert parameter_shapes(model.student_ema.module) == parameter_shapes(model.student)


def test_sample_tool_writes_resumable_pngs(run, tmp_path, capsys):
    out = str(tmp_path / 'samples')
    args = [run['config'], run['ckpt'], '--num', '5', '--out', out, '--model', 'orig',
            '--batch-size', '2', '--steps', '2']
    paths = _tool('sample').main(args)
    assert [osp.basename(p) for p in paths] == [f'{i:06d}.png' for i in range(5)]
    assert 'sampling orig' in capsys.readouterr().err  # the progress bar
    grid = mmcv.imread(osp.join(out, 'grid.png'))
    assert grid.shape == (2 + 2 * 18, 2 + 3 * 18, 3)  # 5 images, 3 per row, 16 px + 2 pad
    with open(osp.join(out, 'samples.json')) as f:
        assert sorted(json.load(f)['images']) == [osp.basename(p) for p in paths]

    # image 3 is the orig student's sample from its own noise (BGR on disk)
    model = run['model']
    noise = index_noise(3, (3, 16, 16))[None]
    expected = model.generate(dict(noise=noise, sample_model='orig',
                                   sample_kwargs=dict(num_inference_steps=2)))[0].fake_img
    written = torch.from_numpy(mmcv.imread(paths[3])).permute(2, 0, 1).int()
    assert (written - expected.round().int()).abs().max() <= 1

    digests = [_digest(p) for p in paths]
    os.remove(paths[1])
    os.remove(paths[4])
    mtime = os.stat(paths[0]).st_mtime_ns
    _tool('sample').main(args)
    assert [_digest(p) for p in paths] == digests  # resumed: the same bytes
    assert os.stat(paths[0]).st_mtime_ns == mtime  # existing files left alone

    teacher = _tool('sample').main([run['config'], run['ckpt'], '--num', '1', '--out',
                                    str(tmp_path / 'teacher'), '--model', 'teacher',
                                    '--steps', '2'])
    assert _digest(teacher[0]) != digests[0]


def test_sample_tool_rejects_labels_for_unconditional_models(run, tmp_path):
    with pytest.raises(ValueError, match='unconditional'):
        _tool('sample').main([run['config'], run['ckpt'], '--num', '1', '--out',
                              str(tmp_path), '--labels', '1'])


@pytest.mark.parametrize('pipeline_cls', [DDIMPipeline, DDPMPipeline])
def test_exported_student_samples_like_the_distiller(run, tmp_path, pipeline_cls):
    out = str(tmp_path / 'student')
    _tool('export').main([run['config'], run['ckpt'], out])
    assert sorted(os.listdir(out)) == ['mmdiff_2ndm.json', 'scheduler', 'unet']
    assert sorted(os.listdir(osp.join(out, 'unet'))) == [
        'config.json', 'diffusion_pytorch_model.safetensors', 'pruning_record.json']
    with open(osp.join(out, 'unet', 'config.json')) as f:
        assert json.load(f)['block_out_channels'] == [8, 16]  # the dense config

    unet = mmdiff_2ndm.load_student(out)
    model = run['model']
    ema = unwrap_denoiser(model.student_ema.module)
    assert parameter_shapes(unet) == parameter_shapes(ema) == run['record']['shapes']
    for name, value in ema.state_dict().items():
        assert torch.equal(unet.state_dict()[name], value), name

    scheduler = DDIMScheduler.from_pretrained(out, subfolder='scheduler')
    pipe = pipeline_cls(unet=unet, scheduler=scheduler)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(7),
                  num_inference_steps=STEPS, output_type='np').images
    # the same noise as the pipeline drew, through the distiller's own sampling
    noise = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(7))
    expected = (model.sample(ema, noise, num_inference_steps=STEPS) / 2 + 0.5).clamp(0, 1)
    np.testing.assert_allclose(images, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    # and not the raw student's
    raw = (model.sample(model.student, noise, num_inference_steps=STEPS) / 2 + 0.5).clamp(0, 1)
    assert np.abs(images - raw.permute(0, 2, 3, 1).numpy()).max() > 1e-3


def test_export_of_the_raw_student(run, tmp_path):
    out = _tool('export').main([run['config'], run['ckpt'], str(tmp_path), '--model', 'orig'])
    unet = mmdiff_2ndm.load_student(osp.join(out, 'unet'))  # the subfolder loads too
    for name, value in run['model'].student.model.state_dict().items():
        assert torch.equal(unet.state_dict()[name], value), name
    with open(osp.join(out, 'mmdiff_2ndm.json')) as f:
        manifest = json.load(f)
    assert manifest['sample_model'] == 'orig' and manifest['pruned']


def _manifest(folder: str) -> dict:
    with open(osp.join(folder, 'mmdiff_2ndm.json')) as f:
        return json.load(f)


def test_export_manifest_records_every_field(run, tmp_path):
    out = _tool('export').main([run['config'], run['ckpt'], str(tmp_path)])
    assert _manifest(out) == dict(
        format='mmdiff_2ndm.student/v1', sample_model='ema', subfolder='unet',
        family='UNet2DModel', pruned=True, num_inference_steps=STEPS, guidance_scale=1.0,
        num_classes=None, source=dict(config=osp.abspath(run['config']),
                                      checkpoint=osp.abspath(run['ckpt'])))


def test_sampling_defaults_are_read_only_distiller_properties(run):
    model = run['model']
    assert (model.num_inference_steps, model.guidance_scale, model.sample_prompts) == (
        STEPS, 1.0, None)
    for name in ('num_inference_steps', 'guidance_scale', 'sample_prompts', 'num_classes'):
        with pytest.raises(AttributeError):
            setattr(model, name, 1)


def _images(paths: List[str]) -> np.ndarray:
    """The PNGs at ``paths`` as one int array (N, H, W, C)."""
    return np.stack([mmcv.imread(p, flag='unchanged') for p in paths]).astype(int)


def _generated(model, index: int, seed: int = 0, **sample_kwargs) -> np.ndarray:
    """What ``sample_to_folder`` writes for image ``index``: the orig student's sample from
    ``index_noise(index, seed)`` (H, W, C) in [0, 255], BGR as on disk."""
    shape = model.noise_fn(num_batches=1).shape[1:]
    image = model.generate(dict(noise=index_noise(index, shape, seed)[None],
                                sample_model='orig', sample_kwargs=sample_kwargs))[0]
    return image.fake_img.round().permute(1, 2, 0).numpy().astype(int)


def test_sample_to_folder_batch_size_changes_the_calls_not_the_images(run, tmp_path,
                                                                      monkeypatch):
    model = run['model']
    calls: List[int] = []
    generate = model.generate
    monkeypatch.setattr(model, 'generate',
                        lambda inputs: calls.append(len(inputs['noise'])) or generate(inputs))
    images: Dict[int, np.ndarray] = {}
    batches: Dict[int, List[int]] = {}
    for batch_size in (1, 2):
        calls.clear()
        images[batch_size] = _images(sample_to_folder(
            model, str(tmp_path / str(batch_size)), 3, sample_model='orig',
            batch_size=batch_size, num_inference_steps=2, progress=False))
        batches[batch_size] = list(calls)
    assert batches == {1: [1, 1, 1], 2: [2, 1]}
    assert np.abs(images[1] - images[2]).max() <= 1  # float noise of batched kernels


def test_sample_to_folder_seed_draws_the_noise(run, tmp_path, capsys):
    """The seed picks every image's noise (``index_noise(i, seed)``) and is recorded; the
    same seed writes the same bytes; ``progress=False`` draws no bar."""
    model = run['model']
    folders = {}
    for name, seed in (('a', 5), ('again', 5), ('default', 0)):
        folders[name] = sample_to_folder(model, str(tmp_path / name), 2, sample_model='orig',
                                         seed=seed, num_inference_steps=2, progress=False)
    assert capsys.readouterr().err == ''
    assert [_digest(p) for p in folders['a']] == [_digest(p) for p in folders['again']]
    seeded, default = _images(folders['a']), _images(folders['default'])
    assert np.abs(seeded - default).max() > 1
    assert np.abs(seeded[1] - _generated(model, 1, seed=5, num_inference_steps=2)).max() <= 1
    with open(osp.join(str(tmp_path / 'a'), 'samples.json')) as f:
        assert json.load(f)['seed'] == 5


def test_sample_to_folder_grid_size_caps_the_grid(run, tmp_path):
    out = str(tmp_path / 'samples')
    paths = sample_to_folder(run['model'], out, 3, sample_model='orig', grid_size=2,
                             num_inference_steps=2, progress=False)
    grid = mmcv.imread(osp.join(out, 'grid.png'))
    assert grid.shape == (2 + 18, 2 + 2 * 18, 3)  # the first 2 images in a row, 2 px pads
    first, second = _images(paths[:2])
    assert np.array_equal(grid[2:18, 2:18], first)
    assert np.array_equal(grid[2:18, 20:36], second)


def test_export_student_progress(run, tmp_path, capsys):
    export_student(run['model'], str(tmp_path / 'quiet'), run['record'], progress=False)
    assert capsys.readouterr().err == ''
    export_student(run['model'], str(tmp_path / 'shown'), run['record'])
    assert 'export: 100%' in capsys.readouterr().err


# ------------------------------------------------------------------ class-conditional DiT


@pytest.fixture(scope='module')
def dit_run(tmp_path_factory) -> dict:
    """A pruned latent DiT run (3 classes, tiny VAE) as config + checkpoint."""
    root = tmp_path_factory.mktemp('dit_run')
    dit_folder, vae_folder = save_tiny_latent_dit(root, num_layers=1, head_dim=8)
    vae = f"vae=dict(type='AutoencoderKL', from_pretrained={vae_folder!r})"
    config = _write_config(str(root / 'config.py'), 'DiTTransformer2DModel', dit_folder, 2, vae)
    model, _ = init_distiller(config)
    ckpt, _ = _save_pruned_run(model, root)
    return dict(config=config, ckpt=ckpt, model=model)


def test_sample_tool_cycles_class_labels(dit_run, tmp_path):
    out = str(tmp_path / 'samples')
    paths = _tool('sample').main([dit_run['config'], dit_run['ckpt'], '--num', '3', '--out',
                                  out, '--labels', '2', '0', '--batch-size', '3'])
    with open(osp.join(out, 'samples.json')) as f:
        images = json.load(f)['images']
    assert [images[osp.basename(p)]['label'] for p in paths] == [2, 0, 2]
    model = dit_run['model']
    noise = index_noise(1, (4, 4, 4))[None]
    expected = model.generate(dict(noise=noise, sample_model='orig',
                                   sample_kwargs=dict(labels=[0])))[0].fake_img
    written = torch.from_numpy(mmcv.imread(paths[1])).permute(2, 0, 1).int()
    assert (written - expected.round().int()).abs().max() <= 1
    other = model.generate(dict(noise=noise, sample_model='orig',
                                sample_kwargs=dict(labels=[2])))[0].fake_img
    assert (written - other.round().int()).abs().max() > 1  # the label mattered


def test_sample_to_folder_guidance_scale(dit_run, tmp_path):
    """The guidance scale reaches the sampling: image 1 (label 1) is the distiller's guided
    sample, not its unguided one (the config's scale, 1)."""
    model = dit_run['model']
    paths = sample_to_folder(model, str(tmp_path), 2, sample_model='orig', guidance_scale=4.0,
                             progress=False)
    written = _images(paths)[1]
    assert np.abs(written - _generated(model, 1, labels=[1], guidance_scale=4.0)).max() <= 1
    assert np.abs(written - _generated(model, 1, labels=[1])).max() > 1


def test_exported_dit_samples_like_the_distiller_in_dit_pipeline(dit_run, tmp_path):
    from diffusers import AutoencoderKL, DiTPipeline
    out = _tool('export').main([dit_run['config'], dit_run['ckpt'], str(tmp_path)])
    assert sorted(os.listdir(out)) == ['mmdiff_2ndm.json', 'scheduler', 'transformer', 'vae']
    pipe = DiTPipeline(transformer=mmdiff_2ndm.load_student(out),
                       vae=AutoencoderKL.from_pretrained(out, subfolder='vae'),
                       scheduler=DDIMScheduler.from_pretrained(out, subfolder='scheduler'))
    labels = [2, 0]
    images = pipe(class_labels=labels, guidance_scale=1.0, num_inference_steps=2,
                  generator=torch.Generator().manual_seed(3), output_type='np').images
    model = dit_run['model']
    noise = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(3))
    expected = model.sample(model.student, noise, torch.tensor(labels), num_inference_steps=2)
    expected = (expected / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-5)


def test_export_manifest_of_a_guided_class_conditional_student(dit_run, tmp_path):
    out = _tool('export').main([dit_run['config'], dit_run['ckpt'], str(tmp_path), '--model',
                                'orig', '--cfg-options', 'model.num_inference_steps=7',
                                'model.guidance_scale=2.5', 'model.num_classes=2'])
    assert _manifest(out) == dict(  # num_classes given, not the DiT's 3
        format='mmdiff_2ndm.student/v1', sample_model='orig', subfolder='transformer',
        family='DiTTransformer2DModel', pruned=True, num_inference_steps=7,
        guidance_scale=2.5, num_classes=2,
        source=dict(config=osp.abspath(dit_run['config']),
                    checkpoint=osp.abspath(dit_run['ckpt'])))


# ------------------------------------------------------- text-conditional Stable Diffusion

# Stable Diffusion's DDIM convention, which StableDiffusionPipeline.__init__ imposes on any
# scheduler it is given (steps_offset=1, clip_sample=False).
SD_DDIM = ("test_scheduler=dict(type='DDIMScheduler', num_train_timesteps=100, "
           "clip_sample=False, steps_offset=1, set_alpha_to_one=False)")


@pytest.fixture(scope='module')
def sd_run(tmp_path_factory) -> dict:
    """A pruned text-conditional latent UNet run (tiny CLIP text encoder, tiny VAE): one
    checkpoint, two configs: the default test scheduler (DDIM from the DDPM config:
    steps_offset 0, clip_sample True, as configs/2ndm_mscoco_sd.py) and SD's DDIM."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from helpers.clip import save_clip_tokenizer
    root = tmp_path_factory.mktemp('sd_run')
    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, layers_per_block=1,
                         block_out_channels=(8, 16), norm_num_groups=4,
                         cross_attention_dim=16, attention_head_dim=2,
                         down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                         up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D')
                         ).save_pretrained(str(root / 'unet'))
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                  layers_per_block=1, norm_num_groups=4,
                  down_block_types=('DownEncoderBlock2D',) * 2,
                  up_block_types=('UpDecoderBlock2D',) * 2,
                  sample_size=8).save_pretrained(str(root / 'vae'))
    (root / 'tokenizer').mkdir()
    vocab_size = save_clip_tokenizer(str(root / 'tokenizer'))
    CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
        pad_token_id=1)).save_pretrained(str(root / 'text_encoder'))
    extra = (f"vae=dict(type='AutoencoderKL', from_pretrained={str(root / 'vae')!r}), "
             f"text_encoder={str(root / 'text_encoder')!r}, "
             f"tokenizer={str(root / 'tokenizer')!r}, guidance_scale=3.0, "
             "sample_prompts=['a red cat']")
    configs = {name: _write_config(str(root / f'{name}.py'), 'UNet2DConditionModel',
                                   str(root / 'unet'), STEPS, extra + more)
               for name, more in (('default', ''), ('sd_ddim', ', ' + SD_DDIM))}
    model, _ = init_distiller(configs['sd_ddim'])
    ckpt, record = _save_pruned_run(model, root)
    return dict(configs=configs, ckpt=ckpt, model=model, record=record)


PROMPTS = ['a red cat', 'a blue dog on a tree']


def _sd_latents() -> torch.Tensor:
    """The initial latents (2, 4, 4, 4) of both samplers."""
    return torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(5))


def _distiller_sd_images(model, scale: float) -> np.ndarray:
    """The distiller's samples (B, H, W, 3) in [0, 1] for PROMPTS from ``_sd_latents``."""
    encode = model.conditioner.encode_prompts
    expected = model.sample(model.student, _sd_latents(), encode(PROMPTS, 'cpu'),
                            encode([''] * len(PROMPTS), 'cpu'),
                            num_inference_steps=STEPS, guidance_scale=scale)
    return (expected / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _public(config) -> dict:
    """A diffusers config without its ``_``-prefixed bookkeeping keys."""
    return {k: v for k, v in config.items() if not k.startswith('_')}


def _sd_pipeline_images(pipe, scale: float) -> np.ndarray:
    """The pipeline's samples (B, H, W, 3) in [0, 1] for PROMPTS from ``_sd_latents``."""
    return pipe(PROMPTS, latents=_sd_latents(), num_inference_steps=STEPS,
                guidance_scale=scale, output_type='np').images


def test_exported_sd_student_samples_like_the_distiller_in_sd_pipeline(sd_run, tmp_path):
    """StableDiffusionPipeline.from_pretrained(export, unet=load_student(export)) draws the
    distiller's samples: same prompts, latents, DDIM steps and guidance.

    Both guide as ``uncond + s * (cond - uncond)`` with the empty prompt (padded to the
    tokenizer's length) as the null condition, but the pipeline guides only for s > 1
    while the distiller guides for any s != 1: they agree for s >= 1 (tested at 1 and 3).
    """
    from diffusers import StableDiffusionPipeline
    out = _tool('export').main([sd_run['configs']['sd_ddim'], sd_run['ckpt'], str(tmp_path)])
    assert sorted(os.listdir(out)) == ['mmdiff_2ndm.json', 'model_index.json', 'scheduler',
                                       'text_encoder', 'tokenizer', 'unet', 'vae']
    with open(osp.join(out, 'model_index.json')) as f:
        index = json.load(f)
    assert index['_class_name'] == 'StableDiffusionPipeline'
    assert index['unet'] == ['diffusers', 'UNet2DConditionModel']
    assert index['scheduler'] == ['diffusers', 'DDIMScheduler']
    assert index['safety_checker'] == index['feature_extractor'] == [None, None]

    model = sd_run['model']
    unet = mmdiff_2ndm.load_student(out)
    student = unwrap_denoiser(model.student)
    assert parameter_shapes(unet) == parameter_shapes(student) == sd_run['record']['shapes']
    for name, value in student.state_dict().items():
        assert torch.equal(unet.state_dict()[name], value), name
    pipe = StableDiffusionPipeline.from_pretrained(out, unet=unet, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    assert _public(pipe.scheduler.config) == _public(model.test_scheduler.config)
    assert pipe.vae.config.scaling_factor == model.vae.config.scaling_factor

    samples = {}
    for scale in (1.0, 3.0):
        samples[scale] = _sd_pipeline_images(pipe, scale)
        np.testing.assert_allclose(samples[scale], _distiller_sd_images(model, scale),
                                   atol=1e-5)
    assert np.abs(samples[3.0] - samples[1.0]).max() > 1e-3  # guidance mattered

    # the distiller's own sampling entry point, with the config's guidance scale (3)
    generated = model.generate(dict(noise=_sd_latents(), sample_model='orig',
                                    sample_kwargs=dict(prompt=PROMPTS,
                                                       num_inference_steps=STEPS)))
    for image, sample, prompt in zip(samples[3.0], generated, PROMPTS):
        assert sample.prompt == prompt
        fake = sample.fake_img.permute(1, 2, 0).numpy() / 255  # RGB: no channel flip here
        np.testing.assert_allclose(image, fake, atol=1e-4)


def test_sample_to_folder_cycles_prompts(sd_run, tmp_path):
    """Given prompts replace the distiller's ``sample_prompts`` (['a red cat']), cycled
    over the indices, in the images and in samples.json."""
    model = sd_run['model']
    paths = sample_to_folder(model, str(tmp_path), 3, sample_model='orig', prompts=PROMPTS,
                             batch_size=3, progress=False)
    with open(osp.join(str(tmp_path), 'samples.json')) as f:
        images = json.load(f)['images']
    assert [images[osp.basename(p)]['prompt'] for p in paths] == [PROMPTS[0], PROMPTS[1],
                                                                  PROMPTS[0]]
    written = _images(paths)[1]
    assert np.abs(written - _generated(model, 1, prompt=[PROMPTS[1]])).max() <= 1
    assert np.abs(written - _generated(model, 1, prompt=[PROMPTS[0]])).max() > 1


def test_sd_pipeline_rewrites_a_non_sd_ddim_scheduler(sd_run, tmp_path):
    """StableDiffusionPipeline.__init__ forces steps_offset=1 and clip_sample=False on its
    scheduler: a distiller sampling with DDIM from a DDPM config (steps_offset 0,
    clip_sample True) samples differently there unless the exported scheduler is set
    after loading."""
    from diffusers import StableDiffusionPipeline
    out = _tool('export').main([sd_run['configs']['default'], sd_run['ckpt'], str(tmp_path)])
    model, _ = init_distiller(sd_run['configs']['default'], sd_run['ckpt'])
    assert model.test_scheduler.config.steps_offset == 0 and \
        model.test_scheduler.config.clip_sample
    pipe = StableDiffusionPipeline.from_pretrained(out, unet=mmdiff_2ndm.load_student(out))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.steps_offset == 1 and not pipe.scheduler.config.clip_sample
    expected = _distiller_sd_images(model, 3.0)
    assert np.abs(_sd_pipeline_images(pipe, 3.0) - expected).max() > 1e-3
    pipe.scheduler = DDIMScheduler.from_pretrained(out, subfolder='scheduler')
    np.testing.assert_allclose(_sd_pipeline_images(pipe, 3.0), expected, atol=1e-5)
