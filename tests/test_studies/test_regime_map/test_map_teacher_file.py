"""The map's teacher kept in its results dir: content digest, slim copy, restore instead
of retraining, and the refusal of a teacher other than the recorded one."""
import json
import os
import os.path as osp

import pytest
import torch

from mmdiff_2ndm.studies.regime_map.driver import RegimeMap
from mmdiff_2ndm.studies.regime_map.teacher_file import (SHIPPED_TEACHER, TEACHER_PREFIX,
                                                         save_slim_teacher, teacher_digest,
                                                         teacher_tensors)


def _teacher_run_ckpt(path: str, scale: float = 1.0) -> str:
    """A teacher run's checkpoint: the EMA under the configs' prefix, and what else a
    training checkpoint holds (the raw model, optimizer state, meta)."""
    torch.manual_seed(0)
    ema = {'conv.weight': torch.randn(4, 3, 3, 3) * scale, 'conv.bias': torch.zeros(4),
           'norm.num_batches': torch.tensor(7)}
    state = {TEACHER_PREFIX + k: v for k, v in ema.items()}
    state['student.model.conv.weight'] = torch.randn(4, 3, 3, 3)
    torch.save(dict(state_dict=state, optimizer=dict(lr=1e-3), meta=dict(iter=4)), path)
    return path


def _map(tmp_path) -> RegimeMap:
    work, results = tmp_path / 'work', tmp_path / 'results'
    results.mkdir(parents=True)
    return RegimeMap('tiny', str(work), str(results), threads=1)


def _record(regime_map: RegimeMap, **fields) -> None:
    teacher = dict(samplers=dict(ddim50=dict(fid=17.5), ddim10=dict(fid=47.5)),
                   feature_accuracy=0.93, **fields)
    with open(osp.join(regime_map.results_dir, 'teacher.json'), 'w') as f:
        json.dump(teacher, f)
    with open(regime_map.teacher_curve_path(), 'w') as f:
        json.dump(dict(curve={}), f)


def test_digest_is_the_teachers_tensors_not_the_file(tmp_path):
    full = _teacher_run_ckpt(str(tmp_path / 'iter_4.pth'))
    slim = str(tmp_path / 'slim.pth')
    assert save_slim_teacher(full, slim, meta=dict(seed=0)) == teacher_digest(full)
    saved = torch.load(slim)
    assert sorted(saved['state_dict']) == sorted(teacher_tensors(full))  # the EMA alone
    assert all(k.startswith(TEACHER_PREFIX) for k in saved['state_dict'])
    assert saved['meta'] == dict(seed=0)
    assert len(teacher_digest(full)) == 64
    other = _teacher_run_ckpt(str(tmp_path / 'other.pth'), scale=1.0 + 1e-6)
    assert teacher_digest(other) != teacher_digest(full)  # any value changes it
    torch.save(dict(state_dict={'student.model.w': torch.ones(1)}), str(tmp_path / 'x.pth'))
    with pytest.raises(KeyError, match='holds no student_ema.module.model'):
        teacher_digest(str(tmp_path / 'x.pth'))


def test_a_fresh_work_dir_takes_the_recorded_teacher_from_the_results_dir(tmp_path):
    regime_map = _map(tmp_path)
    shipped = osp.join(regime_map.results_dir, SHIPPED_TEACHER)
    source = _teacher_run_ckpt(str(tmp_path / 'run.pth'))
    _record(regime_map, sha256=save_slim_teacher(source, shipped, meta={}))
    assert not osp.exists(regime_map.teacher_ckpt)
    assert regime_map.restore_teacher()
    assert regime_map.teacher_ckpt == shipped
    regime_map.check_teacher()  # the recorded teacher: accepted
    options = regime_map.options(('p27', 'dsm_kd', 0), 4, 2)
    assert f'model.teacher_ckpt.filename={shipped}' in options  # what the students load


def test_require_teacher_takes_the_run_or_the_recorded_copy_else_says_what_to_do(tmp_path):
    """What --timing calls: it builds the runs' trainers, which load the teacher, but
    neither trains nor scores it."""
    regime_map = _map(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        regime_map.require_teacher()
    assert regime_map.teacher_ckpt in str(err.value) and '--teacher-only' in str(err.value)
    shipped = regime_map.shipped_teacher()
    _record(regime_map, sha256=save_slim_teacher(
        _teacher_run_ckpt(str(tmp_path / 'run.pth')), shipped, meta={}))
    regime_map.require_teacher()
    assert regime_map.teacher_ckpt == shipped
    # a work dir with a teacher run keeps it, once checked against the record
    again = RegimeMap('tiny', regime_map.work_dir, regime_map.results_dir, threads=1)
    os.makedirs(again.teacher_dir)
    _teacher_run_ckpt(again.teacher_ckpt)
    again.require_teacher()
    assert again.teacher_ckpt != shipped and osp.exists(again.teacher_ckpt)
    _teacher_run_ckpt(again.teacher_ckpt, scale=3.0)  # another teacher: refused
    with pytest.raises(RuntimeError, match='is not the one the runs in'):
        again.require_teacher()


def test_a_copy_that_is_not_the_recorded_teacher_is_not_taken(tmp_path):
    regime_map = _map(tmp_path)
    shipped = osp.join(regime_map.results_dir, SHIPPED_TEACHER)
    save_slim_teacher(_teacher_run_ckpt(str(tmp_path / 'a.pth'), scale=2.0), shipped, meta={})
    _record(regime_map, sha256=teacher_digest(_teacher_run_ckpt(str(tmp_path / 'b.pth'))))
    assert not regime_map.restore_teacher()  # trained instead, then checked
    # without its scored curve the copy is not enough either: the curve needs the run
    other = _map(tmp_path / 'other')
    save_slim_teacher(_teacher_run_ckpt(str(tmp_path / 'c.pth')), other.shipped_teacher(), {})
    _record(other, sha256=teacher_digest(other.shipped_teacher()))
    os.remove(other.teacher_curve_path())
    assert not other.restore_teacher()


def test_a_teacher_other_than_the_recorded_one_is_refused(tmp_path):
    regime_map = _map(tmp_path)
    _record(regime_map, sha256=teacher_digest(_teacher_run_ckpt(str(tmp_path / 'a.pth'))))
    os.makedirs(regime_map.teacher_dir)
    _teacher_run_ckpt(regime_map.teacher_ckpt, scale=3.0)  # a retrained, different teacher
    assert not regime_map.restore_teacher()  # the work dir has a teacher run
    with pytest.raises(RuntimeError) as err:
        regime_map.check_teacher()
    message = str(err.value)
    assert 'is not the one the runs in' in message and 'would not pair' in message
    assert regime_map.shipped_teacher() in message and '--results-dir' in message


def test_ship_teacher_once_recorded(tmp_path):
    regime_map = _map(tmp_path)
    os.makedirs(regime_map.teacher_dir)
    _teacher_run_ckpt(regime_map.teacher_ckpt)
    regime_map.ship_teacher()
    assert not osp.exists(regime_map.shipped_teacher())  # nothing recorded yet
    _record(regime_map, sha256=teacher_digest(regime_map.teacher_ckpt))
    regime_map.ship_teacher()
    assert teacher_digest(regime_map.shipped_teacher()) == teacher_digest(regime_map.teacher_ckpt)
    meta = torch.load(regime_map.shipped_teacher())['meta']
    assert meta['iters'] == 4 and meta['model'] == 'ema' and meta['dataset'] == 'digits'


def test_a_teacher_recorded_before_digests_must_score_as_recorded(tmp_path):
    regime_map = _map(tmp_path)
    recorded = dict(samplers=dict(ddim50=dict(fid=17.760790248346893), ddim10=dict(fid=47.7)),
                    feature_accuracy=0.9292929172515869)
    regime_map._check_rescored_teacher(recorded, json.loads(json.dumps(recorded)))
    moved = json.loads(json.dumps(recorded))
    moved['samplers']['ddim50']['fid'] = 18.2
    with pytest.raises(RuntimeError, match=r'ddim50 proxy FID 17.76\d* -> 18.2'):
        regime_map._check_rescored_teacher(recorded, moved)
    relabelled = dict(recorded, feature_accuracy=0.91)
    with pytest.raises(RuntimeError, match='feature network accuracy'):
        regime_map._check_rescored_teacher(recorded, relabelled)
