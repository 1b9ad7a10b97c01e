"""The study driver: the feature network and the teacher, then the finetuning runs, each
evaluated and reported as soon as it finishes."""
import json
import os.path as osp
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Dict, List, Optional, Tuple

from .evaluation import Evaluator, evaluate_run, evaluate_teacher, load_distiller
from .feature_net import prepare_feature_net
from .figures import write_figures
from .presets import ARMS, PRESETS, checkpoint_interval
from .progress import progress, say
from .report import write_report
from .runs import (SHIPPED_TEACHER, is_finished, size_options, train,
                   train_study_teacher)


class Study:
    """One study in a work dir: trains the planned runs and reports on the finished ones.

    Every finished run is evaluated (raw student and EMA, cached in its folder) and the
    report is rewritten as soon as it finishes, so the work dir always holds the results
    of every run done so far.

    Args:
        preset_name (str): A key of :data:`PRESETS`.
        work_dir (str): The study's folder (absolute: runs are trained from the repo).
        runs (List[Tuple[str, int]]): The planned (arm, seed) runs, in training order.
        threads (int): Torch threads of each training run.
        train_teacher (bool, optional): Train the dense teacher in the work dir; False:
            use the shipped one (``SHIPPED_TEACHER``, the study's 6000-iteration
            teacher). Defaults to None: the preset's ``shipped_teacher`` decides.
    """

    def __init__(self, preset_name: str, work_dir: str, runs: List[Tuple[str, int]],
                 threads: int, train_teacher: Optional[bool] = None) -> None:
        self.preset_name, self.preset = preset_name, dict(PRESETS[preset_name])
        self.work_dir, self.runs, self.threads = work_dir, runs, threads
        self.feature_net = osp.join(work_dir, 'feature_net.pt')
        if train_teacher is None:
            train_teacher = not self.preset['shipped_teacher']
        self.trains_teacher = train_teacher
        self.teacher_ckpt = (osp.join(work_dir, 'teacher',
                                      f'iter_{self.preset["teacher_iters"]}.pth')
                             if train_teacher else SHIPPED_TEACHER)
        if not train_teacher and not osp.isfile(SHIPPED_TEACHER):
            raise FileNotFoundError(f'The shipped teacher {SHIPPED_TEACHER} is missing; '
                                    'restore it from git or train one (--train-teacher).')
        self.start = time.time()
        self.evaluator: Optional[Evaluator] = None
        self.dense: Optional[dict] = None
        self.evaluated: Dict[Tuple[str, int], dict] = {}

    def run_dir(self, arm: str, seed: int) -> str:
        """The folder of one finetuning run."""
        return osp.join(self.work_dir, f'{arm}_seed{seed}')

    def options(self, arm: str, seed: int) -> List[str]:
        """--cfg-options of a finetuning run: teacher, seed (pairs the arms), run length."""
        return [f'model.teacher_ckpt.filename={self.teacher_ckpt}', f'randomness.seed={seed}',
                f'model.per_sample_noise_seed={seed}',
                f'param_scheduler.T_max={self.preset["finetune_iters"]}', *ARMS[arm][1],
                *size_options(self.preset, 'student')]

    def train_teacher(self) -> None:
        """Trains the proxy feature network and the dense teacher (each once)."""
        say(f'[study] 1/4 feature network -> {self.feature_net}')
        prepare_feature_net(self.work_dir, self.preset['feature_iters'])
        if not self.trains_teacher:
            say(f'[study] 2/4 dense teacher: the shipped one, {self.teacher_ckpt}')
            return
        say(f'[study] 2/4 dense teacher, {self.preset["teacher_iters"]} iterations')
        train_study_teacher(self.work_dir, self.preset, self.threads, stream=True)

    def finetune_and_report(self, jobs: int) -> None:
        """Trains the runs ``jobs`` at a time; reports after each one that finishes."""
        say(f'[study] 3/4 {len(self.runs)} finetuning runs, {jobs} in parallel; each is '
            'evaluated when it finishes')
        interval = checkpoint_interval(self.preset)

        def finetune(run: Tuple[str, int]) -> Tuple[str, int]:
            arm, seed = run
            run_dir = self.run_dir(arm, seed)
            say(f'[study]   start {arm} seed {seed} (log: {run_dir}/train_stdout.log)')
            wall = train(ARMS[arm][0], run_dir, self.preset['finetune_iters'],
                         self.options(arm, seed), self.threads, stream=False,
                         ckpt_interval=interval)
            say(f'[study]   done  {arm} seed {seed} in {wall:.0f} s')
            return run

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for future in as_completed([pool.submit(finetune, run) for run in self.runs]):
                future.result()
                self.report()

    def evaluate(self, arm: str, seed: int) -> dict:
        """The run's (cached) evaluation; the teacher's first."""
        run_dir = self.run_dir(arm, seed)
        if self.evaluator is None:
            self.evaluator = Evaluator(self.preset, self.feature_net)
            distiller = load_distiller(
                ARMS[arm][0], self.options(arm, seed),
                osp.join(run_dir, f'iter_{self.preset["finetune_iters"]}.pth'),
                osp.join(run_dir, 'eval'))
            self.dense = evaluate_teacher(self.evaluator, distiller, self.work_dir,
                                          self.preset)
        if (arm, seed) not in self.evaluated:
            data = evaluate_run(self.evaluator, arm, run_dir, self.options(arm, seed),
                                self.preset)
            self.evaluated[(arm, seed)] = dict(data, arm=arm, seed=seed, dir=run_dir)
            final = data['final']
            say(f'[study]   {arm} seed {seed}: proxy FID raw {final["raw"]["fid"]:.3f} / '
                f'EMA {final["ema"]["fid"]:.3f}, SSIM raw {final["raw"]["ssim"]:.3f}')
        return self.evaluated[(arm, seed)]

    def report(self) -> str:
        """Evaluates the finished runs and writes results.md/json, grids and plots."""
        finished = [(a, s) for a, s in self.runs
                    if is_finished(self.run_dir(a, s), self.preset['finetune_iters'])]
        if not finished:
            raise RuntimeError(f'No finished finetuning run in {self.work_dir} to evaluate.')
        say(f'[study] 4/4 evaluating {len(finished)} of {len(self.runs)} runs (raw and EMA)')
        study = dict(runs=[self.evaluate(arm, seed)
                           for arm, seed in progress(finished, desc='runs', unit='run')])
        study['dense'] = self.dense
        with open(osp.join(self.work_dir, 'feature_net.json')) as f:
            accuracy = json.load(f)['test_accuracy']
        preset = self.preset
        meta = dict(preset=self.preset_name, finetune_iters=preset['finetune_iters'],
                    teacher_iters=preset['teacher_iters'],
                    teacher=self.teacher_ckpt, num_samples=preset['num_samples'],
                    sample_steps=preset['sample_steps'], feature_accuracy=accuracy,
                    planned_runs=len(self.runs), wall_s=time.time() - self.start)
        table = osp.join(self.work_dir, 'results.md')
        comparisons = write_report(study, meta, preset, table)
        write_figures(study, preset, self.work_dir)
        runs_json = [{k: v for k, v in r.items() if k != 'dir'} for r in study['runs']]
        with open(osp.join(self.work_dir, 'results.json'), 'w') as f:
            json.dump(dict(meta=meta, ftle_timesteps=list(preset['ftle_timesteps']),
                           dense=study['dense'], runs=runs_json, **comparisons), f, indent=1)
        return table
