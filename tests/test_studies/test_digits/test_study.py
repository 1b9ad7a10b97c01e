"""tools/digits_study.py: the tiny preset end to end (every artefact, raw and EMA scored,
cached evaluations), the paired statistics and the run order."""
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
    cmd = [sys.executable, 'tools/digits_study.py', '--preset', 'tiny', '--work-dir', work_dir,
           '--jobs', '2']
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'Table: {work_dir}/results.md' in result.stdout

    arms = ['dsm_kd', '2ndm']
    grids = [f'grid_{a}_{m}.png' for a in arms for m in ('raw', 'ema')]
    for name in ['results.md', 'results.json', 'ftle.png', 'recovery.png', 'feature_net.pt',
                 'grid_dense.png', *grids]:
        path = osp.join(work_dir, name)
        assert osp.isfile(path) and osp.getsize(path) > 0, name
    for arm in arms:  # trained through tools/train.py: a checkpoint per curve point
        for step in (1, 2, 3):
            assert osp.isfile(osp.join(work_dir, f'{arm}_seed0', f'iter_{step}.pth'))
    with open(osp.join(work_dir, 'results.json')) as f:
        report = json.load(f)
    assert sorted((r['arm'], r['seed']) for r in report['runs']) == [('2ndm', 0),
                                                                      ('dsm_kd', 0)]
    dense = report['dense']['final']
    assert dense['eps_mse'] == 0.0 and dense['ssim'] == 1.0  # the teacher against itself
    for run in report['runs']:
        assert sorted(run['curve']) == ['1', '2', '3']
        for model in ('raw', 'ema'):  # both scored, at every checkpoint
            final = run['final'][model]
            for key in ('fid', 'fid_boot', 'ssim', 'sample_mse', 'eps_mse', 'eps_mse_t50'):
                assert math.isfinite(final[key]), (run['arm'], model, key, final[key])
            assert len(final['ftle']) == len(report['ftle_timesteps'])
            assert all(math.isfinite(v) and v > 0 for v in final['ftle'])
            assert final['params'] < dense['params']  # pruned
            assert all(math.isfinite(run['curve'][s][model]['fid']) for s in run['curve'])
        # the raw student and its EMA are different models after 3 updates
        assert run['final']['raw']['eps_mse'] != run['final']['ema']['eps_mse']
        assert run['record'] is not None
    table = open(osp.join(work_dir, 'results.md')).read()
    for arm in arms:
        for model in ('raw', 'ema'):
            assert f'| {arm} | {model} |' in table
    assert '## Paired by seed: arm - dsm_kd' in table
    assert '| 2ndm | raw | 1 |' in table and 'under 3 seeds: no interval' in table
    assert '## Equal training wall-clock' in table
    assert 'Same pruned channels in every arm of seeds [0]' in table  # paired by seed

    # --eval-only reuses every cached evaluation: the same numbers, nothing retrained
    again = subprocess.run(cmd + ['--eval-only'], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    with open(osp.join(work_dir, 'results.json')) as f:
        assert json.load(f)['runs'] == report['runs']


def test_bootstrap_interval_and_verdicts():
    study = _study_module()
    mean, low, high = study.bootstrap_ci([2.0, 2.0, 2.0])
    assert (mean, low, high) == (2.0, 2.0, 2.0)
    mean, low, high = study.bootstrap_ci([-3.0, -1.0, -2.0, -2.5, -1.5])
    assert mean == -2.0 and -3.0 <= low < -2.0 < high <= -1.0
    assert math.isnan(study.bootstrap_ci([1.0])[1])
    assert math.isnan(study.bootstrap_ci([1.0, 3.0])[2])  # 2 seeds: just their range
    assert study.verdict(low, high) == 'better'  # lower is better: the CI is below 0
    assert study.verdict(low, high, lower_is_better=False) == 'worse'  # e.g. SSIM
    assert study.verdict(-1.0, 2.0) == 'no difference shown'
    assert study.verdict(0.5, 2.0) == 'worse'
    assert study.verdict(float('nan'), float('nan')) == 'under 3 seeds: no interval'


def _run(arm, seed, fid, ssim=0.9):
    scores = dict(fid=fid, fid_boot=0.1, ssim=ssim, sample_mse=0.01, eps_mse=0.01,
                  eps_mse_t50=0.02, params=10, ftle=[1.0])
    return dict(arm=arm, seed=seed, final=dict(raw=scores, ema=dict(scores, fid=fid + 1)),
                curve={'1': dict(raw=scores, ema=scores)}, s_per_iter=1.0, wall=1.0,
                record='abc')


def test_paired_differences_gap_closed_and_recovery():
    study = _study_module()
    dense = dict(final=dict(fid=2.0), curve=dict(fid=2.0))
    runs = [_run('dsm', 0, 10.0), _run('dsm', 1, 12.0), _run('dsm_kd', 0, 5.0),
            _run('dsm_kd', 1, 4.0), _run('x', 0, 6.0), _run('x', 1, 2.0), _run('x', 2, 3.0)]
    arms = study._by_arm(runs)
    diff = study.paired_differences(arms, 'x', 'raw', dense['final']['fid'])
    assert diff['seeds'] == [0, 1]  # seed 2 has no DSM+KD partner
    assert diff['fid'][0] == -0.5  # (6 - 5 + 2 - 4) / 2
    assert diff['fid_lower_in'] == 1  # seed 1 only
    # gap closed per seed with a DSM run: (10 - 6) / 8 = 0.5, (12 - 2) / 10 = 1.0
    assert diff['gap_closed'][0] == 0.75
    assert study.gap_closed(10.0, 6.0, 2.0) == 0.5
    summary = study.recovery_summary(arms, dense)
    assert summary['dsm_kd']['fid'] == 4.5 and not summary['recovered']  # 4.5 > 1.5 * 2
    assert summary['dsm_gap'] == 9.0
    arms['dsm_kd'] = {0: _run('dsm_kd', 0, 2.5), 1: _run('dsm_kd', 1, 3.0)}
    assert study.recovery_summary(arms, dense)['recovered']  # 2.75 <= 3 and SSIM 0.9


def test_planned_runs_go_seed_by_seed():
    study = _study_module()
    runs = study.planned_runs(study.PRESETS['full'])
    assert runs[:5] == [(a, 0) for a in study.PRESETS['full']['arms']]
    seeds = {a: [s for r, s in runs if r == a] for a in study.PRESETS['full']['arms']}
    assert seeds['dsm_kd'] == seeds['2ndm'] == seeds['2ndm_unscaled'] == [0, 1, 2, 3, 4]
    assert seeds['dsm'] == seeds['first_order'] == [0, 1, 2]
    assert runs[-len(study.PRESETS['full']['lever_arms']):] == [
        (a, 0) for a in study.PRESETS['full']['lever_arms']]
    assert study.planned_runs(study.PRESETS['full'], seeds=[7], arms=['dsm']) == [('dsm', 7)]
    assert all(a in study.ARMS for a, _ in runs)


def test_feature_net_signature():
    study = _study_module()
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
