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
    teacher=dict(type='UNet2DModel', from_pretrained={teacher!r}),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
    num_inference_steps={steps},
    ema=dict(type='WarmupExponentialMovingAverage', momentum=0.5),
    data_preprocessor=dict(type='DataPreprocessor'))
"""

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
    config = str(root / 'config.py')
    with open(config, 'w') as f:
        f.write(CONFIG.format(teacher=str(root / 'teacher'), steps=STEPS))
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
    assert sorted(os.listdir(out)) == ['config.json', 'diffusion_pytorch_model.safetensors',
                                       'mmdiff_2ndm.json', 'pruning_record.json', 'scheduler']
    with open(osp.join(out, 'config.json')) as f:
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
    # and not the raw student's or the teacher's
    raw = (model.sample(model.student, noise, num_inference_steps=STEPS) / 2 + 0.5).clamp(0, 1)
    assert np.abs(images - raw.permute(0, 2, 3, 1).numpy()).max() > 1e-3


def test_export_of_the_raw_student(run, tmp_path):
    out = _tool('export').main([run['config'], run['ckpt'], str(tmp_path), '--model', 'orig'])
    unet = mmdiff_2ndm.load_student(out)
    for name, value in run['model'].student.model.state_dict().items():
        assert torch.equal(unet.state_dict()[name], value), name
    with open(osp.join(out, 'mmdiff_2ndm.json')) as f:
        manifest = json.load(f)
    assert manifest['sample_model'] == 'orig' and manifest['pruned']
