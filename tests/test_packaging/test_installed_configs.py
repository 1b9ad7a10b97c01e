"""A user project with the plugin pip-installed (a wheel, not the checkout) inherits our
configs as `mmdiff_2ndm::digits/2ndm_digits16.py`, builds them and trains an iteration."""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SOURCES = ('setup.py', 'MANIFEST.in', 'README.md', 'model-index.yml', 'requirements',
           'mmdiff_2ndm', 'configs', 'tools')

USER_CONFIG = """
_base_ = ['mmdiff_2ndm::digits/2ndm_digits16.py']
model = dict(teacher_ckpt=dict(filename={teacher!r}))
custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.25, importance='magnitude')]
train_dataloader = dict(batch_size=4)
train_cfg = dict(max_iters=1)
param_scheduler = dict(T_max=1)
default_hooks = dict(checkpoint=dict(interval=1),
                     visualization=dict(interval=1, n_samples=2, num_inference_steps=1))
work_dir = 'work_dirs/user'
"""

USER_SCRIPT = """
import os, sys
repo = {repo!r}
assert not any(os.path.abspath(p or '.') == repo for p in sys.path), sys.path
import mmdiff_2ndm
assert mmdiff_2ndm.__file__.startswith({site!r}), mmdiff_2ndm.__file__
from mmengine.config import Config
from mmengine.runner import Runner
cfg = Config.fromfile('my_config.py')
assert cfg.model._scope_ == 'mmdiff_2ndm' and cfg.model.type == 'DiffusionDistiller'
Runner.from_cfg(cfg).train()
print('TRAINED', flush=True)
"""


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope='module')
def installed(tmp_path_factory) -> str:
    """The plugin built as a wheel from a copy of the sources, installed into a folder."""
    root = tmp_path_factory.mktemp('install')
    src = root / 'src'
    for name in SOURCES:
        path = osp.join(REPO, name)
        if osp.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc', '.mim', '*.egg-info'))
        else:
            os.makedirs(src, exist_ok=True)
            shutil.copy(path, src / name)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    _run(pip + ['wheel', '--no-deps', '--no-build-isolation', str(src), '-w',
                str(root / 'dist')], cwd=str(root))
    wheels = glob.glob(str(root / 'dist' / 'mmdiff_2ndm-*.whl'))
    assert len(wheels) == 1
    site = root / 'site'
    _run(pip + ['install', '--no-deps', '--target', str(site), wheels[0]], cwd=str(root))
    return str(site)


def test_wheel_ships_every_config(installed):
    shipped = osp.join(installed, 'mmdiff_2ndm', '.mim', 'configs')
    ours = sorted(osp.relpath(p, osp.join(REPO, 'configs'))
                  for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))
    theirs = sorted(osp.relpath(p, shipped)
                    for p in glob.glob(osp.join(shipped, '**', '*.py'), recursive=True))
    assert theirs == ours
    assert osp.isfile(osp.join(installed, 'mmdiff_2ndm', '.mim', 'tools', 'train.py'))
    # mim's model index: every shipped config, each metafile shipped beside its configs
    mim = osp.join(installed, 'mmdiff_2ndm', '.mim')
    with open(osp.join(mim, 'model-index.yml'), encoding='utf-8') as f:
        index = yaml.safe_load(f)
    listed = []
    for metafile in index['Import']:
        with open(osp.join(mim, metafile), encoding='utf-8') as f:
            listed += [model['Config'] for model in yaml.safe_load(f)['Models']]
    assert sorted(osp.relpath(p, 'configs') for p in listed) == sorted(
        p for p in ours if '_base_' not in p.split(os.sep))
    assert all(osp.isfile(osp.join(mim, p)) for p in listed)


def test_user_project_inherits_installed_config(installed, tmp_path):
    project = tmp_path / 'project'
    project.mkdir()
    unet = dict(Config.fromfile(osp.join(REPO, 'configs', 'digits', 'teacher_digits16.py')).unet)
    unet.pop('type')
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    teacher = UNet2DModel(**unet).state_dict()
    teacher_ckpt = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict={f'student_ema.module.model.{k}': v for k, v in teacher.items()}),
               teacher_ckpt)
    (project / 'my_config.py').write_text(USER_CONFIG.format(teacher=teacher_ckpt))
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env.update(PYTHONPATH=installed, OMP_NUM_THREADS='1')
    result = _run([sys.executable, '-c', USER_SCRIPT.format(repo=REPO, site=installed)],
                  cwd=str(project), env=env)
    log = result.stdout + result.stderr
    assert 'TRAINED' in log
    assert 'Failed to search registry' not in log and 'Failed to import' not in log, log
    assert glob.glob(str(project / 'work_dirs' / 'user' / 'iter_1.pth'))
    assert glob.glob(str(project / 'work_dirs' / 'user' / '*' / 'vis_data' / 'vis_image' /
                         'student_ema_teacher_1.png'))
