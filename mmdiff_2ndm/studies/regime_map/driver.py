"""The regime map's driver: teacher run, plateau run, then the screen, run by run.

The map trains its own teacher (``teacher_digits16.py``, or its architecture's
``Arch.teacher_config``; seed 0, cosine lr over the preset's ``teacher_iters``) and scores
its EMA at every ``teacher_interval`` (``teacher_curve.json``): the final, annealed
checkpoint is the teacher of every student.

Everything is resumable. The training runs live in the work dir (git-ignored: checkpoints);
every result lives in the results dir (``docs/regime_map/``, committed): one JSON per
evaluated run (``runs/<level>/<recipe>_seed<seed>.json``), written as soon as the run is
scored; a run whose JSON exists is neither trained nor scored again, an interrupted
training resumes from its last checkpoint (:func:`~..digits.runs.train`), and the resume
state of a run stopped partway is parked in the results dir (:mod:`.parking`), from which a
fresh clone's work dir gets it back. The results dir
also keeps the teacher (``teacher_ema.pth``, its digest in ``teacher.json``): a work dir
without the teacher run takes it from there instead of training it again, and a teacher
whose digest differs from the recorded one is refused (:meth:`RegimeMap.check_teacher`).
"""
import datetime
import json
import os
import os.path as osp
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..digits.evaluation import build_runner, load_distiller, record_hash
from ..digits.feature_net import STUDY_DATASETS, feature_net_files, prepare_feature_net
from ..digits.progress import say
from ..digits.runs import (TrainingStopped, drop_checkpoints, halfway_ckpt_interval,
                           halfway_iter, loss_terms, seconds_per_iter, size_options, train,
                           trained_iters)
from ..json_files import read_json, read_json_folder, write_json
from .axes import (ARCHS, MODELS, RECIPES, REFERENCE, level_options, map_preset, net_options,
                   planned_runs, run_iters, run_name)
from .plateau import PLATEAU_TOL, plateau_iteration
from .cells import index_runs, reference_of, with_references
from .followup import MAX_SEEDS
from .lengths import (LONGER_REFERENCE, MAX_LENGTH_FACTOR, NOISE_SDS, archived_runs,
                      check_past_cap, checks_past_cap, deciding_seeds, length_cap,
                      length_check, lengthen_level, read_lengths)
from .parking import PENDING, park_run, restore_run, unpark
from .schedule import recipe_ratios, run_seconds
from .scoring import TEACHER_JV, MapScorer
from .teacher_file import SHIPPED_TEACHER, save_slim_teacher, teacher_digest
from .timing import build_train_step, describe, time_steps, timing_ratios

Run = Tuple[str, str, int]  # (level, recipe, seed)


class RegimeMap:
    """One regime map: a work dir for runs, a results dir for what they measured.

    Args:
        preset_name (str): A key of :data:`~.axes.PRESETS`.
        work_dir (str): Training runs, teacher, feature network (absolute).
        results_dir (str): Per-run JSON, plateau, report and figures.
        threads (int): Torch threads of each training run and of scoring.
        dataset (str): The data set of every run (teacher, students, scores), a key of
            ``digits.feature_net.STUDY_DATASETS``; the configs' digits are replaced by it.
            Defaults to 'digits'.
        arch (str): The teacher architecture, a key of :data:`~.axes.ARCHS` ('unet': the
            configs' U-Net; 'dit': a DiT in its place, depth-pruned levels). Defaults to
            'unet'.
        until (datetime.datetime, optional): The end of the sitting (local time): the
            screen starts only the runs whose estimated training and scoring
            (:mod:`.schedule`) end before it, and leaves the others planned. The teacher
            and plateau runs, trained once per map, are not held to it. Defaults to None
            (every run starts).
        overrun (bool): With ``until``: once the runs that end before it are done, the rest
            of the sitting trains those that do not (:meth:`train_past_until`), stopped at
            ``until`` with their checkpoints kept, to resume in a later sitting that keeps
            this work dir. Defaults to False.
    """

    def __init__(self, preset_name: str, work_dir: str, results_dir: str,
                 threads: int, dataset: str = 'digits', arch: str = 'unet',
                 until: Optional[datetime.datetime] = None, overrun: bool = False) -> None:
        if overrun and until is None:
            raise ValueError('overrun trains past the runs that end before `until` up to it: '
                             'give `until` (--until) too.')
        if dataset not in STUDY_DATASETS:
            raise ValueError(f'dataset must be one of {sorted(STUDY_DATASETS)}, got '
                             f'{dataset!r}.')
        self.dataset = dataset
        self.preset_name, self.preset = preset_name, map_preset(preset_name, arch, dataset)
        self.arch = ARCHS[arch]
        self.teacher_config = self.arch.teacher_config
        self.work_dir, self.results_dir, self.threads = work_dir, results_dir, threads
        self.feature_net, self.feature_record = feature_net_files(work_dir, dataset)
        # the map's own teacher: one run, named by its length (a different length is a
        # different run, not a resumed one); its EMA's samples are cached there too
        iters = self.preset['teacher_iters']
        self.teacher_dir = osp.join(work_dir, f'teacher_cosine{iters}')
        self.teacher_ckpt = osp.join(self.teacher_dir, f'iter_{iters}.pth')
        self.scorer: Optional[MapScorer] = None
        self.until, self.overrun = until, overrun
        self.left_for_later: List[Run] = []

    # ----------------------------------------------------------------- paths, options
    def run_dir(self, run: Run) -> str:
        """The training folder of a run."""
        return osp.join(self.work_dir, run_name(*run))

    def result_path(self, run: Run) -> str:
        """The JSON of an evaluated run (its existence means: done)."""
        return osp.join(self.results_dir, 'runs', run_name(*run) + '.json')

    def is_done(self, run: Run) -> bool:
        """Whether the run is trained and scored."""
        return osp.exists(self.result_path(run))

    def pending_dir(self, run: Run) -> str:
        """Where a stopped run's resume state is parked (:mod:`.parking`; committed)."""
        return osp.join(self.results_dir, PENDING, run_name(*run))

    def options(self, run: Run, iters: int, batch: int) -> List[str]:
        """--cfg-options of a run: teacher, seed (pairs the recipes), length, level, recipe."""
        level, recipe, seed = run
        features = self.arch.feature_options(iters) if RECIPES[recipe].features else ()
        return [f'model.teacher_ckpt.filename={self.teacher_ckpt}', f'randomness.seed={seed}',
                f'model.per_sample_noise_seed={seed}', f'param_scheduler.T_max={iters}',
                *net_options(self.preset['arch'], 'teacher', self.preset['net_changes']),
                *level_options(level), *RECIPES[recipe].options, *features,
                *size_options(dict(self.preset, batch_size=batch), 'student'),
                *self.dataset_options()]

    # ----------------------------------------------------------------- teacher
    def dataset_options(self) -> List[str]:
        """--cfg-options that put the map's data set in the digits configs' place (none for
        the digits); the data sets share the keywords the configs set."""
        if self.dataset == 'digits':
            return []
        kind = STUDY_DATASETS[self.dataset]['type']
        return [f'train_dataloader.dataset.type={kind}', f'test_dataloader.dataset.type={kind}']

    def teacher_options(self) -> List[str]:
        """--cfg-options of the teacher run: seed 0, the preset's sizes, and a cosine lr
        annealed over the whole run (``teacher_digits16.py`` alone keeps it constant)."""
        return ['randomness.seed=0', 'param_scheduler._delete_=True',
                'param_scheduler.type=CosineAnnealingLR', 'param_scheduler.by_epoch=False',
                f'param_scheduler.T_max={self.preset["teacher_iters"]}',
                f'param_scheduler.eta_min={self.preset["teacher_lr_min"]}',
                *net_options(self.preset['arch'], 'student', self.preset['net_changes']),
                *size_options(self.preset, 'teacher'), *self.dataset_options()]

    def prepare(self) -> None:
        """Trains the proxy feature network and the map's teacher (each once), and scores
        the teacher's curve (:meth:`measure_teacher`)."""
        os.makedirs(self.work_dir, exist_ok=True)
        say(f'[map] feature network -> {self.feature_net}')
        prepare_feature_net(self.work_dir, self.preset['feature_iters'], dataset=self.dataset)
        iters, interval = self.preset['teacher_iters'], self.preset['teacher_interval']
        if not self.restore_teacher():
            say(f'[map] dense teacher: {self.teacher_config}, seed 0, {iters} iterations, '
                f'cosine lr, checkpoint every {interval} '
                f'(log: {self.teacher_dir}/train_stdout.log)')
            train(self.teacher_config, self.teacher_dir, iters, self.teacher_options(),
                  self.threads, stream=False, ckpt_interval=interval)
        self.check_teacher()
        self.measure_teacher()
        recorded = self.recorded_teacher()
        if recorded and 'sha256' not in recorded:  # recorded before digests: score it now
            distiller = self._load_teacher_run(iters)
            self._scorer(distiller, distiller.student_ema.module)
        elif recorded and self.finetune_iters() is not None and not osp.exists(
                osp.join(self.teacher_dir, TEACHER_JV)):
            # a work dir that never scored the teacher (a fresh clone) trained its own feature
            # network: checked now, not after the sitting's first run
            say('[map] scoring the recorded teacher in this work dir, against teacher.json')
            self._scorer(self._reference_model())
        self.ship_teacher()

    def _reference_model(self):
        """The model of the map's first reference run (seed 0 at the plateau level), built
        untrained: its teacher is the map's, its sampler the runs'."""
        options = self.run_settings((self.preset['plateau_level'], REFERENCE, 0))[2]
        runner = build_runner(RECIPES[REFERENCE].config, options,
                              osp.join(self.teacher_dir, 'eval'))
        return runner.model.eval()

    def recorded_teacher(self) -> Optional[dict]:
        """The results dir's ``teacher.json`` (None before the teacher is scored)."""
        return read_json(osp.join(self.results_dir, 'teacher.json'))

    def shipped_teacher(self) -> str:
        """The slim copy of the teacher kept in the results dir."""
        return osp.join(self.results_dir, SHIPPED_TEACHER)

    def restore_teacher(self) -> bool:
        """Takes the results dir's copy of the teacher when the work dir lacks the teacher
        run, the copy is the recorded teacher and its curve is scored (the curve needs the
        run's checkpoints); returns whether it did."""
        recorded, shipped = self.recorded_teacher(), self.shipped_teacher()
        if (osp.exists(self.teacher_ckpt) or not recorded or 'sha256' not in recorded
                or not osp.exists(shipped) or not osp.exists(self.teacher_curve_path())):
            return False
        if teacher_digest(shipped) != recorded['sha256']:
            return False  # not the recorded teacher: train it; check_teacher decides
        self.teacher_ckpt = shipped
        say(f'[map] dense teacher: {shipped} (the recorded teacher, sha256 '
            f'{recorded["sha256"][:12]}; not trained again)')
        return True

    def require_teacher(self) -> None:
        """Points the runs at the map's teacher without training or scoring it: the work
        dir's teacher run, else the results dir's recorded copy (:meth:`restore_teacher`);
        for the steps that only use it (``--timing``).

        Raises:
            FileNotFoundError: If the map has neither (train the teacher first: any call
                that trains, e.g. ``--teacher-only``).
            RuntimeError: As :meth:`check_teacher`.
        """
        if not osp.exists(self.teacher_ckpt) and not self.restore_teacher():
            raise FileNotFoundError(
                f'The map has no teacher: neither its run ({self.teacher_ckpt}) nor the '
                f'recorded copy ({self.shipped_teacher()}, with teacher.json and '
                'teacher_curve.json) exists. Train and score it first (tools/regime_map.py '
                '--teacher-only with the same --preset, --arch, --dataset and folders).')
        self.check_teacher()

    def check_teacher(self) -> None:
        """Refuses a teacher other than the one the results dir's runs learnt from.

        Raises:
            RuntimeError: If ``teacher.json`` records a digest and the teacher's differs.
        """
        recorded = self.recorded_teacher()
        if not recorded or 'sha256' not in recorded:
            return
        got = teacher_digest(self.teacher_ckpt)
        if got != recorded['sha256']:
            raise RuntimeError(
                f'The teacher {self.teacher_ckpt} (sha256 {got[:12]}) is not the one the runs '
                f'in {self.results_dir} learnt from (teacher.json: sha256 '
                f'{recorded["sha256"][:12]}), so its students would not pair with theirs. '
                f'Put that teacher back ({self.shipped_teacher()}, or the teacher run in '
                f'{self.teacher_dir}), or start a new map with another --results-dir.')

    def ship_teacher(self) -> None:
        """Keeps a slim copy of the teacher in the results dir (once it is recorded)."""
        recorded = self.recorded_teacher()
        if recorded and 'sha256' in recorded and not osp.exists(self.shipped_teacher()):
            save_slim_teacher(self.teacher_ckpt, self.shipped_teacher(), meta=dict(
                config=self.teacher_config, arch=self.preset['arch'], dataset=self.dataset,
                seed=0, iters=self.preset['teacher_iters'], model='ema',
                sha256=recorded.get('sha256')))

    def _evaluators(self) -> MapScorer:
        """The scorer (fixed noises, proxy features), created on first use; the teacher's
        samples are cached in the teacher's run folder."""
        if self.scorer is None:
            torch.set_num_threads(self.threads)
            os.makedirs(self.teacher_dir, exist_ok=True)  # the cache, also for a restored one
            self.scorer = MapScorer(self.preset, self.feature_net, self.teacher_dir,
                                    self.dataset)
        return self.scorer

    def _scorer(self, distiller, teacher_net: Optional[torch.nn.Module] = None) -> MapScorer:
        """The scorer with the teacher scored (``teacher.json``) and its samples as every
        sampler's fidelity reference.

        Args:
            distiller: A model of the map (its sampler draws the teacher's samples).
            teacher_net (nn.Module, optional): The teacher. Defaults to None:
                ``distiller.teacher``.
        """
        scorer = self._evaluators()
        if scorer.teacher_jv is None:
            teacher = scorer.score_teacher(distiller, teacher_net)
            with open(self.feature_record) as f:
                teacher['feature_accuracy'] = json.load(f)['test_accuracy']
            teacher.update(model='ema', config=self.teacher_config, arch=self.preset['arch'],
                           seed=0, dataset=self.dataset,
                           iters=self.preset['teacher_iters'], lr_schedule=dict(
                               type='CosineAnnealingLR', T_max=self.preset['teacher_iters'],
                               eta_min=self.preset['teacher_lr_min']),
                           checkpoint=osp.relpath(self.teacher_ckpt, self.work_dir),
                           sha256=teacher_digest(self.teacher_ckpt))
            recorded = self.recorded_teacher()
            if recorded is None:
                write_json(teacher, osp.join(self.results_dir, 'teacher.json'))
            else:  # the same teacher, feature network and noises: the recorded scores
                self._check_rescored_teacher(recorded, teacher)
                if 'sha256' not in recorded:  # recorded before digests
                    write_json(dict(recorded, sha256=teacher['sha256']),
                               osp.join(self.results_dir, 'teacher.json'))
            torch.save(scorer.last_samples, osp.join(self.work_dir, 'teacher_grid.pt'))
        return scorer

    def _check_rescored_teacher(self, recorded: dict, rescored: dict) -> None:
        """The teacher scores as recorded (same teacher, fixed noises and feature network:
        the same numbers): a teacher recorded without a digest is the recorded one only
        then, and a work dir's feature network (trained again in a fresh clone) measures
        on the recorded runs' scale only then.

        Raises:
            RuntimeError: If a proxy FID or the feature network's accuracy differs.
        """
        pairs = [(f'{name} proxy FID', s['fid'], rescored['samplers'][name]['fid'])
                 for name, s in recorded['samplers'].items() if name in rescored['samplers']]
        pairs.append(('feature network accuracy', recorded.get('feature_accuracy'),
                      rescored.get('feature_accuracy')))
        differ = [f'{what} {old} -> {new}' for what, old, new in pairs
                  if old is None or new is None or abs(new - old) > 1e-6 * max(1.0, abs(old))]
        if differ:
            raise RuntimeError(
                f'The teacher {self.teacher_ckpt} does not score as the one the runs in '
                f'{self.results_dir} learnt from ({"; ".join(differ)}): a retrained teacher '
                'or feature network that differs from the recorded one (a fresh work dir '
                'trains the feature network again; another torch version or thread count can '
                'change it), so new scores would not compare with the recorded runs\'. Put '
                f'the recorded teacher run back in {self.teacher_dir} and the feature network '
                f'in {self.work_dir}, or score with the torch version and --threads-per-run '
                'the map was scored with, or start a new map with another --results-dir.')

    def _load_teacher_run(self, step: int):
        """The teacher run's model at a checkpoint (its EMA: ``student_ema.module``)."""
        return load_distiller(self.teacher_config, self.teacher_options(),
                              osp.join(self.teacher_dir, f'iter_{step}.pth'),
                              osp.join(self.teacher_dir, 'eval'))

    def teacher_curve_path(self) -> str:
        return osp.join(self.results_dir, 'teacher_curve.json')

    def measure_teacher(self) -> dict:
        """Scores the teacher run's EMA at every checkpoint (proxy FID, every sampler) and
        applies the plateau rule to its ``ddim50`` curve; writes ``teacher_curve.json``.
        Each scored checkpoint is cached (``curve.json`` in the run folder), so a killed
        scoring continues."""
        recorded = read_json(self.teacher_curve_path())
        if recorded is not None:
            return recorded
        iters, interval = self.preset['teacher_iters'], self.preset['teacher_interval']
        steps = list(range(interval, iters + 1, interval))
        cache_path = osp.join(self.teacher_dir, 'curve.json')
        curve: Dict[str, dict] = read_json(cache_path) or {}
        for step in steps:
            if str(step) in curve:
                continue
            distiller = self._load_teacher_run(step)
            curve[str(step)] = self._evaluators().score_fid(distiller,
                                                            distiller.student_ema.module)
            say(f'[map]   teacher iter {step}: EMA proxy FID ' + ', '.join(
                f'{name} {s["fid"]:.1f}' for name, s in curve[str(step)]['samplers'].items()))
            write_json(curve, cache_path)
        with open(osp.join(self.teacher_dir, 'wall.json')) as f:
            wall = float(json.load(f)['wall_s'])
        data = dict(config=self.teacher_config, arch=self.preset['arch'], seed=0, iters=iters,
                    interval=interval,
                    lr_min=self.preset['teacher_lr_min'], batch_size=self.preset['batch_size'],
                    sampler='ddim50', model='ema',
                    tol=PLATEAU_TOL, wall_s=wall,
                    s_per_iter=seconds_per_iter(self.teacher_dir),
                    curve={str(s): curve[str(s)] for s in steps},
                    plateau=plateau_iteration(
                        steps, [curve[str(s)]['samplers']['ddim50']['fid'] for s in steps]))
        write_json(data, self.teacher_curve_path())
        # teacher.json: the final checkpoint's EMA, with every score the students need
        distiller = self._load_teacher_run(iters)
        self._scorer(distiller, distiller.student_ema.module)
        say(f'[map] teacher: EMA proxy FID stops falling at {data["plateau"]["iters"]} of '
            f'{iters} iterations (reached within the run: {data["plateau"]["reached"]}); the '
            f'map\'s teacher is the final checkpoint {self.teacher_ckpt}')
        return data

    # ----------------------------------------------------------------- plateau
    def plateau_path(self) -> str:
        return osp.join(self.results_dir, 'plateau.json')

    def finetune_iters(self, level: Optional[str] = None) -> Optional[int]:
        """The run length: the level's own where its length check set one
        (:mod:`.lengths`), else the preset's, or the measured plateau (None: not measured).

        Args:
            level (str, optional): The level. Defaults to None: the map's base length.
        """
        lengths = read_lengths(self.results_dir)
        if level is not None and level in lengths:
            return int(lengths[level]['iters'])
        if self.preset['finetune_iters'] is not None:
            return int(self.preset['finetune_iters'])
        plateau = read_json(self.plateau_path())
        return None if plateau is None else int(plateau['plateau']['iters'])

    def length_cap(self) -> Optional[int]:
        """The longest run length a level may get (:func:`~.lengths.length_cap` of the
        map's plateau length; None before the plateau is measured)."""
        base = self.finetune_iters()
        return None if base is None else length_cap(base)

    def measure_plateau(self) -> dict:
        """One long DSM+KD run on seed 0 at the preset's plateau level, scored (raw) at
        every checkpoint; writes ``plateau.json`` with the length it implies."""
        recorded = read_json(self.plateau_path())
        if recorded is not None:
            return recorded
        preset, level = self.preset, self.preset['plateau_level']
        iters, interval = preset['plateau_iters'], preset['plateau_interval']
        run = (level, REFERENCE, 0)
        run_dir = osp.join(self.work_dir, 'plateau', run_name(*run))
        batch, _ = run_iters(preset, REFERENCE, iters)
        options = self.options(run, iters, batch)
        say(f'[map] plateau: {REFERENCE} at {level}, seed 0, {iters} iterations, scored every '
            f'{interval} (log: {run_dir}/train_stdout.log)')
        wall = train(RECIPES[REFERENCE].config, run_dir, iters, options, self.threads,
                     stream=False, ckpt_interval=interval)
        cache_path = osp.join(run_dir, 'curve.json')
        curve: Dict[str, dict] = read_json(cache_path) or {}
        steps = list(range(interval, iters + 1, interval))
        for step in steps:
            if str(step) in curve:
                continue
            distiller = load_distiller(RECIPES[REFERENCE].config, options,
                                       osp.join(run_dir, f'iter_{step}.pth'),
                                       osp.join(run_dir, 'eval'))
            scorer = self._scorer(distiller)
            curve[str(step)] = scorer.score(distiller, distiller.student, with_jacobian=False)
            say(f'[map]   plateau iter {step}: proxy FID '
                f'{curve[str(step)]["samplers"]["ddim50"]["fid"]:.1f}')
            write_json(curve, cache_path)
        fids = [curve[str(s)]['samplers']['ddim50']['fid'] for s in steps]
        eps = [curve[str(s)]['eps_mse'] for s in steps]
        data = dict(level=level, recipe=REFERENCE, seed=0, iters=iters, interval=interval,
                    sampler='ddim50', model='raw', tol=PLATEAU_TOL, wall_s=wall,
                    curve={str(s): curve[str(s)] for s in steps},
                    plateau=plateau_iteration(steps, fids),
                    eps_plateau=plateau_iteration(steps, eps))
        write_json(data, self.plateau_path())
        say(f'[map] plateau: proxy FID stops falling at {data["plateau"]["iters"]} iterations '
            f'(reached within the run: {data["plateau"]["reached"]})')
        return data

    # ----------------------------------------------------------------- screen
    def train_run(self, run: Run, deadline: Optional[float] = None) -> float:
        """Trains one run at its level's length (a finished one is not trained again);
        returns its wall time.

        Args:
            run (Run): (level, recipe, seed).
            deadline (float, optional): ``time.time()`` at which to stop it, its
                checkpoints kept. Defaults to None.

        Raises:
            TrainingStopped: If the deadline stopped it.
        """
        batch, iters, options = self.run_settings(run)
        run_dir = self.run_dir(run)
        say(f'[map]   start {run_name(*run)}: {iters} iterations at batch {batch} '
            f'(log: {run_dir}/train_stdout.log)')
        wall = train(RECIPES[run[1]].config, run_dir, iters, options, self.threads,
                     stream=False, ckpt_interval=halfway_ckpt_interval(iters),
                     deadline=deadline)
        # the scorer reads the halfway and final checkpoints; the rest were for resuming
        drop_checkpoints(run_dir, keep=(halfway_iter(iters), iters))
        say(f'[map]   trained {run_name(*run)} in {wall:.0f} s')
        return wall

    def ends_in_time(self, run: Run) -> bool:
        """Whether a run may start: without ``until`` always; with it, when its estimated
        training (what it has not trained yet) and scoring (:func:`~.schedule.run_seconds`)
        end before ``until``. Says why a run does not start."""
        if self.until is None:
            return True
        estimate = self.estimated_seconds(run)
        until = f'--until {self.until:%Y-%m-%d %H:%M}'
        if estimate is None:
            say(f'[map]   not started: {run_name(*run)}: no evaluated run has logged the time '
                f'per iteration of its recipe, so whether it ends before {until} is unknown; '
                'it stays planned (time it with --timing, or train it in a sitting without '
                '--until)')
            return False
        end = datetime.datetime.now() + datetime.timedelta(seconds=sum(estimate))
        if end > self.until:
            say(f'[map]   not started: {run_name(*run)}: about {estimate[0] / 60:.0f} min of '
                f'training and {estimate[1] / 60:.0f} of scoring would end at '
                f'{end:%Y-%m-%d %H:%M}, after {until}; ' + (
                    'it may train up to then once the runs that fit are done (--overrun)'
                    if self.overrun else 'it stays planned for a later sitting'))
            return False
        return True

    def estimated_seconds(self, run: Run) -> Optional[Tuple[float, float]]:
        """(training, scoring) seconds left to a run (:func:`~.schedule.run_seconds`, from
        the iterations its checkpoints hold); None where its recipe's time per iteration
        is unknown."""
        return run_seconds(index_runs(load_results(self.results_dir)[1]), run, self.preset,
                           self.finetune_iters(run[0]),
                           recipe_ratios(read_json(self.timing_path())),
                           trained_iters(self.run_dir(run)))

    def seconds_to_checkpoint(self, run: Run) -> Optional[float]:
        """Estimated seconds until a run, started or resumed now, writes its next checkpoint
        (every :func:`~..digits.runs.halfway_ckpt_interval` iterations): the least a
        stopped run must train for its work to outlive the stop. None where its time per
        iteration is unknown."""
        estimate = self.estimated_seconds(run)
        iters = run_iters(self.preset, run[1], self.finetune_iters(run[0]))[1]
        held = trained_iters(self.run_dir(run))
        if estimate is None:
            return None
        if held >= iters:
            return 0.0
        interval = halfway_ckpt_interval(iters)
        next_ckpt = min(iters, (held // interval + 1) * interval)
        return estimate[0] / (iters - held) * (next_ckpt - held)

    def train_past_until(self, runs: List[Run], jobs: int, on_scored=None) -> None:
        """The rest of a sitting (``overrun``): trains the runs that could not end before
        ``until``, ``jobs`` at a time, each stopped at ``until`` with its checkpoints kept;
        one that ends before it is scored. The runs holding the most iterations go first,
        so that the sittings' work piles up on few runs; a run starts only where it can
        reach its next checkpoint before ``until``, and one whose time per iteration is
        unknown not at all (time it first: ``--timing``).

        Args:
            runs (List[Run]): The runs left for a later sitting, in planned order.
            jobs (int): Trainings in parallel.
            on_scored (callable, optional): Called after every scored run.
        """
        ordered = sorted(runs, key=lambda run: -trained_iters(self.run_dir(run)))
        deadline = self.until.timestamp()

        def train_until(run: Run) -> Optional[float]:
            needed = self.seconds_to_checkpoint(run)
            left = deadline - time.time()
            if needed is None or needed > left:
                return None
            say(f'[map]   past --until: {run_name(*run)} trains until '
                f'{self.until:%Y-%m-%d %H:%M} ({trained_iters(self.run_dir(run))} iterations '
                f'held; its next checkpoint in about {needed / 60:.0f} min)')
            try:
                return self.train_run(run, deadline=deadline)
            except TrainingStopped as stop:
                say(f'[map]   stopped {run_name(*run)} at --until: {stop}')
                return None

        self._train_and_score(ordered, jobs, train_until, on_scored)

    def _train_and_score(self, runs: List[Run], jobs: int,
                         train_one: Callable[[Run], Optional[float]], on_scored=None) -> None:
        """Trains the runs with ``train_one``, ``jobs`` at a time, and scores each (in this
        process) as soon as its training ends; one that ``train_one`` did not train to its
        end (None) stays planned, and one that ends is no longer left for later."""
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(train_one, run): run for run in runs}
            for future in as_completed(futures):
                if future.result() is None:
                    continue  # left for a later sitting (--until)
                run = futures[future]
                if run in self.left_for_later:  # trained up to --until after all
                    self.left_for_later.remove(run)
                self.score_run(run)
                if on_scored is not None:
                    on_scored()

    def train_in_time(self, run: Run) -> Optional[float]:
        """:meth:`train_run` where the run :meth:`ends_in_time` (checked as it would
        start, with the runs scored so far), else None: the run stays planned. A run whose
        training outlasts its estimate is stopped at ``until`` too, with its checkpoints
        kept (and parked by :meth:`screen`): past it, the sitting may end under it."""
        if not self.ends_in_time(run):
            self.left_for_later.append(run)
            return None
        try:
            return self.train_run(run, deadline=None if self.until is None
                                  else self.until.timestamp())
        except TrainingStopped as stop:
            say(f'[map]   stopped {run_name(*run)} at --until, past its estimate: {stop}')
            self.left_for_later.append(run)
            return None

    def score_run(self, run: Run) -> dict:
        """Scores a trained run (raw and EMA, every sampler; the raw student also halfway
        and before finetuning) and writes its JSON (with the seconds scoring took,
        ``score_s``, for :mod:`.schedule`)."""
        start = time.time()
        level, recipe, seed = run
        finetune_iters = self.finetune_iters(level)
        batch, iters, options = self.run_settings(run)
        run_dir = self.run_dir(run)
        ckpt = osp.join(run_dir, f'iter_{iters}.pth')
        distiller = load_distiller(RECIPES[recipe].config, options, ckpt,
                                   osp.join(run_dir, 'eval'))
        scorer = self._scorer(distiller)
        final = {}
        for model in MODELS:
            net = distiller.student if model == 'raw' else distiller.student_ema.module
            final[model] = scorer.score(distiller, net, with_jacobian=model == 'raw')
            torch.save(scorer.last_samples, osp.join(run_dir, f'grid_{model}.pt'))
        from mmdiff_2ndm.utils import safe_torch_load
        record = safe_torch_load(ckpt, map_location='cpu')['meta']['pruning']
        pruned = scorer.score_pruned(distiller, record)
        half = halfway_iter(iters)
        halfway = None
        if half != iters:  # the cost table scores every run at its halfway checkpoint
            mid_ckpt = osp.join(run_dir, f'iter_{half}.pth')
            if not osp.exists(mid_ckpt):
                raise FileNotFoundError(
                    f'{run_name(*run)} has no halfway checkpoint {mid_ckpt}: its training '
                    'writes one (halfway_ckpt_interval) and keeps it. Train the run again '
                    '(delete its folder) to score it.')
            mid = load_distiller(RECIPES[recipe].config, options, mid_ckpt,
                                 osp.join(run_dir, 'eval'))
            halfway = dict(iters=half, raw=scorer.score(mid, mid.student, with_jacobian=False))
        with open(osp.join(run_dir, 'wall.json')) as f:
            wall = float(json.load(f)['wall_s'])
        data = dict(level=level, recipe=recipe, seed=seed, iters=iters, batch_size=batch,
                    finetune_iters=finetune_iters, preset=self.preset_name,
                    num_samples=self.preset['num_samples'],
                    samplers=self.preset['samplers'], record=record_hash(ckpt),
                    params=final['raw']['params'], wall_s=wall,
                    s_per_iter=seconds_per_iter(run_dir), loss_terms=loss_terms(run_dir),
                    options=options,
                    final=final, halfway=halfway, pruned=pruned,
                    score_s=round(time.time() - start, 1))
        write_json(data, self.result_path(run))
        unpark(self.pending_dir(run))
        raw = final['raw']['samplers']
        say(f'[map]   scored {run_name(*run)}: ' + ', '.join(
            f'{name} proxy FID {s["fid"]:.1f} SSIM {s["ssim"]:.4f}' for name, s in raw.items()))
        return data

    def timing_path(self) -> str:
        """Where :meth:`measure_timing` writes (``timing.json`` of the results dir)."""
        return osp.join(self.results_dir, 'timing.json')

    def measure_timing(self, level: str, seed: int, recipes: List[str], rounds: int = 10,
                       block: int = 5) -> dict:
        """Times the recipes' training iterations back to back in this process
        (:mod:`.timing`) at ``level`` and ``seed``, with this map's threads per run, each
        with its chain of references (:func:`~.cells.with_references`: the ratios are
        stated to them); stores it under the level in ``timing.json`` (replacing the
        level's earlier measurement) and returns it.

        Each recipe is timed on its run's last checkpoint in the work dir, else on another
        finished run's there (:meth:`timing_checkpoint`): so a recipe is costed before its
        first run, as ``--until`` and "To go" need, and in a work dir that lost the runs.

        Raises:
            ValueError: If the level has no run length yet, or no run is trained at
                ``level`` and ``seed``.
            FileNotFoundError: As :meth:`require_teacher`.
        """
        finetune_iters = self.finetune_iters(level)
        if finetune_iters is None:
            raise ValueError(f'Timing needs trained runs; {level} has no run length yet: '
                             'measure the plateau first (the screen does).')
        self.require_teacher()  # the runs' options name its checkpoint
        recipes = with_references(recipes)
        steps, timed_on = {}, {}
        for recipe in recipes:
            run = (level, recipe, seed)
            batch, iters = run_iters(self.preset, recipe, finetune_iters)
            found = self.timing_checkpoint(run, recipes)
            if found is None:
                raise ValueError(
                    f'Timing needs a trained run at {level}, seed {seed}; none is trained '
                    f'yet (looked for {run_name(*run)} and the other recipes there). Train '
                    'one first (the screen), or time another seed (--seeds).')
            timed_on[recipe], ckpt = found
            steps[recipe] = build_train_step(
                RECIPES[recipe].config, self.options(run, iters, batch),
                ckpt, osp.join(self.work_dir, 'timing', recipe))
        torch.set_num_threads(self.threads)
        times = time_steps(steps, rounds, block)
        ratios = timing_ratios(times, {rc: reference_of(rc) for rc in recipes})
        for line in describe(times, ratios, recipes):
            say(f'[map]   timing {line}')
        for recipe, source in timed_on.items():
            if source != run_name(level, recipe, seed):
                own = run_name(level, recipe, seed)
                say(f'[map]   timing {recipe}: no final checkpoint of {own} in the work dir; '
                    f'timed on {source}\'s pruned student')
        data = dict(seed=seed, threads=self.threads, rounds=rounds, block=block,
                    batch_sizes={rc: run_iters(self.preset, rc, 1)[0] for rc in recipes},
                    times=times, ratios=ratios, timed_on=timed_on)
        timing = read_json(self.timing_path()) or dict(levels={})
        timing['levels'][level] = data  # one measurement per level, the latest
        write_json(timing, self.timing_path())
        return data

    @staticmethod
    def _timing_sources(recipe: str, recipes: List[str]) -> List[str]:
        """The recipes whose finished run a recipe may be timed on, in order of preference:
        its own, its reference, the other timed recipes, then every other recipe."""
        return list(dict.fromkeys([recipe, reference_of(recipe), *recipes,
                                   *RECIPES]))

    def timing_checkpoint(self, run: Run, recipes: List[str]) -> Optional[Tuple[str, str]]:
        """The checkpoint a run's training iteration is timed on, and the run it belongs to.

        The run's own last checkpoint; where the work dir has none (the run is not trained
        yet, or was trained in a sitting whose work dir is gone), the last of a
        finished run at the same level and seed (:meth:`_timing_sources`' order): paired by
        seed, that run's pruning record rebuilds the same pruned student, and the cost of an
        iteration does not depend on the weights it starts from.

        Args:
            run (Run): (level, recipe, seed) to time.
            recipes (List[str]): The recipes timed with it.

        Returns:
            Optional[Tuple[str, str]]: (run name, checkpoint path), or None when no run at
            that level and seed is trained.
        """
        level, recipe, seed = run
        finetune_iters = self.finetune_iters(level)
        if finetune_iters is None:
            return None
        for source in self._timing_sources(recipe, recipes):
            source_run = (level, source, seed)
            iters = run_iters(self.preset, source, finetune_iters)[1]
            ckpt = osp.join(self.run_dir(source_run), f'iter_{iters}.pth')
            if osp.exists(ckpt):
                return run_name(*source_run), ckpt
        return None

    def add_loss_terms(self, runs: List[Run]) -> None:
        """Adds the logged loss terms (:func:`~..digits.runs.loss_terms`) to the done runs'
        JSON written before they were recorded, from their training logs where these are
        still in the work dir."""
        for run in runs:
            if not self.is_done(run):
                continue
            with open(self.result_path(run)) as f:
                data = json.load(f)
            terms = None if 'loss_terms' in data else loss_terms(self.run_dir(run))
            if terms is not None:
                data['loss_terms'] = terms
                write_json(data, self.result_path(run))

    def run_settings(self, run: Run) -> Tuple[int, int, List[str]]:
        """A run's batch size, length and ``--cfg-options`` at its level's length today."""
        batch, iters = run_iters(self.preset, run[1], self.finetune_iters(run[0]))
        return batch, iters, self.options(run, iters, batch)

    def comparable_options(self, run: Run) -> Tuple[int, List[str]]:
        """A run's length and ``--cfg-options`` as the map gives them today, the teacher's
        path left out (work dirs move): what a done, archived or parked run is compared
        on."""
        _, iters, options = self.run_settings(run)
        return iters, _without_teacher_path(options)

    def check_done(self, runs: List[Run]) -> None:
        """Raises if a done run was trained with other options than the map gives it now
        (a recipe or level changed since): its scores would be mixed with runs of the new
        definition. The teacher checkpoint's path is left out (work dirs move)."""
        stale = []
        for run in runs:
            if not self.is_done(run):
                continue
            with open(self.result_path(run)) as f:
                stored = _without_teacher_path(json.load(f)['options'])
            now = self.comparable_options(run)[1]
            if stored != now:
                stale.append(f'{run_name(*run)} (stored options not in today\'s: '
                             f'{sorted(set(stored) - set(now))}; today\'s not stored: '
                             f'{sorted(set(now) - set(stored))})')
        if stale:
            raise ValueError(
                'Runs done with other options than the map now gives them: ' +
                '; '.join(stale) + f'. Move their JSON out of {self.results_dir}/runs/ and '
                f'their folders out of {self.work_dir}/ to train them again, or restore the '
                'recipe or level they were run with.')

    def archived_twin(self, run: Run) -> Optional[str]:
        """The JSON of an archived run that was this run's training, if one exists.

        A level lengthened from N iterations keeps its runs at N in
        :func:`~.lengths.archive_name` (``archive_<level>_<N>/runs/<level>/``). A run
        planned today that trains N iterations at that level with the same config, seed and
        options (batch size included; the teacher's path aside: every run of a map has its
        recorded teacher) is the same training: a half-length recipe (``--preset budget``)
        at a level lengthened from half its length is the full recipe's archived run, for
        example (at the digits U-Net's p27, seed 0 of both forms was trained again before
        this existed and reproduced every archived score exactly).

        Args:
            run (Run): (level, recipe, seed).

        Returns:
            Optional[str]: The archived JSON's path, or None.
        """
        level, recipe, seed = run
        iters, wanted = self.comparable_options(run)
        for path, data in archived_runs(self.results_dir, level):
            twin = RECIPES.get(data.get('recipe'))
            if (twin is not None and twin.config == RECIPES[recipe].config
                    and data.get('seed') == seed and data.get('iters') == iters
                    and _without_teacher_path(data.get('options', [])) == wanted):
                return path
        return None

    def adopt_archived_twins(self, runs: List[Run]) -> List[Run]:
        """Makes each planned run that has an :meth:`archived_twin` done without training
        it: the twin's JSON is written as the run's, with its recipe, preset and level length
        and ``adopted_from`` (the twin, relative to the results dir); the twin's run folder
        is copied where the work dir still has it.

        Returns:
            List[Run]: The runs adopted.
        """
        adopted = []
        for run in runs:
            if self.is_done(run):
                continue
            twin = self.archived_twin(run)
            if twin is None:
                continue
            data = read_json(twin)
            source = osp.relpath(twin, self.results_dir)
            data.update(recipe=run[1], preset=self.preset_name,
                        finetune_iters=self.finetune_iters(run[0]), adopted_from=source)
            write_json(data, self.result_path(run))
            archive = source.split(os.sep)[0]  # the work dir's archive has the same name
            folder = osp.join(self.work_dir, archive, run[0],
                              osp.splitext(osp.basename(twin))[0])
            if osp.isdir(folder) and not osp.exists(self.run_dir(run)):
                shutil.copytree(folder, self.run_dir(run))
            say(f'[map] {run_name(*run)}: adopted {source}, the same training (config, '
                f'options, seed, {data["iters"]} iterations): not trained again')
            adopted.append(run)
        return adopted

    def park_stopped(self, runs: List[Run]) -> List[Run]:
        """Parks the resume state of every run stopped partway (:func:`~.parking.park_run`)
        in the results dir, where a fresh clone finds it: the runs' checkpoints live in the
        git-ignored work dir.

        Returns:
            List[Run]: The runs parked (those holding more iterations than their copy).
        """
        parked = []
        for run in runs:
            if self.is_done(run):
                continue
            iters, options = self.comparable_options(run)
            held = park_run(self.run_dir(run), self.pending_dir(run), iters, options)
            if held is not None:
                say(f'[map] parked {run_name(*run)} at {held} of {iters} iterations: '
                    f'{osp.relpath(self.pending_dir(run), self.results_dir)} (commit it; a '
                    'fresh clone resumes the run there)')
                parked.append(run)
        return parked

    def restore_parked(self, runs: List[Run]) -> List[Run]:
        """Copies each parked run that holds more iterations than its folder in the work
        dir back there (:func:`~.parking.restore_run`), so that it resumes.

        Returns:
            List[Run]: The runs restored.

        Raises:
            ValueError: If a parked run was trained with other settings than today's.
        """
        restored = []
        for run in runs:
            if self.is_done(run):
                continue
            iters, options = self.comparable_options(run)
            held = restore_run(self.pending_dir(run), self.run_dir(run), iters, options)
            if held is not None:
                say(f'[map] {run_name(*run)}: restored from '
                    f'{osp.relpath(self.pending_dir(run), self.results_dir)}, resumes at '
                    f'{held} of {iters} iterations')
                restored.append(run)
        return restored

    def screen(self, runs: List[Run], jobs: int, on_scored=None) -> None:
        """Trains and scores the runs not done yet, ``jobs`` trainings at a time; each run
        is scored (in this process) as soon as its training finishes.

        Args:
            runs (List[Run]): Planned runs, in order.
            jobs (int): Trainings in parallel.
            on_scored (callable, optional): Called after every scored run (the report).
        """
        if self.finetune_iters() is None:
            self.measure_plateau()
        self.check_done(runs)
        self.add_loss_terms(runs)
        if self.adopt_archived_twins(runs) and on_scored is not None:
            on_scored()
        todo = [run for run in runs if not self.is_done(run)]
        self.restore_parked(todo)
        lengths = ', '.join(f'{lv}: {self.finetune_iters(lv)}'
                            for lv in dict.fromkeys(run[0] for run in todo))
        say(f'[map] {len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to go '
            f'(run length: {lengths or "-"}; batch {self.preset["batch_size"]}), {jobs} at a '
            'time')
        self._train_and_score(todo, jobs, self.train_in_time, on_scored)
        if self.overrun:
            self.train_past_until([run for run in todo if run in self.left_for_later], jobs,
                                  on_scored)
        self.park_stopped(todo)
        left = [run for run in todo if run in self.left_for_later]
        if left:
            say(f'[map] {len(left)} of {len(todo)} runs left for a later sitting (--until '
                f'{self.until:%Y-%m-%d %H:%M}): {", ".join(run_name(*run) for run in left)}')

    # ----------------------------------------------------------------- length
    def lengthen(self, levels: List[str]) -> Dict[str, str]:
        """Applies the length check (:mod:`.lengths`) at each level: a level whose longer
        DSM+KD run lowers the plateau's sampler's raw proxy FID by more than the plateau
        rule's tolerance gets the longer length (:func:`~.lengths.lengthen_level`).

        Returns:
            Dict[str, str]: Per level, what was done and why.
        """
        plateau = read_json(self.plateau_path())
        sampler = next(iter(self.preset['samplers'])) if plateau is None else plateau['sampler']
        cells = index_runs(load_results(self.results_dir)[1])
        cap = self.length_cap()
        done = {}
        for level in levels:
            check = length_check(cells, level, sampler, cap=cap)
            if check is None:
                done[level] = (f'no length check yet ({REFERENCE} and {LONGER_REFERENCE} on a '
                               f'common seed): run --preset length --levels {level} first; '
                               f'its length stays {self.finetune_iters(level)}')
            elif check['capped']:
                drop = check['fid'] - check['fid_long']
                state = ('past' if check['longer_needed'] else 'within')
                done[level] = (f'at the cap: {sampler} proxy FID {100 * check["change"]:+.1f} % '
                               f'at {check["iters_long"]} iterations ({drop:.1f} lower, '
                               f'{state} {NOISE_SDS:g} bootstrap spreads, {NOISE_SDS:g} x '
                               f'{check["noise"]:.1f}), but {check["iters_long"]} passes the '
                               f'map\'s cap of {cap} ({MAX_LENGTH_FACTOR}x the plateau): its '
                               f'length stays {check["iters"]} (more seeds would not change '
                               'that), and its cells compare recipes at that budget, maybe '
                               'before convergence')
            elif check['undecided']:
                seeds = deciding_seeds(check)
                drop = check['fid'] - check['fid_long']
                then = (f'more seeds decide it: --preset length --levels {level} --seeds '
                        f'{" ".join(map(str, seeds))}' if seeds != check['seeds'] else
                        f'at the check\'s limit of {MAX_SEEDS} seeds')
                done[level] = (f'undecided ({sampler} proxy FID {100 * check["change"]:+.1f} % '
                               f'at {check["iters_long"]} iterations, {drop:.1f} lower: '
                               f'within {NOISE_SDS:g} bootstrap spreads, {NOISE_SDS:g} x '
                               f'{check["noise"]:.1f}); {then}; its length stays '
                               f'{check["iters"]}')
            elif not check['longer_needed']:
                done[level] = (f'long enough ({sampler} proxy FID {100 * check["change"]:+.1f} '
                               f'% at {check["iters_long"]} iterations); its length stays '
                               f'{check["iters"]}')
            else:
                entry = lengthen_level(self.results_dir, self.work_dir, level, check, sampler)
                done[level] = (f'lengthened {entry["previous"]} -> {entry["iters"]} iterations '
                               f'({sampler} proxy FID {100 * check["change"]:+.1f} % at '
                               f'{check["iters_long"]}); runs at {entry["previous"]} archived '
                               f'in {entry["archive"]}/, {REFERENCE} seeds '
                               f'{check["seeds"]} adopted from {LONGER_REFERENCE}')
            say(f'[map] length {level}: {done[level]}')
        return done

    def without_checks_past_cap(self, runs: List[Run]) -> List[Run]:
        """The planned runs less the length checks (:data:`~.lengths.LONGER_REFERENCE`) not
        trained yet whose length passes the map's cap (:meth:`length_cap`): whatever they
        showed, their level would keep its length."""
        cap = self.length_cap()
        past = checks_past_cap(runs, self.is_done, self.finetune_iters, cap)
        if past:
            say(f'[map] not planned: {", ".join(run_name(*run) for run in past)}: past the '
                f'map\'s cap of {cap} iterations ({MAX_LENGTH_FACTOR}x the plateau), a length '
                'check there could not lengthen its level')
        return [run for run in runs if run not in past]

    def converge_lengths(self, levels: List[str], seeds: List[int], jobs: int,
                         max_doublings: int, on_scored=None) -> Dict[str, int]:
        """Finds each level's run length: the length check (DSM+KD and
        :data:`~.lengths.LONGER_REFERENCE` on ``seeds``), then :meth:`lengthen`, then the
        check again at the new length, until the check passes or is undecided, or the
        level has doubled ``max_doublings`` times here (its last length then unchecked), or
        its check would train past the map's cap (:meth:`length_cap`: not trained).

        Args:
            levels (List[str]): The levels.
            seeds (List[int]): The check's seeds.
            jobs (int): Trainings in parallel.
            max_doublings (int): Most doublings of a level in this call.
            on_scored (callable, optional): Called after every scored run (the report).

        Returns:
            Dict[str, int]: Each level's run length at the end.
        """
        todo, doublings = list(levels), dict.fromkeys(levels, 0)
        cap = self.length_cap()
        while todo:
            at_cap = [level for level in todo if check_past_cap(self.finetune_iters(level), cap)]
            for level in at_cap:
                longer = run_iters(self.preset, LONGER_REFERENCE, self.finetune_iters(level))[1]
                say(f'[map] length {level}: {self.finetune_iters(level)} iterations, the '
                    f'check\'s {longer} would pass the map\'s cap of {cap} '
                    f'({MAX_LENGTH_FACTOR}x the plateau): not checked')
            todo = [level for level in todo if level not in at_cap]
            if not todo:
                break
            runs = planned_runs(self.preset, levels=todo,
                                recipes=[REFERENCE, LONGER_REFERENCE], seeds=seeds)
            self.screen(runs, jobs, on_scored=on_scored)
            before = {level: self.finetune_iters(level) for level in todo}
            self.lengthen(todo)
            grown = [level for level in todo if self.finetune_iters(level) != before[level]]
            for level in grown:
                doublings[level] += 1
            todo = [level for level in grown if doublings[level] < max_doublings]
            for level in grown:
                if level not in todo:
                    say(f'[map] length {level}: {doublings[level]} doublings in this call '
                        f'(--max-doublings); {self.finetune_iters(level)} is not checked yet')
        return {level: self.finetune_iters(level) for level in levels}


def _without_teacher_path(options: List[str]) -> List[str]:
    return [o for o in options if not o.startswith('model.teacher_ckpt.filename=')]


def load_results(results_dir: str) -> Tuple[Optional[dict], List[dict]]:
    """The teacher's scores and every evaluated run in a results dir."""
    teacher = read_json(osp.join(results_dir, 'teacher.json'))
    runs = []
    root = osp.join(results_dir, 'runs')
    for level in sorted(os.listdir(root)) if osp.isdir(root) else []:
        runs.extend(read_json_folder(osp.join(root, level)))
    return teacher, runs
