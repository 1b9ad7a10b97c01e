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
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', 'digits')

# name -> (config file, extra --cfg-options)
ARMS: Dict[str, Tuple[str, List[str]]] = {
    'dsm': ('2ndm_digits16_dsm.py', []),
    'dsm_kd': ('2ndm_digits16_dsm_kd.py', []),
    'first_order': ('2ndm_digits16_first_order.py', []),
    '2ndm_unscaled': ('2ndm_digits16_unscaled.py', []),  # the paper's form
    '2ndm': ('2ndm_digits16.py', []),  # sigma_t-scaled, w = 10, quarter batch
    # levers of the 2ndM term, one change each from '2ndm'
    '2ndm_k4': ('2ndm_digits16.py', ['model.losses.jacobian.num_projections=4']),
    '2ndm_full_batch': ('2ndm_digits16.py', ['model.losses.jacobian.batch_fraction=1.0']),
    '2ndm_w1': ('2ndm_digits16.py', ['model.losses.jacobian.loss_weight=1.0']),
    '2ndm_w100': ('2ndm_digits16.py', ['model.losses.jacobian.loss_weight=100.0']),
    '2ndm_small_t': ('2ndm_digits16.py', ['model.jacobian_t_range=(0,99)']),
    '2ndm_unscaled_small_t': ('2ndm_digits16_unscaled.py', ['model.jacobian_t_range=(0,99)']),
}
REFERENCE_ARM = 'dsm_kd'  # every arm is compared with it, paired by seed
MODELS = ('raw', 'ema')  # the student as trained, and its EMA
LINE_STYLES = dict(raw='-', ema='--')  # how each scored model is drawn in the plots

PRESETS = {
    # smoke test: seconds, not a measurement
    'tiny': dict(teacher_iters=4, finetune_iters=3, batch_size=8, widths=(8, 16),
                 arms={'dsm_kd': 1, '2ndm': 1}, lever_arms=(), num_samples=48,
                 curve_samples=16, sample_steps=3, eval_images=8,
                 ftle_timesteps=(0, 10, 100, 999), feature_iters=20, bootstrap=10,
                 checkpoints=3),
    # README command 1: ~10 minutes on 2 CPU cores, one seed (no confidence intervals)
    'short': dict(teacher_iters=1000, finetune_iters=300, batch_size=32, widths=None,
                  arms={'dsm': 1, 'dsm_kd': 1, '2ndm': 1}, lever_arms=(), num_samples=256,
                  curve_samples=128, sample_steps=20, eval_images=64,
                  ftle_timesteps=(0, 5, 10, 25, 50, 100, 250, 500, 999),
                  feature_iters=300, bootstrap=50, checkpoints=3),
    # the README table: 5 seeds of DSM+KD and both 2ndM forms, 3 of DSM and first-order,
    # then one seed of each lever; runs in seed order, so that an interrupted study has
    # whole seeds to compare. 1200 finetuning iterations: after 600 DSM+KD's proxy FID was
    # still 2.95x the teacher's (not recovered); in one-seed 2400-iteration runs DSM+KD
    # reached 1.32x at 1200 while DSM stood at 2.1x, and by 2400 DSM alone matched the
    # teacher, which leaves no gap for any arm to close (docs/digits_study/long)
    'full': dict(teacher_iters=6000, finetune_iters=1200, batch_size=32, widths=None,
                 arms={'dsm_kd': 5, '2ndm_unscaled': 5, '2ndm': 5, 'dsm': 3,
                       'first_order': 3},
                 lever_arms=('2ndm_k4', '2ndm_full_batch', '2ndm_w1', '2ndm_w100',
                             '2ndm_small_t', '2ndm_unscaled_small_t'),
                 num_samples=500, curve_samples=128, sample_steps=50, eval_images=128,
                 ftle_timesteps=(0, 2, 5, 10, 25, 50, 100, 250, 500, 750, 999),
                 feature_iters=1000, bootstrap=200, checkpoints=3),
}
CI_RESAMPLES = 10000  # bootstrap resamples of the seeds for each confidence interval
# below 3 seeds a percentile bootstrap interval is just the range of the values
CI_MIN_SEEDS = 3
# "recovered": proxy FID within this factor of the teacher's and SSIM to it at least this
RECOVERED_FID_FACTOR, RECOVERED_SSIM = 1.5, 0.8


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
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
    parser.add_argument('--eval-only', action='store_true',
                        help='train nothing: report on the runs finished so far')
    return parser.parse_args(argv)


def planned_runs(preset: dict, seeds: Optional[Sequence[int]] = None,
                 arms: Optional[Sequence[str]] = None, levers: bool = True
                 ) -> List[Tuple[str, int]]:
    """(arm, seed) in training order: seed by seed, then one seed of each lever."""
    per_arm = {arm: list(range(n)) for arm, n in preset['arms'].items()}
    if arms:
        per_arm = {arm: per_arm.get(arm, [0]) for arm in arms}
    if seeds:
        per_arm = {arm: list(seeds) for arm in per_arm}
    order = sorted({s for arm_seeds in per_arm.values() for s in arm_seeds})
    runs = [(arm, seed) for seed in order for arm, arm_seeds in per_arm.items()
            if seed in arm_seeds]
    if levers and not arms:
        first = order[0]
        runs += [(arm, first) for arm in preset['lever_arms'] if arm not in per_arm]
    return runs


# ------------------------------------------------------------------- feature net
class DigitFeatureNet(nn.Module):
    """Digit classifier whose penultimate features stand in for Inception's.

    Call signature of the StyleGAN TorchScript Inception that MMagic's ``FID`` uses:
    ``net(img_uint8 (B, 3, H, W), return_features=True) -> (B, 32)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, 10)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        feats = self.body(x.float() / 127.5 - 1.0)
        return feats if return_features else self.head(feats)


def _digits(image_size: int, split: str) -> Tuple[Tensor, Tensor]:
    """uint8 images (N, 3, H, W) and labels (N,) of SklearnDigits."""
    from mmdiff_2ndm.datasets import SklearnDigits
    data = SklearnDigits(image_size=image_size, split=split, lazy_init=False)
    items = [data.get_data_info(i) for i in range(len(data))]
    images = torch.from_numpy(np.stack([it['gt'] for it in items])).permute(0, 3, 1, 2)
    return images.contiguous(), torch.tensor([it['gt_label'] for it in items])


def train_feature_net(path: str, image_size: int, iters: int) -> float:
    """Trains the proxy feature network, saves it as TorchScript, returns test accuracy."""
    torch.manual_seed(0)
    images, labels = _digits(image_size, 'train')
    net = DigitFeatureNet()
    optim = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(iters):
        idx = torch.randint(0, images.shape[0], (128,))
        loss = nn.functional.cross_entropy(net(images[idx]), labels[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
    net.eval().requires_grad_(False)
    test_images, test_labels = _digits(image_size, 'test')
    with torch.no_grad():
        accuracy = (net(test_images).argmax(1) == test_labels).float().mean().item()
    torch.jit.script(net).save(path)
    return accuracy


# ---------------------------------------------------------------------- training
def _size_options(preset: dict, role: str) -> List[str]:
    """--cfg-options of the preset (batch size, UNet widths) for the teacher or a student."""
    opts = [f'train_dataloader.batch_size={preset["batch_size"]}']
    if preset['widths'] is not None:
        key = 'model.student' if role == 'teacher' else 'model.teacher'
        widths = ','.join(str(w) for w in preset['widths'])
        opts.append(f'{key}.block_out_channels=({widths})')
    return opts


def _train(config: str, work_dir: str, iters: int, options: List[str], threads: int,
           stream: bool, ckpt_interval: Optional[int] = None) -> float:
    """Runs tools/train.py; returns its wall time (s). Raises on failure.

    A finished run (final checkpoint and ``wall.json`` in ``work_dir``) is not run
    again: its recorded wall time is returned. An interrupted one continues from its
    last checkpoint (``--resume``); its wall time then counts the resumed part only and
    ``wall.json`` says so.
    """
    wall_file = osp.join(work_dir, 'wall.json')
    if _finished(work_dir, iters):
        with open(wall_file) as f:
            return float(json.load(f)['wall_s'])
    resume = osp.exists(osp.join(work_dir, 'last_checkpoint'))
    log_interval = max(1, iters // 10)
    cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), osp.join(CONFIG_DIR, config),
           '--work-dir', work_dir, *(['--resume'] if resume else []),
           '--cfg-options', f'train_cfg.max_iters={iters}',
           f'default_hooks.checkpoint.interval={ckpt_interval or iters}',
           'default_hooks.checkpoint.max_keep_ckpts=-1',
           f'default_hooks.logger.interval={log_interval}', *options]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=REPO)
    os.makedirs(work_dir, exist_ok=True)
    log_path = osp.join(work_dir, 'train_stdout.log')
    start = time.time()
    with open(log_path, 'a' if resume else 'w') as log:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=None if stream else log,
                              stderr=subprocess.STDOUT if not stream else None)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f'Training failed ({" ".join(cmd)}); see {log_path}.')
    with open(wall_file, 'w') as f:
        json.dump(dict(wall_s=wall, resumed=resume), f)
    return wall


def _finished(work_dir: str, iters: int) -> bool:
    """Whether the run in ``work_dir`` trained all ``iters`` iterations."""
    return (osp.exists(osp.join(work_dir, 'wall.json'))
            and osp.exists(osp.join(work_dir, f'iter_{iters}.pth')))


def _seconds_per_iter(work_dir: str) -> float:
    """Mean MMEngine 'time' per iteration from the run's scalars.json."""
    times = []
    for root, _, files in os.walk(work_dir):
        if 'scalars.json' in files:
            with open(osp.join(root, 'scalars.json')) as f:
                times += [json.loads(line)['time'] for line in f if '"time"' in line]
    return float(np.mean(times)) if times else float('nan')


# -------------------------------------------------------------------- evaluation
def _load_distiller(config: str, options: List[str], ckpt: str, work_dir: str):
    """Builds the run's model through a Runner and loads the checkpoint (pruned student
    rebuilt from its record by DiffusionPruningHook.after_load_checkpoint)."""
    from mmengine.config import Config, DictAction
    from mmengine.runner import Runner
    cfg = Config.fromfile(osp.join(CONFIG_DIR, config))
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(['--o', *options]).o)
    cfg.work_dir = work_dir
    cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(ckpt)
    return runner.model.eval()


def _record_hash(ckpt: str) -> str:
    """A short hash of the checkpoint's pruning record (which channels were kept)."""
    from mmdiff_2ndm.utils import safe_torch_load
    record = safe_torch_load(ckpt, map_location='cpu').get('meta', {}).get('pruning')
    text = json.dumps(record and record.get('history'), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] -> uint8 [0, 255]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class Evaluator:
    """Fixed inputs shared by every model: noise, noised test images, FTLE directions.

    The first ``curve_samples`` of the ``num_samples`` sampling noises are the recovery
    curve's, so a final checkpoint's curve point is a prefix of its full evaluation.
    """

    def __init__(self, preset: dict, feature_net: str, image_size: int = 16) -> None:
        from mmagic.evaluation.metrics import FrechetInceptionDistance
        gen = torch.Generator().manual_seed(1234)
        self.preset = preset
        self.noise = torch.randn(preset['num_samples'], 3, image_size, image_size,
                                 generator=gen)
        test_images, _ = _digits(image_size, 'test')
        self.x_0 = test_images[:preset['eval_images']].float() / 127.5 - 1.0
        self.eps = torch.randn(self.x_0.shape, generator=gen)
        self.v = torch.randn(self.x_0.shape, generator=gen)
        self.v = self.v / self.v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        self.fid = FrechetInceptionDistance(fake_nums=preset['num_samples'],
                                            inception_style='StyleGAN',
                                            inception_path=feature_net)
        real, _ = _digits(image_size, 'train')
        with torch.no_grad():
            real_feats = self.fid.forward_inception(real).numpy()
        self.fid.real_mean = real_feats.mean(0)
        self.fid.real_cov = np.cov(real_feats, rowvar=False)
        self.teacher_samples: Optional[Tensor] = None

    def samples(self, distiller, net: nn.Module, num: int) -> Tensor:
        """uint8 samples (num, 3, H, W) from the first ``num`` fixed noises with DDIM."""
        out = []
        for noise in self.noise[:num].split(128):
            out.append(_to_uint8(distiller.sample(net, noise, None, None,
                                                  self.preset['sample_steps'])))
        return torch.cat(out)

    def proxy_fid(self, samples: Tensor, bootstrap: int = 0) -> Tuple[float, float]:
        """MMagic FID of the samples with the proxy features, and its bootstrap std."""
        with torch.no_grad():
            feats = self.fid.forward_inception(samples)
        fid = self.fid.compute_metrics([feats])['fid']
        gen = torch.Generator().manual_seed(0)
        boot = [self.fid.compute_metrics(
            [feats[torch.randint(0, feats.shape[0], (feats.shape[0],), generator=gen)]])['fid']
            for _ in range(bootstrap)]
        return fid, float(np.std(boot)) if boot else float('nan')

    @torch.no_grad()
    def eps_mse(self, distiller, net: nn.Module) -> Tuple[float, float]:
        """Mean squared eps difference to the teacher on fixed noised test images
        (all timesteps, and t < 50)."""
        from mmdiff_2ndm.models.denoisers import run_denoiser
        num_t = int(distiller.noise_scheduler.config.num_train_timesteps)
        n = self.x_0.shape[0]
        t = torch.linspace(0, num_t - 1, n).long()
        t_small = torch.linspace(0, 49, n).long()
        errs = []
        for steps in (t, t_small):
            x_t = distiller.noise_scheduler.add_noise(self.x_0, self.eps, steps)
            diff = run_denoiser(net, x_t, steps, None) - run_denoiser(distiller.teacher,
                                                                     x_t, steps, None)
            errs.append(diff.pow(2).mean().item())
        return errs[0], errs[1]

    def ftle(self, distiller, net: nn.Module) -> List[float]:
        """Mean ||J v||^2 of the denoiser per timestep of ``ftle_timesteps``."""
        from mmdiff_2ndm.models.denoisers import run_denoiser
        from mmdiff_2ndm.models.losses.jacobian_products import jacobian_vector_product
        values = []
        for step in self.preset['ftle_timesteps']:
            t = torch.full((self.x_0.shape[0],), int(step), dtype=torch.long)
            x_t = distiller.noise_scheduler.add_noise(self.x_0, self.eps, t)
            _, jv = jacobian_vector_product(lambda x: run_denoiser(net, x, t, None), x_t,
                                            self.v, 'student')
            values.append(jv.pow(2).flatten(1).sum(1).mean().item())
        return values

    def fidelity(self, samples: Tensor) -> Tuple[float, float]:
        """SSIM and MSE (in [0, 1] units) of samples vs the teacher's from the same noise,
        with TeacherFidelity's code."""
        from mmdiff_2ndm.evaluation.metrics.teacher_fidelity import TeacherFidelity
        metric = TeacherFidelity(fake_nums=samples.shape[0])
        metric.process({}, [dict(fake_img=s.float(), teacher_img=t.float())
                            for s, t in zip(samples, self.teacher_samples)])
        scores = metric.compute_metrics(metric.fake_results)
        return scores['ssim'], scores['mse']

    def evaluate(self, distiller, net: nn.Module, full: bool) -> Tuple[dict, Tensor]:
        """Scores of ``net``: on the curve's samples, and with ``full`` also on all
        samples with the FTLE statistic. Returns the scores and the samples."""
        num = self.preset['num_samples'] if full else self.preset['curve_samples']
        samples = self.samples(distiller, net, num)
        if self.teacher_samples is None:
            self.teacher_samples = samples  # the dense teacher comes first
        curve = samples[:self.preset['curve_samples']]
        scores = dict(curve=self._scores(distiller, net, curve, bootstrap=0))
        if full:
            scores['final'] = self._scores(distiller, net, samples, self.preset['bootstrap'])
            scores['final']['ftle'] = self.ftle(distiller, net)
        return scores, samples

    def _scores(self, distiller, net: nn.Module, samples: Tensor, bootstrap: int) -> dict:
        fid, fid_boot = self.proxy_fid(samples, bootstrap)
        ssim, sample_mse = self.fidelity(samples)
        eps_all, eps_small = self.eps_mse(distiller, net)
        return dict(fid=fid, fid_boot=fid_boot, ssim=ssim, sample_mse=sample_mse,
                    eps_mse=eps_all, eps_mse_t50=eps_small,
                    params=sum(p.numel() for p in net.parameters()))


# ------------------------------------------------------------ evaluating the runs
def _fingerprint(preset: dict) -> str:
    """What a cached evaluation depends on besides the checkpoint."""
    keys = ('teacher_iters', 'finetune_iters', 'num_samples', 'curve_samples',
            'sample_steps', 'eval_images', 'ftle_timesteps', 'bootstrap', 'checkpoints')
    return json.dumps({k: preset[k] for k in keys}, sort_keys=True, default=list)


def checkpoint_interval(preset: dict) -> int:
    """Iterations between the checkpoints of a finetuning run."""
    return max(1, preset['finetune_iters'] // preset['checkpoints'])


def checkpoint_iters(preset: dict) -> List[int]:
    """The iterations at which finetuning runs save a checkpoint (the recovery curve)."""
    iters, interval = preset['finetune_iters'], checkpoint_interval(preset)
    return sorted(set(range(interval, iters, interval)) | {iters})


def _load_json(path: str, fingerprint: str) -> dict:
    if osp.exists(path):
        with open(path) as f:
            data = json.load(f)
        if data.get('fingerprint') == fingerprint:
            return data
    return dict(fingerprint=fingerprint)


def _save_json(data: dict, path: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def evaluate_teacher(evaluator: Evaluator, distiller, work_dir: str, preset: dict) -> dict:
    """The dense teacher's scores (cached with its samples, which SSIM compares against)."""
    path, samples_path = osp.join(work_dir, 'teacher_eval.json'), osp.join(
        work_dir, 'teacher_samples.pt')
    data = _load_json(path, _fingerprint(preset))
    if 'final' in data and osp.exists(samples_path):
        evaluator.teacher_samples = torch.load(samples_path)
        return data
    scores, samples = evaluator.evaluate(distiller, distiller.teacher, full=True)
    torch.save(samples, samples_path)
    data.update(scores)
    _save_json(data, path)
    return data


def evaluate_run(evaluator: Evaluator, arm: str, run_dir: str, options: List[str],
                 preset: dict) -> dict:
    """Raw student and EMA of one run at every checkpoint (cached in ``eval.json``)."""
    path = osp.join(run_dir, 'eval.json')
    data = _load_json(path, _fingerprint(preset))
    data.setdefault('curve', {})
    last = preset['finetune_iters']
    for step in checkpoint_iters(preset):
        full = step == last
        if str(step) in data['curve'] and (not full or 'final' in data):
            continue
        ckpt = osp.join(run_dir, f'iter_{step}.pth')
        distiller = _load_distiller(ARMS[arm][0], options, ckpt, osp.join(run_dir, 'eval'))
        for model in MODELS:
            net = distiller.student if model == 'raw' else distiller.student_ema.module
            scores, samples = evaluator.evaluate(distiller, net, full)
            data['curve'].setdefault(str(step), {})[model] = scores['curve']
            if full:
                data.setdefault('final', {})[model] = scores['final']
                torch.save(samples[:64].clone(), osp.join(run_dir, f'samples_{model}.pt'))
        if full:
            data['record'] = _record_hash(ckpt)
        _save_json(data, path)
    with open(osp.join(run_dir, 'wall.json')) as f:
        data['wall'] = float(json.load(f)['wall_s'])
    data['s_per_iter'] = _seconds_per_iter(run_dir)
    return data


# ----------------------------------------------------------------------- reports
METRICS = (  # key, column name, lower is better
    ('fid', 'proxy FID', True), ('eps_mse', 'eps-MSE to teacher', True),
    ('eps_mse_t50', 'eps-MSE t<50', True), ('sample_mse', 'sample MSE to teacher', True),
    ('ssim', 'SSIM to teacher', False))


def bootstrap_ci(values: Sequence[float], resamples: int = CI_RESAMPLES,
                 seed: int = 0) -> Tuple[float, float, float]:
    """Mean and 95 % percentile-bootstrap interval of the mean (nan with fewer than
    ``CI_MIN_SEEDS`` values). Over 3-5 seeds it is narrower than a t interval: read a
    verdict near the edge with care."""
    values = np.asarray(values, dtype=float)
    if values.size < CI_MIN_SEEDS:
        return float(values.mean()) if values.size else float('nan'), np.nan, np.nan
    idx = np.random.default_rng(seed).integers(0, values.size, (resamples, values.size))
    means = values[idx].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(
        np.percentile(means, 97.5))


def verdict(low: float, high: float, lower_is_better: bool = True) -> str:
    """What a 95 % interval of (arm - reference) allows one to say."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f'under {CI_MIN_SEEDS} seeds: no interval'
    if high < 0:
        return 'better' if lower_is_better else 'worse'
    if low > 0:
        return 'worse' if lower_is_better else 'better'
    return 'no difference shown'


def _fmt(values: Sequence[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f'{values[0]:.{digits}g}'
    return f'{np.mean(values):.{digits}g} +- {np.std(values):.2g}'


def _ci(mean: float, low: float, high: float) -> str:
    if not np.isfinite(low):
        return f'{mean:+.3g}'
    return f'{mean:+.3g} [{low:+.3g}, {high:+.3g}]'


def _by_arm(runs: List[dict]) -> Dict[str, Dict[int, dict]]:
    """arm -> seed -> run, in the order the arms first appear."""
    arms: Dict[str, Dict[int, dict]] = {}
    for run in runs:
        arms.setdefault(run['arm'], {})[run['seed']] = run
    return arms


def gap_closed(dsm_fid: float, arm_fid: float, dense_fid: float) -> float:
    """Share of the DSM -> dense proxy-FID gap that an arm closes (1: at the teacher)."""
    return (dsm_fid - arm_fid) / (dsm_fid - dense_fid)


def _main_table(arms: dict, dense: dict) -> List[str]:
    ref = arms.get(REFERENCE_ARM, {})
    ref_speed = np.mean([r['s_per_iter'] for r in ref.values()]) if ref else np.nan
    lines = ['| arm | model | seeds | params | ' + ' | '.join(m[1] for m in METRICS) +
             ' | FID bootstrap std | gap closed | s/iter | s/iter / DSM+KD |',
             '|' + '---|' * (len(METRICS) + 8)]
    lines.append(f'| dense teacher | - | 1 | {dense["final"]["params"]} | ' + ' | '.join(
        f'{dense["final"][k]:.4g}' for k, _, _ in METRICS) +
        f' | {dense["final"]["fid_boot"]:.2g} | - | - | - |')
    for arm, seeds in arms.items():
        speed = [r['s_per_iter'] for r in seeds.values()]
        for model in MODELS:
            finals = [r['final'][model] for r in seeds.values()]
            gaps = [gap_closed(arms['dsm'][s]['final'][model]['fid'], r['final'][model]['fid'],
                               dense['final']['fid'])
                    for s, r in seeds.items() if s in arms.get('dsm', {})]
            lines.append(
                f'| {arm} | {model} | {len(finals)} | {finals[0]["params"]} | ' +
                ' | '.join(_fmt([f[k] for f in finals]) for k, _, _ in METRICS) +
                f' | {_fmt([f["fid_boot"] for f in finals], 2)} | '
                f'{_fmt(gaps, 3) if gaps and arm != "dsm" else "-"} | {_fmt(speed, 3)} | '
                f'{np.mean(speed) / ref_speed:.2f} |')
    return lines


def paired_differences(arms: dict, arm: str, model: str, dense_fid: float) -> dict:
    """Per metric: (mean, low, high) of arm - DSM+KD over the seeds both ran, and the
    gap to the dense teacher's proxy FID closed relative to DSM (where DSM ran)."""
    ref = arms[REFERENCE_ARM]
    seeds = sorted(set(arms[arm]) & set(ref))
    out = dict(seeds=seeds)
    for key, _, _ in METRICS:
        diffs = [arms[arm][s]['final'][model][key] - ref[s]['final'][model][key]
                 for s in seeds]
        out[key] = bootstrap_ci(diffs)
        if key == 'fid':
            out['fid_lower_in'] = sum(d < 0 for d in diffs)
    dsm = arms.get('dsm', {})
    gap_seeds = [s for s in arms[arm] if s in dsm]
    out['gap_closed'] = bootstrap_ci([gap_closed(dsm[s]['final'][model]['fid'],
                                                 arms[arm][s]['final'][model]['fid'],
                                                 dense_fid) for s in gap_seeds])
    return out


def _paired_table(arms: dict, dense: dict) -> Tuple[List[str], dict]:
    lines = ['| arm | model | paired seeds | ' + ' | '.join(
        f'd {name}' for _, name, _ in METRICS) + ' | verdict (FID, eps-MSE, sample MSE, '
        'SSIM) | seeds with lower FID | gap closed vs DSM |',
             '|' + '---|' * (len(METRICS) + 6)]
    paired = {}
    for arm in arms:
        if arm == REFERENCE_ARM:
            continue
        for model in MODELS:
            diff = paired_differences(arms, arm, model, dense['final']['fid'])
            paired[f'{arm}/{model}'] = diff
            verdicts = ', '.join(verdict(*diff[k][1:], lower)
                                 for k, _, lower in METRICS if k != 'eps_mse_t50')
            lines.append(f'| {arm} | {model} | {len(diff["seeds"])} | ' + ' | '.join(
                _ci(*diff[k]) for k, _, _ in METRICS) + f' | {verdicts} | '
                f'{diff["fid_lower_in"]}/{len(diff["seeds"])} | '
                f'{_ci(*diff["gap_closed"]) if arm != "dsm" else "-"} |')
    return lines, paired


def recovery_summary(arms: dict, dense: dict) -> dict:
    """Whether DSM+KD (raw) recovered and whether DSM leaves a gap above the seed spread."""
    out = dict(teacher_fid=dense['final']['fid'])
    for arm in (REFERENCE_ARM, 'dsm'):
        if arm not in arms:
            continue
        finals = [r['final']['raw'] for r in arms[arm].values()]
        out[arm] = dict(fid=float(np.mean([f['fid'] for f in finals])),
                        fid_std=float(np.std([f['fid'] for f in finals])),
                        ssim=float(np.mean([f['ssim'] for f in finals])))
    if REFERENCE_ARM in out:
        ref = out[REFERENCE_ARM]
        out['recovered'] = bool(ref['fid'] <= RECOVERED_FID_FACTOR * out['teacher_fid']
                                and ref['ssim'] >= RECOVERED_SSIM)
    if 'dsm' in out:
        out['dsm_gap'] = out['dsm']['fid'] - out['teacher_fid']
    return out


def _recovery_lines(summary: dict) -> List[str]:
    lines = [f'* Teacher proxy FID {summary["teacher_fid"]:.4g}.']
    ref = summary.get(REFERENCE_ARM)
    if ref:
        lines.append(
            f'* DSM+KD, raw student: proxy FID {ref["fid"]:.4g} '
            f'({ref["fid"] / summary["teacher_fid"]:.2f}x the teacher\'s; criterion '
            f'<= {RECOVERED_FID_FACTOR}x), SSIM to the teacher {ref["ssim"]:.3f} (criterion '
            f'>= {RECOVERED_SSIM}): **{"recovered" if summary["recovered"] else "not recovered"}'
            '**.')
    if 'dsm' in summary:
        dsm = summary['dsm']
        spread = (f'{summary["dsm_gap"] / dsm["fid_std"]:.1f}x the seed std'
                  if dsm['fid_std'] > 0 else 'one seed: no seed spread')
        lines.append(f'* DSM alone, raw student: proxy FID {dsm["fid"]:.4g} +- '
                     f'{dsm["fid_std"]:.2g} (seed std): gap to the teacher '
                     f'{summary["dsm_gap"]:.4g} ({spread}).')
    return lines


def equal_wallclock(arms: dict, dense: dict, preset: dict) -> Tuple[float, List[dict]]:
    """Each arm's raw student at its last checkpoint within the cheapest arm's training
    time, scored on the curve's samples, with whether it is recovered there."""
    speeds = {arm: np.mean([r['s_per_iter'] for r in seeds.values()])
              for arm, seeds in arms.items()}
    budget = min(speeds.values()) * preset['finetune_iters']
    teacher_fid = dense['curve']['fid']
    rows = []
    for arm, seeds in arms.items():
        steps = [s for s in checkpoint_iters(preset) if s * speeds[arm] <= budget * 1.0001]
        if not steps:
            rows.append(dict(arm=arm, iter=0, recovered=False))
            continue
        scores = [r['curve'][str(steps[-1])]['raw'] for r in seeds.values()]
        fid, ssim = np.mean([s['fid'] for s in scores]), np.mean([s['ssim'] for s in scores])
        rows.append(dict(arm=arm, iter=steps[-1], fid=float(fid), ssim=float(ssim),
                         eps_mse=float(np.mean([s['eps_mse'] for s in scores])),
                         recovered=bool(fid <= RECOVERED_FID_FACTOR * teacher_fid
                                        and ssim >= RECOVERED_SSIM)))
    return float(budget), rows


def _pairing_lines(arms: dict) -> List[str]:
    """Whether all arms of each seed started from the same pruned channels."""
    by_seed: Dict[int, set] = {}
    for seeds in arms.values():
        for seed, run in seeds.items():
            by_seed.setdefault(seed, set()).add(run.get('record'))
    same = [s for s, records in sorted(by_seed.items()) if len(records) == 1]
    differ = [s for s, records in sorted(by_seed.items()) if len(records) > 1]
    line = f'* Same pruned channels in every arm of seeds {same}'
    return [line + (f'; **different** in seeds {differ}' if differ else '') + '.']


def write_report(study: dict, meta: dict, preset: dict, path: str) -> dict:
    """results.md from the evaluated runs; returns the computed comparisons."""
    dense, arms = study['dense'], _by_arm(study['runs'])
    lines = [f'# Digits 16x16 study (preset `{meta["preset"]}`)', '',
             f'{meta["finetune_iters"]} finetuning iterations (teacher: '
             f'{meta["teacher_iters"]}); {meta["num_samples"]} samples (recovery curve: the '
             f'first {preset["curve_samples"]}), DDIM-{meta["sample_steps"]}. Proxy FID: '
             f'MMagic `FID` with a digit classifier (test accuracy '
             f'{meta["feature_accuracy"]:.3f}) as feature network. `raw` = the student as '
             'trained, `ema` = its WarmupExponentialMovingAverage. Runs finished: '
             f'{len(study["runs"])} of {meta["planned_runs"]} planned. Study wall time (this '
             f'invocation): {meta["wall_s"]:.0f} s.', '', '## Recovery', '']
    summary = recovery_summary(arms, dense)
    lines += _recovery_lines(summary) + _pairing_lines(arms)
    lines += ['', '## Every arm at the last iteration (mean +- std over seeds)', '']
    lines += _main_table(arms, dense)
    lines += ['', 'gap closed = (FID_dsm - FID_x) / (FID_dsm - FID_dense), per seed.', '']
    paired = {}
    if REFERENCE_ARM in arms:
        lines += [f'## Paired by seed: arm - {REFERENCE_ARM} (mean [95 % bootstrap CI over '
                  'seeds])', '']
        table, paired = _paired_table(arms, dense)
        lines += table + ['', 'Verdicts: `better`/`worse` than DSM+KD where the interval '
                          'excludes 0, else `no difference shown`.', '']
    budget, wallclock = equal_wallclock(arms, dense, preset)
    lines += [f'## Equal training wall-clock ({budget:.0f} s, the cheapest arm\'s run; raw '
              f'students on the curve\'s {preset["curve_samples"]} samples, teacher '
              f'{dense["curve"]["fid"]:.4g})', '',
              '| arm | iteration | proxy FID | SSIM to teacher | eps-MSE | recovered |',
              '|---|---|---|---|---|---|']
    for row in wallclock:
        if row['iter'] == 0:
            lines.append(f'| {row["arm"]} | no checkpoint within budget | - | - | - | no |')
        else:
            lines.append(f'| {row["arm"]} | {row["iter"]} | {row["fid"]:.4g} | '
                         f'{row["ssim"]:.3f} | {row["eps_mse"]:.4g} | '
                         f'{"yes" if row["recovered"] else "no"} |')
    lines += ['', 'Only rows marked recovered compare like with like.']
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return dict(recovery=summary, paired=paired, wallclock=dict(budget_s=budget,
                                                                rows=wallclock))


def _grid(samples: Tensor, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    n = int(np.ceil(np.sqrt(samples.shape[0])))
    c, h, w = samples.shape[1:]
    canvas = np.zeros((n * h, n * w, c), dtype=np.uint8)
    for i, img in enumerate(samples):
        r, col = divmod(i, n)
        canvas[r * h:(r + 1) * h, col * w:(col + 1) * w] = img.permute(1, 2, 0).numpy()
    plt.imsave(path, canvas)


def _style(arms: Sequence[str]) -> Dict[str, str]:
    import matplotlib.pyplot as plt
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    if len(arms) > len(colours):  # more arms than the default cycle: no colour twice
        colours = [plt.get_cmap('tab20')(i) for i in range(20)]
    return {arm: colours[i % len(colours)] for i, arm in enumerate(arms)}


def _recovery_plot(arms: dict, dense: dict, path: str) -> None:
    """Proxy FID and eps-MSE to the teacher vs iteration: every arm, raw and EMA."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colour = _style(list(arms))
    for arm, seeds in arms.items():
        steps = sorted({int(s) for r in seeds.values() for s in r['curve']})
        for model, line in LINE_STYLES.items():
            for ax, key in zip(axes, ('fid', 'eps_mse')):
                values = [np.mean([r['curve'][str(s)][model][key] for r in seeds.values()
                                   if str(s) in r['curve']]) for s in steps]
                ax.plot(steps, values, line, marker='o', ms=3, color=colour[arm],
                        label=f'{arm} ({model})')
    axes[0].axhline(dense['curve']['fid'], color='k', lw=1, label='dense teacher')
    axes[0].axhline(RECOVERED_FID_FACTOR * dense['curve']['fid'], color='k', lw=1, ls=':',
                    label=f'{RECOVERED_FID_FACTOR}x teacher')
    for ax, title in zip(axes, ('proxy FID (curve samples)', 'eps-MSE to the teacher')):
        ax.set_yscale('log')
        ax.set_xlabel('finetuning iteration')
        ax.set_title(title)
    axes[0].legend(handles=axes[0].lines[-2:], fontsize=7, loc='upper right')
    axes[1].legend(handles=axes[1].lines, fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ftle_plot(arms: dict, dense: dict, timesteps: Sequence[int], path: str) -> None:
    """The FTLE statistic per timestep: the teacher and every arm, raw and EMA."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    x = np.asarray(timesteps) + 1
    ax.plot(x, dense['final']['ftle'], 'k-', marker='s', lw=2, label='dense teacher')
    colour = _style(list(arms))
    for arm, seeds in arms.items():
        for model, line in LINE_STYLES.items():
            curve = np.mean([r['final'][model]['ftle'] for r in seeds.values()], axis=0)
            ax.plot(x, curve, line, marker='o', ms=3, color=colour[arm],
                    label=f'{arm} ({model})')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('timestep t + 1')
    ax.set_ylabel('mean ||J v||^2 (unit v)')
    ax.set_title('FTLE statistic per timestep')
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _figures(study: dict, preset: dict, work_dir: str) -> None:
    arms = _by_arm(study['runs'])
    _grid(torch.load(osp.join(work_dir, 'teacher_samples.pt'))[:64],
          osp.join(work_dir, 'grid_dense.png'))
    for arm, seeds in arms.items():
        run = seeds[min(seeds)]
        for model in MODELS:
            _grid(torch.load(osp.join(run['dir'], f'samples_{model}.pt')),
                  osp.join(work_dir, f'grid_{arm}_{model}.png'))
    _recovery_plot(arms, study['dense'], osp.join(work_dir, 'recovery.png'))
    _ftle_plot(arms, study['dense'], preset['ftle_timesteps'],
               osp.join(work_dir, 'ftle.png'))


# -------------------------------------------------------------------------- main
class Study:
    """One study in a work dir: trains the planned runs and reports on the finished ones.

    Every finished run is evaluated (raw student and EMA, cached in its folder) and the
    report is rewritten as soon as it finishes, so the work dir always holds the results
    of every run done so far.
    """

    def __init__(self, preset_name: str, work_dir: str, runs: List[Tuple[str, int]],
                 threads: int) -> None:
        self.preset_name, self.preset = preset_name, dict(PRESETS[preset_name])
        self.work_dir, self.runs, self.threads = work_dir, runs, threads
        self.feature_net = osp.join(work_dir, 'feature_net.pt')
        self.teacher_ckpt = osp.join(work_dir, 'teacher',
                                     f'iter_{self.preset["teacher_iters"]}.pth')
        self.start = time.time()
        self.evaluator: Optional[Evaluator] = None
        self.dense: Optional[dict] = None
        self.evaluated: Dict[Tuple[str, int], dict] = {}

    def run_dir(self, arm: str, seed: int) -> str:
        return osp.join(self.work_dir, f'{arm}_seed{seed}')

    def options(self, arm: str, seed: int) -> List[str]:
        """--cfg-options of a finetuning run: teacher, seed (pairs the arms), run length."""
        return [f'model.teacher_ckpt.filename={self.teacher_ckpt}', f'randomness.seed={seed}',
                f'model.per_sample_noise_seed={seed}',
                f'param_scheduler.T_max={self.preset["finetune_iters"]}', *ARMS[arm][1],
                *_size_options(self.preset, 'student')]

    def train_teacher(self) -> None:
        print(f'[study] 1/4 feature network -> {self.feature_net}', flush=True)
        if not osp.exists(osp.join(self.work_dir, 'feature_net.json')):
            accuracy = train_feature_net(self.feature_net, 16, self.preset['feature_iters'])
            with open(osp.join(self.work_dir, 'feature_net.json'), 'w') as f:
                json.dump(dict(test_accuracy=accuracy), f)
        print(f'[study] 2/4 dense teacher, {self.preset["teacher_iters"]} iterations',
              flush=True)
        _train('teacher_digits16.py', osp.join(self.work_dir, 'teacher'),
               self.preset['teacher_iters'],
               ['randomness.seed=0', *_size_options(self.preset, 'teacher')], self.threads,
               stream=True)

    def finetune_and_report(self, jobs: int) -> None:
        """Trains the runs ``jobs`` at a time; reports after each one that finishes."""
        print(f'[study] 3/4 {len(self.runs)} finetuning runs, {jobs} in parallel; each is '
              'evaluated when it finishes', flush=True)
        interval = checkpoint_interval(self.preset)

        def finetune(run: Tuple[str, int]) -> Tuple[str, int]:
            arm, seed = run
            run_dir = self.run_dir(arm, seed)
            print(f'[study]   start {arm} seed {seed} (log: {run_dir}/train_stdout.log)',
                  flush=True)
            wall = _train(ARMS[arm][0], run_dir, self.preset['finetune_iters'],
                          self.options(arm, seed), self.threads, stream=False,
                          ckpt_interval=interval)
            print(f'[study]   done  {arm} seed {seed} in {wall:.0f} s', flush=True)
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
            distiller = _load_distiller(
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
            print(f'[study]   {arm} seed {seed}: proxy FID raw {final["raw"]["fid"]:.3f} / '
                  f'EMA {final["ema"]["fid"]:.3f}, SSIM raw {final["raw"]["ssim"]:.3f}',
                  flush=True)
        return self.evaluated[(arm, seed)]

    def report(self) -> str:
        """Evaluates the finished runs and writes results.md/json, grids and plots."""
        finished = [(a, s) for a, s in self.runs
                    if _finished(self.run_dir(a, s), self.preset['finetune_iters'])]
        if not finished:
            raise RuntimeError(f'No finished finetuning run in {self.work_dir} to evaluate.')
        print(f'[study] 4/4 evaluating {len(finished)} of {len(self.runs)} runs (raw and '
              'EMA)', flush=True)
        study = dict(runs=[self.evaluate(arm, seed) for arm, seed in finished])
        study['dense'] = self.dense
        with open(osp.join(self.work_dir, 'feature_net.json')) as f:
            accuracy = json.load(f)['test_accuracy']
        preset = self.preset
        meta = dict(preset=self.preset_name, finetune_iters=preset['finetune_iters'],
                    teacher_iters=preset['teacher_iters'], num_samples=preset['num_samples'],
                    sample_steps=preset['sample_steps'], feature_accuracy=accuracy,
                    planned_runs=len(self.runs), wall_s=time.time() - self.start)
        table = osp.join(self.work_dir, 'results.md')
        comparisons = write_report(study, meta, preset, table)
        _figures(study, preset, self.work_dir)
        runs_json = [{k: v for k, v in r.items() if k != 'dir'} for r in study['runs']]
        with open(osp.join(self.work_dir, 'results.json'), 'w') as f:
            json.dump(dict(meta=meta, ftle_timesteps=list(preset['ftle_timesteps']),
                           dense=study['dense'], runs=runs_json, **comparisons), f, indent=1)
        return table


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    if args.jobs < 1:
        raise ValueError(f'--jobs must be >= 1, got {args.jobs}.')
    runs = planned_runs(PRESETS[args.preset], args.seeds, args.arms, levers=not args.no_levers)
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    threads = args.threads_per_run or max(1, (os.cpu_count() or 1) // args.jobs)
    torch.set_num_threads(threads)
    study = Study(args.preset, work_dir, runs, threads)
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
