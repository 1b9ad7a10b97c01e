"""tools/train.py and tools/test.py parse the shared runner arguments with one helper."""
import importlib.util
import os
import os.path as osp

import pytest
from mmengine.config import Config

from mmdiff_2ndm.utils import apply_runner_args

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SHARED = ['--work-dir', 'wd', '--cfg-options', 'a.b=2', 'c=x', '--launcher', 'pytorch',
          '--local-rank', '3']


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f'tool_{name}_args',
                                                  osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('name, positional', [('train', ['cfg.py']),
                                              ('test', ['cfg.py', 'ckpt.pth'])])
def test_both_tools_take_the_shared_arguments(name, positional, monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    args = _tool(name).parse_args(positional + SHARED)
    assert (args.config, args.work_dir, args.cfg_options, args.launcher, args.local_rank) == (
        'cfg.py', 'wd', {'a.b': 2, 'c': 'x'}, 'pytorch', 3)
    assert os.environ['LOCAL_RANK'] == '3'
    monkeypatch.setenv('LOCAL_RANK', '1')  # a launcher's own value is kept
    _tool(name).parse_args(positional + ['--local_rank', '5'])
    assert os.environ['LOCAL_RANK'] == '1'
    with pytest.raises(SystemExit):
        _tool(name).parse_args(positional + ['--launcher', 'ssh'])


def test_tool_specific_arguments_stay_with_their_tool():
    train = _tool('train').parse_args(['cfg.py', '--resume', '--amp', '--auto-scale-lr'])
    assert (train.resume, train.amp, train.auto_scale_lr) == ('auto', True, True)
    test = _tool('test').parse_args(['cfg.py', 'ckpt.pth', '--out', 'm.json',
                                     '--sample-model', 'teacher'])
    assert (test.checkpoint, test.out, test.sample_model) == ('ckpt.pth', 'm.json', 'teacher')
    with pytest.raises(SystemExit):
        _tool('test').parse_args(['cfg.py', 'ckpt.pth', '--amp'])
    with pytest.raises(SystemExit):
        _tool('train').parse_args(['cfg.py', '--sample-model', 'ema'])


def test_work_dir_priority_and_config_options():
    args = _tool('test').parse_args(['configs/x/my_run.py', 'ckpt.pth', '--cfg-options',
                                     'model.steps=4'])
    cfg = apply_runner_args(Config(dict(model=dict(steps=1))), args)
    assert (cfg.launcher, cfg.model.steps, cfg.work_dir) == (
        'none', 4, osp.join('./work_dirs', 'my_run'))
    cfg = apply_runner_args(Config(dict(work_dir='from_config')), args)
    assert cfg.work_dir == 'from_config'
    args = _tool('train').parse_args(['my_run.py', '--work-dir', 'cli'])
    assert apply_runner_args(Config(dict(work_dir='from_config')), args).work_dir == 'cli'
