"""Training runs: the tool and configs they run, finished runs are not trained again,
interrupted ones resume."""
import json
import os.path as osp
import sys
import time

import pytest

from mmdiff_2ndm.studies.digits import runs
from mmdiff_2ndm.studies.digits.presets import ARMS


def test_finished_runs_are_reused_and_interrupted_ones_resume(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, deadline, **kwargs):
        calls.append(cmd)
        return 0

    monkeypatch.setattr(runs, 'run_until', fake_run)
    finished = tmp_path / 'finished'
    finished.mkdir()
    (finished / 'iter_5.pth').write_bytes(b'')
    (finished / 'wall.json').write_text(json.dumps(dict(wall_s=12.5, resumed=False)))
    assert runs.train('c.py', str(finished), 5, [], 1, stream=False) == 12.5
    assert calls == []  # not trained again

    interrupted = tmp_path / 'interrupted'
    interrupted.mkdir()
    (interrupted / 'iter_2.pth').write_bytes(b'')
    (interrupted / 'last_checkpoint').write_text(str(interrupted / 'iter_2.pth'))
    runs.train('c.py', str(interrupted), 5, [], 1, stream=False)
    assert '--resume' in calls[-1]
    assert json.loads((interrupted / 'wall.json').read_text())['resumed'] is True

    fresh = tmp_path / 'fresh'
    runs.train('c.py', str(fresh), 5, [], 1, stream=False)
    assert '--resume' not in calls[-1]


def test_logs_and_progress_grids_come_ten_times_a_run(tmp_path, monkeypatch):
    """The run's options come last (they win); the log and the progress grid every tenth
    of the run, checkpoints at the interval asked for."""
    calls = []
    monkeypatch.setattr(runs, 'run_until', lambda cmd, deadline, **kwargs: calls.append(cmd) or 0)
    runs.train('c.py', str(tmp_path), 13000, ['model.x=1'], 1, stream=False, ckpt_interval=1625)
    options = calls[0][calls[0].index('--cfg-options') + 1:]
    assert {'default_hooks.logger.interval=1300', 'default_hooks.visualization.interval=1300',
            'default_hooks.checkpoint.interval=1625'} <= set(options)
    assert options[-1] == 'model.x=1'


def test_a_training_stopped_at_its_deadline_keeps_its_checkpoints(tmp_path, monkeypatch):
    def stopped_after_two(cmd, deadline, **kwargs):
        assert deadline == 123.0  # the training's deadline reaches the subprocess
        (tmp_path / 'iter_2.pth').write_bytes(b'')
        return None  # terminated at the deadline

    monkeypatch.setattr(runs, 'run_until', stopped_after_two)
    with pytest.raises(runs.TrainingStopped, match=r'with 2 of 5 iterations in checkpoints'):
        runs.train('c.py', str(tmp_path), 5, [], 1, stream=False, deadline=123.0)
    assert not (tmp_path / 'wall.json').exists()  # not finished
    assert (tmp_path / 'iter_2.pth').exists()


def test_run_until_terminates_at_the_deadline_else_returns_the_code():
    sleeper = [sys.executable, '-c', 'import time; time.sleep(60)']
    start = time.time()
    assert runs.run_until(sleeper, time.time() + 1.0) is None
    assert time.time() - start < 30
    assert runs.run_until([sys.executable, '-c', 'raise SystemExit(3)'], time.time() + 60) == 3
    assert runs.run_until([sys.executable, '-c', 'pass'], None) == 0


def test_size_options_set_the_trained_net_and_the_teacher():
    preset = dict(batch_size=8, widths=(8, 16))
    assert runs.size_options(preset, 'teacher') == [
        'train_dataloader.batch_size=8', 'model.student.block_out_channels=(8,16)']
    assert runs.size_options(preset, 'student')[1] == 'model.teacher.block_out_channels=(8,16)'
    assert runs.size_options(dict(batch_size=32, widths=None), 'student') == [
        'train_dataloader.batch_size=32']


def test_runs_find_the_training_tool_and_every_arm_config():
    assert osp.isfile(osp.join(runs.SOURCE_ROOT, 'tools', 'train.py'))
    for config, _ in ARMS.values():
        assert osp.isfile(osp.join(runs.CONFIG_DIR, config)), config
    assert osp.isfile(osp.join(runs.CONFIG_DIR, 'teacher_digits16.py'))


def _write_scalars(run_dir, stamp, records):
    vis = run_dir / stamp / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in records))


def test_loss_terms_of_a_resumed_run(tmp_path):
    """First logged iteration, mean over the last 10 %; a step logged by a killed sitting
    and again by the sitting that resumed it counts once, the later."""
    def rec(step, dsm, jac=None):
        r = dict(step=step, time=0.1, loss=dsm + (jac or 0.0), loss_dsm=dsm, grad_norm=dsm,
                 lr=1e-3)
        if jac is not None:
            r['loss_jacobian'] = jac
        return r

    run_dir = tmp_path / 'run'
    # sitting 1 logged 10..90 and died; sitting 2 resumed from the checkpoint at 50 and
    # logged 60..100 again
    _write_scalars(run_dir, '20261204_100000',
                   [rec(s, 100.0 - s, 1.0) for s in range(10, 100, 10)])
    _write_scalars(run_dir, '20261204_120000',
                   [rec(s, 50.0 - s / 10, 0.5) for s in range(60, 110, 10)] +
                   [dict(step=100, coco_fid=3.0)])  # a validation record: no loss
    terms = runs.loss_terms(str(run_dir))
    assert terms['first'] == dict(loss=91.0, loss_dsm=90.0, loss_jacobian=1.0, grad_norm=90.0)
    assert terms['first_step'] == 10 and terms['last_steps'] == [90, 100]
    assert terms['last'] == dict(loss_dsm=40.5, loss_jacobian=0.5, loss=41.0, grad_norm=40.5)
    assert runs.seconds_per_iter(str(run_dir)) == pytest.approx(0.1)
    assert runs.loss_terms(str(tmp_path / 'empty')) is None


@pytest.mark.parametrize('iters, most', [(15000, 2000), (13000, 2000), (60000, 2000),
                                         (30000, 1000), (800, 2000), (4006, 2000)])
def test_halfway_ckpt_interval_keeps_the_halfway_checkpoint(iters, most):
    interval = runs.halfway_ckpt_interval(iters, most)
    half = iters // 2
    assert half % interval == 0  # the halfway checkpoint is written
    # at most `most` iterations between checkpoints, unless half has no divisor near it
    if half <= most:
        assert interval == half
    elif any(half % n == 0 for n in range(-(-half // most), 2 * -(-half // most) + 1)):
        assert most // 2 <= interval <= most
    else:
        assert interval == half
    assert runs.halfway_ckpt_interval(6500, 2000) == 1625  # 3250 = 2 x 1625


def test_drop_checkpoints_keeps_the_scored_ones(tmp_path):
    for name in ('iter_1875.pth', 'iter_7500.pth', 'iter_9375.pth', 'iter_15000.pth',
                 'last_checkpoint', 'teacher.pth', 'iter_x.pth'):
        (tmp_path / name).write_bytes(b'')
    dropped = runs.drop_checkpoints(str(tmp_path), keep=(7500, 15000))
    assert sorted(osp.basename(p) for p in dropped) == ['iter_1875.pth', 'iter_9375.pth']
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'iter_15000.pth', 'iter_7500.pth', 'iter_x.pth', 'last_checkpoint', 'teacher.pth']
