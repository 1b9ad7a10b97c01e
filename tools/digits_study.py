"""Download-free evidence study on real data: scikit-learn digits at 16x16.

Drives ``tools/train.py`` with the configs in ``configs/digits/``:

1. trains the dense teacher DDPM (``teacher_digits16.py``: DSM from scratch);
2. prunes it 50 % (diff-pruning, ``DiffusionPruningHook``) and finetunes the student with
   each arm of the preset (DSM, DSM+KD, first-order Jacobian, 2ndM unscaled / sigma-scaled
   / weight sweep / t range + warm-up), per seed, ``--jobs`` runs in parallel;
3. evaluates the dense teacher and every student's EMA: proxy FID through MMagic's ``FID``
   metric (``inception_style='StyleGAN'``) with a small digit classifier trained here as
   the feature network (a download-free stand-in for Inception features, see below),
   its bootstrap spread, eps-MSE to the teacher on fixed noised inputs, SSIM / MSE of
   samples drawn from the same noise as the teacher's (``TeacherFidelity``'s code), and
   the FTLE statistic mean ||J v||^2 per timestep (forward-mode J v of the 2ndMatch loss);
4. writes ``results.md`` (mean +- std over seeds, gap closed
   ``(FID_dsm - FID_x) / (FID_dsm - FID_dense)``), ``results.json``, ``grid_<model>.png``
   and ``ftle.png`` into the work dir.

Note:
    The proxy FID compares 32-d penultimate features of a 3-layer CNN trained to classify
    the digits (test accuracy is logged in results.md). It ranks models by how digit-like
    and class-balanced their samples are, like Inception features do on natural images,
    but its values are not comparable with published FIDs.

Usage::

    python tools/digits_study.py --preset short --work-dir work_dirs/digits_demo --jobs 2
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
    '2ndm_unscaled': ('2ndm_digits16_unscaled.py', []),
    '2ndm': ('2ndm_digits16.py', []),  # sigma_t-scaled, w = 10, quarter batch
    '2ndm_w1': ('2ndm_digits16.py', ['model.losses.jacobian.loss_weight=1.0']),
    '2ndm_w100': ('2ndm_digits16.py', ['model.losses.jacobian.loss_weight=100.0']),
    '2ndm_trange_warmup': ('2ndm_digits16.py', ['model.jacobian_t_range=(0,500)',
                                                 'model.jacobian_warmup_iters=500']),
}

WALLCLOCK_POINTS = 4  # checkpoints per finetuning run

PRESETS = {
    # smoke test: seconds, not a measurement
    'tiny': dict(teacher_iters=4, finetune_iters=3, batch_size=8, widths=(8, 16),
                 norm_groups=4, arms=('dsm_kd', '2ndm'), seeds=(0,), num_samples=48,
                 sample_steps=3, eval_images=8, ftle_timesteps=(0, 10, 100, 999),
                 feature_iters=20, bootstrap=10, ema_momentum=0.05),
    # README command 1: ~10 minutes on 2 CPU cores; the teacher draws digit-like strokes
    # (its fast EMA tracks the weights), the students are far from converged
    'short': dict(teacher_iters=1000, finetune_iters=300, batch_size=32, widths=None,
                  norm_groups=None, arms=('dsm', 'dsm_kd', '2ndm'), seeds=(0,),
                  num_samples=256, sample_steps=20, eval_images=64,
                  ftle_timesteps=(0, 5, 10, 25, 50, 100, 250, 500, 999),
                  feature_iters=300, bootstrap=50, ema_momentum=0.05),
    # the README table: 5 arms x 3 seeds plus a one-seed sweep of the 2ndM weighting;
    # sized for ~2 h on 2 CPU cores (ETA printed by each run's MMEngine logger)
    'full': dict(teacher_iters=6000, finetune_iters=1500, batch_size=32, widths=None,
                 norm_groups=None, arms=('dsm', 'dsm_kd', 'first_order', '2ndm_unscaled', '2ndm'),
                 first_seed_arms=('2ndm_w1', '2ndm_w100', '2ndm_trange_warmup'),
                 seeds=(0, 1, 2), num_samples=1000, sample_steps=50, eval_images=256,
                 ftle_timesteps=(0, 2, 5, 10, 25, 50, 100, 250, 500, 750, 999),
                 feature_iters=1000, bootstrap=200, ema_momentum=1e-3),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='short')
    parser.add_argument('--work-dir', default='work_dirs/digits_study')
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='override the preset seeds')
    parser.add_argument('--arms', nargs='+', default=None, choices=sorted(ARMS),
                        help='override the preset arms (all run with every seed)')
    parser.add_argument('--jobs', type=int, default=2, help='training runs in parallel')
    parser.add_argument('--threads-per-run', type=int, default=None,
                        help='torch threads of each run (default: CPU cores // jobs; '
                        'oversubscribed cores slow CPU training down many times)')
    parser.add_argument('--eval-only', action='store_true',
                        help='reuse the feature network and checkpoints in --work-dir')
    return parser.parse_args(argv)


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
    """--cfg-options of the preset (batch, EMA, UNet size) for the teacher or a student."""
    # EMA momentum fits the run length: at decay 0.999, 300 iterations leave 74 % of the
    # initial weights in the average.
    opts = [f'train_dataloader.batch_size={preset["batch_size"]}',
            f'model.ema.momentum={preset["ema_momentum"]}']
    if preset['widths'] is not None:
        key = 'model.student' if role == 'teacher' else 'model.teacher'
        widths = ','.join(str(w) for w in preset['widths'])
        opts += [f'{key}.block_out_channels=({widths})',
                 f'{key}.norm_num_groups={preset["norm_groups"]}']
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
    if osp.exists(wall_file) and osp.exists(osp.join(work_dir, f'iter_{iters}.pth')):
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
    model = runner.model.eval()
    return model


def _to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] -> uint8 [0, 255]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class Evaluator:
    """Fixed inputs shared by every model: noise, noised test images, FTLE directions."""

    def __init__(self, preset: dict, feature_net: str, image_size: int = 16) -> None:
        from mmagic.evaluation.metrics import FrechetInceptionDistance
        gen = torch.Generator().manual_seed(1234)
        self.preset = preset
        self.noise = torch.randn(preset['num_samples'], 3, image_size, image_size,
                                 generator=gen)
        test_images, _ = _digits(image_size, 'test')
        x_0 = test_images[:preset['eval_images']].float() / 127.5 - 1.0
        self.x_0 = x_0
        self.eps = torch.randn(x_0.shape, generator=gen)
        self.v = torch.randn(x_0.shape, generator=gen)
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

    def samples(self, distiller, net: nn.Module) -> Tensor:
        """uint8 samples (N, 3, H, W) from the fixed noise with DDIM."""
        out = []
        for noise in self.noise.split(64):
            out.append(_to_uint8(distiller.sample(net, noise, None, None,
                                                  self.preset['sample_steps'])))
        return torch.cat(out)

    def proxy_fid(self, samples: Tensor) -> Tuple[float, float]:
        """MMagic FID of the samples with the proxy features, and its bootstrap std."""
        with torch.no_grad():
            feats = self.fid.forward_inception(samples)
        fid = self.fid.compute_metrics([feats])['fid']
        gen = torch.Generator().manual_seed(0)
        boot = [self.fid.compute_metrics(
            [feats[torch.randint(0, feats.shape[0], (feats.shape[0],), generator=gen)]])['fid']
            for _ in range(self.preset['bootstrap'])]
        return fid, float(np.std(boot))

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

    @torch.no_grad()
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

    def evaluate(self, distiller, net: nn.Module) -> dict:
        samples = self.samples(distiller, net)
        fid, fid_boot = self.proxy_fid(samples)
        if self.teacher_samples is None:
            self.teacher_samples = samples  # the dense teacher comes first
        ssim, sample_mse = self.fidelity(samples)
        eps_all, eps_small = self.eps_mse(distiller, net)
        return dict(fid=fid, fid_boot=fid_boot, ssim=ssim, sample_mse=sample_mse,
                    eps_mse=eps_all, eps_mse_t50=eps_small, ftle=self.ftle(distiller, net),
                    params=sum(p.numel() for p in net.parameters()),
                    samples=samples[:64])


# ----------------------------------------------------------------------- reports
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


def _ftle_plot(results: dict, timesteps: Sequence[int], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in results.items():
        curve = np.mean([r['ftle'] for r in runs], axis=0)
        ax.plot(np.asarray(timesteps) + 1, curve, marker='o', label=name)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('timestep t + 1')
    ax.set_ylabel('mean ||J v||^2 (unit v)')
    ax.set_title('FTLE statistic per timestep')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(values: Sequence[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f'{values[0]:.{digits}g}'
    return f'{np.mean(values):.{digits}g} +- {np.std(values):.2g}'


def write_table(results: dict, timing: dict, meta: dict, path: str,
                wallclock: Optional[dict] = None) -> None:
    """Markdown tables: mean +- std over seeds, gap closed vs DSM; at equal iterations
    and (``wallclock``: arm -> runs with their ``iter``) at equal training wall-clock."""
    dense = results['dense'][0]['fid']
    base = np.mean([r['fid'] for r in results['dsm']]) if 'dsm' in results else None
    lines = [f'# Digits 16x16 study (preset `{meta["preset"]}`)', '',
             f'Seeds: {meta["seeds"]}; {meta["finetune_iters"]} finetuning iterations '
             f'(teacher: {meta["teacher_iters"]}); {meta["num_samples"]} samples, '
             f'DDIM-{meta["sample_steps"]}. Proxy FID: MMagic `FID` with a digit classifier '
             f'(test accuracy {meta["feature_accuracy"]:.3f}) as feature network. '
             f'Study wall time (all steps): {meta["wall_s"]:.0f} s.', '',
             '| model | seeds | params | proxy FID | FID bootstrap std | gap closed '
             '| eps-MSE to teacher | eps-MSE t<50 | sample MSE to teacher | SSIM to teacher '
             '| s/iter | train wall s |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for name, runs in results.items():
        fids = [r['fid'] for r in runs]
        if base is None or name == 'dense' or base == dense:
            gap = '-'
        else:
            gap = _fmt([(base - f) / (base - dense) for f in fids], 3)
        t = timing.get(name, {})
        lines.append(
            f'| {name} | {len(runs)} | {runs[0]["params"]} | {_fmt(fids)} | '
            f'{_fmt([r["fid_boot"] for r in runs], 2)} | {gap} | '
            f'{_fmt([r["eps_mse"] for r in runs])} | {_fmt([r["eps_mse_t50"] for r in runs])} | '
            f'{_fmt([r["sample_mse"] for r in runs])} | {_fmt([r["ssim"] for r in runs])} | '
            f'{_fmt(t.get("s_per_iter", [float("nan")]), 3)} | '
            f'{_fmt(t.get("wall", [float("nan")]), 3)} |')
    lines += ['', 'gap closed = (FID_dsm - FID_x) / (FID_dsm - FID_dense), per seed; '
              'all rows at equal iterations.']
    if wallclock:
        lines += ['', f'## Equal training wall-clock ({meta["wallclock_budget_s"]:.0f} s: '
                  'the cheapest arm\'s full run; each arm at its last checkpoint within it)',
                  '', '| model | iterations | proxy FID | eps-MSE to teacher '
                  '| sample MSE to teacher | SSIM to teacher |', '|---|---|---|---|---|---|']
        for name, runs in wallclock.items():
            lines.append(
                f'| {name} | {_fmt([r["iter"] for r in runs])} | '
                f'{_fmt([r["fid"] for r in runs])} | {_fmt([r["eps_mse"] for r in runs])} | '
                f'{_fmt([r["sample_mse"] for r in runs])} | {_fmt([r["ssim"] for r in runs])} |')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


# -------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    preset = dict(PRESETS[args.preset])
    if args.seeds:
        preset['seeds'] = tuple(args.seeds)
    if args.arms:
        preset['arms'] = tuple(args.arms)
        preset['first_seed_arms'] = ()
    if args.jobs < 1:
        raise ValueError(f'--jobs must be >= 1, got {args.jobs}.')
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    start = time.time()
    threads = args.threads_per_run or max(1, (os.cpu_count() or 1) // args.jobs)
    torch.set_num_threads(threads)

    feature_net = osp.join(work_dir, 'feature_net.pt')
    teacher_dir = osp.join(work_dir, 'teacher')
    walls_file = osp.join(work_dir, 'train_walls.json')
    if not args.eval_only:
        print(f'[study] 1/4 feature network -> {feature_net}', flush=True)
        if not osp.exists(osp.join(work_dir, 'feature_net.json')):
            accuracy = train_feature_net(feature_net, 16, preset['feature_iters'])
            with open(osp.join(work_dir, 'feature_net.json'), 'w') as f:
                json.dump(dict(test_accuracy=accuracy), f)
        print(f'[study] 2/4 dense teacher, {preset["teacher_iters"]} iterations', flush=True)
        _train('teacher_digits16.py', teacher_dir, preset['teacher_iters'],
               ['randomness.seed=0', *_size_options(preset, 'teacher')],
               threads, stream=True)
    with open(osp.join(work_dir, 'feature_net.json')) as f:
        accuracy = json.load(f)['test_accuracy']
    teacher_ckpt = osp.join(teacher_dir, f'iter_{preset["teacher_iters"]}.pth')

    runs = [(arm, seed) for seed in preset['seeds'] for arm in preset['arms']]
    runs += [(arm, preset['seeds'][0]) for arm in preset.get('first_seed_arms', ())
             if arm not in preset['arms']]
    if not args.eval_only:
        print(f'[study] 3/4 {len(runs)} finetuning runs, {args.jobs} in parallel',
              flush=True)

    def options(arm: str, seed: int) -> List[str]:
        return [f'model.teacher_ckpt.filename={teacher_ckpt}', f'randomness.seed={seed}',
                *ARMS[arm][1], *_size_options(preset, 'student')]

    # intermediate checkpoints for the equal-wall-clock comparison
    ckpt_interval = max(1, preset['finetune_iters'] // WALLCLOCK_POINTS)

    def finetune(run: Tuple[str, int]) -> Tuple[str, int, float]:
        arm, seed = run
        run_dir = osp.join(work_dir, f'{arm}_seed{seed}')
        print(f'[study]   start {arm} seed {seed} (log: {run_dir}/train_stdout.log)',
              flush=True)
        wall = _train(ARMS[arm][0], run_dir, preset['finetune_iters'], options(arm, seed),
                      threads, stream=False, ckpt_interval=ckpt_interval)
        print(f'[study]   done  {arm} seed {seed} in {wall:.0f} s', flush=True)
        return arm, seed, wall

    if args.eval_only:
        with open(walls_file) as f:
            finished = [tuple(item) for item in json.load(f)]
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            finished = list(pool.map(finetune, runs))
        with open(walls_file, 'w') as f:
            json.dump(finished, f)

    print('[study] 4/4 evaluation', flush=True)
    evaluator = Evaluator(preset, feature_net)
    results: Dict[str, List[dict]] = {}
    timing: Dict[str, dict] = {}
    iters = preset['finetune_iters']
    for arm, seed, wall in finished:
        run_dir = osp.join(work_dir, f'{arm}_seed{seed}')
        distiller = _load_distiller(ARMS[arm][0], options(arm, seed),
                                    osp.join(run_dir, f'iter_{iters}.pth'),
                                    osp.join(run_dir, 'eval'))
        if 'dense' not in results:
            results['dense'] = [evaluator.evaluate(distiller, distiller.teacher)]
        net = distiller.student_ema.module
        results.setdefault(arm, []).append(evaluator.evaluate(distiller, net))
        timing.setdefault(arm, dict(wall=[], s_per_iter=[]))
        timing[arm]['wall'].append(wall)
        timing[arm]['s_per_iter'].append(_seconds_per_iter(run_dir))
        print(f'[study]   {arm} seed {seed}: proxy FID {results[arm][-1]["fid"]:.3f}',
              flush=True)

    # Equal wall-clock: every arm at its last checkpoint within the cheapest arm's budget.
    budget = min(np.mean(t['s_per_iter']) * iters for t in timing.values())
    wallclock: Dict[str, List[dict]] = {}
    for arm, seed, _ in finished:
        run_dir = osp.join(work_dir, f'{arm}_seed{seed}')
        s_per_iter = np.mean(timing[arm]['s_per_iter'])
        steps = max(ckpt_interval, int(budget / s_per_iter // ckpt_interval * ckpt_interval))
        steps = min(steps, iters)
        if steps == iters:
            scores = results[arm][[s for a, s, _ in finished if a == arm].index(seed)]
        else:
            distiller = _load_distiller(ARMS[arm][0], options(arm, seed),
                                        osp.join(run_dir, f'iter_{steps}.pth'),
                                        osp.join(run_dir, 'eval'))
            scores = evaluator.evaluate(distiller, distiller.student_ema.module)
        wallclock.setdefault(arm, []).append(dict(scores, iter=steps))
        print(f'[study]   equal wall-clock ({budget:.0f} s): {arm} seed {seed} at iteration '
              f'{steps}: proxy FID {scores["fid"]:.3f}', flush=True)

    meta = dict(preset=args.preset, seeds=list(preset['seeds']), wallclock_budget_s=budget,
                finetune_iters=iters, teacher_iters=preset['teacher_iters'],
                num_samples=preset['num_samples'], sample_steps=preset['sample_steps'],
                feature_accuracy=accuracy, wall_s=time.time() - start)
    for name, model_runs in results.items():
        _grid(model_runs[0]['samples'], osp.join(work_dir, f'grid_{name}.png'))
    _ftle_plot(results, preset['ftle_timesteps'], osp.join(work_dir, 'ftle.png'))
    table = osp.join(work_dir, 'results.md')
    write_table(results, timing, meta, table, wallclock)
    with open(osp.join(work_dir, 'results.json'), 'w') as f:
        json.dump(dict(meta=meta, timing=timing, ftle_timesteps=list(preset['ftle_timesteps']),
                       results={k: [{m: v for m, v in r.items() if m != 'samples'}
                                    for r in rs] for k, rs in results.items()},
                       wallclock={k: [{m: v for m, v in r.items() if m != 'samples'}
                                      for r in rs] for k, rs in wallclock.items()}),
                  f, indent=1)
    print(f'[study] done in {meta["wall_s"]:.0f} s. Table: {table}; sample grids: '
          f'{work_dir}/grid_*.png; FTLE plot: {work_dir}/ftle.png', flush=True)
    return table


if __name__ == '__main__':
    main()
