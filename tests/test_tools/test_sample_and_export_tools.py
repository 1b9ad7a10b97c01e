"""tools/sample.py and tools/export.py on a tiny pruned run: PNGs that resume to the same
bytes, and an exported student whose diffusers pipelines sample what the distiller samples."""
import hashlib
import importlib.util
import json
import os
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, UNet2DModel

import mmdiff_2ndm
from mmdiff_2ndm.apis import index_noise, init_distiller
from mmdiff_2ndm.models.denoisers import unwrap_denoiser
from mmdiff_2ndm.pruning import parameter_shapes, prune_denoiser

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


# ------------------------------------------------------------------ class-conditional DiT


@pytest.fixture(scope='module')
def dit_run(tmp_path_factory) -> dict:
    """A pruned latent DiT run (3 classes, tiny VAE) as config + checkpoint."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel
    root = tmp_path_factory.mktemp('dit_run')
    torch.manual_seed(0)
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                          out_channels=8, num_layers=1, sample_size=4, patch_size=2,
                          num_embeds_ada_norm=3).save_pretrained(str(root / 'dit'))
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                  layers_per_block=1, norm_num_groups=4,
                  down_block_types=('DownEncoderBlock2D',) * 2,
                  up_block_types=('UpDecoderBlock2D',) * 2,
                  sample_size=8).save_pretrained(str(root / 'vae'))
    vae = f"vae=dict(type='AutoencoderKL', from_pretrained={str(root / 'vae')!r})"
    config = _write_config(str(root / 'config.py'), 'DiTTransformer2DModel', str(root / 'dit'),
                           2, vae)
    model, _ = init_distiller(config)
    _, record = prune_denoiser(model.student, 0.5, 'magnitude', with_macs=False)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = str(root / 'iter_2.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(pruning=record)), ckpt)
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
