"""The run length rule: the first checkpoint after which proxy FID never falls more than
5 % below its value there."""
import pytest

from mmdiff_2ndm.studies.regime_map import plateau_iteration


def test_plateau_is_the_first_checkpoint_no_later_one_beats_by_the_tolerance():
    iters = [500, 1000, 1500, 2000, 2500]
    p = plateau_iteration(iters, [300.0, 200.0, 150.0, 146.0, 149.0])
    assert p == dict(iters=1500, fid=150.0, best=146.0, reached=True)
    # a later dip of more than 5 % moves it
    assert plateau_iteration(iters, [300.0, 200.0, 150.0, 146.0, 140.0])['iters'] == 2000


def test_still_falling_at_the_end_is_not_a_plateau():
    p = plateau_iteration([1, 2, 3], [300.0, 200.0, 100.0])
    assert p['iters'] == 3 and not p['reached']


def test_bad_input():
    with pytest.raises(ValueError, match='one FID per checkpoint'):
        plateau_iteration([1, 2], [1.0])
    with pytest.raises(ValueError, match='increase'):
        plateau_iteration([2, 1], [1.0, 1.0])
