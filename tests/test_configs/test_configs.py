"""Every config in configs/ trains and validates end to end on tiny local stand-ins.

Each config is loaded as the user would load it, then only what cannot run here is
replaced: the teachers (tiny models in the same folder/checkpoint formats), the data
roots (tiny data sets in the same layouts, read by the configs' own dataset classes and
pipelines, resized to IMG x IMG), the FID network (a tiny TorchScript stand-in), the CLIP
model of CLIPScore (a tiny random CLIP) and the sizes (2 iterations, 2 sampling steps, a
few FID samples). Losses, schedulers, EMA, pruning hook, dataset types, pipelines and
metric types stay the configs' own.
"""
import copy
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmagic.registry import MODELS
from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner
from torch import Tensor, nn

import mmdiff_2ndm  # noqa: F401  (registers the plugin)
from mmdiff_2ndm.models.denoisers import unwrap_denoiser

from helpers.data_formats import CIFAR10_FILES, IMG, NUM_CLASSES

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def _config_files() -> list:
    """Every config under configs/, sub-folders included; not the _base_ parts."""
    paths = glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    return sorted(p for p in paths
                  if '_base_' not in osp.relpath(p, REPO).split(os.sep))


ALL_CONFIGS = _config_files()
# The configs of published set-ups (their data sets in the real on-disk formats and FID);
# configs/digits/ (scikit-learn's grey digits, no FID) is the download-free study.
CONFIGS = [p for p in ALL_CONFIGS if osp.dirname(p) == osp.join(REPO, 'configs')]
ITERS = 2
# Published numbers the configs must carry (METHOD.md), checked before any tiny override.
EMA_MOMENTUM = 1e-4  # decay 0.9999


# The data folders the configs name, and the fixture in the same on-disk format
# (helpers.data_formats.write_data_formats: ``assets['data']`` random images,
# ``red_data`` pure red).
DATA_ROOTS = {'data/cifar10': 'cifar10', 'data/celeba/img_align_celeba': 'celeba',
              'data/lsun/church_outdoor_train': 'lsun_export',
              'data/lsun/bedroom_train': 'lsun_export', 'data/imagenet': 'imagenet',
              'data/coco': 'coco'}
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _dataset_on(dataset: ConfigDict, data: dict) -> ConfigDict:
    """The config's own dataset (class, layout, pipeline) on local files in its format.

    Resizes shrink to IMG (the tiny teachers' size) and LMDB loaders open the fixture's
    database; nothing else in the pipeline changes.
    """
    dataset = ConfigDict(copy.deepcopy(dataset.to_dict()))
    for step in dataset.get('pipeline', []):
        if step['type'] == 'Resize':
            step['scale'] = (IMG, IMG)
        if _reads_lmdb(step):
            step['backend_args'] = dict(step['backend_args'], db_path=data['lsun_lmdb'])
    if dataset['type'] == 'BasicImageDataset' and dataset.get('ann_file'):  # LSUN's LMDB
        dataset.update(ann_file=data['lsun_lmdb_keys'])
        return dataset
    root = dataset['data_root']
    assert root in DATA_ROOTS, f'no fixture for data_root {root!r}; add one to DATA_ROOTS'
    dataset.update(data_root=data[DATA_ROOTS[root]])
    return dataset


def _reads_lmdb(step: dict) -> bool:
    """Whether a pipeline step reads through MMEngine's ``lmdb`` backend."""
    return (step.get('backend_args') or {}).get('backend') == 'lmdb'


def _tiny_dataset(dataset: ConfigDict, assets: dict) -> ConfigDict:
    """The same dataset on tiny local files (CIFAR10: SklearnDigits, same items;
    SklearnDigits: its first 8 items)."""
    if dataset['type'] == 'SklearnDigits':  # ships with scikit-learn: already local
        return ConfigDict(dataset, indices=8)
    if dataset['type'] == 'CIFAR10':
        # CIFAR10 md5-checks the released pickles, and tools/train.py runs in a subprocess
        # where the fixture's checksums cannot be patched in; SklearnDigits yields the same
        # items (RGB `gt`, `gt_label`, `gt_channel_order`). The CIFAR10 class itself reads
        # the fixture in test_red_reaches_teacher_and_fid_as_red.
        return ConfigDict(type='SklearnDigits', image_size=IMG, indices=8,
                          pipeline=dataset['pipeline'])
    return _dataset_on(dataset, assets['data'])


def _tiny_model(model: ConfigDict, assets: dict) -> None:
    """Points the teacher (and helpers) at tiny models in the configs' formats.

    A teacher-free config (``teacher=None``: DSM from scratch) and a teacher whose
    weights come from ``teacher_ckpt`` keep their (small) architectures; the checkpoint
    is written by :func:`_write_teacher_ckpt`.
    """
    model['num_inference_steps'] = 2
    teacher = model['teacher']
    if teacher is None or model.get('teacher_ckpt'):
        return
    kind = teacher['type']
    if kind == 'UNet2DConditionModel' and model.get('class_embedder'):  # CompVis LDM-4
        teacher['from_pretrained'] = osp.join(assets['ldm'], 'unet')
        model['vae']['from_pretrained'] = osp.join(assets['ldm'], 'vqvae')
        model['class_embedder'].update(num_embeddings=NUM_CLASSES + 1, embed_dim=8,
                                       checkpoint=osp.join(assets['ldm'], 'class_embedder.pth'))
    elif kind == 'UNet2DModel':
        teacher['from_pretrained'] = assets['unet']
    elif kind == 'DiTTransformer2DModel' and teacher.get('subfolder'):
        teacher['from_pretrained'] = assets['dit_pipeline']
        model['vae']['from_pretrained'] = assets['dit_pipeline']
    elif kind == 'DiTTransformer2DModel':
        teacher['from_pretrained'] = assets['dit_pixel']
    elif kind == 'UNet2DConditionModel':
        sd = assets['sd_pipeline']
        teacher['from_pretrained'] = sd
        if model['student'].get('from_pretrained'):  # a downloaded BK-SDM folder
            model['student']['from_pretrained'] = assets['sd_student']
        model['vae']['from_pretrained'] = sd
        model['text_encoder'] = osp.join(sd, 'text_encoder')
        model['tokenizer'] = osp.join(sd, 'tokenizer')
    else:
        raise AssertionError(f'no tiny stand-in for teacher type {kind!r}; add one here')


def _write_teacher_ckpt(model: ConfigDict, work_dir: str) -> None:
    """Writes random weights of the config's own teacher architecture as the MMEngine
    checkpoint ``teacher_ckpt`` names (its ``prefix``, e.g. the digits teacher run's EMA
    keys) and points ``teacher_ckpt`` at it."""
    ckpt = model['teacher_ckpt']
    prefix = (ckpt.get('prefix') or '') if isinstance(ckpt, dict) else ''
    torch.manual_seed(0)
    net = unwrap_denoiser(MODELS.build(copy.deepcopy(model['teacher'])))
    path = osp.join(work_dir, 'teacher_ckpt.pth')
    os.makedirs(work_dir, exist_ok=True)
    torch.save(dict(state_dict={prefix + k: v for k, v in net.state_dict().items()}), path)
    model['teacher_ckpt'] = dict(ckpt, filename=path) if isinstance(ckpt, dict) else path


def tiny_config(path: str, assets: dict, work_dir: str) -> Config:
    """The config at ``path`` with only the tiny overrides of the module docstring."""
    # No yapf: formatting the config that the runner logs, dumps and saves in each
    # checkpoint costs ~3 s a call on 2 cores (~15 s a test); the content is the same.
    cfg = Config.fromfile(path, format_python_code=False)
    _tiny_model(cfg.model, assets)
    if cfg.model.get('teacher_ckpt'):
        _write_teacher_ckpt(cfg.model, work_dir)
    # Every LoadImageFromFile opens its own LmdbBackend, and lmdb refuses a second open of
    # one database in a process: the train and val pipelines must run in worker processes,
    # as they do in a real run (num_workers > 0), not both in the main process.
    loaders = [key for key in LOADERS if cfg.get(key) is not None]
    uses_lmdb = any(_reads_lmdb(step) for key in loaders
                    for step in cfg[key]['dataset'].get('pipeline', []))
    for key in loaders:
        loader = cfg[key]
        loader.update(batch_size=2, num_workers=1 if uses_lmdb else 0,
                      persistent_workers=False)
        loader['dataset'] = _tiny_dataset(loader['dataset'], assets)
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] == 'DiffusionPruningHook':  # 3 gradient timesteps instead of 100
            hook['prune_cfg'] = dict(hook.get('prune_cfg') or {}, timesteps=[0, 500, 999])
            if (hook.get('depth_cfg') or {}).get('selector') == 'learnable':
                hook['depth_cfg'] = dict(hook['depth_cfg'], steps=2)  # not hundreds
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        for metric in (evaluator or {}).get('metrics', []):
            metric['fake_nums'] = 4
            if metric['type'] == 'FID':
                metric.update(real_nums=8, inception_path=assets['inception'],
                              inception_pkl=osp.join(work_dir, 'real_feats.pkl'))
            elif metric['type'] == 'CLIPScore':
                metric['clip_path'] = assets['clip']
    cfg.train_cfg.update(max_iters=ITERS, val_interval=ITERS)
    cfg.default_hooks.checkpoint.interval = ITERS
    cfg.default_hooks.logger.interval = 1
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    cfg.experiment_name = osp.basename(work_dir)
    return cfg


def _name(path: str) -> str:
    """The config's path under configs/ without '.py', e.g. 'digits/2ndm_digits16'."""
    return osp.splitext(osp.relpath(path, osp.join(REPO, 'configs')))[0]


def test_every_config_is_covered():
    names = {_name(p) for p in ALL_CONFIGS}
    expected = {'2ndm_cifar10', '2ndm_cifar10_dsm', '2ndm_cifar10_dsm_kd',
                '2ndm_cifar10_first_order', '2ndm_celeba', '2ndm_lsun', '2ndm_lsun_bedroom',
                '2ndm_lsun_church_lmdb', '2ndm_imagenet_dit', '2ndm_imagenet_ldm',
                '2ndm_cifar10_dit', '2ndm_mscoco_sd', 'digits/teacher_digits16',
                'digits/2ndm_digits16', 'digits/2ndm_digits16_dsm',
                'digits/2ndm_digits16_dsm_kd', 'digits/2ndm_digits16_first_order',
                'digits/2ndm_digits16_unscaled'}
    assert expected <= names, sorted(expected - names)
    # every config outside _base_, in any sub-folder, is run by a test
    every = {osp.splitext(p)[0] for p in glob.glob('**/*.py', recursive=True,
                                                   root_dir=osp.join(REPO, 'configs'))
             if '_base_' not in p.split(os.sep)}  # also configs/digits/_base_/
    assert every == {_name(p) for p in IN_PROCESS} | {'2ndm_cifar10'}


def test_published_hyper_parameters():
    cfg = Config.fromfile(osp.join(REPO, 'configs', '2ndm_cifar10.py'))
    losses = cfg.model.losses
    assert losses.dsm.loss_weight == 1.0 and losses.kd.loss_weight == 1.0
    assert losses.jacobian.loss_weight == 0.1 and losses.jacobian.num_projections == 1
    assert cfg.model.ema.momentum == EMA_MOMENTUM and cfg.model.num_inference_steps == 100
    assert cfg.model.pixel_reduction == 'sum' and cfg.model.teacher.dropout == 0.1
    assert cfg.train_cfg.max_iters == 100000
    student_optim = cfg.optim_wrapper.student
    assert student_optim.optimizer.lr == 2e-4 and student_optim.clip_grad.max_norm == 1.0
    assert cfg.val_evaluator.metrics[0].fake_nums == 50000
    hook = cfg.custom_hooks[0]
    assert (hook.ratio, hook.prune_cfg.groupnorm_ratio) == (0.3, 0.25)
    assert hook.prune_cfg.diff_pruning_thr == 0.04  # the release's --thr for its student
    assert cfg.train_dataloader.batch_size == 128
    # LSUN: the releases' Adam lr (church 2e-5, bedroom 2e-6), not CIFAR-10's 2e-4.
    for name, lr in (('2ndm_lsun', 2e-5), ('2ndm_lsun_church_lmdb', 2e-5),
                     ('2ndm_lsun_bedroom', 2e-6)):
        lsun = Config.fromfile(osp.join(REPO, 'configs', f'{name}.py'))
        assert lsun.optim_wrapper.student.optimizer.lr == lr, name
        assert lsun.model.ema.momentum == EMA_MOMENTUM, name  # the paper's, kept
    ablations = {n: Config.fromfile(osp.join(REPO, 'configs', f'{n}.py')).model.losses
                 for n in ('2ndm_cifar10_dsm', '2ndm_cifar10_dsm_kd', '2ndm_cifar10_first_order')}
    assert ablations['2ndm_cifar10_dsm'].kd is None
    assert ablations['2ndm_cifar10_dsm'].jacobian is None
    assert ablations['2ndm_cifar10_dsm_kd'].jacobian is None
    assert ablations['2ndm_cifar10_dsm_kd'].kd.loss_weight == 1.0
    assert ablations['2ndm_cifar10_first_order'].jacobian.mode == 'first_order'


def _check_run(runner: Runner, cfg: Config) -> None:
    """Losses finite, checkpoint written, metrics logged, student pruned where configured."""
    scalars = runner.message_hub.log_scalars
    losses = cfg.model.losses
    assert runner.iter == ITERS
    for key in ('dsm', 'kd', 'jacobian'):
        name = f'train/loss_{key}'
        if losses.get(key) is None:
            assert name not in scalars, name
            continue
        values = scalars[name].data[0]
        assert len(values) == ITERS and all(math.isfinite(v) for v in values), name
    assert osp.isfile(osp.join(cfg.work_dir, f'iter_{ITERS}.pth'))
    for metric in (cfg.val_evaluator or {}).get('metrics', []):
        prefix = metric.get('prefix') or 'teacher_fidelity'
        logged = [k for k in scalars if k.startswith(f'val/{prefix}/')]
        assert logged, f'no val/{prefix}/* scalar (have {sorted(scalars)})'
        assert all(math.isfinite(scalars[k].current()) for k in logged)
    pruning = [h for h in cfg.get('custom_hooks', []) if h['type'] == 'DiffusionPruningHook']
    model = runner.model
    student = sum(p.numel() for p in unwrap_denoiser(model.student).parameters())
    if model.teacher is None:  # DSM from scratch: nothing to compare with
        assert not pruning
        return
    teacher = sum(p.numel() for p in unwrap_denoiser(model.teacher).parameters())
    if pruning:
        with open(osp.join(cfg.work_dir, 'pruning_summary.json')) as f:
            assert json.load(f)
        assert student < teacher
    if (cfg.model.get('student') or {}).get('type') == 'BKSDMStudent':
        assert student < teacher


class FeatureRecorder(nn.Module):
    """Stands in for FID's Inception and keeps every image batch it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.images = []

    def forward(self, images: Tensor, return_features: bool = False) -> Tensor:
        self.images.append(images.detach().clone())
        return images.float().mean(dim=(2, 3))


def _is_red_rgb(images: Tensor, low: float, high: float) -> bool:
    """Every pixel of (B, 3, H, W) ``images`` is >= high in channel 0, <= low in 1, 2."""
    return bool(images[:, 0].min() >= high and images[:, 1:].max() <= low)


@pytest.mark.parametrize('path', CONFIGS, ids=_name)
def test_red_reaches_teacher_and_fid_as_red(path, assets, red_data, monkeypatch, tmp_path):
    """A red image in the config's on-disk data format reaches the (RGB) teacher as red,
    FID's feature network as red among the real images, and a red sample of the teacher
    reaches it as red too: real and generated images meet FID in the same order.

    Runs the config's dataset class and pipeline on files written in the real format
    (red_data), the distiller's own train_step and val_step with the config's data
    preprocessor, and MMagic's FID (real statistics: ``prepare``; samples: ``process``).
    """
    from mmagic.datasets import CIFAR10
    from mmagic.registry import DATASETS, METRICS
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    init_default_scope('mmagic')
    # CIFAR10 checks the md5s of the released archive's files; the fixture has its own.
    md5 = red_data['cifar10_md5']
    monkeypatch.setattr(CIFAR10, 'train_list', [[n, md5[n]] for n in CIFAR10_FILES[:5]])
    monkeypatch.setattr(CIFAR10, 'test_list', [['test_batch', md5['test_batch']]])
    monkeypatch.setattr(CIFAR10, 'meta', dict(CIFAR10.meta, md5=md5['batches.meta']))

    cfg = Config.fromfile(path, format_python_code=False)
    _tiny_model(cfg.model, assets)
    if cfg.model.get('teacher_ckpt'):
        _write_teacher_ckpt(cfg.model, str(tmp_path))
    teacher = cfg.model.teacher
    if cfg.train_dataloader.dataset.type == 'CIFAR10' and \
            teacher.type == 'DiTTransformer2DModel':  # CIFAR-10's 32x32, no Resize
        teacher['from_pretrained'] = assets['dit_pixel32']
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)

    # Training: the image batch the teacher (or its VAE encoder) is handed, in [-1, 1].
    train_set = DATASETS.build(_dataset_on(cfg.train_dataloader.dataset, red_data))
    # Loaded in a worker process, as in a run: lmdb refuses a second open of a database in
    # one process, and FID's prepare below reads the val set in this one.
    batch = next(iter(torch.utils.data.DataLoader(train_set, batch_size=2, num_workers=1,
                                                  collate_fn=pseudo_collate)))
    encoded = []
    encode = model.codec.encode
    monkeypatch.setattr(model.codec, 'encode',
                        lambda images: encoded.append(images.detach().clone()) or encode(images))
    model.train_step(batch, OptimWrapper(torch.optim.SGD(model.student.parameters(), lr=0.0)))
    assert encoded and _is_red_rgb(encoded[0], low=-0.8, high=0.8), \
        f'the teacher is handed channel means {encoded[0].mean(dim=(0, 2, 3)).tolist()}, ' \
        'not red in RGB'

    # FID's real statistics, from the val data set through the model's preprocessor.
    fid_cfg = next(m for m in cfg.val_evaluator.metrics if m.type == 'FID')
    fid = METRICS.build(dict(fid_cfg, fake_nums=2, real_nums=2,
                             inception_path=assets['inception'],
                             inception_pkl=str(tmp_path / 'real_feats.pkl')))
    fid.inception = FeatureRecorder()
    val_set = DATASETS.build(_dataset_on(cfg.val_dataloader.dataset, red_data))
    fid.prepare(model, torch.utils.data.DataLoader(val_set, batch_size=2,
                                                   collate_fn=pseudo_collate))
    real = fid.inception.images[0]
    assert _is_red_rgb(real, low=40, high=215), \
        f'real images reach FID as channel means {real.float().mean(dim=(0, 2, 3)).tolist()}'

    # Samples: a teacher that draws red, in the RGB it works in ([-1, 1] like its input).
    def red_samples(net, noise, *args, **kwargs):
        images = -torch.ones(noise.shape[0], 3, IMG, IMG)
        images[:, 0] = 1
        return images
    monkeypatch.setattr(model, 'sample', red_samples)
    outputs = model.val_step(dict(inputs=dict(
        sample_model='teacher', num_batches=2, sample_kwargs=dict(with_teacher=True))))
    for key in ('fake_img', 'teacher_img'):
        fid.fake_key = key
        fid.fake_results.clear()
        fid.inception.images.clear()
        fid.process({}, [out.to_dict() for out in outputs])
        fake = fid.inception.images[0]
        assert _is_red_rgb(fake, low=0, high=255), \
            f'{key} reaches FID as channel means {fake.float().mean(dim=(0, 2, 3)).tolist()}'


def test_celeba_crop_is_ddims():
    """2ndm_celeba.py crops img_align_celeba as DDIM (its teacher) and Diff-Pruning do:
    rows 57..184, columns 25..152 (torchvision's F.crop(img, 57, 25, 128, 128))."""
    from mmagic.registry import TRANSFORMS
    from mmengine.registry import init_default_scope
    init_default_scope('mmagic')
    cfg = Config.fromfile(osp.join(REPO, 'configs', '2ndm_celeba.py'))
    rows, cols = np.meshgrid(np.arange(218), np.arange(178), indexing='ij')
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.int32)  # HWC
    for key in ('train_dataloader', 'val_dataloader'):
        crop = next(step for step in cfg[key].dataset.pipeline if 'Crop' in step['type'])
        out = TRANSFORMS.build(crop).transform(dict(gt=image.copy()))['gt']
        np.testing.assert_array_equal(out, image[57:185, 25:153])


def test_latent_sampler_does_not_clip():
    """Latent configs sample with clip_sample=False: DDPM's default clips the predicted x_0
    to [-1, 1], which suits pixels but cuts VAE latents; the distiller's DDIM sampler takes
    the noise scheduler's settings unless a test_scheduler is given."""
    from mmdiff_2ndm.models.sampling import ddim_like
    from mmagic.registry import DIFFUSION_SCHEDULERS
    latent = {}
    for path in ALL_CONFIGS:
        model = Config.fromfile(path).model
        if model.get('type') != 'DiffusionDistiller' or not model.get('vae'):
            continue  # pixel space: clipping x_0 to the image range is right there
        sampling = model.get('test_scheduler') or ddim_like(
            DIFFUSION_SCHEDULERS.build(copy.deepcopy(model.noise_scheduler)))
        latent[_name(path)] = DIFFUSION_SCHEDULERS.build(sampling).config.clip_sample
    assert {'2ndm_mscoco_sd', '2ndm_imagenet_ldm', '2ndm_imagenet_dit'} <= set(latent)
    assert not any(latent.values()), f'latent configs that clip x_0: {latent}'


IN_PROCESS = [p for p in ALL_CONFIGS if _name(p) != '2ndm_cifar10']


@pytest.mark.parametrize('path', IN_PROCESS, ids=_name)
def test_config_trains_and_validates(path, assets, tmp_path):
    cfg = tiny_config(path, assets, str(tmp_path / _name(path)))
    torch.manual_seed(0)
    runner = Runner.from_cfg(cfg)
    runner.train()
    _check_run(runner, cfg)


def test_mscoco_sd_config_with_a_downloaded_student_folder(assets, tmp_path):
    """The header's alternative: a derived config loads a BK-SDM folder as the student."""
    derived = tmp_path / 'sd_bk_sdm_folder.py'
    derived.write_text(
        f"_base_ = {osp.join(REPO, 'configs', '2ndm_mscoco_sd.py')!r}\n"
        "model = dict(student=dict(_delete_=True, type='UNet2DConditionModel',\n"
        "                          from_pretrained='checkpoints/bk-sdm-base', "
        "subfolder='unet'))\n")
    cfg = tiny_config(str(derived), assets, str(tmp_path / 'work'))
    assert cfg.model.student.from_pretrained == assets['sd_student']
    model = MODELS.build(cfg.model)
    student = unwrap_denoiser(model.student)
    assert list(student.config.block_out_channels) == [8, 8]  # the folder's, not BK-SDM's
    assert student.state_dict()['conv_in.weight'].shape[0] == 8


def test_main_config_through_train_tool(assets, tmp_path):
    """2ndm_cifar10.py end to end through tools/train.py, as a user runs it."""
    work_dir = str(tmp_path / 'work')
    cfg = tiny_config(osp.join(REPO, 'configs', '2ndm_cifar10.py'), assets, work_dir)
    dumped = str(tmp_path / 'tiny_2ndm_cifar10.py')
    cfg.dump(dumped)
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), dumped, '--work-dir', work_dir,
         '--cfg-options', 'randomness.seed=1'],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))  # as the single_thread fixture
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert osp.isfile(osp.join(work_dir, f'iter_{ITERS}.pth'))
    assert osp.isfile(osp.join(work_dir, 'pruning_summary.json'))
    ckpt = torch.load(osp.join(work_dir, f'iter_{ITERS}.pth'), map_location='cpu',
                      weights_only=False)
    assert 'pruning' in ckpt['meta']
    logs = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert logs, 'no scalars.json written'
    with open(logs[0]) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    assert any('FID-50k/fid' in line for line in lines)
    assert any('loss_jacobian' in line for line in lines)


USER_CONFIG = """
# A user's own config: our 2ndMatch model file plus MMagic's runtime and image-folder data.
_base_ = [
    {model_base!r},
    'mmagic::_base_/gen_default_runtime.py',
    'mmagic::_base_/datasets/unconditional_imgs_64x64.py',
]
custom_imports = dict(imports=['mmdiff_2ndm'], allow_failed_imports=False)

model = dict(teacher=dict(from_pretrained={teacher!r}), num_inference_steps=2)
custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.3, importance='magnitude')]
optim_wrapper = dict(student=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-4)))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={folder!r}, recursive=True))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={folder!r}, recursive=True))
train_cfg = dict(max_iters=2, val_interval=2)
val_evaluator = dict(metrics=[dict(
    type='FID', prefix='FID-user', fake_nums=4, real_nums=8, inception_style='StyleGAN',
    inception_path={inception!r}, inception_pkl={pkl!r}, sample_model='ema')])
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""

# MMEngine's own runner, so the plugin arrives only through the config's custom_imports.
RUN_WITH_MMENGINE = """
import sys
from mmengine.config import Config
from mmengine.runner import Runner
cfg = Config.fromfile(sys.argv[1])
cfg.work_dir = sys.argv[2]
Runner.from_cfg(cfg).train()
assert 'mmdiff_2ndm' in sys.modules
"""


def test_user_config_inheriting_ours_and_mmagic(assets, tmp_path):
    """A config in a user's folder that inherits one of our files and two of MMagic's
    trains and validates with the plugin loaded only by ``custom_imports``."""
    path = tmp_path / 'my_2ndm.py'
    path.write_text(USER_CONFIG.format(
        model_base=osp.join(REPO, 'configs', '_base_', 'models', 'ddpm_unet_2ndm.py'),
        teacher=assets['unet'], folder=assets['folder'], inception=assets['inception'],
        pkl=str(tmp_path / 'real.pkl')))
    work_dir = str(tmp_path / 'work')
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', RUN_WITH_MMENGINE, str(path), work_dir],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert osp.isfile(osp.join(work_dir, f'iter_{ITERS}.pth'))
    assert osp.isfile(osp.join(work_dir, 'pruning_summary.json'))
    logs = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(logs[0]) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    assert any('loss_jacobian' in line for line in lines)
    assert any('FID-user/fid' in line for line in lines)
