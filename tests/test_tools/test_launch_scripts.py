"""The launch scripts pass MMagic's arguments through unchanged (checked with fake launchers)."""
import os
import os.path as osp
import stat
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(REPO, 'tools')

# Prints each argument on its own line, so quoting survives the round trip.
FAKE = '#!/usr/bin/env bash\nprintf "%s\\n" "$(basename "$0")" "$@"\n'


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH directory with fake ``srun`` and ``python`` that echo their arguments."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name in ('srun', 'python'):
        path = bin_dir / name
        path.write_text(FAKE)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    env.pop('PYTHON', None)
    return env


def _run(script, args, env):
    out = subprocess.run(['bash', osp.join(TOOLS, script), *args], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.splitlines()


def test_slurm_train_command_line(fake_bin):
    env = dict(fake_bin, GPUS='16', GPUS_PER_NODE='8', CPUS_PER_TASK='4',
               SRUN_ARGS='--qos=high --time=1:00:00')
    argv = _run('slurm_train.sh', ['gpu', 'job1', 'configs/2ndm_lsun.py', 'work_dirs/lsun',
                                   '--resume', '--cfg-options', 'train_cfg.max_iters=10'], env)
    assert argv[0] == 'srun'
    assert argv[1:3] == ['-p', 'gpu']
    for expected in ('--job-name=job1', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
                     '--cpus-per-task=4', '--kill-on-bad-exit=1', '--qos=high', '--time=1:00:00'):
        assert expected in argv
    launched = argv[argv.index('python'):]
    assert launched == [
        'python', '-u', osp.join(TOOLS, 'train.py'), 'configs/2ndm_lsun.py',
        '--work-dir=work_dirs/lsun', '--launcher=slurm', '--resume', '--cfg-options',
        'train_cfg.max_iters=10'
    ]


def test_slurm_test_command_line(fake_bin):
    argv = _run('slurm_test.sh', ['gpu', 'eval', 'configs/2ndm_lsun.py', 'ckpt.pth', '--out',
                                  'metrics.json'], fake_bin)
    assert '--ntasks=8' in argv  # default GPUS
    launched = argv[argv.index('python'):]
    assert launched == ['python', '-u', osp.join(TOOLS, 'test.py'), 'configs/2ndm_lsun.py',
                        'ckpt.pth', '--launcher=slurm', '--out', 'metrics.json']


def test_dist_train_uses_torchrun_with_multinode_variables(fake_bin):
    env = dict(fake_bin, NNODES='2', NODE_RANK='1', MASTER_ADDR='10.1.2.3', PORT='29999')
    argv = _run('dist_train.sh', ['configs/2ndm_cifar10.py', '4', '--amp'], env)
    assert argv[:3] == ['python', '-m', 'torch.distributed.run']
    for expected in ('--nnodes=2', '--node_rank=1', '--master_addr=10.1.2.3',
                     '--nproc_per_node=4', '--master_port=29999'):
        assert expected in argv
    assert argv[-5:] == [osp.join(TOOLS, 'train.py'), 'configs/2ndm_cifar10.py', '--launcher',
                         'pytorch', '--amp']


def test_dist_test_passes_checkpoint(fake_bin):
    argv = _run('dist_test.sh', ['cfg.py', 'ckpt.pth', '2', '--work-dir', 'w'], fake_bin)
    assert argv[-7:] == [osp.join(TOOLS, 'test.py'), 'cfg.py', 'ckpt.pth', '--launcher',
                         'pytorch', '--work-dir', 'w']


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_tools_help_lists_mmagic_arguments(tool):
    out = subprocess.run([sys.executable, osp.join(TOOLS, tool), '--help'], check=True,
                         capture_output=True, text=True).stdout
    for option in ('--work-dir', '--cfg-options', '--launcher'):
        assert option in out
    if tool == 'train.py':
        assert '--resume' in out and '--amp' in out
