"""The digits study end to end through tools/digits_study.py, tiny preset: every
artefact, raw and EMA scored at every checkpoint, cached evaluations reused."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


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
                 'grid_dense.png', 'figure.png', *grids]:
        path = osp.join(work_dir, name)
        assert osp.isfile(path) and osp.getsize(path) > 0, name
    for arm in arms:  # trained through tools/train.py: a checkpoint per curve point
        for step in (1, 2, 3):
            assert osp.isfile(osp.join(work_dir, f'{arm}_seed0', f'iter_{step}.pth'))
    with open(osp.join(work_dir, 'results.json')) as f:
        report = json.load(f)
    runs = sorted((r['arm'], r['seed']) for r in report['runs'])
    assert runs == [('2ndm', 0), ('dsm_kd', 0)]
    # the tiny preset trains its own teacher, and the report says which one it scored
    assert report['meta']['teacher'] == osp.join(work_dir, 'teacher', 'iter_4.pth')
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
    assert '](figure.png)' in table  # the labelled teacher | arms figure
    assert 'Same pruned channels in every arm of seeds [0]' in table  # paired by seed

    # --eval-only reuses every cached evaluation: the same numbers, nothing retrained
    again = subprocess.run(cmd + ['--eval-only'], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    with open(osp.join(work_dir, 'results.json')) as f:
        assert json.load(f)['runs'] == report['runs']
