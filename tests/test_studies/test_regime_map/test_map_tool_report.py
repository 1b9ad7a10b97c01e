"""tools/regime_map.py's report, from synthetic run JSON (nothing trained): a step of the
map (a preset, ``--levels``, ``--seeds``) writes the whole map's report, the one
``--report-only`` writes; a data set's map covers its own levels."""
import importlib.util
import json
import os.path as osp

from mmdiff_2ndm.studies.regime_map.axes import PRESETS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TIMESTEPS = PRESETS['screen']['ftle_timesteps']


def _tool():
    spec = importlib.util.spec_from_file_location('regime_map_tool',
                                                  osp.join(REPO, 'tools', 'regime_map.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _run(level, recipe, seed, fid, iters=100, boot=1.0):
    scores = dict(samplers={name: dict(fid=fid, fid_boot=boot, ssim=0.9, sample_mse=0.01)
                            for name in PRESETS['screen']['samplers']},
                  eps_mse=0.002, eps_mse_t50=0.01, params=47727,
                  jacobian=dict(jv=[1.0] * len(TIMESTEPS), jv_rel_err=[0.2] * len(TIMESTEPS),
                                jv_log_ratio=[0.0] * len(TIMESTEPS)))
    return dict(level=level, recipe=recipe, seed=seed, record='abc', s_per_iter=0.2,
                iters=iters, finetune_iters=iters, options=[], halfway=None,
                final=dict(raw=scores, ema=scores),
                pruned=dict(jacobian=dict(jv_rel_err=[0.9] * len(TIMESTEPS))))


def _results(path, runs, dataset='digits'):
    (path / 'runs').mkdir(parents=True)
    (path / 'teacher.json').write_text(json.dumps(dict(
        dataset=dataset, iters=100, model='ema', params=177427,
        samplers={name: dict(fid=20.0, fid_boot=1.0, ssim=1.0, sample_mse=0.0)
                  for name in PRESETS['screen']['samplers']})))
    curve = {str(i): dict(samplers={name: dict(fid=100.0 - i / 10, fid_boot=1.0, ssim=0.9,
                                               sample_mse=0.01)
                                    for name in PRESETS['screen']['samplers']},
                          eps_mse=0.002, eps_mse_t50=0.01, params=47727) for i in (50, 100)}
    (path / 'plateau.json').write_text(json.dumps(dict(
        level='p27', recipe='dsm_kd', seed=0, iters=100, interval=50, sampler='ddim50',
        model='raw', tol=0.05, curve=curve, eps_plateau=dict(iters=100, fid=0.002, best=0.002,
                                                             reached=True),
        plateau=dict(iters=100, fid=90.0, best=90.0, reached=True))))
    for run in runs:
        folder = path / 'runs' / run['level']
        folder.mkdir(exist_ok=True)
        (folder / f'{run["recipe"]}_seed{run["seed"]}.json').write_text(json.dumps(run))


def _runs_done(text):
    """The report's "Runs done" table: level -> recipe -> cell."""
    rows = [[cell.strip() for cell in line.strip('|').split('|')]
            for line in text.split('## Runs done')[1].split('##')[0].splitlines()
            if line.startswith('| ') and not line.startswith('|---')]
    return {row[0]: dict(zip(rows[0][1:], row[1:])) for row in rows[1:]}


def test_a_step_of_the_map_writes_the_whole_maps_report(tmp_path):
    runs = [_run('p37', recipe, seed, 50.0 + seed) for seed in range(3)
            for recipe in ('dsm_kd', '2ndm_log')]
    # p37's length check on seeds 0-1 (run by --seeds 0 1): long enough
    runs += [_run('p37', 'dsm_kd_x2', seed, 50.0 + seed, iters=200) for seed in range(2)]
    # p57's on seed 0: 10 % lower, within 2 spreads of 10: undecided, seeds 0-2 decide it
    runs += [_run('p57', 'dsm_kd', 0, 50.0, boot=10.0),
             _run('p57', 'dsm_kd_x2', 0, 45.0, iters=200, boot=10.0)]
    results = tmp_path / 'results'
    _results(results, runs)
    tool = _tool()
    base = ['--results-dir', str(results), '--work-dir', str(tmp_path / 'work')]
    whole = open(tool.main(base + ['--report-only'])).read()
    for step in (['--preset', 'length', '--levels', 'p37', '--seeds', '0', '1'],
                 ['--preset', 'dose'], ['--levels', 'p57', '--recipes', 'dsm']):
        assert open(tool.main(base + ['--report-only'] + step)).read() == whole, step
    # every evaluated run counts as planned (seed 1 of the 2x-long DSM+KD came from --seeds);
    # an undecided length check plans the seeds its hint asks for
    done = _runs_done(whole)
    assert done['p37']['dsm_kd_x2'] == '2/2 (seeds 0,1)'
    assert done['p57']['dsm_kd_x2'] == '1/3 (seeds 0)' and done['p57']['dsm_kd'] == '1/3 (seeds 0)'
    assert '--preset length --levels p57 --seeds 0 1 2`' in whole
    assert 'Rule: a cell screened with 3 paired seeds' in whole  # the screen's, not dose's 1
    # the patches' map covers its hardest level only, whatever step writes its report
    patches = tmp_path / 'patches'
    _results(patches, [_run('p27', 'dsm_kd', 0, 60.0)], 'patches')
    base = ['--dataset', 'patches', '--results-dir', str(patches), '--work-dir',
            str(tmp_path / 'work')]
    text = open(tool.main(base + ['--report-only'])).read()
    assert open(tool.main(base + ['--report-only', '--preset', 'length'])).read() == text
    assert sorted(_runs_done(text)) == ['p27']
    assert '`python tools/regime_map.py --report-only --dataset patches`' in text
