"""The order of a study's runs and the checkpoints of the recovery curve."""
from mmdiff_2ndm.studies.digits.presets import (ARMS, PRESETS, checkpoint_iters,
                                                planned_runs)


def test_planned_runs_go_seed_by_seed():
    full = PRESETS['full']
    runs = planned_runs(full)
    assert runs[:5] == [(a, 0) for a in full['arms']]
    seeds = {a: [s for r, s in runs if r == a] for a in full['arms']}
    assert seeds['dsm_kd'] == seeds['2ndm'] == seeds['2ndm_unscaled'] == [0, 1, 2, 3, 4]
    assert seeds['dsm'] == seeds['first_order'] == [0, 1, 2]
    assert runs[-len(full['lever_arms']):] == [(a, 0) for a in full['lever_arms']]
    assert planned_runs(full, seeds=[7], arms=['dsm']) == [('dsm', 7)]
    assert all(a in ARMS for a, _ in runs)


def test_checkpoints_end_at_the_last_iteration():
    assert checkpoint_iters(PRESETS['tiny']) == [1, 2, 3]
    assert checkpoint_iters(dict(finetune_iters=10, checkpoints=3)) == [3, 6, 9, 10]
