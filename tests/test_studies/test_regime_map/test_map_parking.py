"""Stopped runs parked in the results dir and restored into a fresh work dir: what is
copied, when nothing is, and the refusal of a run parked with other settings."""
import filecmp
import json
import os
import os.path as osp

import pytest
import torch

from mmdiff_2ndm.studies.regime_map.driver import RegimeMap
from mmdiff_2ndm.studies.regime_map.parking import (RECORD, park_run, parked_iters,
                                                    parked_runs, restore_run, unpark)

OPTIONS = ['randomness.seed=1', 'param_scheduler.T_max=8']


def _checkpoint(n):
    """What MMEngine saves at iteration ``n`` (in miniature)."""
    return dict(meta=dict(iter=n, pruning=dict(history=[[1, 2]])),
                state_dict={'student.w': torch.full((2, ), float(n))},
                optimizer=dict(state={0: dict(step=torch.tensor(n))}),
                message_hub=dict(log_scalars=dict(loss=[0.5] * n)))


def _stopped_run(run_dir, held, sittings=('20261207_200000', )):
    """A run folder as a training stopped at ``held`` leaves it: a checkpoint every 2
    iterations, MMEngine's pointer to the last, a log, one scalars file per sitting."""
    os.makedirs(run_dir, exist_ok=True)
    for n in range(2, held + 1, 2):
        torch.save(_checkpoint(n), osp.join(run_dir, f'iter_{n}.pth'))
    with open(osp.join(run_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(run_dir, f'iter_{held}.pth'))
    with open(osp.join(run_dir, 'train_stdout.log'), 'w') as f:
        f.write(f'trained to {held}\n')
    for sitting in sittings:
        os.makedirs(osp.join(run_dir, sitting, 'vis_data'))
        with open(osp.join(run_dir, sitting, 'vis_data', 'scalars.json'), 'w') as f:
            f.write(json.dumps(dict(step=held, loss=0.5, time=0.1)) + '\n')
        with open(osp.join(run_dir, sitting, 'vis_data', f'{sitting}.png'), 'w') as f:
            f.write('a progress grid')  # not needed to resume or score: not parked


def test_park_keeps_the_latest_and_halfway_checkpoints_and_the_logs(tmp_path):
    run_dir, pending = str(tmp_path / 'work' / 'run'), str(tmp_path / 'pending' / 'run')
    _stopped_run(run_dir, 10, sittings=('20261206_100000', '20261207_200000'))
    assert park_run(run_dir, pending, 16, OPTIONS) == 10
    assert sorted(os.listdir(pending)) == sorted([
        'iter_8.pth', 'iter_10.pth', 'train_stdout.log', RECORD, '20261206_100000',
        '20261207_200000'])  # 8: the halfway checkpoint of 16 iterations, for the scorer
    for sitting in ('20261206_100000', '20261207_200000'):
        assert os.listdir(osp.join(pending, sitting, 'vis_data')) == ['scalars.json']
    # the latest checkpoint as it is (to resume); of the halfway one what the scorer reads
    assert filecmp.cmp(osp.join(run_dir, 'iter_10.pth'), osp.join(pending, 'iter_10.pth'),
                       shallow=False)
    halfway = torch.load(osp.join(pending, 'iter_8.pth'))
    assert sorted(halfway) == ['meta', 'state_dict']
    assert halfway['meta'] == _checkpoint(8)['meta']
    assert torch.equal(halfway['state_dict']['student.w'], torch.full((2, ), 8.0))
    record = json.loads(open(osp.join(pending, RECORD)).read())
    assert record == dict(held=10, iters=16, checkpoints=[8, 10], options=OPTIONS)
    assert parked_iters(pending) == 10
    assert not osp.exists(pending + '.partial')

    # before the halfway checkpoint, the latest alone
    early_dir, early = str(tmp_path / 'work' / 'early'), str(tmp_path / 'pending' / 'early')
    _stopped_run(early_dir, 4)
    assert park_run(early_dir, early, 16, OPTIONS) == 4
    assert sorted(f for f in os.listdir(early) if f.endswith('.pth')) == ['iter_4.pth']


def test_park_replaces_an_older_copy_and_skips_what_needs_no_parking(tmp_path):
    run_dir, pending = str(tmp_path / 'run'), str(tmp_path / 'pending')
    assert park_run(run_dir, pending, 16, OPTIONS) is None  # no folder yet
    os.makedirs(run_dir)
    assert park_run(run_dir, pending, 16, OPTIONS) is None  # no checkpoint yet
    _stopped_run(run_dir, 4)
    assert park_run(run_dir, pending, 16, OPTIONS) == 4
    assert park_run(run_dir, pending, 16, OPTIONS) is None  # the copy holds as much
    _stopped_run(run_dir, 12, sittings=('20261208_090000', ))
    assert park_run(run_dir, pending, 16, OPTIONS) == 12
    assert sorted(f for f in os.listdir(pending) if f.endswith('.pth')) == \
        ['iter_12.pth', 'iter_8.pth']  # iter_4 of the older copy is gone
    _stopped_run(run_dir, 16, sittings=('20261209_090000', ))
    assert park_run(run_dir, pending, 16, OPTIONS) is None  # finished: scored, not resumed
    assert parked_iters(pending) == 12
    unpark(pending)
    assert not osp.exists(pending) and parked_iters(pending) == 0
    # the level's folder and pending/ go with their last run, not before
    runs = [str(tmp_path / 'results' / 'pending' / 'p27' / name) for name in ('a', 'b')]
    for path in runs:
        os.makedirs(path)
    unpark(runs[0])
    assert os.listdir(tmp_path / 'results' / 'pending' / 'p27') == ['b']
    unpark(runs[1])
    assert os.listdir(tmp_path / 'results') == []  # the results dir itself stays


def test_restore_puts_the_run_back_for_resume(tmp_path):
    run_dir, pending = str(tmp_path / 'work' / 'run'), str(tmp_path / 'pending')
    _stopped_run(run_dir, 10, sittings=('20261206_100000', ))
    park_run(run_dir, pending, 16, OPTIONS)
    fresh = str(tmp_path / 'fresh' / 'run')  # a fresh clone's work dir
    assert restore_run(pending, fresh, 16, OPTIONS) == 10
    assert sorted(os.listdir(fresh)) == sorted([
        'iter_8.pth', 'iter_10.pth', 'train_stdout.log', 'last_checkpoint', '20261206_100000'])
    assert filecmp.cmp(osp.join(fresh, 'iter_10.pth'), osp.join(run_dir, 'iter_10.pth'),
                       shallow=False)
    # MMEngine's --resume continues from the path this file names
    assert open(osp.join(fresh, 'last_checkpoint')).read() == osp.join(fresh, 'iter_10.pth')
    assert open(osp.join(fresh, '20261206_100000', 'vis_data', 'scalars.json')).read() == \
        open(osp.join(run_dir, '20261206_100000', 'vis_data', 'scalars.json')).read()
    assert restore_run(pending, fresh, 16, OPTIONS) is None  # it holds as much already
    assert restore_run(str(tmp_path / 'none'), str(tmp_path / 'x'), 16, OPTIONS) is None


def test_a_run_parked_with_other_settings_is_refused(tmp_path):
    run_dir, pending = str(tmp_path / 'run'), str(tmp_path / 'pending')
    _stopped_run(run_dir, 6)
    park_run(run_dir, pending, 16, OPTIONS)
    fresh = str(tmp_path / 'fresh')
    with pytest.raises(ValueError, match=r'length 16 -> 32.*Delete that folder'):
        restore_run(pending, fresh, 32, OPTIONS)
    changed = ['randomness.seed=1', 'param_scheduler.T_max=16']
    with pytest.raises(ValueError, match=r"only parked: \['param_scheduler.T_max=8'\]; only "
                       r"now: \['param_scheduler.T_max=16'\]"):
        restore_run(pending, fresh, 16, changed)
    assert not osp.exists(fresh)  # nothing copied


def test_the_map_parks_in_its_results_dir_and_restores_into_its_work_dir(tmp_path, capsys):
    work, results = tmp_path / 'work', tmp_path / 'results'
    results.mkdir()
    (results / 'plateau.json').write_text(json.dumps(dict(plateau=dict(iters=16))))
    regime_map = RegimeMap('screen', str(work), str(results), threads=1)
    stopped, done, untouched = ('p27', 'dsm_kd', 1), ('p27', 'dsm', 1), ('p27', '2ndm', 1)
    _stopped_run(regime_map.run_dir(stopped), 10)
    _stopped_run(regime_map.run_dir(done), 10)
    os.makedirs(osp.dirname(regime_map.result_path(done)))
    with open(regime_map.result_path(done), 'w') as f:
        f.write('{}')  # scored: its JSON is the record, nothing to park
    assert regime_map.park_stopped([stopped, done, untouched]) == [stopped]
    pending = regime_map.pending_dir(stopped)
    assert pending == str(results / 'pending' / 'p27' / 'dsm_kd_seed1')
    assert not osp.exists(regime_map.pending_dir(done))
    record = json.loads(open(osp.join(pending, RECORD)).read())
    assert record['iters'] == 16 and 'randomness.seed=1' in record['options']
    assert not any(o.startswith('model.teacher_ckpt.filename=') for o in record['options'])
    assert '[map] parked p27/dsm_kd_seed1 at 10 of 16 iterations: pending/p27/dsm_kd_seed1' \
        in capsys.readouterr().out

    assert parked_runs(str(results)) == {stopped: 10}
    fresh = RegimeMap('screen', str(tmp_path / 'fresh'), str(results), threads=1)
    assert fresh.restore_parked([stopped, done, untouched]) == [stopped]
    assert osp.exists(osp.join(fresh.run_dir(stopped), 'iter_10.pth'))
    assert 'p27/dsm_kd_seed1: restored from pending/p27/dsm_kd_seed1, resumes at 10 of 16' \
        in capsys.readouterr().out
    assert fresh.restore_parked([stopped]) == []  # already there
