"""tools/digits_study.py: the tiny preset end to end (every artefact, finite metrics), and
the table's gap-closed arithmetic."""
import importlib.util
import json
import math
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _study_module():
    spec = importlib.util.spec_from_file_location('digits_study',
                                                  osp.join(REPO, 'tools', 'digits_study.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_preset_end_to_end(tmp_path):
    work_dir = str(tmp_path / 'study')
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    env['PYTHONPATH'] = REPO
    result = subprocess.run(
        [sys.executable, 'tools/digits_study.py', '--preset', 'tiny', '--work-dir', work_dir,
         '--jobs', '2'], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'Table: {work_dir}/results.md' in result.stdout

    arms = ['dsm_kd', '2ndm']
    for name in ['results.md', 'results.json', 'ftle.png', 'feature_net.pt',
                 *[f'grid_{m}.png' for m in ['dense', *arms]]]:
        path = osp.join(work_dir, name)
        assert osp.isfile(path) and osp.getsize(path) > 0, name
    for arm in arms:  # trained through tools/train.py: MMEngine logs and checkpoints
        assert osp.isfile(osp.join(work_dir, f'{arm}_seed0', 'iter_3.pth'))
    with open(osp.join(work_dir, 'results.json')) as f:
        report = json.load(f)
    assert sorted(report['results']) == sorted(['dense', *arms])
    for name, runs in report['results'].items():
        for run in runs:
            for key in ('fid', 'fid_boot', 'ssim', 'sample_mse', 'eps_mse', 'eps_mse_t50'):
                assert math.isfinite(run[key]), (name, key, run[key])
            assert len(run['ftle']) == len(report['ftle_timesteps'])
            assert all(math.isfinite(v) and v > 0 for v in run['ftle'])
    dense, student = report['results']['dense'][0], report['results']['2ndm'][0]
    assert dense['eps_mse'] == 0.0 and dense['ssim'] == 1.0  # the teacher against itself
    assert student['params'] < dense['params']  # pruned 50 %
    table = open(osp.join(work_dir, 'results.md')).read()
    assert all(f'| {m} |' in table for m in ['dense', *arms])
    # equal wall-clock: the cheaper arm runs all 3 iterations, 2ndM stops at a checkpoint
    assert '## Equal training wall-clock' in table
    wallclock = report['wallclock']
    assert sorted(wallclock) == sorted(arms)
    assert wallclock['dsm_kd'][0]['iter'] == 3
    assert 1 <= wallclock['2ndm'][0]['iter'] <= 3
    assert all(math.isfinite(r['fid']) for runs in wallclock.values() for r in runs)


def test_gap_closed_and_feature_net_signature(tmp_path):
    study = _study_module()
    runs = lambda *fids: [dict(fid=f, fid_boot=0.1, ssim=0.9, sample_mse=0.01, eps_mse=0.01,
                               eps_mse_t50=0.02, params=10) for f in fids]
    results = dict(dense=runs(2.0), dsm=runs(10.0, 10.0), x=runs(6.0, 4.0))
    meta = dict(preset='t', seeds=[0, 1], finetune_iters=1, teacher_iters=1, num_samples=2,
                sample_steps=1, feature_accuracy=0.5, wall_s=1.0)
    path = str(tmp_path / 'results.md')
    study.write_table(results, {}, meta, path)
    row = [line for line in open(path) if line.startswith('| x |')][0].split('|')
    # per seed (10 - 6) / 8 = 0.5 and (10 - 4) / 8 = 0.75: mean 0.625, std 0.125
    assert row[6].strip() == '0.625 +- 0.12'
    assert row[4].strip() == '5 +- 1'
    assert row[2].strip() == '2'  # seeds

    # the TorchScript feature net has the StyleGAN-Inception call MMagic's FID makes
    net = torch.jit.script(study.DigitFeatureNet().eval())
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert net(images, return_features=True).shape == (4, 32)
    assert net(images).shape == (4, 10)
    assert np.isfinite(net(images, return_features=True).detach().numpy()).all()


def test_finished_runs_are_reused_and_interrupted_ones_resume(tmp_path, monkeypatch):
    study = _study_module()
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(study.subprocess, 'run', fake_run)
    finished = tmp_path / 'finished'
    finished.mkdir()
    (finished / 'iter_5.pth').write_bytes(b'')
    (finished / 'wall.json').write_text(json.dumps(dict(wall_s=12.5, resumed=False)))
    assert study._train('c.py', str(finished), 5, [], 1, stream=False) == 12.5
    assert calls == []  # not trained again

    interrupted = tmp_path / 'interrupted'
    interrupted.mkdir()
    (interrupted / 'iter_2.pth').write_bytes(b'')
    (interrupted / 'last_checkpoint').write_text(str(interrupted / 'iter_2.pth'))
    study._train('c.py', str(interrupted), 5, [], 1, stream=False)
    assert '--resume' in calls[-1]
    assert json.loads((interrupted / 'wall.json').read_text())['resumed'] is True

    fresh = tmp_path / 'fresh'
    study._train('c.py', str(fresh), 5, [], 1, stream=False)
    assert '--resume' not in calls[-1]
