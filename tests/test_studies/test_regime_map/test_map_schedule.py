"""How long a planned run takes (closed-form estimates from logged and timed runs), and
``--until``: a run starts only where its estimated training and scoring end in time."""
import datetime
import json
import os
import os.path as osp
import shutil

import pytest

from mmdiff_2ndm.studies.digits.runs import TrainingStopped, trained_iters
from mmdiff_2ndm.studies.regime_map import RegimeMap
from mmdiff_2ndm.studies.regime_map.axes import PRESETS, run_iters
from mmdiff_2ndm.studies.regime_map.cells import index_runs
from mmdiff_2ndm.studies.regime_map.schedule import (SCORE_S_UNLOGGED, parse_until,
                                                     recipe_ratios, run_seconds, s_per_iter,
                                                     score_seconds, timed_ratio)


def logged(level, recipe, seed, s_per_iter, **extra):
    """An evaluated run as the schedule reads it."""
    return dict(level=level, recipe=recipe, seed=seed, s_per_iter=s_per_iter, **extra)


TIMING = dict(levels=dict(p27=dict(times=dict(dsm_kd=dict(median=0.5),
                                              **{'2ndm': dict(median=1.0)}))))


def test_timed_ratio_of_a_recipe_that_differs_only_in_length():
    assert timed_ratio({'2ndm': 1.9}, '2ndm_half') == 1.9
    assert timed_ratio({'2ndm_half': 1.7, '2ndm': 1.9}, '2ndm_half') == 1.7  # its own first
    assert timed_ratio({'2ndm': 1.9}, '2ndm_log_half') is None  # another iteration
    assert timed_ratio({}, 'dsm') is None


def test_recipe_ratios_from_timing():
    ratios = recipe_ratios(TIMING)
    assert ratios['dsm_kd'] == 1.0 and ratios['2ndm'] == 2.0
    assert ratios['2ndm_half'] == 2.0  # 2ndM's iteration, half as many
    assert ratios['dsm_kd_x2'] == 1.0  # the reference's iteration
    assert '2ndm_log' not in ratios and 'dsm' not in ratios
    # untimed: the reference and the recipes with its iteration, at 1
    untimed = recipe_ratios(None)
    assert {'dsm_kd', 'dsm_kd_x2'} <= set(untimed) and set(untimed.values()) == {1.0}
    assert '2ndm' not in untimed


def test_seconds_per_iteration_by_the_rule():
    """Its own at the level, else the reference's there (else anywhere) times the timed
    ratio, else its own anywhere, else unknown."""
    cells = index_runs([logged('p27', 'dsm_kd', 0, 0.1), logged('p27', 'dsm_kd', 1, 0.3),
                        logged('p27', '2ndm', 0, 0.9), logged('p57', 'dsm', 0, 0.05),
                        logged('p57', 'dsm_kd', 0, 0.6)])
    ratios = recipe_ratios(TIMING)
    assert s_per_iter(cells, '2ndm', 'p27', ratios) == pytest.approx(0.9)  # logged there
    assert s_per_iter(cells, 'dsm_kd', 'p27', ratios) == pytest.approx(0.2)  # median
    assert s_per_iter(cells, '2ndm', 'p57', ratios) == pytest.approx(0.6 * 2.0)
    assert s_per_iter(cells, '2ndm_half', 'p37', ratios) == pytest.approx(0.3 * 2.0)
    assert s_per_iter(cells, 'dsm', 'p27', ratios) == pytest.approx(0.05)  # any level
    assert s_per_iter(cells, 'authors_b2', 'p27', ratios) is None


def test_run_seconds_counts_what_is_left_to_train_and_the_scoring():
    preset = dict(PRESETS['screen'], batch_size=32)
    cells = index_runs([logged('p27', 'dsm_kd', 0, 0.2),
                        logged('p27', '2ndm', 0, 0.4, score_s=100.0),
                        logged('p27', 'dsm', 0, 0.1, score_s=300.0),
                        logged('p27', 'dsm', 1, 0.1, score_s=200.0)])
    ratios = recipe_ratios(None)
    assert score_seconds(cells) == 200.0  # median of the logged scorings
    assert run_seconds(cells, ('p27', '2ndm', 1), preset, 1000, ratios) == (400.0, 200.0)
    # an interrupted run resumes: only the rest of it is trained
    assert run_seconds(cells, ('p27', '2ndm', 1), preset, 1000, ratios,
                       trained=750) == (100.0, 200.0)
    assert run_seconds(cells, ('p27', '2ndm', 1), preset, 1000, ratios,
                       trained=1000) == (0.0, 200.0)
    # a half-length run trains half the iterations; a batch-2 run 16x as many
    assert run_seconds(cells, ('p27', 'dsm_kd_x2', 0), preset, 1000, ratios)[0] == 400.0
    b2_iters = run_iters(preset, 'dsm_kd_b2', 1000)[1]
    assert b2_iters == 16000
    assert run_seconds(cells, ('p27', 'authors_b2', 0), preset, 1000, ratios) is None
    # no run logged its scoring: the allowance
    assert score_seconds(index_runs([logged('p27', 'dsm_kd', 0, 0.2)])) == SCORE_S_UNLOGGED


def test_parse_until():
    now = datetime.datetime(2026, 12, 6, 19, 30)
    assert parse_until('21:15', now) == datetime.datetime(2026, 12, 6, 21, 15)
    # a clock time already past today is tomorrow's: a sitting may run past midnight
    assert parse_until('01:00', now) == datetime.datetime(2026, 12, 7, 1, 0)
    assert parse_until('2026-12-07T08:00', now) == datetime.datetime(2026, 12, 7, 8, 0)
    assert parse_until('2026-12-06 21:45', now) == datetime.datetime(2026, 12, 6, 21, 45)
    aware = parse_until('2030-01-01T00:00+00:00', now)
    assert aware.tzinfo is None and aware == datetime.datetime(
        2030, 1, 1, tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)
    with pytest.raises(ValueError, match=r"--until 'soon' is neither HH:MM nor an ISO date"):
        parse_until('soon', now)
    with pytest.raises(ValueError, match=r"already past \(now 2026-12-06 19:30\)"):
        parse_until('2026-12-06T19:00', now)


def _map_with_logged_runs(tmp_path, until):
    """A digits map at 1000 iterations whose DSM+KD (0.2 s/iter) and DSM (0.1 s/iter)
    seed-0 runs are evaluated, each scored in 60 s."""
    work, results = tmp_path / 'work', tmp_path / 'results'
    regime_map = RegimeMap('screen', str(work), str(results), 1, until=until)
    results.mkdir(parents=True)
    (results / 'plateau.json').write_text(json.dumps(dict(sampler='ddim50',
                                                          plateau=dict(iters=1000))))
    for recipe, per_iter in (('dsm_kd', 0.2), ('dsm', 0.1)):
        run = ('p27', recipe, 0)
        batch, iters = run_iters(regime_map.preset, recipe, 1000)
        path = regime_map.result_path(run)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(logged(*run, per_iter, score_s=60.0,
                             options=regime_map.options(run, iters, batch)), f)
    return regime_map


def test_a_run_starts_only_where_it_ends_before_until(tmp_path, capsys):
    now = datetime.datetime.now()
    # DSM+KD seed 1: 1000 x 0.2 + 60 = 260 s; DSM seed 1: 1000 x 0.1 + 60 = 160 s
    regime_map = _map_with_logged_runs(tmp_path, now + datetime.timedelta(seconds=210))
    assert regime_map.ends_in_time(('p27', 'dsm', 1))
    assert not regime_map.ends_in_time(('p27', 'dsm_kd', 1))
    out = capsys.readouterr().out
    assert 'not started: p27/dsm_kd_seed1: about 3 min of training and 1 of scoring would ' \
        'end at' in out and 'it stays planned for a later sitting' in out
    # a resumed run: its checkpoints say how much is left (600 of 1000 iterations: 180 s)
    run_dir = regime_map.run_dir(('p27', 'dsm_kd', 1))
    os.makedirs(run_dir)
    for step in (200, 400):
        open(osp.join(run_dir, f'iter_{step}.pth'), 'w').close()
    assert regime_map.ends_in_time(('p27', 'dsm_kd', 1))
    # a recipe no run has logged: unknown, so not started under --until
    assert not regime_map.ends_in_time(('p27', 'authors_b2', 0))
    assert 'no evaluated run has logged the time per iteration of its recipe' in \
        capsys.readouterr().out
    # without --until every run starts
    assert _map_with_logged_runs(tmp_path / 'free', None).ends_in_time(('p27', 'authors_b2', 0))


def test_the_screen_leaves_runs_that_would_end_late_for_a_later_sitting(tmp_path, capsys):
    now = datetime.datetime.now()
    regime_map = _map_with_logged_runs(tmp_path, now + datetime.timedelta(seconds=210))
    trained, scored = [], []
    regime_map.train_run = lambda run, deadline=None: trained.append(run) or 1.0
    regime_map.score_run = lambda run: scored.append(run)
    regime_map.add_loss_terms = lambda runs: None
    planned = [('p27', 'dsm_kd', 1), ('p27', 'dsm', 1), ('p27', 'dsm_kd', 0)]
    regime_map.screen(planned, jobs=1)
    # DSM+KD seed 0 is done; seed 1 would end late; DSM seed 1, shorter, still fits
    assert trained == scored == [('p27', 'dsm', 1)]
    assert regime_map.left_for_later == [('p27', 'dsm_kd', 1)]
    assert '[map] 1 of 2 runs left for a later sitting (--until ' in capsys.readouterr().out


def test_overrun_trains_the_runs_left_over_up_to_until(tmp_path, capsys):
    """--overrun: after the runs that fit, the left-over ones train up to --until (the
    partly trained first, only where the next checkpoint comes in time), stopped there
    with their checkpoints kept; one that ends in time is scored."""
    now = datetime.datetime.now()
    with pytest.raises(ValueError, match='give `until`'):
        RegimeMap('screen', str(tmp_path), str(tmp_path / 'r'), 1, overrun=True)
    # 130 s left. DSM+KD 1000 x 0.2 s + 60 s scoring ends late, its next checkpoint (every
    # 500 iterations) in 100 s; so does seed 2 with 500 iterations held (100 + 60 s), and it
    # goes first; DSM seed 2 with 600 held fits (40 + 60 s) and trains before them
    regime_map = _map_with_logged_runs(tmp_path, now + datetime.timedelta(seconds=130))
    regime_map.overrun = True
    for run, step in ((('p27', 'dsm_kd', 2), 500), (('p27', 'dsm', 2), 600)):
        os.makedirs(regime_map.run_dir(run))
        open(osp.join(regime_map.run_dir(run), f'iter_{step}.pth'), 'w').close()
    trained, scored = [], []

    def train_run(run, deadline=None):
        trained.append((run, deadline))
        if run in (('p27', 'dsm', 2), ('p27', 'dsm_kd', 2)):
            return 1.0  # ended before --until
        raise TrainingStopped('stopped')

    regime_map.train_run = train_run
    regime_map.score_run = lambda run: scored.append(run)
    regime_map.add_loss_terms = lambda runs: None
    planned = [('p27', 'dsm_kd', 1), ('p27', 'authors_b2', 1), ('p27', 'dsm_kd', 2),
               ('p27', 'dsm', 2)]
    regime_map.screen(planned, jobs=1)
    deadline = regime_map.until.timestamp()  # every training stops there at the latest
    assert trained == [(('p27', 'dsm', 2), deadline), (('p27', 'dsm_kd', 2), deadline),
                       (('p27', 'dsm_kd', 1), deadline)]
    assert scored == [('p27', 'dsm', 2), ('p27', 'dsm_kd', 2)]
    # stopped, and untimed (authors_b2: no run logged its time, so its checkpoint may not
    # come in time): both stay planned
    assert regime_map.left_for_later == [('p27', 'dsm_kd', 1), ('p27', 'authors_b2', 1)]
    out = capsys.readouterr().out
    assert 'after --until ' in out and 'it may train up to then once the runs that fit are ' \
        'done (--overrun)' in out
    assert 'past --until: p27/dsm_kd_seed2 trains until' in out and \
        '(500 iterations held; its next checkpoint in about 2 min)' in out
    assert 'stopped p27/dsm_kd_seed1 at --until: stopped' in out
    assert 'past --until: p27/authors_b2_seed1' not in out


def test_a_run_that_outlasts_its_estimate_stops_at_until_and_is_parked(tmp_path, capsys):
    """A run estimated to end in time trains with --until as its deadline too: stopped
    there, it is left for later and its resume state parked, not lost with the sitting."""
    now = datetime.datetime.now()
    regime_map = _map_with_logged_runs(tmp_path, now + datetime.timedelta(seconds=1000))
    run = ('p27', 'dsm', 2)
    trained = []

    def train_run(run, deadline=None):
        trained.append((run, deadline))
        os.makedirs(regime_map.run_dir(run), exist_ok=True)
        open(osp.join(regime_map.run_dir(run), 'iter_500.pth'), 'w').close()
        raise TrainingStopped('stopped with 500 of 1000 iterations')

    regime_map.train_run = train_run
    regime_map.score_run = lambda run: pytest.fail('scored')
    regime_map.add_loss_terms = lambda runs: None
    regime_map.screen([run], jobs=1)
    assert trained == [(run, regime_map.until.timestamp())]
    assert regime_map.left_for_later == [run]
    assert osp.isfile(osp.join(regime_map.pending_dir(run), 'iter_500.pth'))
    out = capsys.readouterr().out
    assert 'stopped p27/dsm_seed2 at --until, past its estimate: stopped with 500' in out
    assert '[map] parked p27/dsm_seed2 at 500 of 1000 iterations' in out

    # the next sitting, on a fresh clone: the screen puts the run back before training it
    shutil.rmtree(regime_map.work_dir)
    held = []
    regime_map.train_run = lambda run, deadline=None: held.append(
        trained_iters(regime_map.run_dir(run))) or 1.0
    regime_map.score_run = lambda run: None
    regime_map.left_for_later = []
    regime_map.screen([run], jobs=1)
    assert held == [500]


def test_overrun_starts_no_run_whose_next_checkpoint_comes_after_until(tmp_path):
    now = datetime.datetime.now()
    regime_map = _map_with_logged_runs(tmp_path, now + datetime.timedelta(seconds=90))
    regime_map.overrun = True
    # DSM+KD seed 1: its first checkpoint (500 iterations) after 100 s; 90 s left
    assert regime_map.seconds_to_checkpoint(('p27', 'dsm_kd', 1)) == pytest.approx(100.0)
    assert regime_map.seconds_to_checkpoint(('p27', 'authors_b2', 1)) is None
    regime_map.train_run = lambda run, deadline=None: pytest.fail('started')
    regime_map.add_loss_terms = lambda runs: None
    regime_map.screen([('p27', 'dsm_kd', 1)], jobs=1)
    assert regime_map.left_for_later == [('p27', 'dsm_kd', 1)]
