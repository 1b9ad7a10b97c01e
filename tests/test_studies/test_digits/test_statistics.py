"""t intervals over seeds, their verdicts and Holm-adjusted p-values, paired differences to
DSM+KD, the gap closed and the recovery criteria."""
import math

import pytest

import numpy as np

from mmdiff_2ndm.studies.digits.report import _paired_table
from mmdiff_2ndm.studies.digits.statistics import (by_arm, format_p, gap_closed, holm,
                                                   paired_differences, recovery_summary,
                                                   t_interval, t_test_p, verdict)


def test_t_interval_closed_form():
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2 dof) = 4.302653: half width 4.302653 / sqrt(3)
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and math.isclose(high - mean, 4.302653 / math.sqrt(3), rel_tol=1e-6)
    assert math.isclose(mean - low, high - mean)
    # 5 seeds: t(0.975, 4 dof) = 2.776445
    values = [-3.0, -1.0, -2.0, -2.5, -1.5]
    sd = math.sqrt(sum((v + 2.0) ** 2 for v in values) / 4)
    mean, low, high = t_interval(values)
    assert mean == -2.0 and math.isclose(high, -2.0 + 2.776445 * sd / math.sqrt(5),
                                         rel_tol=1e-6)
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert math.isnan(t_interval([1.0, 3.0])[1])  # under 3 seeds: no interval
    # 3 seeds on one side of 0 are not enough when they spread as far as their mean
    assert t_interval([0.5, 1.0, 1.5])[1] < 0
    # other levels: t(0.75, 2 dof) = 0.816497
    assert math.isclose(t_interval([1.0, 2.0, 3.0], confidence=0.5)[2],
                        2.0 + 0.816497 / math.sqrt(3), rel_tol=1e-5)


def test_t_test_p_closed_form_and_its_interval():
    # 2 dof: P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2; [1, 2, 3]: t = 2 / (1 / sqrt(3))
    t = 2.0 * math.sqrt(3.0)
    assert math.isclose(t_test_p([1.0, 2.0, 3.0]), 1.0 - t / math.sqrt(t * t + 2.0),
                        rel_tol=1e-9)
    assert t_test_p([-1.0, -2.0, -3.0]) == t_test_p([1.0, 2.0, 3.0])  # two-sided
    assert math.isnan(t_test_p([1.0, 2.0]))  # under 3 seeds: no test
    assert t_test_p([2.0, 2.0, 2.0]) == 0.0 and t_test_p([0.0, 0.0, 0.0]) == 1.0
    # the test of the interval: p < 0.05 exactly where the 95 % interval excludes 0
    rng = np.random.default_rng(0)
    for n in (3, 4, 5, 8):
        for _ in range(200):
            values = rng.normal(rng.uniform(-1.0, 1.0), 1.0, n)
            _, low, high = t_interval(values)
            assert (t_test_p(values) < 0.05) == (low > 0 or high < 0)


def test_holm_closed_form():
    # m = 4 tests (nan is none): 0.005 x 4, 0.01 x 3, 0.03 x 2, then 0.04 x 1 raised to
    # the running maximum 0.06
    adjusted = holm([0.01, 0.04, 0.03, float('nan'), 0.005])
    assert np.allclose(adjusted[[0, 1, 2, 4]], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[3])
    assert list(holm([0.6, 0.7])) == [1.0, 1.0]  # capped at 1
    assert list(holm([0.02])) == [0.02]  # a family of one is not adjusted
    assert holm([]).size == 0 and math.isnan(holm([float('nan')])[0])


def test_verdicts():
    mean, low, high = t_interval([-3.0, -1.0, -2.0, -2.5, -1.5])
    assert mean == -2.0 and low < -2.0 < high < 0
    assert verdict(low, high) == 'better'  # lower is better: the CI is below 0
    assert verdict(low, high, lower_is_better=False) == 'worse'  # e.g. SSIM
    assert verdict(-1.0, 2.0) == 'no difference shown'
    assert verdict(0.5, 2.0) == 'worse'
    assert verdict(float('nan'), float('nan')) == 'under 3 seeds: no interval'


def _run(arm, seed, fid, ssim=0.9):
    scores = dict(fid=fid, fid_boot=0.1, ssim=ssim, sample_mse=0.01, eps_mse=0.01,
                  eps_mse_t50=0.02, params=10, ftle=[1.0])
    return dict(arm=arm, seed=seed, final=dict(raw=scores, ema=dict(scores, fid=fid + 1)),
                curve={'1': dict(raw=scores, ema=scores)}, s_per_iter=1.0, wall=1.0,
                record='abc')


def test_paired_differences_gap_closed_and_recovery():
    dense = dict(final=dict(fid=2.0), curve=dict(fid=2.0))
    runs = [_run('dsm', 0, 10.0), _run('dsm', 1, 12.0), _run('dsm_kd', 0, 5.0),
            _run('dsm_kd', 1, 4.0), _run('x', 0, 6.0), _run('x', 1, 2.0), _run('x', 2, 3.0)]
    arms = by_arm(runs)
    diff = paired_differences(arms, 'x', 'raw', dense['final']['fid'])
    assert diff['seeds'] == [0, 1]  # seed 2 has no DSM+KD partner
    assert diff['fid'][0] == -0.5  # (6 - 5 + 2 - 4) / 2
    assert diff['fid_lower_in'] == 1  # seed 1 only
    # gap closed per seed with a DSM run: (10 - 6) / 8 = 0.5, (12 - 2) / 10 = 1.0
    assert diff['gap_closed'][0] == 0.75
    assert gap_closed(10.0, 6.0, 2.0) == 0.5
    summary = recovery_summary(arms, dense)
    assert summary['dsm_kd']['fid'] == 4.5 and not summary['recovered']  # 4.5 > 1.5 * 2
    assert summary['dsm_gap'] == 9.0
    arms['dsm_kd'] = {0: _run('dsm_kd', 0, 2.5), 1: _run('dsm_kd', 1, 3.0)}
    assert recovery_summary(arms, dense)['recovered']  # 2.75 <= 3 and SSIM 0.9


def test_paired_differences_use_t_intervals_over_the_paired_seeds():
    runs = [_run('dsm_kd', s, f) for s, f in enumerate((5.0, 4.0, 6.0))]
    runs += [_run('x', s, f) for s, f in enumerate((5.5, 5.0, 6.2))]  # diffs 0.5, 1.0, 0.2
    diff = paired_differences(by_arm(runs), 'x', 'raw', 2.0)
    assert diff['fid'] == pytest.approx(t_interval([0.5, 1.0, 0.2]))
    assert diff['fid'][1] < 0 < diff['fid'][2]  # 3 of 3 above 0, yet no difference shown


def test_paired_table_adjusts_every_verdict_for_the_whole_table():
    """16 tests (2 arms x raw and EMA x 4 verdict metrics); only proxy FID differs. y is
    better on every seed (p = 0.0033 alone) but not after Holm over the 16 (16 p = 0.053)."""
    runs = [_run('dsm_kd', s, f) for s, f in enumerate((5.0, 4.0, 6.0))]
    runs += [_run('x', s, f) for s, f in enumerate((5.5, 5.0, 6.2))]  # +0.5, +1.0, +0.2
    runs += [_run('y', s, f) for s, f in enumerate((4.0, 2.9, 5.1))]  # -1.0, -1.1, -0.9
    lines, paired = _paired_table(by_arm(runs), dict(final=dict(fid=2.0)))
    assert 'Holm p (same order)' in lines[0]
    assert lines[1].count('|') == lines[0].count('|')
    p_x, p_y = t_test_p([0.5, 1.0, 0.2]), t_test_p([-1.0, -1.1, -0.9])
    assert paired['y/raw']['fid_p'] == pytest.approx(p_y) and p_y < 0.05 < 16 * p_y
    # step-down: y's two tests first (16 p_y), x's next (14 p_x, above 1: capped); the
    # 12 metrics that do not differ have p = 1
    row_y = next(line for line in lines if line.startswith('| y | raw |'))
    assert f'| better, no difference shown, no difference shown, no difference shown | ' \
           f'{format_p(16 * p_y)}, 1.000, 1.000, 1.000 |' in row_y
    row_x = next(line for line in lines if line.startswith('| x | ema |'))
    assert f'| {format_p(min(1.0, 14 * p_x))}, 1.000, 1.000, 1.000 |' in row_x
    assert format_p(float('nan')) == '-' and format_p(0.0004) == '<0.001'
