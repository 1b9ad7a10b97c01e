"""Download-free evidence study on real data: scikit-learn digits at 16x16.

Drives ``tools/train.py`` with the configs in ``configs/digits/``:

1. trains the dense teacher DDPM (``teacher_digits16.py``: DSM from scratch);
2. prunes it (diff-pruning, ``DiffusionPruningHook``, ratio and GroupNorm groups as in
   ``2ndm_digits16.py``) and finetunes the student with each arm of the preset (DSM,
   DSM+KD, first-order Jacobian, 2ndM unscaled / sigma-scaled, and the 2ndM levers), paired
   by seed: every arm of a seed starts from the same pruned weights and sees the same data
   order and the same per-sample noise (``model.per_sample_noise_seed``); ``--jobs`` runs
   in parallel;
3. evaluates the dense teacher and, at every checkpoint of every run, the **raw student**
   and **its EMA** (``WarmupExponentialMovingAverage``): proxy FID through MMagic's ``FID``
   metric (``inception_style='StyleGAN'``) with a small digit classifier trained here as
   the feature network (a download-free stand-in for Inception features, see below), its
   bootstrap spread, eps-MSE to the teacher on fixed noised inputs (all t and t < 50),
   SSIM / MSE of samples drawn from the same noise as the teacher's (``TeacherFidelity``'s
   code), and at the last checkpoint the FTLE statistic mean ||J v||^2 per timestep;
4. writes ``results.md`` (per arm and model: mean +- std over seeds; each arm vs DSM+KD:
   paired differences with 95 % bootstrap confidence intervals over seeds and the verdict
   they allow; the recovery criteria; equal wall-clock between recovered models),
   ``results.json``, ``grid_<arm>_<raw|ema>.png``, ``recovery.png`` and ``ftle.png``.

Every run's evaluation is cached in its folder (``eval.json``), finished runs are not
trained again and interrupted ones resume, so re-running the same command continues where
it stopped; ``--eval-only`` reports on the runs finished so far.

Note:
    The proxy FID compares 32-d penultimate features of a 3-layer CNN trained to classify
    the digits (test accuracy is logged in results.md). It ranks models by how digit-like
    and class-balanced their samples are, like Inception features do on natural images,
    but its values are not comparable with published FIDs.

Usage::

    python tools/digits_study.py --preset short --work-dir work_dirs/digits_demo --jobs 2
"""
import argparse
import os
import os.path as osp
import sys
import time
from typing import Optional, Sequence

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.studies.digits import ARMS, PRESETS, Study, planned_runs  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='short')
    parser.add_argument('--work-dir', default='work_dirs/digits_study')
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='override the preset: these seeds for every arm')
    parser.add_argument('--arms', nargs='+', default=None, choices=sorted(ARMS),
                        help='override the preset arms (no levers then)')
    parser.add_argument('--no-levers', action='store_true',
                        help="skip the preset's lever arms")
    parser.add_argument('--jobs', type=int, default=2, help='training runs in parallel')
    parser.add_argument('--threads-per-run', type=int, default=None,
                        help='torch threads of each run (default: CPU cores // jobs; '
                        'oversubscribed cores slow CPU training down many times)')
    parser.add_argument('--train-teacher', action='store_true', default=None,
                        help='train the dense teacher (6000 iterations) instead of using '
                        'the shipped checkpoints/digits/teacher_digits16_ema.pth')
    parser.add_argument('--eval-only', action='store_true',
                        help='train nothing: report on the runs finished so far')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Trains what the preset plans and is not finished yet, then reports; returns the
    path of results.md."""
    args = parse_args(argv)
    if args.jobs < 1:
        raise ValueError(f'--jobs must be >= 1, got {args.jobs}.')
    runs = planned_runs(PRESETS[args.preset], args.seeds, args.arms, levers=not args.no_levers)
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    threads = args.threads_per_run or max(1, (os.cpu_count() or 1) // args.jobs)
    torch.set_num_threads(threads)
    study = Study(args.preset, work_dir, runs, threads, args.train_teacher)
    if not args.eval_only:
        study.train_teacher()
        study.finetune_and_report(args.jobs)
    table = study.report()
    print(f'[study] done in {time.time() - study.start:.0f} s. Table: {table}; sample grids: '
          f'{work_dir}/grid_*.png; plots: {work_dir}/recovery.png, {work_dir}/ftle.png',
          flush=True)
    return table


if __name__ == '__main__':
    main()
