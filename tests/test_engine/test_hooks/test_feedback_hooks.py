"""What a user sees of a run: DistillerVisualizationHook (the digits config trains 2 iterations
and logs its grid, as a local PNG and in TensorBoard events with the scalars; rows = student /
EMA / teacher from one noise) and SamplingProgressHook (a bar while metrics sample)."""
import glob
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmdiff_2ndm  # noqa: F401  (registers the hook)
from mmdiff_2ndm.engine.hooks import DistillerVisualizationHook, SamplingProgressHook
from mmdiff_2ndm.utils.image_grid import LINE_HEIGHT, PAD, text_block, text_width

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
CONFIG = osp.join(REPO, 'configs', 'digits', '2ndm_digits16.py')
N_SAMPLES = 3
IMAGE_SIZE = 16

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory) -> str:
    """Random weights of the digits teacher, in the teacher run's checkpoint format."""
    from diffusers import UNet2DModel
    unet = dict(Config.fromfile(CONFIG).unet)
    unet.pop('type')
    torch.manual_seed(0)
    state = UNet2DModel(**unet).state_dict()
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pth')
    torch.save(dict(state_dict={f'student_ema.module.model.{k}': v for k, v in state.items()}),
               path)
    return path


def _digits_cfg(work_dir: str, backend: str, teacher_ckpt: str) -> Config:
    """The digits 2ndM config cut to 2 tiny iterations, grid at iteration 2."""
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict({
        'work_dir': work_dir,
        'model.teacher_ckpt.filename': teacher_ckpt,
        'custom_hooks': [dict(type='DiffusionPruningHook', ratio=0.25, importance='magnitude')],
        'train_dataloader.batch_size': 4,
        'train_cfg.max_iters': 2,
        'param_scheduler.T_max': 2,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 100,
        'default_hooks.visualization.interval': 2,
        'default_hooks.visualization.n_samples': N_SAMPLES,
        'default_hooks.visualization.num_inference_steps': 2,
        # what README documents: one --cfg-options key switches the backend
        'visualizer.vis_backends.0.type': backend,
    })
    return cfg


def _train(cfg: Config) -> Runner:
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_every_config_registers_the_grid():
    """The runtime base gives every config the hook (configs state intervals only)."""
    configs = glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    configs = [c for c in configs if '_base_' not in c]
    assert len(configs) >= 15
    for path in configs:
        hook = Config.fromfile(path).default_hooks.get('visualization')
        assert hook is not None and hook['type'] == 'DistillerVisualizationHook', path


def test_local_grid_rows_are_student_ema_teacher_from_one_noise(tmp_path, teacher_ckpt):
    runner = _train(_digits_cfg(str(tmp_path), 'VisBackend', teacher_ckpt))
    pngs = glob.glob(str(tmp_path / '*' / 'vis_data' / 'vis_image' / '*.png'))
    assert [osp.basename(p) for p in pngs] == ['student_ema_teacher_2.png']
    grid = mmcv.imread(pngs[0], channel_order='rgb')
    # a title line, then per model a label and N_SAMPLES tiles of 16x16 upscaled 4x
    # (nearest) to 64 px, 2 px apart
    label_w = text_width(['student', 'EMA', 'teacher'])
    tile, cell, row_h = 4 * IMAGE_SIZE, 4 * IMAGE_SIZE + PAD, 4 * IMAGE_SIZE + 2 * PAD
    assert grid.shape == (LINE_HEIGHT + 3 * row_h, label_w + N_SAMPLES * cell + PAD, 3)
    np.testing.assert_array_equal(grid[:LINE_HEIGHT],
                                  text_block(['iteration 2'], grid.shape[1], 'left'))

    # Each row is the model's own sample from the hook's fixed noise (teacher == teacher).
    hook = next(h for h in runner.hooks if isinstance(h, DistillerVisualizationHook))
    model = runner.model
    rows = []
    for net in (model.student, model.student_ema.module, model.teacher):
        samples = model.sample(net, hook._noise, num_inference_steps=2)
        images = model.data_preprocessor.destruct(samples)
        # BGR [0, 255] -> the grid's RGB uint8
        rows.append(images.flip(1).round().clamp(0, 255).to(torch.uint8))
    for r, (label, row) in enumerate(zip(('student', 'EMA', 'teacher'), rows)):
        top = LINE_HEIGHT + r * row_h
        offset = (row_h - LINE_HEIGHT) // 2
        np.testing.assert_array_equal(grid[top + offset:top + offset + LINE_HEIGHT, :label_w],
                                      text_block([label], label_w, 'left'))
        for c in range(N_SAMPLES):
            y, x = top + PAD, label_w + PAD + c * cell
            upscaled = torch.from_numpy(grid[y:y + tile, x:x + tile]).permute(2, 0, 1)
            # each pixel a 4 x 4 square of one value
            assert torch.equal(upscaled, upscaled[:, ::4, ::4].repeat_interleave(
                4, 1).repeat_interleave(4, 2)), (r, c)
            diff = (upscaled[:, ::4, ::4].int() - row[c].int()).abs().max()
            assert diff <= 1, (r, c, diff)
    assert not torch.equal(rows[0], rows[2])  # the pruned student is not the teacher


def test_tensorboard_events_hold_scalars_and_the_grid(tmp_path, teacher_ckpt):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _train(_digits_cfg(str(tmp_path), 'TensorboardVisBackend', teacher_ckpt))
    events = glob.glob(str(tmp_path / '*' / 'vis_data' / 'events.out.tfevents.*'))
    assert len(events) == 1
    acc = EventAccumulator(events[0], size_guidance={'images': 0, 'scalars': 0})
    acc.Reload()
    tags = acc.Tags()
    assert {'loss', 'loss_dsm', 'loss_kd', 'loss_jacobian'} <= set(tags['scalars'])
    assert [e.step for e in acc.Scalars('loss')] == [1, 2]
    assert tags['images'] == ['student_ema_teacher']
    image = acc.Images('student_ema_teacher')[0]
    assert image.step == 2 and image.height == LINE_HEIGHT + 3 * (4 * IMAGE_SIZE + 2 * PAD)


def test_visualisation_leaves_the_training_rng_alone(tmp_path, teacher_ckpt):
    """Sampling for the grid forks the RNG: the next training draw is unchanged."""
    cfg = _digits_cfg(str(tmp_path), 'VisBackend', teacher_ckpt)
    runner = Runner.from_cfg(cfg)
    hook = DistillerVisualizationHook(n_samples=2, num_inference_steps=1)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = hook.sample_grid(runner.model)
    assert torch.equal(torch.get_rng_state(), state)
    assert sorted(first[0].keys()) == ['ema_img', 'orig_img', 'teacher_img']
    second = hook.sample_grid(runner.model)  # same noise again
    assert torch.equal(first[1].teacher_img, second[1].teacher_img)


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match='student'):
        DistillerVisualizationHook(sample_models=('student',))
    with pytest.raises(ValueError, match='interval'):
        DistillerVisualizationHook(interval=0)


def test_test_sampling_shows_a_progress_bar(tmp_path, teacher_ckpt, capsys):
    cfg = _digits_cfg(str(tmp_path), 'VisBackend', teacher_ckpt)
    cfg.merge_from_dict({'test_dataloader.batch_size': 2,
                         'test_evaluator.metrics': [dict(type='TeacherFidelity', fake_nums=6)],
                         'model.num_inference_steps': 1})
    runner = Runner.from_cfg(cfg)
    assert any(isinstance(h, SamplingProgressHook) for h in runner.hooks)  # from the config
    capsys.readouterr()
    runner.test()
    last = capsys.readouterr().err.split('\r')[-1]
    # 6 samples in batches of 2 (MMagic's sampler runs a 4th, which the bar counts too)
    assert last.startswith('test sampling: 100%') and '4/4' in last, last
