"""The screen's follow-up: which cells get more seeds (interval excludes 0 or nearly does),
how many, and the paired runs that adds; the report lists them."""
import math

from mmdiff_2ndm.studies.regime_map.cells import index_runs
from mmdiff_2ndm.studies.regime_map.followup import (FOLLOW_UP_SEEDS, MAX_SEEDS, Flag,
                                                     flagged_cells, follow_up_runs,
                                                     interval_flag, target_seeds)
from mmdiff_2ndm.studies.regime_map.report import follow_up_section

SAMPLERS = ('ddim50', 'ddim10')


def _run(level, recipe, seed, fid, ssim):
    scores = dict(fid=fid, ssim=ssim, sample_mse=0.01)
    return dict(level=level, recipe=recipe, seed=seed, record='same',
                final=dict(raw=dict(samplers={s: dict(scores) for s in SAMPLERS})))


def test_interval_flag_and_target_seeds():
    assert interval_flag(0.1, 0.5) == interval_flag(-0.5, -0.1) == 'excludes'
    assert interval_flag(-0.05, 1.0) == 'near'  # 0 within a quarter of the width
    assert interval_flag(-1.0, 0.2) == 'near'
    assert interval_flag(-0.5, 0.5) == ''
    assert interval_flag(0.0, 0.0) == ''  # identical results: nothing to follow
    assert interval_flag(math.nan, math.nan) == ''
    assert target_seeds(3, '') == 3
    assert target_seeds(3, 'excludes') == target_seeds(3, 'near') == FOLLOW_UP_SEEDS == 5
    assert target_seeds(5, 'excludes') == 5  # settled
    assert target_seeds(5, 'near') == 8 and target_seeds(9, 'near') == MAX_SEEDS == 10
    assert target_seeds(10, 'near') == 10


def test_flagged_cells_and_their_paired_follow_up_runs():
    runs = []
    for seed, (ref_fid, ssim_noise) in enumerate(((40.0, 0.01), (42.0, -0.01), (41.0, 0.0))):
        runs.append(_run('p27', 'dsm_kd', seed, ref_fid, 0.9))
        # 2ndm: 10 better on every seed (interval excludes 0); SSIM no different
        runs.append(_run('p27', '2ndm', seed, ref_fid - 10.0, 0.9 + ssim_noise))
        # dsm: +-5 around the reference, SSIM no different: not flagged
        runs.append(_run('p27', 'dsm', seed, ref_fid + (5.0, -5.0, 0.5)[seed], 0.9))
    for seed in range(3):  # the authors' recipe is compared with DSM+KD at batch 2
        runs.append(_run('p27', 'dsm_kd_b2', seed, 50.0, 0.9))
        runs.append(_run('p27', 'authors_b2', seed, 50.0, 0.9 - (0.020, 0.022, 0.018)[seed]))
    runs.append(_run('p57', '2ndm', 0, 1.0, 0.9))  # one seed, no reference: not judged
    flags = flagged_cells(index_runs(runs), ['p27', 'p57'],
                          ['dsm_kd', '2ndm', 'dsm', 'dsm_kd_b2', 'authors_b2'], SAMPLERS)
    # batch 2 costs DSM+KD 9 proxy FID on every seed: flagged against DSM+KD too
    assert [(f.level, f.recipe) for f in flags] == [('p27', '2ndm'), ('p27', 'dsm_kd_b2'),
                                                    ('p27', 'authors_b2')]
    fid = flags[0]
    assert (fid.sampler, fid.metric, fid.excludes_zero) == ('ddim50', 'fid', True)
    assert fid.low == fid.high == -10.0 and (fid.seeds, fid.target) == (3, 5)
    assert (flags[2].metric, flags[2].high < 0) == ('ssim', True)
    assert follow_up_runs(flags, (0, 1, 2)) == [
        ('p27', 'dsm_kd', 3), ('p27', '2ndm', 3), ('p27', 'dsm_kd_b2', 3),
        ('p27', 'authors_b2', 3), ('p27', 'dsm_kd', 4), ('p27', '2ndm', 4),
        ('p27', 'dsm_kd_b2', 4), ('p27', 'authors_b2', 4)]
    # a cell already at 5 seeds with 0 near its interval's end gets 3 more
    near = Flag('p27', 'dsm', 'ddim10', 'fid', -0.1, 2.0, False, 5, 8)
    assert [r[2] for r in follow_up_runs([near], (0, 1, 2)) if r[1] == 'dsm'] == [3, 4, 5, 6, 7]

    text = '\n'.join(follow_up_section(index_runs(runs), ['p27'], ['dsm_kd', '2ndm', 'dsm'],
                                       SAMPLERS, dict(seeds=(0, 1, 2)), ' --arch dit'))
    assert '| p27 | 2ndm - dsm_kd | ddim50 fid | [-10, -10] | yes | 3 | 5 |' in text
    assert '4 follow-up runs to go: `python tools/regime_map.py --follow-up --jobs 1 ' \
        '--threads-per-run 1 --arch dit`' in text
    quiet = follow_up_section(index_runs(runs), ['p27'], ['dsm_kd', 'dsm'], SAMPLERS,
                              dict(seeds=(0, 1, 2)), '')
    assert 'No cell is flagged by the runs so far.' in quiet
