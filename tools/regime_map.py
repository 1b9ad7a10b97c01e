"""Regime map of recovery recipes (issue 24): pruning level x recipe x sampler, per map.

A map is one data set (the digits, or ``--dataset patches``) and one teacher architecture
(the U-Net, width-pruned, or ``--arch dit``, depth-pruned); its runs train as long as
DSM+KD's plateau, 3 paired seeds per cell to screen.

Steps (each resumable; re-running the same command continues where it stopped):

1. the proxy feature network (as ``tools/digits_study.py``) and the map's own teacher:
   ``teacher_digits16.py``, seed 0, ``teacher_iters`` with a cosine lr over the whole run,
   its EMA scored every ``teacher_interval`` (``<results>/teacher_curve.json``, the plateau
   rule applied to it); the final checkpoint is the teacher (``<results>/teacher.json``);
2. the run length: one long DSM+KD run on seed 0 at the hardest level, scored every
   ``plateau_interval`` iterations (``<results>/plateau.json``), unless done;
3. the screen: every planned (level, recipe, seed) not done yet is trained, scored with
   every sampler (raw student and EMA; the raw student also halfway and before
   finetuning) and written to ``<results>/runs/<level>/<recipe>_seed<seed>.json``; the
   report (``<results>/README.md``, ``heatmap_<sampler>.png``, ``teacher_curve.png``,
   ``plateau.png``) is rewritten after every run;
4. ``--follow-up``: the cells whose paired interval excludes 0 or nearly does get more
   seeds, and their references the same seeds (``studies/regime_map/followup.py``; the
   report lists them);
5. ``--preset combine``: feature KD + the 2ndM form the screen names better at the
   hardest level (``studies/regime_map/combine.py``: the rule, fixed before these runs),
   against feature KD alone, paired by seed;
6. ``--timing``: the recipes' time per iteration, measured back to back in one process on
   their finished runs (a recipe whose run has no checkpoint in the work dir: on another
   finished run's pruned student at the same level and seed;
   ``studies/regime_map/timing.py``; ``<results>/timing.json``),
   for the report's cost at equal wall-clock (the runs' own logs are taken on a shared
   machine) and for costing recipes before their first run;
7. ``--preset length``: DSM+KD for twice the run length, seed 0 at every level, against
   DSM+KD: whether the length measured at the hardest level is long enough everywhere
   (the report's "Is the run long enough?");
8. ``--lengthen``: a level whose length check failed gets the longer length
   (``<results>/lengths.json``; ``studies/regime_map/lengths.py``): its runs at the old
   length move to ``archive_<level>_<iters>/`` (results and work dir), the longer DSM+KD
   runs become its DSM+KD runs, and the screen then trains its other cells at the new
   length; ``--preset length`` checks the new length in turn. ``--converge`` does the
   three (check, lengthen, check again) until each level passes or is undecided, up to the
   map's cap of 4x the plateau length (``lengths.MAX_LENGTH_FACTOR``): a level there keeps
   its length, and the report says its cells compare recipes at that budget.

Usage::

    python tools/regime_map.py --preset screen --jobs 1      # teacher, plateau, screen
    python tools/regime_map.py --teacher-only                # stop after step 1
    python tools/regime_map.py --preset screen_b2            # authors' recipe at batch 2
    python tools/regime_map.py --plateau-only                # stop after step 2
    python tools/regime_map.py --levels p27 --recipes dsm_kd 2ndm_log --seeds 0 1 2
    python tools/regime_map.py --report-only                 # rewrite the report
    python tools/regime_map.py --dataset patches   # scikit-image's patches (level p27)
    python tools/regime_map.py --arch dit                      # depth-pruned DiT students
    python tools/regime_map.py --follow-up       # more seeds where an interval is near 0
    python tools/regime_map.py --timing --levels p27 --seeds 0   # cost per iteration
    python tools/regime_map.py --preset combine   # feature KD + the better 2ndM form
    python tools/regime_map.py --preset length    # DSM+KD at 2x the run length
    python tools/regime_map.py --lengthen --levels p27   # where that check failed
    python tools/regime_map.py --converge --levels p27   # check and lengthen until it passes
    python tools/regime_map.py --until 21:30      # start only runs that end by 21:30
    python tools/regime_map.py --preset screen_b2 --until 21:30 --overrun   # and longer
                                                  # ones, stopped at 21:30, resumed later
    python tools/regime_map.py --preset screen_b2 --park   # carry stopped runs to a clone

``--dataset patches`` runs the same pipeline on ``SkimagePatches`` (16x16 patches of the
pictures that ship with scikit-image) with its own feature network, teacher, plateau and
runs, in ``work_dirs/regime_map/patches`` and ``docs/regime_map/patches``, at the hardest
level (``axes.MAP_LEVELS``: it checks the digits' verdicts elsewhere). ``--arch dit``
puts a class-conditional DiT in the U-Net's place (teacher and students) with depth-pruned
levels (``d2``, ``d1``, ``d4``: blocks dropped by TinyFusion's learnable selection), in a
sub-folder ``dit``.

A run stopped partway (``--until``, or a killed chain) keeps its checkpoints in the
git-ignored work dir. The screen parks the resume state of the runs it stopped in
``<results>/pending/`` (``studies/regime_map/parking.py``), ``--park`` does it for the
planned runs of any command, and the screen of a fresh clone restores them from there:
commit ``pending/`` with the results, and a run longer than a sitting continues across
sittings on any machine.
"""
import argparse
import datetime
import os
import os.path as osp
import sys
from typing import Optional, Sequence

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.studies.regime_map import (LEVELS, PRESETS, RECIPES,  # noqa: E402
                                            RegimeMap, load_results, write_report)
from mmdiff_2ndm.studies.digits.feature_net import STUDY_DATASETS  # noqa: E402
from mmdiff_2ndm.studies.json_files import read_json  # noqa: E402
from mmdiff_2ndm.studies.regime_map.axes import ARCHS, MAP_PRESETS, map_preset  # noqa: E402
from mmdiff_2ndm.studies.regime_map.cells import index_runs  # noqa: E402
from mmdiff_2ndm.studies.regime_map.combine import plan_runs  # noqa: E402
from mmdiff_2ndm.studies.regime_map.followup import (flagged_cells,  # noqa: E402
                                                     follow_up_runs)
from mmdiff_2ndm.studies.regime_map.lengths import read_lengths  # noqa: E402
from mmdiff_2ndm.studies.regime_map.report import ARCHIVE, samples_figure  # noqa: E402
from mmdiff_2ndm.studies.regime_map.schedule import parse_until  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='screen')
    parser.add_argument('--dataset', choices=sorted(STUDY_DATASETS), default='digits',
                        help='data set of every run (default folders: a sub-folder per '
                        'data set other than the digits)')
    parser.add_argument('--arch', choices=sorted(ARCHS), default='unet',
                        help='teacher architecture: the configs\' U-Net (width-pruned levels) '
                        'or a DiT in its place (depth-pruned levels); a sub-folder per '
                        'architecture other than the U-Net')
    parser.add_argument('--work-dir', default=None,
                        help='training runs (checkpoints; git-ignored); default '
                        'work_dirs/regime_map[/<dataset>]')
    parser.add_argument('--results-dir', default=None,
                        help='per-run JSON, report and figures (committed); default '
                        'docs/regime_map[/<dataset>]')
    parser.add_argument('--levels', nargs='+', choices=sorted(LEVELS), default=None)
    parser.add_argument('--recipes', nargs='+', choices=sorted(RECIPES), default=None)
    parser.add_argument('--seeds', type=int, nargs='+', default=None)
    parser.add_argument('--jobs', type=int, default=1, help='training runs in parallel')
    parser.add_argument('--threads-per-run', type=int, default=None,
                        help='torch threads of each run (default: CPU cores // jobs)')
    parser.add_argument('--teacher-only', action='store_true',
                        help='stop once the teacher is trained and its curve scored')
    parser.add_argument('--plateau-only', action='store_true',
                        help='stop once the run length is measured')
    parser.add_argument('--follow-up', action='store_true',
                        help='train and score the follow-up seeds of the cells whose paired '
                        'interval excludes 0 or nearly does (after the screen)')
    parser.add_argument('--timing', action='store_true',
                        help='train nothing: time the recipes\' training iterations back to '
                        'back in this process, on their finished runs at the first level and '
                        'seed planned (--levels, --seeds, --recipes; a recipe whose run has no '
                        'checkpoint in the work dir on another finished run\'s pruned student '
                        'there), with their '
                        'references, for the report\'s cost at equal wall-clock and the '
                        'estimates of --until and "To go" (timing.json; replaces the level\'s '
                        'earlier timing: name every recipe to keep with --recipes)')
    parser.add_argument('--timing-rounds', type=int, default=10,
                        help='timed blocks per recipe (--timing)')
    parser.add_argument('--timing-block', type=int, default=5,
                        help='iterations per timed block (--timing)')
    parser.add_argument('--lengthen', action='store_true',
                        help='train and score nothing: give each level (--levels; default the '
                        'preset\'s) whose length check failed the longer length, archiving its '
                        'runs at the old length (studies/regime_map/lengths.py)')
    parser.add_argument('--converge', action='store_true',
                        help='instead of the screen: the length check at each level (--levels; '
                        '--seeds, default 0), --lengthen where it fails, the check again at the '
                        'new length, until it passes or is undecided (at most --max-doublings)')
    parser.add_argument('--max-doublings', type=int, default=2,
                        help='most doublings of a level\'s length in one --converge call')
    parser.add_argument('--report-only', action='store_true',
                        help='train and score nothing: rewrite the report')
    parser.add_argument('--until', default=None, metavar='HH:MM',
                        help='the end of this sitting (local time; HH:MM, its next '
                        'occurrence, or an ISO date and time): start only the runs whose '
                        'estimated training and scoring end before it, leave the others '
                        'planned (studies/regime_map/schedule.py); a run that outlasts its '
                        'estimate stops there, its resume state parked')
    parser.add_argument('--overrun', action='store_true',
                        help='with --until: once the runs that end before it are done, train '
                        'those that do not until it (the partly trained first; only where the '
                        'next checkpoint is reached in time), then stop them with their '
                        'checkpoints kept: a later sitting that keeps this work dir resumes '
                        'them. For runs longer than a sitting (the batch-2 recipes)')
    parser.add_argument('--park', action='store_true',
                        help='train nothing: copy the resume state of every planned run '
                        'stopped partway (the same --preset, --levels, --recipes, --seeds and '
                        '--follow-up as the command that trained them) into <results>/pending, '
                        'for a fresh clone to resume (the screen does it for the runs it '
                        'stops at --until)')
    args = parser.parse_args(argv)
    below = ([] if args.dataset == 'digits' else [args.dataset]) + \
        ([] if args.arch == 'unet' else [args.arch])
    args.work_dir = args.work_dir or osp.join('work_dirs', 'regime_map', *below)
    args.results_dir = args.results_dir or osp.join('docs', 'regime_map', *below)
    return args


def follow_up_plan(preset: dict, planned, runs) -> list:
    """The follow-up runs (done or not) that the evaluated ``runs`` call for, in the
    cells of the ``planned`` runs, with ``preset``'s samplers and screen seeds."""
    levels = list(dict.fromkeys(run[0] for run in planned))
    recipes = list(dict.fromkeys(run[1] for run in planned))
    flags = flagged_cells(index_runs(runs), levels, recipes, list(preset['samplers']),
                          len(preset['seeds']))
    return follow_up_runs(flags, preset['seeds'])


def report(args: argparse.Namespace, planned) -> str:
    """Rewrites the results dir's report from its JSON. A step of a map (a preset of
    ``MAP_PRESETS``, whatever its ``--levels``, ``--recipes`` or ``--seeds``) writes the
    whole map's report, the one ``--report-only`` writes: every preset's runs, the
    screen's seeds for the follow-up; any other preset reports its ``planned`` runs."""
    teacher, runs = load_results(args.results_dir)
    name = args.preset
    if name in MAP_PRESETS:
        name, cells = 'screen', index_runs(runs)
        planned = list(dict.fromkeys(
            run for step in MAP_PRESETS
            for run in plan_runs(map_preset(step, args.arch, args.dataset), cells)[0]))
    preset = map_preset(name, args.arch, args.dataset)
    planned = list(dict.fromkeys(list(planned) + follow_up_plan(preset, planned, runs)))
    plateau, teacher_curve, archived, timing = (
        read_json(osp.join(args.results_dir, file_name))
        for file_name in ('plateau.json', 'teacher_curve.json',
                          osp.join(ARCHIVE, 'teacher.json'), 'timing.json'))
    path = write_report(args.results_dir, teacher, runs, planned, preset, plateau,
                        teacher_curve=teacher_curve, archived_teacher=archived, timing=timing,
                        lengths=read_lengths(args.results_dir))
    if teacher and osp.isdir(args.work_dir):  # sample figures need the kept samples
        for level in dict.fromkeys(run['level'] for run in runs):
            samples_figure(args.work_dir, args.results_dir, level,
                           list(dict.fromkeys(p[1] for p in planned)), runs, teacher)
    return path


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Runs what is asked and not done yet; returns the report's path."""
    args = parse_args(argv)
    if args.jobs < 1:
        raise ValueError(f'--jobs must be >= 1, got {args.jobs}.')
    if args.max_doublings < 1:
        raise ValueError(f'--max-doublings must be >= 1, got {args.max_doublings}.')
    if args.overrun and args.until is None:
        raise ValueError('--overrun trains the runs that cannot end before --until up to it: '
                         'give --until too (the end of this sitting).')
    until = None
    if args.until is not None:
        if args.report_only or args.timing or args.lengthen or args.park:
            raise ValueError('--until holds training runs to the end of a sitting; '
                             '--report-only, --timing, --lengthen and --park train none: '
                             'drop it.')
        until = parse_until(args.until, datetime.datetime.now())
    args.work_dir, args.results_dir = osp.abspath(args.work_dir), osp.abspath(args.results_dir)
    os.makedirs(args.results_dir, exist_ok=True)
    planned, pending = plan_runs(map_preset(args.preset, args.arch, args.dataset),
                                 index_runs(load_results(args.results_dir)[1]), args.levels,
                                 args.recipes, args.seeds)
    if pending and not (args.report_only or args.lengthen):
        raise ValueError(
            f'--preset {args.preset}: the screen cannot name the better 2ndM form yet (' +
            '; '.join(pending.values()) + '). Finish the screen there first (python '
            f'tools/regime_map.py --preset screen --levels {" ".join(pending)}), or name the '
            'combination yourself with --recipes feat_2ndm (or feat_2ndm_log).')
    if args.lengthen:
        regime_map = RegimeMap(args.preset, args.work_dir, args.results_dir,
                               args.threads_per_run or 1, args.dataset, args.arch)
        regime_map.lengthen(list(dict.fromkeys(run[0] for run in planned)))
    elif args.park:
        regime_map = RegimeMap(args.preset, args.work_dir, args.results_dir,
                               args.threads_per_run or 1, args.dataset, args.arch)
        if args.follow_up:
            planned = follow_up_plan(regime_map.preset, planned,
                                     load_results(args.results_dir)[1])
        parked = regime_map.park_stopped(planned)
        print(f'[map] parked {len(parked)} stopped run(s) in '
              f'{osp.join(args.results_dir, "pending")}', flush=True)
    elif args.timing:
        threads = args.threads_per_run or 1
        regime_map = RegimeMap(args.preset, args.work_dir, args.results_dir, threads,
                               args.dataset, args.arch)
        level, _, seed = planned[0]
        recipes = list(dict.fromkeys(run[1] for run in planned))
        regime_map.measure_timing(level, seed, recipes, args.timing_rounds, args.timing_block)
    elif not args.report_only:
        threads = args.threads_per_run or max(1, (os.cpu_count() or 1) // args.jobs)
        torch.set_num_threads(threads)
        regime_map = RegimeMap(args.preset, args.work_dir, args.results_dir, threads,
                               args.dataset, args.arch, until=until, overrun=args.overrun)
        regime_map.prepare()
        report(args, planned)
        if not args.teacher_only and regime_map.finetune_iters() is None:
            regime_map.measure_plateau()
            report(args, planned)
        if args.follow_up:
            planned = follow_up_plan(regime_map.preset, planned,
                                     load_results(args.results_dir)[1])
        if args.converge and not (args.teacher_only or args.plateau_only):
            levels = list(dict.fromkeys(run[0] for run in planned))
            regime_map.converge_lengths(levels, args.seeds or [0], args.jobs,
                                        args.max_doublings,
                                        on_scored=lambda: report(args, planned))
        elif not (args.teacher_only or args.plateau_only):
            planned = regime_map.without_checks_past_cap(planned)
            regime_map.screen(planned, args.jobs, on_scored=lambda: report(args, planned))
    path = report(args, planned)
    print(f'[map] report: {path}', flush=True)
    return path


if __name__ == '__main__':
    main()
