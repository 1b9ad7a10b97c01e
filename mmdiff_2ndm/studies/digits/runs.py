"""Training runs of a study: ``tools/train.py`` in a subprocess, resumed where it stopped.

The study drives the plugin's own ``tools/train.py`` and ``configs/digits/``: those of the
source checkout, or in an installed package the copies under ``mmdiff_2ndm/.mim/``.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import Iterable, List, Optional

import numpy as np


def _source_root() -> str:
    """The folder that holds ``tools/train.py`` and ``configs/``."""
    package = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    checkout = osp.dirname(package)
    if osp.exists(osp.join(checkout, 'tools', 'train.py')):
        return checkout
    return osp.join(package, '.mim')


SOURCE_ROOT = _source_root()
CONFIG_DIR = osp.join(SOURCE_ROOT, 'configs', 'digits')
# The study's dense teacher, shipped (checkpoints/digits/README.md says how it was made).
SHIPPED_TEACHER = osp.join(SOURCE_ROOT, 'checkpoints', 'digits', 'teacher_digits16_ema.pth')


def size_options(preset: dict, role: str) -> List[str]:
    """--cfg-options of the preset (batch size, UNet widths) for the teacher or a student.

    Args:
        preset (dict): The study's preset.
        role (str): ``'teacher'`` (the teacher run trains the config's student slot) or
            ``'student'`` (the student is pruned from the teacher, whose widths are set).
    """
    opts = [f'train_dataloader.batch_size={preset["batch_size"]}']
    if preset['widths'] is not None:
        key = 'model.student' if role == 'teacher' else 'model.teacher'
        widths = ','.join(str(w) for w in preset['widths'])
        opts.append(f'{key}.block_out_channels=({widths})')
    return opts


def halfway_iter(iters: int) -> int:
    """The iteration of a run's halfway checkpoint (scored besides the final one)."""
    return max(1, iters // 2)


def halfway_ckpt_interval(iters: int, most: int = 2000) -> int:
    """Checkpoint interval of a run that is scored halfway and at its end.

    The largest divisor of the halfway iteration (:func:`halfway_iter`) that is at most
    ``most``, so a run killed when a sitting ends loses at most ``most`` iterations and
    still writes the halfway checkpoint its scorer reads. Where the halfway iteration has
    no divisor in ``[most / 2, most]`` (it would mean a checkpoint every few iterations),
    the interval is the halfway iteration.

    Args:
        iters (int): Training iterations of the run.
        most (int): The most iterations between two checkpoints. Defaults to 2000.

    Returns:
        int: Iterations between checkpoints; the halfway iteration is a multiple of it.
    """
    half = halfway_iter(iters)
    fewest_parts = -(-half // most)  # ceil
    for parts in range(fewest_parts, 2 * fewest_parts + 1):
        if half % parts == 0:
            return half // parts
    return half


def saved_checkpoint_iters(work_dir: str) -> List[int]:
    """The iterations of the run's ``iter_<n>.pth`` checkpoints on disk in ``work_dir``, in
    order (none where the folder does not exist yet); :func:`.presets.checkpoint_iters` is
    where a finetuning run is planned to save them."""
    names = os.listdir(work_dir) if osp.isdir(work_dir) else []
    return sorted(int(m.group(1)) for m in (re.fullmatch(r'iter_(\d+)\.pth', name)
                                            for name in names) if m)


def drop_checkpoints(work_dir: str, keep: Iterable[int]) -> List[str]:
    """Deletes the run's ``iter_<n>.pth`` checkpoints whose ``n`` is not in ``keep``
    (checkpoints written only so a killed run could resume); returns the deleted paths."""
    keep = {int(n) for n in keep}
    dropped = []
    for n in saved_checkpoint_iters(work_dir):
        if n not in keep:
            path = osp.join(work_dir, f'iter_{n}.pth')
            os.remove(path)
            dropped.append(path)
    return dropped


def is_finished(work_dir: str, iters: int) -> bool:
    """Whether the run in ``work_dir`` trained all ``iters`` iterations."""
    return (osp.exists(osp.join(work_dir, 'wall.json'))
            and osp.exists(osp.join(work_dir, f'iter_{iters}.pth')))


def trained_iters(work_dir: str) -> int:
    """Iterations held by the run's latest checkpoint in ``work_dir`` (0 before its
    first): where :func:`train` resumes it."""
    return max(saved_checkpoint_iters(work_dir), default=0)


class TrainingStopped(RuntimeError):
    """A training stopped at its deadline (:func:`train`); its checkpoints stay in its work
    dir, and a later call resumes it from the last."""


def run_until(cmd: List[str], deadline: Optional[float], **popen_kwargs) -> Optional[int]:
    """Runs ``cmd`` to its end, or terminates it at ``deadline``.

    Args:
        cmd (List[str]): The command.
        deadline (float, optional): ``time.time()`` at which to terminate it (SIGTERM, then
            SIGKILL after 60 s). None: no deadline.
        **popen_kwargs: Passed to :class:`subprocess.Popen`.

    Returns:
        Optional[int]: Its return code, or None when it was terminated at the deadline.
    """
    proc = subprocess.Popen(cmd, **popen_kwargs)
    try:
        return proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return None


def train(config: str, work_dir: str, iters: int, options: List[str], threads: int,
          stream: bool, ckpt_interval: Optional[int] = None,
          deadline: Optional[float] = None) -> float:
    """Runs tools/train.py on ``configs/digits/<config>``; returns its wall time (s).

    A finished run (final checkpoint and ``wall.json`` in ``work_dir``) is not run
    again: its recorded wall time is returned. An interrupted one continues from its
    last checkpoint (``--resume``); its wall time then counts the resumed part only and
    ``wall.json`` says so.

    Args:
        config (str): Config file name in ``configs/digits/``.
        work_dir (str): The run's folder.
        iters (int): Training iterations.
        options (List[str]): Further ``--cfg-options``.
        threads (int): ``OMP_NUM_THREADS`` of the run.
        stream (bool): Print the run's output here; otherwise it goes to
            ``<work_dir>/train_stdout.log``.
        ckpt_interval (int, optional): Iterations between checkpoints. Defaults to None
            (only the last).
        deadline (float, optional): ``time.time()`` at which to stop the training (the end
            of a sitting); it keeps the checkpoints written so far. Defaults to None.

    Raises:
        TrainingStopped: If the deadline stopped it; the next call resumes it.
        RuntimeError: If training fails.
    """
    wall_file = osp.join(work_dir, 'wall.json')
    if is_finished(work_dir, iters):
        with open(wall_file) as f:
            return float(json.load(f)['wall_s'])
    resume = osp.exists(osp.join(work_dir, 'last_checkpoint'))
    log_interval = max(1, iters // 10)
    cmd = [sys.executable, osp.join(SOURCE_ROOT, 'tools', 'train.py'),
           osp.join(CONFIG_DIR, config), '--work-dir', work_dir, *(['--resume'] if resume else []),
           '--cfg-options', f'train_cfg.max_iters={iters}',
           f'default_hooks.checkpoint.interval={ckpt_interval or iters}',
           'default_hooks.checkpoint.max_keep_ckpts=-1',
           f'default_hooks.logger.interval={log_interval}',
           # the progress grids at the log's cadence: at the configs' 200 iterations they
           # took ~5 % of a map run; drawn on a forked RNG, so training is unchanged
           f'default_hooks.visualization.interval={log_interval}', *options]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=SOURCE_ROOT)
    os.makedirs(work_dir, exist_ok=True)
    log_path = osp.join(work_dir, 'train_stdout.log')
    start = time.time()
    with open(log_path, 'a' if resume else 'w') as log:
        returncode = run_until(cmd, deadline, cwd=SOURCE_ROOT, env=env,
                               stdout=None if stream else log,
                               stderr=subprocess.STDOUT if not stream else None)
    wall = time.time() - start
    if returncode is None:
        raise TrainingStopped(f'Stopped at its deadline after {wall:.0f} s with '
                              f'{trained_iters(work_dir)} of {iters} iterations in '
                              f'checkpoints ({work_dir}); training it again resumes there.')
    if returncode != 0:
        raise RuntimeError(f'Training failed ({" ".join(cmd)}); see {log_path}.')
    with open(wall_file, 'w') as f:
        json.dump(dict(wall_s=wall, resumed=resume), f)
    return wall


def logged_scalars(work_dir: str) -> List[dict]:
    """Every record of the run's scalars.json files (one per sitting of a resumed run),
    oldest sitting first."""
    paths = sorted(osp.join(root, 'scalars.json') for root, _, files in os.walk(work_dir)
                   if 'scalars.json' in files)
    records = []
    for path in paths:  # <timestamp>/vis_data/scalars.json: names sort by time
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def seconds_per_iter(work_dir: str) -> float:
    """Mean MMEngine 'time' per iteration from the run's scalars.json."""
    times = [r['time'] for r in logged_scalars(work_dir) if 'time' in r]
    return float(np.mean(times)) if times else float('nan')


def loss_terms(work_dir: str, tail: float = 0.1) -> Optional[dict]:
    """The run's logged loss terms (``loss`` and every ``loss_*``, and the gradient norm
    ``grad_norm`` where the optimizer wrapper clips and logs it): at its first logged
    iteration and averaged over the logged iterations of its last ``tail`` fraction (a
    step logged twice, by a killed sitting and the one that resumed it, counts once:
    the later). None when nothing was logged.

    Returns:
        dict: ``dict(first=..., last=..., first_step=, last_steps=[from, to])``, each of
        first / last a dict term -> value.
    """
    by_step = {}
    for record in logged_scalars(work_dir):
        if 'step' in record and 'loss' in record:
            by_step[int(record['step'])] = {k: float(v) for k, v in record.items()
                                            if k in ('loss', 'grad_norm') or
                                            k.startswith('loss_')}
    if not by_step:
        return None
    steps = sorted(by_step)
    start = steps[-1] - tail * steps[-1]
    last = [s for s in steps if s >= start]
    names = sorted(set().union(*(by_step[s] for s in last)))
    return dict(first=by_step[steps[0]], first_step=steps[0], last_steps=[last[0], last[-1]],
                last={k: float(np.mean([by_step[s][k] for s in last if k in by_step[s]]))
                      for k in names})


def train_study_teacher(work_dir: str, preset: dict, threads: int, stream: bool) -> str:
    """Trains the study's dense teacher (``teacher_digits16.py``, seed 0, the preset's
    length and sizes) in ``<work_dir>/teacher`` once; returns its final checkpoint."""
    train('teacher_digits16.py', osp.join(work_dir, 'teacher'), preset['teacher_iters'],
          ['randomness.seed=0', *size_options(preset, 'teacher')], threads, stream=stream)
    return osp.join(work_dir, 'teacher', f'iter_{preset["teacher_iters"]}.pth')
