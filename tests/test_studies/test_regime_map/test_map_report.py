"""The regime map's report, from synthetic run JSON: which runs are done, paired
differences (the interval excludes 0 only where every seed agrees), heatmaps."""
import numpy as np
import pytest

from mmdiff_2ndm.studies.regime_map import paired, planned_runs, plateau_iteration, write_report
from mmdiff_2ndm.studies.regime_map.axes import PRESETS
from mmdiff_2ndm.studies.digits.statistics import t_interval
from mmdiff_2ndm.studies.regime_map.cells import HEATMAP_METRICS, holm_adjusted
from mmdiff_2ndm.studies.regime_map.report import (UNDECIDED_ALPHA, cell_colours, index_runs,
                                                   effective_options, heatmap, length_section,
                                                   panel_cells, remaining_section,
                                                   same_length_section, samples_figure)

TIMESTEPS = PRESETS['screen']['ftle_timesteps']


def fake_run(level, recipe, seed, fid, ssim, record='abc'):
    scores = dict(samplers={name: dict(fid=fid + (steps == 10) * 5.0, fid_boot=1.0, ssim=ssim,
                                       sample_mse=0.01 * (1.0 - ssim))
                            for name, steps in PRESETS['screen']['samplers'].items()},
                  eps_mse=0.002, eps_mse_t50=0.01, params=47727,
                  jacobian=dict(jv=[1.0] * len(TIMESTEPS), jv_rel_err=[0.2] * len(TIMESTEPS),
                                jv_log_ratio=[0.0] * len(TIMESTEPS)))
    return dict(level=level, recipe=recipe, seed=seed, record=record, s_per_iter=0.2,
                iters=100, halfway=None, final=dict(raw=scores, ema=scores),
                pruned=dict(jacobian=dict(jv_rel_err=[0.9] * len(TIMESTEPS))))


def fake_results():
    teacher = dict(samplers=dict(ddim50=dict(fid=90.0), ddim10=dict(fid=95.0)))
    runs = []
    for seed in range(3):
        runs += [fake_run('p27', 'dsm_kd', seed, 150.0 + seed, 0.90),
                 # better FID in every seed (by 8-12), SSIM noise around 0
                 fake_run('p27', '2ndm_log', seed, 150.0 + seed - 8 - 2 * seed,
                          0.90 + (0.002 if seed == 1 else -0.001)),
                 fake_run('p57', 'dsm_kd', seed, 120.0, 0.95)]
    runs.append(fake_run('p57', '2ndm', 0, 121.0, 0.951))
    return teacher, runs


def test_paired_differences_and_their_interval():
    _, runs = fake_results()
    cells = index_runs(runs)
    fid = paired(cells, 'p27', '2ndm_log', 'ddim50', 'fid')
    assert fid['seeds'] == [0, 1, 2]
    assert fid['diffs'] == pytest.approx([-8.0, -10.0, -12.0])
    assert fid['high'] < 0  # every seed better: the interval excludes 0
    ssim = paired(cells, 'p27', '2ndm_log', 'ddim50', 'ssim')
    assert ssim['low'] < 0 < ssim['high']
    rel = paired(cells, 'p27', '2ndm_log', 'ddim50', 'sample_mse', relative=True)
    assert rel['diffs'][1] == pytest.approx(100 * (0.098 - 0.1) / 0.1, abs=1e-3)
    one = paired(cells, 'p57', '2ndm', 'ddim50', 'fid')  # one seed: no interval
    assert one['seeds'] == [0] and np.isnan(one['low'])
    assert paired(cells, 'p37', '2ndm', 'ddim50', 'fid')['seeds'] == []


def holm_results():
    """p27: the log-ratio form better on every seed (p = 0.013), sigma_t less clearly
    (p = 0.029: under 0.05 alone, not after adjusting for 3 cells); p57: DSM noise."""
    teacher, _ = fake_results()
    runs = []
    for seed in range(3):
        runs += [fake_run('p27', 'dsm_kd', seed, 150.0 + seed, 0.90),
                 fake_run('p27', '2ndm_log', seed, 150.0 + seed - 8 - 2 * seed, 0.90),
                 fake_run('p27', '2ndm', seed, 150.0 + seed + (-3.0, -4.0, -5.5)[seed], 0.90),
                 fake_run('p57', 'dsm_kd', seed, 120.0, 0.95),
                 fake_run('p57', 'dsm', seed, 120.0 + (1.0, -1.0, 0.5)[seed], 0.95)]
    runs.append(fake_run('p57', '2ndm', 0, 121.0, 0.951))  # one seed: no test
    return teacher, runs


def test_holm_adjusts_over_the_panels_cells():
    _, runs = holm_results()
    cells = index_runs(runs)
    levels, recipes = ['p27', 'p57'], ['dsm_kd', '2ndm_log', '2ndm', 'dsm']
    adjusted = holm_adjusted(cells, levels, recipes, 'ddim50', 'fid')
    # the reference is not compared with itself
    assert set(adjusted) == {(lv, rc) for lv in levels for rc in recipes[1:]}
    p = {key: paired(cells, *key, 'ddim50', 'fid')['p'] for key in adjusted}
    log, sigma, dsm = p['p27', '2ndm_log'], p['p27', '2ndm'], p['p57', 'dsm']
    assert log < sigma < 0.05 < 2 * sigma and dsm > 0.2  # the premise
    # 3 tests (cells under 3 seeds or not run are none): Holm's step-down
    assert adjusted['p27', '2ndm_log'] == pytest.approx(3 * log)
    assert adjusted['p27', '2ndm'] == pytest.approx(max(3 * log, 2 * sigma))
    assert adjusted['p57', 'dsm'] == pytest.approx(max(2 * sigma, dsm))
    assert all(np.isnan(adjusted[key]) for key in [('p57', '2ndm'), ('p57', '2ndm_log'),
                                                   ('p27', 'dsm')])
    # a panel of one cell is that cell's own test
    alone = holm_adjusted(cells, ['p27'], ['dsm_kd', '2ndm'], 'ddim50', 'fid')
    assert alone == {('p27', '2ndm'): pytest.approx(sigma)}


def test_report_and_heatmap_tell_family_wise_verdicts_apart(tmp_path, monkeypatch):
    """'**' and a solid frame where the interval excludes 0 after Holm's adjustment too,
    '*' and a dashed frame where it does only alone; the table prints the adjusted p."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    teacher, runs = holm_results()
    preset = dict(PRESETS['screen'], recipes=('dsm_kd', '2ndm_log', '2ndm', 'dsm'))
    panels = []
    original = Figure.savefig

    def keep(fig, *args, **kwargs):
        panels.append(fig.axes[0])  # the proxy FID panel
        original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, 'savefig', keep)
    text = open(write_report(str(tmp_path), teacher, runs, planned_runs(preset),
                             preset)).read()
    cells = index_runs(runs)
    log = holm_adjusted(cells, preset['levels'], preset['recipes'], 'ddim50', 'fid')
    row = next(line for line in text.splitlines()
               if line.startswith('| p27 | 2ndm_log - dsm_kd | ddim50 |'))
    assert row.endswith(f'| {log["p27", "2ndm_log"]:.3f} / 1.000 |')
    assert 'Holm p FID / SSIM' in text
    ax = panels[0]
    first_lines = [t.get_text().split('\n')[0] for t in ax.texts]
    assert '-10.0 **' in first_lines and '-4.2 *' in first_lines
    assert not any(line.startswith('+') and '*' in line for line in first_lines)
    styles = sorted(patch.get_linestyle() for patch in ax.patches
                    if isinstance(patch, Rectangle) and patch.get_linewidth() > 2)
    assert styles == ['dashed', 'solid']


def test_channels_that_differ_are_flagged():
    _, runs = fake_results()
    runs.append(fake_run('p57', 'dsm', 0, 130.0, 0.93, record='other'))
    assert not paired(index_runs(runs), 'p57', 'dsm', 'ddim10', 'fid')['same_channels']


def test_report_lists_done_runs_and_writes_heatmaps(tmp_path):
    teacher, runs = fake_results()
    preset = PRESETS['screen']
    planned = planned_runs(preset)
    path = write_report(str(tmp_path), teacher, runs, planned, preset)
    text = open(path).read()
    assert f'**{len(runs)} of {len(planned)} planned**' in text
    assert '| p27 | 3/3 (seeds 0,1,2) | 3/3 (seeds 0,1,2) | 0/3 |' in text
    assert '| p37 | 0/3 | 0/3 |' in text
    assert '| p27 | 2ndm_log - dsm_kd | ddim50 | 3 | -10.0 [' in text
    assert 'better / no difference shown' in text
    assert '0.900 -> 0.200' in text  # Jacobian relative error before -> after
    # a run evaluated outside the plan (a seed asked for by hand) counts as planned
    assert planned[0] == ('p27', 'dsm_kd', 0)
    again = open(write_report(str(tmp_path), teacher, runs, planned[1:], preset,
                              figures=False)).read()
    assert f'**{len(runs)} of {len(planned)} planned**' in again
    for name in preset['samplers']:
        png = tmp_path / f'heatmap_{name}.png'
        assert png.is_file() and png.stat().st_size > 5000


def test_heatmap_colours_pale_where_the_interval_holds_zero():
    """A verdict keeps its full colour; an undecided cell twice as large is paler, on the
    same side; an uncoloured cell is grey."""
    signed = np.array([[1.0, 2.0, -1.0, np.nan]])
    verdicts = np.array([[True, False, True, False]])
    rgb = cell_colours(signed, verdicts, vmax=2.0)
    assert rgb.shape == (1, 4, 3)
    worse, undecided, better, missing = rgb[0]
    assert worse[0] > worse[2] and better[2] > better[0]  # red = worse, blue = better
    assert undecided[0] > undecided[2]  # still on the worse side

    def distance_from_white(colour):
        return float(np.abs(1.0 - colour).sum())

    assert distance_from_white(undecided) < distance_from_white(worse)
    full = cell_colours(signed, np.ones_like(verdicts), vmax=2.0)[0, 1]
    assert np.allclose(undecided, UNDECIDED_ALPHA * full + 1.0 - UNDECIDED_ALPHA)
    assert np.allclose(missing, 0.88)


def test_heatmap_colours_proxy_fid_in_percent_of_the_reference():
    """Text and verdict stay in FID units; the colour is % of DSM+KD's FID, so a level whose
    FIDs are larger does not outshine the others; SSIM is coloured as it is."""
    _, runs = fake_results()
    cells = index_runs(runs)
    fid, ssim, _ = HEATMAP_METRICS
    table, means = panel_cells(cells, ['p27', 'p57'], ['2ndm_log', '2ndm'], 'ddim50', fid)
    assert table[0][0]['mean'] == pytest.approx(-10.0)
    expected = np.mean([100.0 * d / (150.0 + s) for s, d in enumerate((-8.0, -10.0, -12.0))])
    assert means[0, 0] == pytest.approx(expected)
    assert np.isnan(means[1, 1])  # p57's 2ndM has 1 seed: not coloured
    assert len(table[1][1]['seeds']) == 1
    table, means = panel_cells(cells, ['p27'], ['2ndm_log'], 'ddim50', ssim)
    assert means[0, 0] == pytest.approx(table[0][0]['mean'])


def test_report_of_the_reference_alone_draws_no_heatmap(tmp_path):
    """DSM+KD alone (the smoke test's map) leaves nothing to compare: no heatmap, no link."""
    teacher, runs = fake_results()
    runs = [run for run in runs if run['recipe'] == 'dsm_kd']
    preset = dict(PRESETS['screen'], recipes=('dsm_kd', ))
    text = open(write_report(str(tmp_path), teacher, runs, planned_runs(preset),
                             preset)).read()
    assert '## Figures' in text and 'heatmap_' not in text
    assert not list(tmp_path.glob('heatmap_*.png'))


def test_length_check_names_the_levels_a_longer_run_still_improves():
    """p27's 2x run lowers the proxy FID by 10 % (more than the rule's 5 %): longer run
    needed; p57's by 2 %: long enough; a level without the 2x run is not listed."""
    _, runs = fake_results()
    runs += [fake_run('p27', 'dsm_kd_x2', 0, 150.0 * 0.9, 0.9),
             fake_run('p57', 'dsm_kd_x2', 0, 120.0 * 0.98, 0.95)]
    lines = length_section(index_runs(runs), ['p27', 'p37', 'p57'], ['ddim50'])
    assert lines[0] == '## Is the run long enough?'
    rows = [line for line in lines if line.startswith('| p')]
    assert len(rows) == 2
    assert rows[0].startswith(
        '| p27 | ddim50 | 1 | 100 | 150.0 | 100 | 135.0 | -10.0 % | - | 1.4 |')
    assert 'longer run needed' in rows[0]
    assert rows[1].startswith('| p57 | ddim50 | 1 |')
    assert '-2.0 % | - | 1.4 | long enough' in rows[1]
    assert 'Judged with ddim50, p27 need a longer run: `python tools/regime_map.py --arch dit ' \
        '--lengthen --levels p27`' in '\n'.join(length_section(
            index_runs(runs), ['p27', 'p37', 'p57'], ['ddim50'], flag=' --arch dit'))
    # past the tolerance, within 2 spreads of the FIDs' noise: undecided, more seeds asked for
    noisy = [run for run in runs if (run['level'], run['recipe']) != ('p57', 'dsm_kd_x2')]
    for run in noisy:
        for scores in run['final']['raw']['samplers'].values():
            scores['fid_boot'] = 8.0
    lines = length_section(index_runs(noisy), ['p27', 'p57'], ['ddim50'])
    row, = [line for line in lines if line.startswith('| p')]
    assert row.endswith('| -10.0 % | - | 11.3 | undecided (lower by more than 5%, within 2 '
                        'spreads: more seeds) |')
    assert 'Judged with ddim50, p27 undecided: more seeds of the check decide (`python ' \
        'tools/regime_map.py --preset length --levels p27 --seeds 0 1 2`).' in lines
    assert length_section(index_runs(fake_results()[1]), ['p27'], ['ddim50']) == []


def test_recipe_table_shows_each_option_as_it_takes_effect():
    options = ['a.layers=bk-sdm', 'a.reduction=mean', 'a.weight=768.0', 'a.layers=dit',
               'a.weight=7.68', 'a.mask=2.0']
    assert effective_options(options) == ['a.layers=dit', 'a.reduction=mean', 'a.weight=7.68',
                                          'a.mask=2.0']
    assert effective_options([]) == []


def test_samples_figure_is_not_replaced_by_one_of_fewer_runs(tmp_path):
    """A fresh work dir holds the samples of its own runs only: the committed figure of
    every run stays; without a figure, what is there is drawn."""
    import torch
    work, results = tmp_path / 'work', tmp_path / 'results'
    results.mkdir()
    grids = {name: torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
             for name in PRESETS['screen']['samplers']}
    (work / 'p27' / 'dsm_kd_seed0').mkdir(parents=True)
    torch.save(grids, work / 'teacher_grid.pt')
    torch.save(grids, work / 'p27' / 'dsm_kd_seed0' / 'grid_raw.pt')
    teacher, runs = fake_results()
    figure = results / 'samples_p27.png'
    args = (str(work), str(results), 'p27', ['dsm_kd', '2ndm_log'], runs, teacher)
    assert samples_figure(*args) == str(figure)  # no figure yet: dsm_kd's samples drawn
    drawn = figure.read_bytes()
    assert samples_figure(*args) is None  # 2ndm_log's samples are not here
    assert figure.read_bytes() == drawn
    (work / 'p27' / '2ndm_log_seed0').mkdir()
    torch.save(grids, work / 'p27' / '2ndm_log_seed0' / 'grid_raw.pt')
    assert samples_figure(*args) == str(figure)  # every run's samples: redrawn
    assert figure.read_bytes() != drawn


def fake_teacher_curve(fids):
    steps = [2000 * (i + 1) for i in range(len(fids))]
    curve = {str(s): dict(samplers=dict(ddim50=dict(fid=f, fid_boot=2.0),
                                        ddim10=dict(fid=f + 3.0, fid_boot=2.0)))
             for s, f in zip(steps, fids)}
    return dict(config='teacher_digits16.py', seed=0, iters=steps[-1], interval=2000,
                lr_min=1e-5, batch_size=32, sampler='ddim50', model='ema', tol=0.05, wall_s=1800.0,
                s_per_iter=0.11, curve=curve, plateau=plateau_iteration(steps, fids))


@pytest.mark.parametrize('fids, reached', [((90.0, 60.0, 50.0, 49.0), True),
                                           ((90.0, 60.0, 50.0, 40.0), False)])
def test_report_says_how_the_teacher_length_was_found(tmp_path, fids, reached):
    teacher, runs = fake_results()
    curve = fake_teacher_curve(fids)
    archived = dict(samplers=dict(ddim50=dict(fid=89.3), ddim10=dict(fid=90.6)))
    preset = PRESETS['screen']
    path = write_report(str(tmp_path), teacher, runs, planned_runs(preset), preset,
                        teacher_curve=curve, archived_teacher=archived)
    text = open(path).read()
    assert '## Teacher length' in text and '| 4000 | 60.0 +- 2.0 | 63.0 +- 2.0 |' in text
    assert ('**Plateau: 6000 iterations**' in text) == reached
    assert ('**Not plateaued inside the run**' in text) == (not reached)
    assert ('still lowered it by 20% (50.0 -> 40.0)' in text) == (not reached)
    assert 'By the same rule on ddim10: ' in text
    assert 'against the previous teacher\'s 89.3 / 90.6' in text
    assert text.count('archive_teacher6000/') >= 1  # the archive, in one line
    assert '| teacher (EMA) | - | ddim50 |' in text
    assert (tmp_path / 'teacher_curve.png').stat().st_size > 5000


def test_report_links_superseded_runs_but_not_the_teacher_archive(tmp_path):
    preset = PRESETS['screen']
    (tmp_path / 'archive_old_feat').mkdir()
    (tmp_path / 'archive_old_feat' / 'README.md').write_text('# Old feature weight\n\nwhy\n')
    (tmp_path / 'archive_teacher6000').mkdir()
    (tmp_path / 'archive_teacher6000' / 'README.md').write_text('# teacher\n')
    (tmp_path / 'archive_empty').mkdir()  # no README: nothing to say about it
    text = open(write_report(str(tmp_path), None, [], planned_runs(preset), preset,
                             figures=False)).read()
    assert ('* Superseded, kept out of the map: [`archive_old_feat/`](archive_old_feat/) - '
            'Old feature weight') in text
    assert 'archive_teacher6000' not in text and 'archive_empty' not in text


def test_report_without_teacher_or_runs_links_no_missing_figure(tmp_path):
    preset = PRESETS['screen']
    text = open(write_report(str(tmp_path), None, [], planned_runs(preset), preset)).read()
    assert 'heatmap_' not in text and 'Not measured yet' in text
    assert not list(tmp_path.glob('*.png'))


def test_cost_at_the_references_wall_clock():
    """A recipe twice as slow is scored at its halfway checkpoint (the last that fits in
    the reference's time), one 3x as slow at none; differences are to the reference's
    final scores."""
    from mmdiff_2ndm.studies.regime_map.report import at_reference_wall_clock, cost_section
    ref = fake_run('p27', 'dsm_kd', 0, 100.0, 0.90)
    same = fake_run('p27', 'dsm', 0, 110.0, 0.89)
    slow = dict(fake_run('p27', '2ndm', 0, 90.0, 0.92), s_per_iter=0.4)
    slow['halfway'] = dict(iters=50, raw=fake_run('p27', '2ndm', 0, 130.0, 0.85)['final']['raw'])
    slower = dict(slow, s_per_iter=0.6, recipe='2ndm_log')
    assert at_reference_wall_clock(same, ref, 'ddim50')['iters'] == 100
    point = at_reference_wall_clock(slow, ref, 'ddim50')
    assert point['iters'] == 50 and point['fid'] == 130.0
    assert at_reference_wall_clock(slower, ref, 'ddim50') is None
    text = '\n'.join(cost_section(index_runs([ref, same, slow, slower]), ['p27'],
                                  ['dsm_kd', 'dsm', '2ndm', '2ndm_log'], ['ddim50']))
    assert '| p27 | dsm - dsm_kd | 1.00x (log) | ddim50 | 1 | 100 (final) | 10.0 | -0.0100 |' \
        in text
    assert '| p27 | 2ndm - dsm_kd | 2.00x (log) | ddim50 | 1 | 50 (halfway, lr not annealed) ' \
        '| 30.0 | -0.0500 |' in text
    assert "| p27 | 2ndm_log - dsm_kd | 3.00x (log) | ddim50 | 1 | none within the " \
        "reference's time | - | - |" in text
    assert '(levels: none yet)' in text
    # measured back to back, the ratios replace the logs' at the level they were taken
    assert at_reference_wall_clock(slower, ref, 'ddim50', ratio=1.04)['iters'] == 100
    assert at_reference_wall_clock(slow, ref, 'ddim50', ratio=1.5)['iters'] == 50
    timing = dict(levels=dict(p27=dict(ratios={'2ndm': 1.5, '2ndm_log': 1.04}, rounds=10,
                                       block=5, threads=1, seed=0),
                              p57=dict(ratios={'dsm': 9.0}, rounds=4, block=2, threads=2,
                                       seed=1, timed_on={'dsm_kd': 'p57/dsm_kd_seed1',
                                                         'dsm': 'p57/dsm_kd_seed1',
                                                         '2ndm': 'p57/dsm_kd_seed1'})))
    text = '\n'.join(cost_section(index_runs([ref, same, slow, slower]), ['p27'],
                                  ['dsm_kd', 'dsm', '2ndm', '2ndm_log'], ['ddim50'], timing,
                                  ' --arch dit'))
    assert '| p27 | dsm - dsm_kd | 1.00x (log) | ddim50 | 1 | 100 (final) |' in text  # not timed
    assert '| p27 | 2ndm - dsm_kd | 1.50x | ddim50 | 1 | 50 (halfway, lr not annealed) | ' \
        '30.0 | -0.0500 |' in text
    assert '| p27 | 2ndm_log - dsm_kd | 1.04x | ddim50 | 1 | 100 (final) | -10.0 | 0.0200 |' \
        in text
    assert '`python tools/regime_map.py --timing --arch dit`' in text
    # a recipe without a checkpoint was timed on another run's pruned student: said so
    assert ('levels: p27 (10 blocks of 5, 1 thread, seed 0 runs), p57 (4 blocks of 2, '
            "2 threads, seed 1 runs; dsm, 2ndm timed on p57/dsm_kd_seed1's pruned "
            'student)') in text
    assert 'No recipe and its reference share a seed yet.' in cost_section(
        index_runs([ref]), ['p27'], ['dsm_kd', 'dsm'], ['ddim50'])


def test_cost_of_a_half_length_run_at_the_references_wall_clock():
    """A recipe that trains half as long with a timed recipe's iteration has that one's
    time per iteration: at 1.9x it fits in the reference's time with its final (annealed)
    checkpoint; at 2.2x only its halfway one does."""
    from mmdiff_2ndm.studies.regime_map.report import cost_section
    ref = fake_run('p27', 'dsm_kd', 0, 100.0, 0.90)
    half = dict(fake_run('p27', '2ndm_half', 0, 104.0, 0.91), iters=50)
    half['halfway'] = dict(iters=25,
                           raw=fake_run('p27', '2ndm_half', 0, 180.0, 0.8)['final']['raw'])
    for ratio, row in ((1.9, '1.90x; 0.5x as long: 0.95x the wall-clock | ddim50 | 1 | '
                             '50 (final) | 4.0 | 0.0100 |'),
                       (2.2, '2.20x; 0.5x as long: 1.10x the wall-clock | ddim50 | 1 | '
                             '25 (halfway, lr not annealed) | 80.0 | -0.1000 |')):
        timing = dict(levels=dict(p27=dict(ratios={'2ndm': ratio}, rounds=10, block=5,
                                           threads=1, seed=0)))
        text = '\n'.join(cost_section(index_runs([ref, half]), ['p27'], ['dsm_kd', '2ndm_half'],
                                      ['ddim50'], timing))
        assert f'| p27 | 2ndm_half - dsm_kd | {row}' in text
    assert '`--preset budget`' in text


def test_gap_to_the_teacher_per_level_and_sampler():
    from mmdiff_2ndm.studies.regime_map.report import gap_section
    teacher = dict(samplers=dict(ddim50=dict(fid=90.0, fid_boot=5.0),
                                 ddim10=dict(fid=150.0, fid_boot=5.0)))
    runs = [fake_run('p27', 'dsm_kd', s, 150.0 + 2 * s, 0.9) for s in range(2)]
    runs.append(fake_run('p57', 'dsm_kd', 0, 95.0, 0.9))
    text = '\n'.join(gap_section(index_runs(runs), teacher, ['p27', 'p57', 'p37'],
                                 ['ddim50', 'ddim10']))
    # fake_run adds 5 to the FID of the 10-step sampler
    assert '| p27 | ddim50 | 151.0 (2 seeds) | 90.0 +- 5.0 | 1.68 | yes |' in text
    assert '| p27 | ddim10 | 156.0 (2 seeds) | 150.0 +- 5.0 | 1.04 | no |' in text
    assert '| p57 | ddim50 | 95.0 (1 seeds) | 90.0 +- 5.0 | 1.06 | no |' in text
    assert '| p37 |' not in text
    assert 'No DSM+KD run is scored yet.' in gap_section({}, teacher, ['p27'], ['ddim50'])


def test_loss_terms_at_the_end_and_the_added_terms_share():
    from mmdiff_2ndm.studies.regime_map.report import loss_terms_section
    runs = []
    for seed, jac in enumerate((0.2, 0.4)):
        run = fake_run('p27', '2ndm_log', seed, 100.0, 0.9)
        run['loss_terms'] = dict(first=dict(loss=50.0, loss_dsm=30.0, loss_kd=15.0,
                                            loss_jacobian=5.0, grad_norm=300.0),
                                 last=dict(loss=10.0 + jac, loss_dsm=8.0, loss_kd=2.0,
                                           loss_jacobian=jac, grad_norm=100.0 * seed))
        runs.append(run)
    ref = fake_run('p27', 'dsm_kd', 0, 100.0, 0.9)
    ref['loss_terms'] = dict(first=dict(loss=45.0, loss_dsm=30.0, loss_kd=15.0),
                             last=dict(loss=10.0, loss_dsm=8.0, loss_kd=2.0))
    runs += [ref, fake_run('p27', 'dsm', 0, 100.0, 0.9)]  # older JSON: no terms, no row
    lines = loss_terms_section(index_runs(runs), ['p27'], ['dsm_kd', '2ndm_log', 'dsm'])
    assert '| level | recipe | seeds | loss | `loss_dsm` | `loss_kd` | `loss_jacobian` | ' \
        'added share | grad norm |' in lines
    assert '| p27 | dsm_kd | 1 | 10 | 8 | 2 | - | - | - |' in lines  # no grad_norm logged
    # mean over seeds 0.3 of a 10.3 loss at the end, 5 of 50 at the first log
    assert '| p27 | 2ndm_log | 2 | 10.3 | 8 | 2 | 0.3 | 10 % -> 2.9 % | 300 -> 50 |' in lines
    assert not any(line.startswith('| p27 | dsm |') for line in lines)
    assert loss_terms_section({}, ['p27'], ['dsm_kd'])[2].startswith('No run')


def test_mechanism_paired_by_seed_in_percent_of_the_reference():
    from mmdiff_2ndm.studies.regime_map.report import JACOBIAN_T, mechanism_paired_section
    _, runs = fake_results()
    for run in runs:  # the reference's error 0.2 + 0.1 seed; 2ndm_log's 10 % / 20 % lower
        if run['level'] == 'p27':
            base = 0.2 + 0.1 * run['seed']
            factor = {'dsm_kd': 1.0, '2ndm_log': 0.9}[run['recipe']]
            errors = [base * (factor if t < 50 else 0.8 if run['recipe'] == '2ndm_log' else 1)
                      for t in TIMESTEPS]
            raw = dict(run['final']['raw'], jacobian=dict(jv_rel_err=errors))
            run['final'] = dict(run['final'], raw=raw)
    cells = index_runs(runs)
    lines = mechanism_paired_section(cells, ['p27', 'p57'], ['dsm_kd', '2ndm_log', '2ndm'],
                                     TIMESTEPS)
    assert f'| level | recipe - reference | seeds | {" | ".join(f"t={t}" for t in JACOBIAN_T)} |' \
        in lines
    # every seed 10 % lower at t < 50, 20 % from t = 50: the interval is the point
    assert ('| p27 | 2ndm_log - dsm_kd | 3 | -10.0 [-10.0, -10.0] | -10.0 [-10.0, -10.0] | '
            '-20.0 [-20.0, -20.0] | -20.0 [-20.0, -20.0] | -20.0 [-20.0, -20.0] |') in lines
    assert '| p57 | 2ndm - dsm_kd | 1 | +0.0 | +0.0 | +0.0 | +0.0 | +0.0 |' in lines
    # timesteps not measured are left out
    short = mechanism_paired_section(cells, ['p27'], ['dsm_kd', '2ndm_log'], TIMESTEPS[:3])
    assert '| level | recipe - reference | seeds | t=0 |' in short
    assert 'No paired runs yet.' in mechanism_paired_section(cells, ['p37'], ['2ndm'], TIMESTEPS)


def test_remaining_training_is_estimated_from_logged_and_timed_iterations():
    """Closed form: the runs to go times each recipe's time per iteration, from its own runs
    at the level, else the reference's there times the timed ratio, else its own anywhere."""
    preset = dict(PRESETS['screen'], batch_size=32)
    runs = [dict(fake_run('p27', 'dsm_kd', s, 100.0, 0.9), s_per_iter=t)
            for s, t in ((0, 0.1), (1, 0.3))]  # median 0.2 s at p27
    runs.append(dict(fake_run('p57', 'dsm', 0, 100.0, 0.9), s_per_iter=0.05))
    planned = [('p27', 'dsm_kd', 0), ('p27', 'dsm_kd', 2), ('p27', '2ndm', 0),
               ('p27', 'dsm', 0), ('p27', 'authors_b2', 0), ('p57', 'dsm_kd', 0),
               ('p27', 'dsm_kd_x2', 0), ('p27', '2ndm_half', 0)]
    timing = dict(levels=dict(p27=dict(times=dict(dsm_kd=dict(median=0.5),
                                                  **{'2ndm': dict(median=1.0)}))))
    lines = remaining_section(index_runs(runs), planned, preset,
                              dict(p27=100000, p57=50000), timing)
    # p27 dsm_kd seed 2: 1e5 x 0.2; 2ndm: 1e5 x 0.2 x 2; dsm: 1e5 x 0.05 (from p57);
    # p57 dsm_kd: 5e4 x median(0.1, 0.3) (no dsm_kd at p57: any level); authors_b2 unknown;
    # DSM+KD 2x long: DSM+KD's step, untimed and never logged: 2e5 x 0.2; 2ndM half as
    # long: 2ndM's step, timed: 5e4 x 0.2 x 2
    hours = (20000 + 40000 + 5000 + 10000 + 40000 + 20000) / 3600
    assert lines[0].startswith(
        f'To go: 7 runs, {550000 + 50000 + 100000 * 32 // 2} iterations; about {hours:.1f} h '
        'of training one run at a time (leaving out 1 runs of recipes no evaluated run has '
        'logged yet: authors_b2).')
    assert remaining_section(index_runs(runs), planned[:1], preset, dict(p27=1000)) == []
    # without timing, DSM+KD run longer still has DSM+KD's time per iteration (0.2 s at p27)
    untimed = remaining_section(index_runs(runs), [('p27', 'dsm_kd_x2', 0)], preset,
                                dict(p27=100000))
    assert untimed[0].startswith(f'To go: 1 runs, 200000 iterations; about {40000 / 3600:.1f} h')
    # a parked run holds part of its iterations: only the rest is to go; a parked run that
    # is not planned here (another preset's) is not counted
    parked = remaining_section(index_runs(runs), [('p27', 'dsm_kd_x2', 0)], preset,
                               dict(p27=100000), parked={('p27', 'dsm_kd_x2', 0): 150000,
                                                         ('p27', 'dsm', 5): 10})
    assert parked[0].startswith(f'To go: 1 runs, 50000 iterations; about {10000 / 3600:.1f} h')
    assert parked[2] == ('Parked (stopped partway, in `pending/`; the next screen resumes '
                         'them): p27/dsm_kd_x2_seed0 at 150000 iterations held, left out of '
                         'the iterations to go.')


@pytest.mark.parametrize('recipes', [['dsm_kd', '2ndm_log'],
                                     ['dsm_kd', '2ndm_log', '2ndm', 'dsm_kd_feat', 'dsm']])
def test_heatmap_legend_fits_the_figure(tmp_path, monkeypatch, recipes):
    """The legend above the panels stays inside the figure, however few the recipes (a
    narrow map clipped its first line at both edges)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    teacher, runs = fake_results()
    saved = []
    original = Figure.savefig

    def keep(fig, *args, **kwargs):
        original(fig, *args, **kwargs)  # draws: the extents below are the saved ones
        renderer = fig.canvas.get_renderer()
        saved.append((fig._suptitle.get_window_extent(renderer), fig.bbox))

    monkeypatch.setattr(Figure, 'savefig', keep)
    heatmap(index_runs(runs), teacher, ['p27', 'p57'], recipes, 'ddim50',
            str(tmp_path / 'heatmap.png'))
    (title, figure), = saved
    assert figure.x0 <= title.x0 and title.x1 <= figure.x1
    assert title.y1 <= figure.y1


def test_half_length_recipes_against_the_reference_at_their_length():
    """Paired by seed with the archived reference run of the same iterations (DSM+KD, or
    DSM+KD run twice as long at a level that ran half as long); other lengths, seeds and
    recipes are not partners."""
    runs = []
    for seed, fid in enumerate((40.0, 44.0, 48.0)):
        run = fake_run('p27', '2ndm_log_half', seed, fid, 0.90)
        run['iters'] = 50
        runs.append(run)
    archived = []
    for seed, fid in enumerate((41.0, 46.0, 49.0)):  # differences -1, -2, -1
        ref = fake_run('p27', 'dsm_kd' if seed < 2 else 'dsm_kd_x2', seed, fid, 0.91)
        ref['iters'] = 50
        archived.append(ref)
    wrong = [dict(fake_run('p27', 'dsm_kd', 0, 0.0, 0.5), iters=100),  # another length
             dict(fake_run('p27', '2ndm_log', 1, 0.0, 0.5), iters=50),  # not the reference
             dict(fake_run('p27', 'dsm_kd', 3, 0.0, 0.5), iters=50)]  # no partner
    lines = same_length_section(index_runs(runs), ['p27', 'p57'], ['dsm_kd', '2ndm_log_half'],
                                ['ddim50'], dict(p27=wrong + archived))
    row, = [line for line in lines if line.startswith('| p27 ')]
    mean, low, high = t_interval([-1.0, -2.0, -1.0])
    assert row == (f'| p27 | 2ndm_log_half - dsm_kd | 50 | ddim50 | 3 | 44.0 | 45.3 | '
                   f'{mean:+.1f} [{low:+.1f}, {high:+.1f}] | -0.0100 [-0.0100, -0.0100] |')
    assert same_length_section(index_runs(runs), ['p27'], ['dsm_kd', '2ndm_log_half'],
                               ['ddim50'], dict(p27=wrong)) == []
