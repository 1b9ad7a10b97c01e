"""Per-level run lengths: the length check's closed form, and lengthening a level that fails
it (runs archived, the longer DSM+KD runs adopted with the options the map now gives them,
the new length read back by the driver)."""
import json
import os
import os.path as osp

import numpy as np
import pytest

from mmdiff_2ndm.studies.regime_map import RegimeMap, write_report
from mmdiff_2ndm.studies.regime_map.axes import PRESETS, map_preset, planned_runs, run_iters
from mmdiff_2ndm.studies.regime_map.cells import index_runs
from mmdiff_2ndm.studies.regime_map.driver import load_results
from mmdiff_2ndm.studies.regime_map.lengths import (LENGTHS_FILE, MAX_LENGTH_FACTOR,
                                                    length_cap, length_check,
                                                    lengthen_level, lengths_section,
                                                    read_lengths, undecided_check_runs)
from mmdiff_2ndm.studies.regime_map.followup import MAX_SEEDS
from mmdiff_2ndm.studies.regime_map.report import length_section


def scored(fid, iters, recipe, seed, level='d1', options=(), boot=1.0):
    samplers = {name: dict(fid=fid + 10.0 * (name == 'ddim10'), fid_boot=boot, ssim=0.8,
                           sample_mse=0.01)
                for name in PRESETS['screen']['samplers']}
    return dict(level=level, recipe=recipe, seed=seed, iters=iters, finetune_iters=iters,
                s_per_iter=0.1, record='abc', options=list(options),
                final=dict(raw=dict(samplers=samplers), ema=dict(samplers=samplers)))


def test_length_check_is_the_mean_relative_change_over_common_seeds():
    runs = [scored(200.0, 100, 'dsm_kd', 0), scored(150.0, 200, 'dsm_kd_x2', 0),
            scored(100.0, 100, 'dsm_kd', 1), scored(98.0, 200, 'dsm_kd_x2', 1),
            scored(50.0, 100, 'dsm_kd', 2)]  # seed 2 lacks the longer run: left out
    check = length_check(index_runs(runs), 'd1', 'ddim50')
    assert check['seeds'] == [0, 1] and (check['iters'], check['iters_long']) == (100, 200)
    assert check['change'] == pytest.approx((-0.25 - 0.02) / 2)
    assert np.isnan(check['change_low']) and np.isnan(check['change_high'])  # 2 seeds
    assert check['fid'] == pytest.approx(150.0) and check['fid_long'] == pytest.approx(124.0)
    # the bootstrap spread of the mean difference: sqrt(2 seeds x 2 scores x 1^2) / 2 = 1
    assert check['noise'] == pytest.approx(1.0)
    assert check['longer_needed'] and not check['undecided']  # -13.5 % < -5 %, 26 > 2 x 1
    loose = length_check(index_runs(runs), 'd1', 'ddim50', tol=0.2)
    assert not loose['longer_needed'] and not loose['undecided']
    assert length_check(index_runs(runs), 'd2', 'ddim50') is None
    # a drop past the tolerance but within 2 spreads is undecided: more seeds
    noisy = [scored(40.0, 100, 'dsm_kd', 0, boot=5.0), scored(34.0, 200, 'dsm_kd_x2', 0, boot=5.0)]
    check = length_check(index_runs(noisy), 'd1', 'ddim50')
    assert check['noise'] == pytest.approx(np.sqrt(50.0))  # 6 < 2 x 7.07
    assert check['undecided'] and not check['longer_needed']
    noisy[1] = scored(24.0, 200, 'dsm_kd_x2', 0, boot=5.0)  # 16 > 2 x 7.07
    assert length_check(index_runs(noisy), 'd1', 'ddim50')['longer_needed']
    # the seeds' agreement: the t interval of the per-seed changes (-10, -20, -30 %), shown
    # beside the rule, not part of it: the mean change and the noise decide as before
    three = [scored(100.0, 100, 'dsm_kd', s) for s in range(3)] + [
        scored(100.0 * (0.9 - 0.1 * s), 200, 'dsm_kd_x2', s, boot=20.0) for s in range(3)]
    check = length_check(index_runs(three), 'd1', 'ddim50')
    half = 4.302653 * 0.1 / np.sqrt(3)  # t(0.975, 2 dof) x sd / sqrt(n)
    assert check['change'] == pytest.approx(-0.2)
    assert (check['change_low'], check['change_high']) == pytest.approx((-0.2 - half,
                                                                         -0.2 + half))
    assert check['undecided']  # a drop of 20 within 2 x 11.6, however the seeds agree
    section = '\n'.join(length_section(index_runs(three), ['d1'], ['ddim50']))
    assert '| -20.0 % | [-44.8, +4.8] % | 11.6 | undecided' in section
    assert '--preset length --levels d1 --seeds 0 1 2 3 4`' in section  # two more seeds
    # the runs that decide it are planned: both recipes on those seeds, done or not; none
    # where the check is decided, capped, or missing
    assert undecided_check_runs(index_runs(three), ['d1', 'd2'], 'ddim50') == [
        ('d1', recipe, seed) for seed in range(5) for recipe in ('dsm_kd', 'dsm_kd_x2')]
    assert undecided_check_runs(index_runs(three), ['d1'], 'ddim50', cap=199) == []
    assert undecided_check_runs(index_runs(runs), ['d1'], 'ddim50') == []
    # a longer run past the map's cap: still needed, but capped; at the cap itself, not
    assert length_check(index_runs(noisy), 'd1', 'ddim50', cap=199)['capped']
    assert not length_check(index_runs(noisy), 'd1', 'ddim50', cap=200)['capped']
    assert not length_check(index_runs(runs), 'd1', 'ddim50', tol=0.2, cap=100)['capped']
    noisy[1] = scored(34.0, 200, 'dsm_kd_x2', 0, boot=5.0)  # undecided: capped all the same
    assert length_check(index_runs(noisy), 'd1', 'ddim50', cap=199)['capped']
    assert length_cap(100) == MAX_LENGTH_FACTOR * 100 == 400


def test_an_undecided_check_finishes_its_pending_seeds_before_asking_for_more():
    # seeds 0-1 have both runs (undecided), seed 2 only DSM+KD: its longer run is asked for,
    # not seeds 0-3, so the request does not move while seed 2 trains
    runs = [scored(40.0, 100, 'dsm_kd', s, boot=5.0) for s in range(3)] + [
        scored(34.0, 200, 'dsm_kd_x2', s, boot=5.0) for s in range(2)]
    check = length_check(index_runs(runs), 'd1', 'ddim50')
    assert check['undecided'] and check['seeds'] == [0, 1] and check['pending'] == [2]
    assert undecided_check_runs(index_runs(runs), ['d1'], 'ddim50') == [
        ('d1', recipe, seed) for seed in range(3) for recipe in ('dsm_kd', 'dsm_kd_x2')]
    assert '--preset length --levels d1 --seeds 0 1 2`' in '\n'.join(
        length_section(index_runs(runs), ['d1'], ['ddim50']))
    # seed 2 in and still undecided: two more seeds
    runs.append(scored(34.0, 200, 'dsm_kd_x2', 2, boot=5.0))
    check = length_check(index_runs(runs), 'd1', 'ddim50')
    assert check['pending'] == [] and check['undecided']
    assert {seed for _, _, seed in undecided_check_runs(index_runs(runs), ['d1'],
                                                        'ddim50')} == set(range(5))
    # at the limit of seeds an undecided check asks for nothing more: the level keeps its
    # length, and the report says so instead of giving a command
    runs = [scored(40.0, 100, 'dsm_kd', s, boot=20.0) for s in range(MAX_SEEDS)] + [
        scored(34.0, 200, 'dsm_kd_x2', s, boot=20.0) for s in range(MAX_SEEDS)]
    check = length_check(index_runs(runs), 'd1', 'ddim50')
    assert check['undecided']  # 6 within 2 x sqrt(20 x 400) / 10 = 17.9
    assert {seed for _, _, seed in undecided_check_runs(index_runs(runs), ['d1'],
                                                        'ddim50')} == set(range(MAX_SEEDS))
    section = '\n'.join(length_section(index_runs(runs), ['d1'], ['ddim50']))
    assert f'undecided at the check\'s limit of {MAX_SEEDS} seeds: the level keeps its ' \
        'length |' in section
    assert '--preset length' not in section.split('| verdict |')[1]


def _fake_map(tmp_path):
    """A DiT map whose d1 holds DSM+KD, DSM and DSM+KD 2x long (seed 0) at 100 iterations;
    d2 holds DSM+KD. Run folders hold a marker file."""
    work, results = tmp_path / 'work', tmp_path / 'results'
    regime_map = RegimeMap('screen', str(work), str(results), 1, arch='dit')
    (results).mkdir()
    (results / 'plateau.json').write_text(json.dumps(dict(sampler='ddim50',
                                                          plateau=dict(iters=100))))
    preset = map_preset('screen', 'dit')
    fids = dict(dsm_kd=200.0, dsm=260.0, dsm_kd_x2=120.0)
    for level, recipe in (('d1', 'dsm_kd'), ('d1', 'dsm'), ('d1', 'dsm_kd_x2'), ('d2', 'dsm_kd')):
        run = (level, recipe, 0)
        batch, iters = run_iters(preset, recipe, 100)
        path = regime_map.result_path(run)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(scored(fids[recipe], iters, recipe, 0, level,
                             regime_map.options(run, iters, batch)), f)
        os.makedirs(regime_map.run_dir(run))
        with open(osp.join(regime_map.run_dir(run), 'marker'), 'w') as f:
            f.write(recipe)
    (results / 'samples_d1.png').write_bytes(b'png')
    return regime_map, work, results


def test_lengthen_archives_the_level_and_adopts_the_longer_runs(tmp_path):
    regime_map, work, results = _fake_map(tmp_path)
    assert regime_map.finetune_iters('d1') == 100 == regime_map.finetune_iters()
    done = regime_map.lengthen(['d2', 'd1'])
    assert done['d2'].startswith('no length check yet') and 'stays 100' in done['d2']
    assert done['d1'].startswith('lengthened 100 -> 200 iterations (ddim50 proxy FID -40.0 %')
    # the level's length is its own now; the others keep the plateau's
    assert regime_map.finetune_iters('d1') == 200
    assert regime_map.finetune_iters('d2') == regime_map.finetune_iters() == 100
    entry = read_lengths(str(results))['d1']
    assert (entry['iters'], entry['previous']) == (200, 100)
    assert entry['archive'] == 'archive_d1_100'
    assert entry['check']['change'] == pytest.approx(-0.4)
    # runs at the old length: out of the map, kept in the archive (results and work dir)
    archive = results / 'archive_d1_100'
    assert sorted(os.listdir(archive / 'runs' / 'd1')) == [
        'dsm_kd_seed0.json', 'dsm_kd_x2_seed0.json', 'dsm_seed0.json']
    assert (archive / 'samples_d1.png').exists() and not (results / 'samples_d1.png').exists()
    readme = (archive / 'README.md').read_text()
    assert readme.startswith('# d1 at 100 iterations: too short, superseded by 200')
    assert '| dsm | 0 | 100 | 260.0 / 0.8000 | 270.0 / 0.8000 |' in readme
    assert (work / 'archive_d1_100' / 'd1' / 'dsm_seed0' / 'marker').read_text() == 'dsm'
    # the map's d1: the adopted DSM+KD run alone, its folder the longer run's
    assert sorted(os.listdir(results / 'runs' / 'd1')) == ['dsm_kd_seed0.json']
    adopted = json.loads((results / 'runs' / 'd1' / 'dsm_kd_seed0.json').read_text())
    assert (adopted['recipe'], adopted['iters'], adopted['finetune_iters']) == ('dsm_kd', 200,
                                                                                200)
    assert adopted['adopted_from'] == 'd1/dsm_kd_x2_seed0'
    assert adopted['final']['raw']['samplers']['ddim50']['fid'] == 120.0
    assert (work / 'd1' / 'dsm_kd_seed0' / 'marker').read_text() == 'dsm_kd_x2'
    assert sorted(os.listdir(work / 'd1')) == ['dsm_kd_seed0']
    # adopted with the options the map gives DSM+KD at the new length: not stale, done
    runs = planned_runs(map_preset('screen', 'dit'), levels=['d1', 'd2'], seeds=[0])
    regime_map.check_done(runs)
    assert regime_map.is_done(('d1', 'dsm_kd', 0)) and not regime_map.is_done(('d1', 'dsm', 0))
    # a run of the level is trained at its new length, the feature term decays over it
    batch, iters = run_iters(regime_map.preset, 'dsm_kd_feat', regime_map.finetune_iters('d1'))
    options = regime_map.options(('d1', 'dsm_kd_feat', 0), iters, batch)
    assert 'param_scheduler.T_max=200' in options
    assert 'model.losses.feat.schedule_iters=200' in options
    # the report lists the level's length and links the archive
    plateau = dict(json.loads((results / 'plateau.json').read_text()), level='d2', iters=100,
                   interval=50, tol=0.05, eps_plateau=dict(iters=100), curve={},
                   plateau=dict(iters=100, fid=1.0, best=1.0, reached=True))

    def report(lengths):
        return open(write_report(str(results), None, [adopted], runs, regime_map.preset,
                                 plateau, figures=False, lengths=lengths)).read()

    text = report(read_lengths(str(results)))
    assert '| d1 | 200 | 100: dsm_kd 200.0 -> 120.0 at 200 (-40.0 %, ddim50, seeds 0) | ' \
        '[`archive_d1_100/`](archive_d1_100/) |' in text
    assert 'Superseded, kept out of the map: [`archive_d1_100/`](archive_d1_100/) - d1 at ' \
        '100 iterations: too short, superseded by 200' in text
    assert 'annealed over its own length, except at the levels listed below.' in text
    # a map whose levels all run the plateau's length says so without pointing below
    plain = report({})
    assert 'annealed over its own length.' in plain and 'listed below' not in plain


def test_lengthen_refuses_a_level_that_passed_and_a_second_archive(tmp_path):
    regime_map, work, results = _fake_map(tmp_path)
    cells = index_runs([json.loads(p.read_text()) for p in results.rglob('runs/*/*.json')])
    check = length_check(cells, 'd1', 'ddim50')
    passed = dict(check, longer_needed=False, change=-0.01)
    with pytest.raises(ValueError, match=r'd1: the length check does not call for a longer '
                       r'run \(ddim50 proxy FID -1.0 % at 200 iterations against 100, '
                       r'tolerance 5%, noise 2 x 1.4\)'):
        lengthen_level(str(results), str(work), 'd1', passed, 'ddim50')
    assert not (results / LENGTHS_FILE).exists()
    (results / 'archive_d1_100').mkdir()
    with pytest.raises(ValueError, match='a level is lengthened once from each length'):
        lengthen_level(str(results), str(work), 'd1', check, 'ddim50')
    assert sorted(os.listdir(results / 'runs' / 'd1')) == [
        'dsm_kd_seed0.json', 'dsm_kd_x2_seed0.json', 'dsm_seed0.json']
    # a level whose longer run gains less than the tolerance keeps its length
    (results / 'runs' / 'd1' / 'dsm_kd_x2_seed0.json').write_text(json.dumps(
        scored(195.0, 200, 'dsm_kd_x2', 0)))
    assert regime_map.lengthen(['d1'])['d1'].startswith('long enough (ddim50 proxy FID -2.5 %')
    # one past the tolerance but within the scores' noise asks for seeds instead
    (results / 'runs' / 'd1' / 'dsm_kd_x2_seed0.json').write_text(json.dumps(
        scored(180.0, 200, 'dsm_kd_x2', 0, boot=10.0)))
    assert regime_map.lengthen(['d1'])['d1'] == (
        'undecided (ddim50 proxy FID -10.0 % at 200 iterations, 20.0 lower: within 2 bootstrap '
        'spreads, 2 x 10.0); more seeds decide it: --preset length --levels d1 --seeds 0 1 2; '
        'its length stays 100')
    assert regime_map.finetune_iters('d1') == 100 and not (results / LENGTHS_FILE).exists()
    # a check that still calls for a longer run past the cap (4 x 100) keeps the length
    (results / 'runs' / 'd1' / 'dsm_kd_x2_seed0.json').write_text(json.dumps(
        scored(120.0, 800, 'dsm_kd_x2', 0)))
    assert regime_map.lengthen(['d1'])['d1'] == (
        'at the cap: ddim50 proxy FID -40.0 % at 800 iterations (80.0 lower, past 2 bootstrap '
        'spreads, 2 x 1.4), but 800 passes the map\'s cap of 400 (4x the plateau): its length '
        'stays 100 (more seeds would not change that), and its cells compare recipes at that '
        'budget, maybe before convergence')
    # so is one within the noise: more seeds of a check past the cap could not lengthen it
    (results / 'runs' / 'd1' / 'dsm_kd_x2_seed0.json').write_text(json.dumps(
        scored(180.0, 800, 'dsm_kd_x2', 0, boot=10.0)))
    assert regime_map.lengthen(['d1'])['d1'].startswith(
        'at the cap: ddim50 proxy FID -10.0 % at 800 iterations (20.0 lower, within 2 '
        'bootstrap spreads, 2 x 10.0), but 800 passes')
    assert regime_map.finetune_iters('d1') == 100 and not (results / LENGTHS_FILE).exists()
    cells = index_runs([json.loads(p.read_text()) for p in results.rglob('runs/*/*.json')])
    with pytest.raises(ValueError, match=r'd1: the length check asks about 800 iterations, '
                       r'past the map\'s cap \(4x its plateau length\); its length stays 100'):
        lengthen_level(str(results), str(work), 'd1',
                       length_check(cells, 'd1', 'ddim50', cap=400), 'ddim50')
    assert sorted(os.listdir(results / 'runs' / 'd1')) == [
        'dsm_kd_seed0.json', 'dsm_kd_x2_seed0.json', 'dsm_seed0.json']
    # undecided at the limit of seeds: nothing more to ask for, and no command to run
    for seed in range(MAX_SEEDS):
        for recipe, fid, iters in (('dsm_kd', 200.0, 100), ('dsm_kd_x2', 180.0, 200)):
            (results / 'runs' / 'd1' / f'{recipe}_seed{seed}.json').write_text(json.dumps(
                scored(fid, iters, recipe, seed, boot=50.0)))
    assert regime_map.lengthen(['d1'])['d1'].endswith(
        f'; at the check\'s limit of {MAX_SEEDS} seeds; its length stays 100')


def test_converge_doubles_each_level_until_its_check_passes_or_reaches_the_cap(tmp_path):
    """d1's DSM+KD proxy FID halves from 100 to 200 iterations, then stays: d1 is lengthened
    once (100 -> 200) and its check at 400 passes. d2's halves with every doubling: it is
    lengthened up to the map's cap (4 x the plateau's 100) and no check past the cap is
    trained. A level whose check passes at once (d4) keeps its length."""
    work, results = tmp_path / 'work', tmp_path / 'results'
    regime_map = RegimeMap('screen', str(work), str(results), 1, arch='dit')
    results.mkdir()
    (results / 'plateau.json').write_text(json.dumps(dict(sampler='ddim50',
                                                          plateau=dict(iters=100))))
    curves = dict(d1=lambda iters: max(100.0, 20000.0 / iters),
                  d2=lambda iters: 20000.0 / iters, d4=lambda iters: 30.0)
    trained = []

    def fake_screen(runs, jobs, on_scored=None):  # scores each run by its length
        for run in runs:
            if regime_map.is_done(run):
                continue
            batch, iters = run_iters(regime_map.preset, run[1],
                                     regime_map.finetune_iters(run[0]))
            trained.append((run, iters))
            path = regime_map.result_path(run)
            os.makedirs(osp.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                json.dump(scored(curves[run[0]](iters), iters, run[1], run[2], run[0],
                                 regime_map.options(run, iters, batch), boot=0.1), f)

    regime_map.screen = fake_screen
    assert regime_map.length_cap() == 400
    assert regime_map.converge_lengths(['d1', 'd2', 'd4'], [0], 1, 3) == dict(d1=200, d2=400,
                                                                              d4=100)
    assert trained == [(('d1', 'dsm_kd', 0), 100), (('d1', 'dsm_kd_x2', 0), 200),
                       (('d2', 'dsm_kd', 0), 100), (('d2', 'dsm_kd_x2', 0), 200),
                       (('d4', 'dsm_kd', 0), 100), (('d4', 'dsm_kd_x2', 0), 200),
                       (('d1', 'dsm_kd_x2', 0), 400), (('d2', 'dsm_kd_x2', 0), 400)]
    assert sorted(os.listdir(results)) == ['archive_d1_100', 'archive_d2_100',
                                           'archive_d2_200', 'lengths.json', 'plateau.json',
                                           'runs']
    entry = read_lengths(str(results))['d2']
    assert (entry['previous'], entry['iters']) == (200, 400)
    assert [(e['previous'], e['iters'], e['archive']) for e in entry['history']] == [
        (100, 200, 'archive_d2_100')]  # the first doubling, kept
    text = '\n'.join(lengths_section(read_lengths(str(results)), ['d1', 'd2', 'd4'], 100))
    assert text.index('| d2 | 200 | 100: dsm_kd 200.0 -> 100.0 at 200 (-50.0 %') < \
        text.index('| d2 | 400 | 200: dsm_kd 100.0 -> 50.0 at 400 (-50.0 %')
    assert '| d1 | 200 | 100: dsm_kd 200.0 -> 100.0 at 200 (-50.0 %' in text
    assert '| d4 |' not in text
    # d2 alone has reached the cap; d1 at 200 could still be checked at 400
    assert "At the map's cap of 400 iterations (4x the plateau; each doubling doubles the " \
        "cost of a level's screen): d2 (-50.0 %), the last doubling's change" in text
    # a check trained past the cap anyway (--preset length) is reported, not acted on
    batch, iters = run_iters(regime_map.preset, 'dsm_kd_x2', 400)
    with open(regime_map.result_path(('d2', 'dsm_kd_x2', 0)), 'w') as f:
        json.dump(scored(25.0, iters, 'dsm_kd_x2', 0, 'd2',
                         regime_map.options(('d2', 'dsm_kd_x2', 0), iters, batch), boot=0.1), f)
    assert regime_map.lengthen(['d2'])['d2'].startswith(
        'at the cap: ddim50 proxy FID -50.0 % at 800 iterations (25.0 lower, past 2 bootstrap '
        "spreads, 2 x 0.1), but 800 passes the map's cap of 400")
    assert regime_map.finetune_iters('d2') == 400
    section = '\n'.join(length_section(index_runs(load_results(str(results))[1]),
                                       ['d1', 'd2'], ['ddim50'], cap=400))
    assert '| d2 | ddim50 | 1 | 400 | 50.0 | 800 | 25.0 | -50.0 % | - | 0.1 | longer run ' \
        'needed, past the cap of 400: the level keeps its length |' in section
    assert "Judged with ddim50, DSM+KD still falls by more than 5% at d2, at a length past the " \
        "map's cap of 400 iterations (4x the plateau): such a level keeps its length" in section
    assert '--lengthen' not in section
    # more seeds of a check past the cap are not planned (trained or reported as to go)
    runs = planned_runs(regime_map.preset, levels=['d1', 'd2'],
                        recipes=['dsm_kd', 'dsm_kd_x2'], seeds=[0, 1, 2])
    kept = regime_map.without_checks_past_cap(runs)
    assert [run for run in runs if run not in kept] == [('d2', 'dsm_kd_x2', 1),
                                                        ('d2', 'dsm_kd_x2', 2)]
    plateau = dict(sampler='ddim50', level='d2', iters=100, interval=50, tol=0.05,
                   eps_plateau=dict(iters=100), curve={},
                   plateau=dict(iters=100, fid=1.0, best=1.0, reached=True))
    text = open(write_report(str(results), None, load_results(str(results))[1], runs,
                             regime_map.preset, plateau, figures=False,
                             lengths=read_lengths(str(results)))).read()
    assert '| d2 | 1/3 (seeds 0) | 1/1 (seeds 0) |' in text
    assert '| d1 | 1/3 (seeds 0) | 1/3 (seeds 0) |' in text
    # at most one doubling: d1 stops at 200 without its check there
    results2 = tmp_path / 'results2'
    results2.mkdir()
    (results2 / 'plateau.json').write_text((results / 'plateau.json').read_text())
    regime_map.results_dir, regime_map.work_dir = str(results2), str(tmp_path / 'work2')
    trained.clear()
    assert regime_map.converge_lengths(['d1'], [0], 1, 1) == dict(d1=200)
    assert [iters for _, iters in trained] == [100, 200]


def test_a_half_length_run_adopts_its_archived_twin(tmp_path):
    """After d1 is lengthened 100 -> 200, the log-ratio form's archived run at 100 is the
    half-length recipe's run (same config, options, seed, iterations): adopted, not trained.
    Other forms, seeds and lengths are not its twins."""
    regime_map, work, results = _fake_map(tmp_path)
    for recipe, fid in (('2ndm_log', 190.0), ('2ndm', 195.0)):
        run = ('d1', recipe, 0)
        batch, iters = run_iters(regime_map.preset, recipe, 100)
        with open(regime_map.result_path(run), 'w') as f:
            json.dump(scored(fid, iters, recipe, 0, 'd1', regime_map.options(run, iters, batch)),
                      f)
        os.makedirs(regime_map.run_dir(run))
        with open(osp.join(regime_map.run_dir(run), 'marker'), 'w') as f:
            f.write(recipe)
    regime_map.lengthen(['d1'])
    assert regime_map.finetune_iters('d1') == 200
    archived = str(results / 'archive_d1_100' / 'runs' / 'd1' / '2ndm_log_seed0.json')
    assert regime_map.archived_twin(('d1', '2ndm_log_half', 0)) == archived
    assert regime_map.archived_twin(('d1', '2ndm_half', 0)).endswith('/2ndm_seed0.json')
    for run in (('d1', '2ndm_log_half', 1), ('d1', '2ndm_log', 0), ('d2', '2ndm_log_half', 0),
                ('d1', 'dsm_kd_feat', 0)):
        assert regime_map.archived_twin(run) is None, run
    # the screen adopts it before training anything, and writes the report once
    reports = []
    runs = [('d1', 'dsm_kd', 0), ('d1', '2ndm_log_half', 0)]
    regime_map.screen(runs, 1, on_scored=lambda: reports.append(1))
    assert reports == [1] and all(regime_map.is_done(run) for run in runs)
    adopted = json.loads(open(regime_map.result_path(('d1', '2ndm_log_half', 0))).read())
    assert (adopted['recipe'], adopted['iters'], adopted['finetune_iters'],
            adopted['preset']) == ('2ndm_log_half', 100, 200, 'screen')
    assert adopted['adopted_from'] == 'archive_d1_100/runs/d1/2ndm_log_seed0.json'
    assert adopted['final']['raw']['samplers']['ddim50']['fid'] == 190.0
    assert (work / 'd1' / '2ndm_log_half_seed0' / 'marker').read_text() == '2ndm_log'
    regime_map.check_done(runs)  # adopted with the options the map gives it: not stale
    assert regime_map.adopt_archived_twins(runs) == []  # once
