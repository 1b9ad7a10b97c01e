"""Training runs: the tool and configs they run, finished runs are not trained again,
interrupted ones resume."""
import json
import os.path as osp
import subprocess

from mmdiff_2ndm.studies.digits import runs
from mmdiff_2ndm.studies.digits.presets import ARMS


def test_finished_runs_are_reused_and_interrupted_ones_resume(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runs.subprocess, 'run', fake_run)
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
