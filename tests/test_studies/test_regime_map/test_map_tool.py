"""tools/regime_map.py end to end, tiny preset: the map's teacher run (EMA scored at every
checkpoint), plateau run, two recipes at the hardest level scored with both samplers,
report; a second call trains and scores nothing; a run stopped partway and parked resumes
in a fresh work dir; a killed teacher scoring continues; a fresh work dir takes the teacher
the results dir keeps; another teacher is refused."""
import datetime
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys

import torch

from mmdiff_2ndm.studies.digits.runs import halfway_ckpt_interval, halfway_iter, train
from mmdiff_2ndm.studies.regime_map import RECIPES, RegimeMap
from mmdiff_2ndm.studies.regime_map.cells import index_runs
from mmdiff_2ndm.studies.regime_map.lengths import length_check, read_lengths
from mmdiff_2ndm.studies.regime_map.teacher_file import teacher_digest
from mmdiff_2ndm.utils import safe_torch_load

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def test_tiny_map_end_to_end_and_resume(tmp_path, monkeypatch):
    work_dir, results = str(tmp_path / 'work'), tmp_path / 'results'
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    env['PYTHONPATH'] = REPO
    cmd = [sys.executable, 'tools/regime_map.py', '--preset', 'tiny', '--work-dir', work_dir,
           '--results-dir', str(results), '--threads-per-run', '1']
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    curve = json.loads((results / 'teacher_curve.json').read_text())
    assert sorted(curve['curve']) == ['2', '4'] and curve['plateau']['iters'] in (2, 4)
    assert curve['model'] == 'ema' and curve['iters'] == 4
    for step in ('2', '4'):
        for name in ('ddim50', 'ddim10'):
            assert math.isfinite(curve['curve'][step]['samplers'][name]['fid'])
    teacher_dir = osp.join(work_dir, 'teacher_cosine4')
    assert osp.isfile(osp.join(teacher_dir, 'iter_2.pth'))  # a checkpoint per interval
    log = open(osp.join(teacher_dir, 'train_stdout.log')).read()
    # the cosine lr over the 4 iterations (1e-3 -> 1e-5), not the config's constant 1e-3
    assert 'student.lr: 1.0000e-03' in log and 'student.lr: 1.5498e-04' in log
    plateau = json.loads((results / 'plateau.json').read_text())
    assert sorted(plateau['curve']) == ['2', '4'] and plateau['plateau']['iters'] in (2, 4)
    teacher = json.loads((results / 'teacher.json').read_text())
    assert sorted(teacher['samplers']) == ['ddim10', 'ddim50']
    assert teacher['iters'] == 4 and teacher['model'] == 'ema'
    assert teacher['checkpoint'] == 'teacher_cosine4/iter_4.pth'
    # the results dir keeps the teacher it records (a slim copy: the run's EMA)
    assert teacher['sha256'] == teacher_digest(osp.join(teacher_dir, 'iter_4.pth')) \
        == teacher_digest(str(results / 'teacher_ema.pth'))
    # the map's teacher is the run's final checkpoint: its EMA's samples are the curve's last
    assert teacher['samplers']['ddim50']['fid'] == \
        curve['curve']['4']['samplers']['ddim50']['fid']
    for recipe in ('dsm_kd', '2ndm_log'):
        run = json.loads((results / 'runs' / 'p27' / f'{recipe}_seed0.json').read_text())
        assert run['iters'] == plateau['plateau']['iters']  # the measured length
        assert run['params'] < teacher['params']  # pruned
        assert run['score_s'] > 0  # how long scoring took, for --until's estimates
        for model in ('raw', 'ema'):
            for name, scores in run['final'][model]['samplers'].items():
                for key in ('fid', 'ssim', 'sample_mse'):
                    assert math.isfinite(scores[key]), (recipe, model, name, key)
        jac = run['final']['raw']['jacobian']
        assert len(jac['jv_rel_err']) == 3 and len(run['pruned']['jacobian']['jv_rel_err']) == 3
        assert any('ignored_layers' in o for o in run['options'])  # the level's settings
        # scored halfway too (the cost table's equal wall-clock), then only the scored
        # checkpoints are kept
        assert run['halfway']['iters'] == run['iters'] // 2
        assert math.isfinite(run['halfway']['raw']['samplers']['ddim50']['fid'])
        kept = sorted(f for f in os.listdir(osp.join(work_dir, 'p27', f'{recipe}_seed0'))
                      if f.endswith('.pth'))
        assert kept == sorted({f'iter_{run["iters"] // 2}.pth', f'iter_{run["iters"]}.pth'})
    dsm_kd, log = (json.loads((results / 'runs' / 'p27' / f'{r}_seed0.json').read_text())
                   for r in ('dsm_kd', '2ndm_log'))
    assert dsm_kd['record'] == log['record']  # paired: same pruned channels
    # the samplers are different: DDIM-10 and DDIM-50 samples are scored apart
    assert dsm_kd['final']['raw']['samplers']['ddim10'] != \
        dsm_kd['final']['raw']['samplers']['ddim50']
    text = (results / 'README.md').read_text()
    assert '**2 of 2 planned**' in text and '| p27 | 1/1 (seeds 0) | 1/1 (seeds 0) |' in text
    assert '## Teacher length' in text and '| 2 | ' in text
    for png in ('heatmap_ddim50.png', 'heatmap_ddim10.png', 'plateau.png', 'samples_p27.png',
                'teacher_curve.png'):
        assert (results / png).stat().st_size > 0

    before = {p: osp.getmtime(p) for p in map(str, results.rglob('runs/*/*.json'))}
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert '2 of 2 runs done; 0 to go' in again.stdout
    assert 'teacher iter' not in again.stdout  # the teacher's curve is not scored again
    assert {p: osp.getmtime(p) for p in before} == before  # nothing scored again

    # the cost per iteration, measured back to back on the finished runs; a recipe not
    # trained yet (the batch-2 DSM+KD) on a finished run's pruned student, the references
    # (DSM+KD) timed with the recipes named
    timed = subprocess.run(cmd + ['--timing', '--timing-rounds', '2', '--timing-block', '1',
                                  '--recipes', '2ndm_log', 'dsm_kd_b2'],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert timed.returncode == 0, timed.stdout[-3000:] + timed.stderr[-3000:]
    timing = json.loads((results / 'timing.json').read_text())['levels']['p27']
    assert (timing['seed'], timing['rounds'], timing['block']) == (0, 2, 1)
    assert sorted(timing['times']) == ['2ndm_log', 'dsm_kd', 'dsm_kd_b2']
    assert timing['timed_on'] == {'dsm_kd': 'p27/dsm_kd_seed0', '2ndm_log': 'p27/2ndm_log_seed0',
                                  'dsm_kd_b2': 'p27/dsm_kd_seed0'}
    assert timing['batch_sizes'] == {'dsm_kd': 8, '2ndm_log': 8, 'dsm_kd_b2': 2}  # tiny: 8
    assert all(len(t['blocks']) == 2 and t['median'] > 0 for t in timing['times'].values())
    assert timing['ratios'] == {rc: timing['times'][rc]['median']
                                / timing['times']['dsm_kd']['median']
                                for rc in ('2ndm_log', 'dsm_kd_b2')}
    assert ('timing dsm_kd_b2: no final checkpoint of p27/dsm_kd_b2_seed0 in the work dir; '
            "timed on p27/dsm_kd_seed0's pruned student") \
        in timed.stdout
    text = (results / 'README.md').read_text()
    assert f'| p27 | 2ndm_log - dsm_kd | {timing["ratios"]["2ndm_log"]:.2f}x |' in text
    assert ('levels: p27 (2 blocks of 1, 1 thread, seed 0 runs; dsm_kd_b2 timed on '
            "p27/dsm_kd_seed0's pruned student)") in text
    assert {p: osp.getmtime(p) for p in before} == before  # the runs are untouched
    assert not osp.exists(osp.join(work_dir, 'p27', 'dsm_kd_b2_seed0'))  # nothing trained
    missing = subprocess.run(cmd + ['--timing', '--seeds', '1'], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=900)
    assert missing.returncode != 0
    assert 'Timing needs a trained run at p27, seed 1; none is trained yet' in missing.stderr

    # a run stopped partway, parked, its folder lost (a fresh clone), restored and resumed
    # by the screen: the same training as the uninterrupted run, bitwise
    for name in ('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'):
        monkeypatch.delenv(name, raising=False)
    run, length = ('p27', 'dsm_kd', 0), plateau['plateau']['iters']
    run_dir, half = osp.join(work_dir, 'p27', 'dsm_kd_seed0'), halfway_iter(length)
    uninterrupted = safe_torch_load(osp.join(run_dir, f'iter_{length}.pth'), map_location='cpu')
    scored = results / 'runs' / 'p27' / 'dsm_kd_seed0.json'
    first = json.loads(scored.read_text())
    scored.unlink()
    shutil.rmtree(run_dir)
    regime_map = RegimeMap('tiny', work_dir, str(results), threads=1)
    # stopped at `half`: its first `half` iterations (MMEngine ends a scheduler without `end`
    # at max_iters; the stopped run's ended at `length`)
    train(RECIPES['dsm_kd'].config, run_dir, half,
          regime_map.options(run, length, 8) + [f'param_scheduler.end={length}'], 1,
          stream=False, ckpt_interval=halfway_ckpt_interval(length))
    os.remove(osp.join(run_dir, 'wall.json'))  # as a run stopped at its deadline leaves it
    parked = subprocess.run(cmd + ['--park'], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=900)
    assert parked.returncode == 0, parked.stdout[-3000:] + parked.stderr[-3000:]
    assert f'[map] parked p27/dsm_kd_seed0 at {half} of {length} iterations' in parked.stdout
    assert (results / 'pending' / 'p27' / 'dsm_kd_seed0' / f'iter_{half}.pth').is_file()
    shutil.rmtree(run_dir)
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (f'p27/dsm_kd_seed0: restored from pending/p27/dsm_kd_seed0, resumes at {half} of '
            f'{length} iterations') in resumed.stdout
    assert not (results / 'pending' / 'p27' / 'dsm_kd_seed0').exists()  # scored: unparked
    carried = safe_torch_load(osp.join(run_dir, f'iter_{length}.pth'), map_location='cpu')
    assert sorted(carried['state_dict']) == sorted(uninterrupted['state_dict'])
    for key, value in uninterrupted['state_dict'].items():  # the EMA's included
        assert torch.equal(carried['state_dict'][key], value), key
    adam, adam_straight = (c['optimizer']['student']['state'] for c in (carried, uninterrupted))
    assert sorted(adam) == sorted(adam_straight)
    for index, state in adam_straight.items():
        assert all(torch.equal(carried_value, state[name])
                   for name, carried_value in adam[index].items()), index
    second = json.loads(scored.read_text())
    assert second['final'] == first['final'] and second['halfway'] == first['halfway']

    # the budget: a 2ndM form half as long, its own lr annealed over it, costed with the
    # full form's timed iteration
    half = subprocess.run(cmd + ['--recipes', '2ndm_log_half'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert half.returncode == 0, half.stdout[-3000:] + half.stderr[-3000:]
    short = json.loads((results / 'runs' / 'p27' / '2ndm_log_half_seed0.json').read_text())
    assert short['iters'] == round(plateau['plateau']['iters'] / 2)
    assert short['record'] == dsm_kd['record']  # paired with the map's other runs
    assert 'model.losses.jacobian.form=log_ratio' in short['options']
    assert math.isfinite(short['final']['raw']['samplers']['ddim10']['fid'])
    text = (results / 'README.md').read_text()
    ratio = timing['ratios']['2ndm_log']
    assert f'| p27 | 2ndm_log_half - dsm_kd | {ratio:.2f}x; 0.5x as long: {0.5 * ratio:.2f}x ' \
        'the wall-clock | ddim50 | 1 |' in text
    assert '| p27 | 2ndm_log_half - dsm_kd | ddim50 | 1 |' in text  # paired differences

    # --until (the end of a sitting): a recipe no evaluated run has timed cannot be shown to
    # end in time, so it is not started and stays planned; a time already past is refused
    later = (datetime.datetime.now() + datetime.timedelta(days=1)).isoformat(timespec='minutes')
    held = subprocess.run(cmd + ['--recipes', 'dsm', '--until', later], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert held.returncode == 0, held.stdout[-3000:] + held.stderr[-3000:]
    assert 'not started: p27/dsm_seed0: no evaluated run has logged the time per iteration ' \
        'of its recipe' in held.stdout
    assert '[map] 1 of 1 runs left for a later sitting (--until ' in held.stdout
    assert not (results / 'runs' / 'p27' / 'dsm_seed0.json').exists()
    past = subprocess.run(cmd + ['--until', '2000-01-01T00:00'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert past.returncode != 0 and "--until '2000-01-01T00:00' is already past" in past.stderr

    # feature KD + 2ndM: refused while the screen cannot name the form, trained against
    # feature KD alone when the recipe is named on the command line
    combine = [a if a != 'tiny' else 'combine' for a in cmd]
    refused = subprocess.run(combine, cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=900)
    assert refused.returncode != 0
    assert "--preset combine: the screen cannot name the better 2ndM form yet (2ndm has 0 " \
        "of the screen's 3 paired seeds, 2ndm_log has 1 of the screen's 3 paired seeds at " \
        "p27). Finish the screen there first" in refused.stderr
    assert '--recipes feat_2ndm (or feat_2ndm_log)' in refused.stderr
    combined = subprocess.run(cmd + ['--recipes', 'dsm_kd_feat', 'feat_2ndm_log'], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=900)
    assert combined.returncode == 0, combined.stdout[-3000:] + combined.stderr[-3000:]
    both = json.loads((results / 'runs' / 'p27' / 'feat_2ndm_log_seed0.json').read_text())
    assert 'model.losses.feat.type=FeatureKDLoss' in both['options']
    assert 'model.losses.jacobian.form=log_ratio' in both['options']
    assert both['record'] == dsm_kd['record']  # paired with the map's other runs
    assert {'loss_feat', 'loss_jacobian'} <= set(both['loss_terms']['last'])
    text = (results / 'README.md').read_text()
    assert '| p27 | feat_2ndm_log - dsm_kd_feat | ddim50 | 1 |' in text
    assert '## Feature KD + the better 2ndM form' in text

    # the length check: DSM+KD twice as long; a level where it lowers the proxy FID by more
    # than 5 % (forced here: the tiny runs' FIDs are noise) gets the longer length
    longer = subprocess.run(cmd + ['--recipes', 'dsm_kd_x2'], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert longer.returncode == 0, longer.stdout[-3000:] + longer.stderr[-3000:]
    length = plateau['plateau']['iters']
    x2_path = results / 'runs' / 'p27' / 'dsm_kd_x2_seed0.json'
    x2 = json.loads(x2_path.read_text())
    assert x2['iters'] == 2 * length and x2['record'] == dsm_kd['record']
    x2['final']['raw']['samplers']['ddim50'].update(
        fid=0.5 * dsm_kd['final']['raw']['samplers']['ddim50']['fid'], fid_boot=0.0)
    x2_path.write_text(json.dumps(x2))
    ref_path = results / 'runs' / 'p27' / 'dsm_kd_seed0.json'
    ref = json.loads(ref_path.read_text())
    ref['final']['raw']['samplers']['ddim50']['fid_boot'] = 0.0  # 24 samples: noise only
    ref_path.write_text(json.dumps(ref))
    lengthened = subprocess.run(cmd + ['--lengthen', '--levels', 'p27'], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=900)
    assert lengthened.returncode == 0, lengthened.stdout[-3000:] + lengthened.stderr[-3000:]
    assert f'[map] length p27: lengthened {length} -> {2 * length} iterations (ddim50 proxy ' \
        'FID -50.0 %' in lengthened.stdout
    archive = results / f'archive_p27_{length}'
    assert sorted(p.name for p in (archive / 'runs' / 'p27').iterdir()) == [
        '2ndm_log_half_seed0.json', '2ndm_log_seed0.json', 'dsm_kd_feat_seed0.json',
        'dsm_kd_seed0.json', 'dsm_kd_x2_seed0.json', 'feat_2ndm_log_seed0.json']
    assert sorted(p.name for p in (results / 'runs' / 'p27').iterdir()) == ['dsm_kd_seed0.json']
    text = (results / 'README.md').read_text()
    assert f'| p27 | {2 * length} | {length}: dsm_kd ' in text
    assert '--report-only`' in text  # the map's report, not one restricted to --levels
    # the screen trains the level's other cells at the new length, paired with the adopted run
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f'1 of 2 runs done; 1 to go (run length: p27: {2 * length};' in again.stdout
    log = json.loads((results / 'runs' / 'p27' / '2ndm_log_seed0.json').read_text())
    assert (log['iters'], log['finetune_iters']) == (2 * length, 2 * length)
    assert log['record'] == dsm_kd['record']
    # --converge: the check at the new length (DSM+KD 4x the plateau), applied as it comes out
    converged = subprocess.run(cmd + ['--converge', '--max-doublings', '1'], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=900)
    assert converged.returncode == 0, converged.stdout[-3000:] + converged.stderr[-3000:]
    assert f'1 to go (run length: p27: {2 * length};' in converged.stdout
    if (results / f'archive_p27_{2 * length}').exists():
        assert read_lengths(str(results))['p27']['iters'] == 4 * length
        assert '[map] length p27: 1 doublings in this call (--max-doublings); ' \
            f'{4 * length} is not checked yet' in converged.stdout
    else:
        pair = [json.loads((results / 'runs' / 'p27' / f'{r}_seed0.json').read_text())
                for r in ('dsm_kd', 'dsm_kd_x2')]
        check = length_check(index_runs(pair), 'p27', 'ddim50')
        assert check['iters_long'] == 4 * length and not check['longer_needed']
        assert read_lengths(str(results))['p27']['iters'] == 2 * length
    bad = subprocess.run(cmd + ['--converge', '--max-doublings', '0'], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert bad.returncode != 0 and '--max-doublings must be >= 1, got 0.' in bad.stderr

    # a teacher scoring killed after its first checkpoint continues with the next one
    os.remove(results / 'teacher_curve.json')
    cache = osp.join(teacher_dir, 'curve.json')
    with open(cache) as f:
        partial = {'2': json.load(f)['2']}
    with open(cache, 'w') as f:
        json.dump(partial, f)
    resumed = subprocess.run(cmd + ['--teacher-only'], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert 'teacher iter 4' in resumed.stdout and 'teacher iter 2' not in resumed.stdout
    assert json.loads((results / 'teacher_curve.json').read_text()) == curve

    # a fresh work dir takes the recorded teacher from the results dir, not trained again
    shutil.rmtree(teacher_dir)
    restored = subprocess.run(cmd + ['--teacher-only'], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert '(the recorded teacher, sha256 ' in restored.stdout
    assert not osp.exists(osp.join(teacher_dir, 'iter_4.pth'))
    # and scores it at once, against the record (same feature network: same numbers)
    assert '[map] scoring the recorded teacher in this work dir, against teacher.json' \
        in restored.stdout
    # a work dir whose feature network measures otherwise than the recorded runs' is refused
    (results / 'teacher.json').write_text(json.dumps(dict(teacher, feature_accuracy=0.5)))
    os.remove(osp.join(teacher_dir, 'teacher_jv.pt'))
    remeasured = subprocess.run(cmd + ['--teacher-only'], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=900)
    assert remeasured.returncode != 0
    assert 'feature network accuracy 0.5 -> ' in remeasured.stderr
    assert 'a fresh work dir trains the feature network again' in remeasured.stderr
    # a teacher other than the recorded one is refused, naming both and the fix
    tampered = dict(teacher, sha256='0' * 64)
    (results / 'teacher.json').write_text(json.dumps(tampered))
    refused = subprocess.run(cmd + ['--teacher-only'], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=900)
    assert refused.returncode != 0
    assert 'is not the one the runs in' in refused.stderr
    assert 'start a new map with another --results-dir' in refused.stderr


def test_tiny_map_on_the_patches(tmp_path):
    """``--dataset patches``: its own feature network, teacher, plateau and run, on
    SkimagePatches, in the data set's default folders below the given ones."""
    work_dir, results = str(tmp_path / 'work'), tmp_path / 'results'
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    env['PYTHONPATH'] = REPO
    cmd = [sys.executable, 'tools/regime_map.py', '--preset', 'tiny', '--dataset', 'patches',
           '--work-dir', work_dir, '--results-dir', str(results), '--threads-per-run', '1',
           '--recipes', 'dsm_kd']
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    teacher = json.loads((results / 'teacher.json').read_text())
    assert teacher['dataset'] == 'patches'
    record = json.loads(open(osp.join(work_dir, 'feature_net_patches.json')).read())
    assert record['dataset'] == 'patches' and teacher['feature_accuracy'] == \
        record['test_accuracy']
    config = open(osp.join(work_dir, 'teacher_cosine4', 'teacher_digits16.py')).read()
    assert "type='SkimagePatches'" in config and 'SklearnDigits' not in config
    run = json.loads((results / 'runs' / 'p27' / 'dsm_kd_seed0.json').read_text())
    assert 'train_dataloader.dataset.type=SkimagePatches' in run['options']
    assert math.isfinite(run['final']['raw']['samplers']['ddim50']['fid'])
    text = (results / 'README.md').read_text()
    assert text.startswith('# Regime map of recovery recipes (scikit-image patches 16x16)')
    assert '--report-only --dataset patches' in text


def test_tiny_map_of_depth_pruned_dits(tmp_path):
    """``--arch dit``: a class-conditional DiT teacher in the U-Net's place, students
    depth-pruned by the learnable selector (the same blocks for every recipe of a seed),
    the feature term matched block by block, scored with class labels."""
    work_dir, results = str(tmp_path / 'work'), tmp_path / 'results'
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    env['PYTHONPATH'] = REPO
    cmd = [sys.executable, 'tools/regime_map.py', '--preset', 'tiny', '--arch', 'dit',
           '--work-dir', work_dir, '--results-dir', str(results), '--threads-per-run', '1',
           '--recipes', 'dsm_kd', 'dsm_kd_feat']
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    teacher = json.loads((results / 'teacher.json').read_text())
    assert teacher['arch'] == 'dit' and teacher['config'] == 'teacher_digits16_dit.py'
    config = open(osp.join(work_dir, 'teacher_cosine4', 'teacher_digits16_dit.py')).read()
    assert "type='DiTTransformer2DModel'" in config and 'num_attention_heads=1' in config
    runs = {r: json.loads((results / 'runs' / 'd2' / f'{r}_seed0.json').read_text())
            for r in ('dsm_kd', 'dsm_kd_feat')}
    assert runs['dsm_kd']['record'] == runs['dsm_kd_feat']['record']  # same kept block
    for run in runs.values():
        assert run['params'] < teacher['params']
        for model in ('raw', 'ema'):
            for scores in run['final'][model]['samplers'].values():
                assert math.isfinite(scores['fid']) and math.isfinite(scores['ssim'])
        assert all(math.isfinite(e) for e in run['final']['raw']['jacobian']['jv_rel_err'])
        log = open(osp.join(work_dir, 'd2', f'{run["recipe"]}_seed0',
                            'train_stdout.log')).read()
        assert 'kept 1 of 4 transformer_blocks' in log
    assert 'model.losses.feat.layers=dit' in runs['dsm_kd_feat']['options']
    text = (results / 'README.md').read_text()
    assert text.startswith('# Regime map of recovery recipes (digits 16x16, DiT teacher)')
    assert '| d2 | 60,012 | 25.9 % | - (depth) |' in text and '| p27 |' not in text
    assert (results / 'samples_d2.png').stat().st_size > 0
    # one seed gives no interval: the follow-up stage has nothing to add
    again = subprocess.run(cmd + ['--follow-up'], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert '0 of 0 runs done' in again.stdout
    assert 'No cell is flagged by the runs so far.' in (results / 'README.md').read_text()
