"""Feature KD + the better 2ndM form: the rule that names the form (closed-form cases),
the runs it adds to the combining preset, and the report's section."""
import pytest

from mmdiff_2ndm.studies.regime_map.axes import RECIPES, map_preset
from mmdiff_2ndm.studies.regime_map.cells import index_runs
from mmdiff_2ndm.studies.regime_map.combine import (FORM_RECIPES, better_form, form_section,
                                                    plan_runs, score_form)

SAMPLERS = ('ddim50', 'ddim10')
SEEDS = (0, 1, 2)


def _run(level, recipe, seed, fid, ssim):
    scores = dict(fid=fid, ssim=ssim, sample_mse=0.01)
    return dict(level=level, recipe=recipe, seed=seed, record='same',
                final=dict(raw=dict(samplers={s: dict(scores) for s in SAMPLERS})))


def _screen(sigma_fid, log_fid, sigma_ssim=(0.0, 0.0, 0.0), log_ssim=(0.0, 0.0, 0.0)):
    """DSM+KD at proxy FID 40/44/42 and SSIM 0.9, the two forms offset per seed."""
    runs = []
    for seed, ref in enumerate((40.0, 44.0, 42.0)):
        runs.append(_run('p27', 'dsm_kd', seed, ref, 0.9))
        runs.append(_run('p27', '2ndm', seed, ref + sigma_fid[seed], 0.9 + sigma_ssim[seed]))
        runs.append(_run('p27', '2ndm_log', seed, ref + log_fid[seed], 0.9 + log_ssim[seed]))
    return runs


def test_combinations_are_compared_with_feature_kd_alone():
    for form, recipe in FORM_RECIPES.items():
        assert RECIPES[recipe].reference == 'dsm_kd_feat' and RECIPES[recipe].features
        assert set(RECIPES[form].options) <= set(RECIPES[recipe].options)


def test_score_counts_verdicts_on_each_side():
    # the log form: 3 FID worse on every seed (both samplers), SSIM better on every seed
    cells = index_runs(_screen((1.0, -1.0, 0.5), (3.0, 3.0, 3.0), log_ssim=(0.01,) * 3))
    score = score_form(cells, 'p27', '2ndm_log', SAMPLERS)
    assert score.worse == ['ddim50 fid', 'ddim10 fid']
    assert score.better == ['ddim50 ssim', 'ddim10 ssim'] and score.score == 0
    assert score.seeds == 3
    # mean of 3/40, 3/44, 3/42 in %, the same on both samplers
    assert score.fid_pct == pytest.approx(100 * (3 / 40 + 3 / 44 + 3 / 42) / 3)
    sigma = score_form(cells, 'p27', '2ndm', SAMPLERS)
    assert sigma.better == sigma.worse == [] and sigma.score == 0


def test_higher_score_names_the_form():
    cells = index_runs(_screen((1.0, -1.0, 0.5), (3.0, 3.0, 3.0)))
    form, scores, reason = better_form(cells, 'p27', SAMPLERS, SEEDS)
    assert form == '2ndm' and [s.score for s in scores] == [0, -2]
    assert reason.startswith('2ndm: score +0')
    # a form better on FID everywhere wins although its mean FID gain is smaller
    cells = index_runs(_screen((-0.5, -0.5, -0.5), (-4.0, 3.0, -6.0)))
    assert better_form(cells, 'p27', SAMPLERS, SEEDS)[0] == '2ndm'


def test_equal_scores_go_to_the_lower_relative_fid():
    cells = index_runs(_screen((2.0, -1.0, 0.5), (-2.0, 1.0, -0.5)))
    form, scores, reason = better_form(cells, 'p27', SAMPLERS, SEEDS)
    assert [s.score for s in scores] == [0, 0]
    assert form == '2ndm_log' and 'scores tied at +0' in reason
    assert scores[1].fid_pct < 0 < scores[0].fid_pct


def test_no_form_is_named_before_the_screen_is_done_and_follow_up_seeds_do_not_count():
    runs = [r for r in _screen((1.0, -1.0, 0.5), (3.0, 3.0, 3.0))
            if not (r['recipe'] == '2ndm' and r['seed'] == 2)]
    form, _, reason = better_form(index_runs(runs), 'p27', SAMPLERS, SEEDS)
    assert form is None
    assert reason == "2ndm has 2 of the screen's 3 paired seeds at p27"
    # a follow-up seed where the named (log) form is far worse does not change the name
    runs = _screen((2.0, -1.0, 0.5), (-2.0, 1.0, -0.5))
    assert better_form(index_runs(runs), 'p27', SAMPLERS, SEEDS)[0] == '2ndm_log'
    runs += [_run('p27', 'dsm_kd', 3, 40.0, 0.9), _run('p27', '2ndm_log', 3, 400.0, 0.9)]
    form, scores, _ = better_form(index_runs(runs), 'p27', SAMPLERS, SEEDS)
    assert form == '2ndm_log' and [s.seeds for s in scores] == [3, 3]


def test_combining_preset_plans_the_named_form_and_says_what_is_pending():
    preset = map_preset('combine')
    assert preset['levels'] == ('p27',) and preset['combine']
    cells = index_runs(_screen((1.0, -1.0, 0.5), (3.0, 3.0, 3.0)))
    runs, pending = plan_runs(preset, cells)
    assert pending == {}
    assert [r for r in runs if r[1] not in ('dsm_kd', 'dsm_kd_feat')] == [
        ('p27', 'feat_2ndm', 0), ('p27', 'feat_2ndm', 1), ('p27', 'feat_2ndm', 2)]
    # references are planned before the combination (trained first)
    assert runs.index(('p27', 'dsm_kd_feat', 0)) < runs.index(('p27', 'feat_2ndm', 0))
    runs, pending = plan_runs(preset, index_runs([]))
    assert 'feat_2ndm' not in {r[1] for r in runs}
    assert pending == {'p27': "2ndm has 0 of the screen's 3 paired seeds, 2ndm_log has 0 of "
                              "the screen's 3 paired seeds at p27"}
    # recipes given on the command line are taken as they are
    runs, pending = plan_runs(preset, index_runs([]), recipes=['feat_2ndm_log'])
    assert {r[1] for r in runs} == {'feat_2ndm_log'} and pending == {}
    # other presets never combine; the DiT's combination runs at d2
    assert plan_runs(map_preset('screen'), cells)[0] == plan_runs(map_preset('screen'),
                                                                  index_runs([]))[0]
    assert map_preset('combine', 'dit')['levels'] == ('d2',)


def test_form_section_lists_scores_and_the_form_named():
    cells = index_runs(_screen((1.0, -1.0, 0.5), (3.0, 3.0, 3.0)))
    text = '\n'.join(form_section(cells, ['p27'], SAMPLERS, SEEDS))
    assert '| p27 | 2ndm | 3 | - | - | +0 | +0.5 | **yes** |' in text
    assert '| p27 | 2ndm_log | 3 | - | ddim50 fid, ddim10 fid | -2 |' in text
    text = '\n'.join(form_section(index_runs([]), ['p27'], SAMPLERS, SEEDS))
    assert "| p27 | | | | | | | not named yet: 2ndm has 0 of the screen's 3" in text
