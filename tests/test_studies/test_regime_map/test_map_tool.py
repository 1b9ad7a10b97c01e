"""tools/regime_map.py end to end, tiny preset: teacher, plateau run, two recipes at the
hardest level scored with both samplers, report; a second call trains and scores nothing."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def test_tiny_map_end_to_end_and_resume(tmp_path):
    work_dir, results = str(tmp_path / 'work'), tmp_path / 'results'
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    env['PYTHONPATH'] = REPO
    cmd = [sys.executable, 'tools/regime_map.py', '--preset', 'tiny', '--work-dir', work_dir,
           '--results-dir', str(results), '--threads-per-run', '1']
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    plateau = json.loads((results / 'plateau.json').read_text())
    assert sorted(plateau['curve']) == ['2', '4'] and plateau['plateau']['iters'] in (2, 4)
    teacher = json.loads((results / 'teacher.json').read_text())
    assert sorted(teacher['samplers']) == ['ddim10', 'ddim50']
    for recipe in ('dsm_kd', '2ndm_log'):
        run = json.loads((results / 'runs' / 'p27' / f'{recipe}_seed0.json').read_text())
        assert run['iters'] == plateau['plateau']['iters']  # the measured length
        assert run['params'] < teacher['params']  # pruned
        for model in ('raw', 'ema'):
            for name, scores in run['final'][model]['samplers'].items():
                for key in ('fid', 'ssim', 'sample_mse'):
                    assert math.isfinite(scores[key]), (recipe, model, name, key)
        jac = run['final']['raw']['jacobian']
        assert len(jac['jv_rel_err']) == 3 and len(run['pruned']['jacobian']['jv_rel_err']) == 3
        assert any('ignored_layers' in o for o in run['options'])  # the level's settings
    dsm_kd, log = (json.loads((results / 'runs' / 'p27' / f'{r}_seed0.json').read_text())
                   for r in ('dsm_kd', '2ndm_log'))
    assert dsm_kd['record'] == log['record']  # paired: same pruned channels
    # the samplers are different: DDIM-10 and DDIM-50 samples are scored apart
    assert dsm_kd['final']['raw']['samplers']['ddim10'] != \
        dsm_kd['final']['raw']['samplers']['ddim50']
    text = (results / 'README.md').read_text()
    assert '**2 of 2 planned**' in text and '| p27 | 1/1 (seeds 0) | 1/1 (seeds 0) |' in text
    for png in ('heatmap_ddim50.png', 'heatmap_ddim10.png', 'plateau.png', 'samples_p27.png'):
        assert (results / png).stat().st_size > 0

    before = {p: osp.getmtime(p) for p in map(str, results.rglob('runs/*/*.json'))}
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert '2 of 2 runs done; 0 to go' in again.stdout
    assert {p: osp.getmtime(p) for p in before} == before  # nothing scored again
