"""The recipes' time per iteration: round robin blocks, medians, ratios to the reference."""
import json
import os
import os.path as osp

import pytest

from mmdiff_2ndm.studies.regime_map.cells import with_references
from mmdiff_2ndm.studies.regime_map.driver import RegimeMap
from mmdiff_2ndm.studies.regime_map.timing import describe, time_steps, timing_ratios


class FakeMachine:
    """A clock that each step advances by its own cost."""

    def __init__(self, costs):
        self.now, self.calls, self.order = 0.0, {k: 0 for k in costs}, []
        self.steps = {k: self._step(k, c) for k, c in costs.items()}

    def _step(self, name, cost):
        def step():
            self.calls[name] += 1
            self.now += cost
        return step

    def clock(self):
        return self.now


def test_medians_ratios_and_rotation():
    machine = FakeMachine({'dsm_kd': 0.1, '2ndm': 0.25, 'dsm': 0.05})
    starts = []

    def clock():  # records which step a block starts with
        starts.append(dict(machine.calls))
        return machine.clock()

    times = time_steps(machine.steps, rounds=3, block=4, warmup=2, clock=clock)
    assert machine.calls == {'dsm_kd': 2 + 12, '2ndm': 2 + 12, 'dsm': 2 + 12}
    for name, cost in (('dsm_kd', 0.1), ('2ndm', 0.25), ('dsm', 0.05)):
        assert times[name]['median'] == pytest.approx(cost)
        assert times[name]['blocks'] == pytest.approx([cost] * 3)
    # round r starts with the r-th name: no recipe always runs first
    assert len(starts) == 2 * 9  # a start and an end per block
    begun = [[k for k in machine.steps if starts[2 * b + 1][k] > starts[2 * b][k]][0]
             for b in range(9)]
    assert begun[0::3] == ['dsm_kd', '2ndm', 'dsm']
    ratios = timing_ratios(times, {'dsm_kd': 'dsm_kd', '2ndm': 'dsm_kd', 'dsm': 'dsm_kd',
                                   'feat': 'dsm_kd'})
    assert ratios == pytest.approx({'2ndm': 2.5, 'dsm': 0.5})  # feat not timed: left out
    lines = describe(times, ratios, ['dsm_kd', '2ndm'])
    assert lines == ['dsm_kd: 100.0 ms/iter [100.0, 100.0]',
                     '2ndm: 250.0 ms/iter [250.0, 250.0], 2.50x its reference']


def test_median_resists_a_slow_block():
    machine = FakeMachine({'a': 0.1})
    slow = {'n': 0}

    def clock():  # the third block's end comes late (another job took the core)
        slow['n'] += 1
        return machine.now + (5.0 if slow['n'] >= 6 else 0.0)

    times = time_steps(machine.steps, rounds=5, block=1, warmup=0, clock=clock)
    assert times['a']['median'] == pytest.approx(0.1)
    assert max(times['a']['blocks']) == pytest.approx(5.1)


def test_bad_counts():
    with pytest.raises(ValueError, match='rounds and block must be >= 1, got 0 and 1'):
        time_steps({'a': lambda: None}, rounds=0, block=1)


def test_with_references_puts_each_chain_of_references_first_once():
    assert with_references(['authors_b2']) == ['dsm_kd', 'dsm_kd_b2', 'authors_b2']
    assert with_references(['2ndm_log', 'dsm', 'authors_b2', 'dsm_kd_b2']) == \
        ['dsm_kd', '2ndm_log', 'dsm', 'dsm_kd_b2', 'authors_b2']
    assert with_references(['dsm_kd']) == ['dsm_kd']


def _touch_final(regime_map, run, iters):
    path = osp.join(regime_map.run_dir(run), f'iter_{iters}.pth')
    os.makedirs(osp.dirname(path), exist_ok=True)
    open(path, 'w').close()
    return path


def test_timing_checkpoint_own_run_else_a_finished_run_of_the_same_seed(tmp_path):
    results = tmp_path / 'results'
    results.mkdir()
    (results / 'plateau.json').write_text(json.dumps(dict(plateau=dict(iters=100))))
    regime_map = RegimeMap('screen', str(tmp_path / 'work'), str(results), 1)
    recipes = ['dsm_kd', '2ndm_log', 'authors_b2']
    assert regime_map.timing_checkpoint(('p27', 'authors_b2', 0), recipes) is None

    # a batch-2 run trains 16x the iterations: only its final checkpoint counts
    _touch_final(regime_map, ('p27', 'dsm_kd_b2', 0), 100)
    assert regime_map.timing_checkpoint(('p27', 'authors_b2', 0), recipes) is None
    b2 = _touch_final(regime_map, ('p27', 'dsm_kd_b2', 0), 1600)
    # its reference before the other timed recipes, another seed or level never
    _touch_final(regime_map, ('p27', '2ndm_log', 0), 100)
    _touch_final(regime_map, ('p27', 'authors_b2', 1), 1600)
    _touch_final(regime_map, ('p37', 'authors_b2', 0), 1600)
    assert regime_map.timing_checkpoint(('p27', 'authors_b2', 0), recipes) == \
        ('p27/dsm_kd_b2_seed0', b2)
    # the map's reference is not trained: the first timed recipe that is
    assert regime_map.timing_checkpoint(('p27', 'dsm_kd', 0), recipes)[0] == \
        'p27/2ndm_log_seed0'
    # a recipe outside the timed ones still serves, after them
    dsm = _touch_final(regime_map, ('p27', 'dsm', 0), 100)
    assert regime_map.timing_checkpoint(('p27', 'dsm_kd', 0), ['dsm_kd']) == \
        ('p27/dsm_seed0', dsm)
    own = _touch_final(regime_map, ('p27', 'authors_b2', 0), 1600)
    assert regime_map.timing_checkpoint(('p27', 'authors_b2', 0), recipes) == \
        ('p27/authors_b2_seed0', own)
