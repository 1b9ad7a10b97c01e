"""tools/benchmark_host_overhead.py: times the distiller's mode switch and EMA update
against the PyTorch / MMEngine paths they replace, alone and in training iterations."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools'))
from benchmark_host_overhead import use_mmengine_paths  # noqa: E402
from helpers.distiller_assets import tiny_ema_distiller  # noqa: E402


def test_benchmark_times_both_variants(tmp_path):
    """A tiny run on the digits DSM+KD config: every block timed, ratios of the medians,
    the saved shares read back."""
    out = tmp_path / 'host.json'
    subprocess.run([sys.executable, osp.join(REPO, 'tools', 'benchmark_host_overhead.py'),
                    'configs/digits/2ndm_digits16_dsm_kd.py', '--batch', '2', '--rounds', '2',
                    '--block', '1', '--threads', '1', '--out', str(out)],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    names = ['mmengine', 'project']
    sections = [('train_iteration', result['train_iteration'], result['ratio_iteration'])]
    sections += [(part, result['parts'][part], result['ratio_parts'][part])
                 for part in ('mode_switch', 'ema_update')]
    assert sorted(result['parts']) == sorted(result['ratio_parts']) == ['ema_update',
                                                                        'mode_switch']
    for section, times, ratio in sections:
        assert sorted(times) == names, section
        for name in names:
            assert len(times[name]['blocks']) == 2 and times[name]['median'] > 0
        assert ratio == pytest.approx(times['project']['median'] / times['mmengine']['median'],
                                      abs=1e-12)
        if section != 'train_iteration':
            saved = (times['mmengine']['median'] - times['project']['median']) / \
                result['train_iteration']['mmengine']['median']
            assert result['saved_share'][section] == pytest.approx(saved, abs=1e-12)
    assert result['batch'] == 2 and result['threads'] == 1 and result['ckpt'] is None
    assert result['config'] == 'configs/digits/2ndm_digits16_dsm_kd.py'


def test_mmengine_variant_takes_the_replaced_paths():
    """The reference variant runs PyTorch's walk (the early return's record is never
    written) and MMEngine's loop; it leaves the modes and the average the project's paths
    leave."""
    from mmengine.model import BaseAveragedModel

    from mmdiff_2ndm.models import DiffusionDistiller
    ema = dict(type='WarmupExponentialMovingAverage', momentum=0.1)
    distiller, project = tiny_ema_distiller(ema), tiny_ema_distiller(ema)
    use_mmengine_paths(distiller)
    assert distiller.train.__func__ is DiffusionDistiller.set_modes
    assert distiller.student_ema.update_parameters.__func__ is \
        BaseAveragedModel.update_parameters
    for model in (distiller, project):
        model.eval()
        model.train()
        for _ in range(3):
            with torch.no_grad():
                for param in model.student.parameters():
                    param.mul_(0.9)
            model.student_ema.update_parameters(model.student)
    assert distiller._modes_left is None and project._modes_left is not None
    modes = [(name, m.training) for name, m in distiller.named_modules()]
    assert modes == [(name, m.training) for name, m in project.named_modules()]
    assert distiller.student.training and not distiller.teacher.training
    mine, theirs = distiller.state_dict(), project.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
