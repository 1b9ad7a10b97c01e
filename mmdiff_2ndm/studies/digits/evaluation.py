"""Scoring the teacher and every checkpoint of every run, cached in the run's folder.

Each model is scored on fixed inputs: proxy FID through MMagic's ``FID`` metric with the
digit feature network, its bootstrap spread, eps-MSE to the teacher on fixed noised test
images (all t and t < 50), SSIM / MSE of samples drawn from the same noise as the
teacher's (``TeacherFidelity``'s code), and at the last checkpoint the FTLE statistic
mean ||J v||^2 per timestep. Scores are cached in ``eval.json`` (``teacher_eval.json``)
under a fingerprint of the preset settings they depend on.
"""
import argparse
import hashlib
import json
import os.path as osp
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ...models.sampling import STUDY_NAMES
from ..json_files import read_json, write_json
from .feature_net import load_images
from .presets import ARMS, MODELS, checkpoint_iters
from .progress import progress
from .runs import CONFIG_DIR, seconds_per_iter


def run_config(config: str, options: List[str], work_dir: str):
    """A run's config as ``tools/train.py`` builds it: the file (a path, or a name in
    configs/digits/) with the run's --cfg-options merged, in ``work_dir``."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(config if osp.isabs(config) else osp.join(CONFIG_DIR, config))
    if options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--o', *options]).o)
    cfg.work_dir = work_dir
    return cfg


def build_runner(config: str, options: List[str], work_dir: str):
    """A Runner of the run's model alone (no data, optimizer or schedule): the teacher
    loaded from the run's ``teacher_ckpt``, the student as the config builds it."""
    from mmengine.runner import Runner
    cfg = run_config(config, options, work_dir)
    cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    return Runner.from_cfg(cfg)


def load_distiller(config: str, options: List[str], ckpt: str, work_dir: str):
    """Builds the run's model through a Runner and loads the checkpoint (pruned student
    rebuilt from its record by DiffusionPruningHook.after_load_checkpoint)."""
    runner = build_runner(config, options, work_dir)
    runner.load_checkpoint(ckpt)
    return runner.model.eval()


def record_hash(ckpt: str) -> str:
    """A short hash of the checkpoint's pruning record (which channels and, for a
    depth-pruned student, which blocks were kept)."""
    from mmdiff_2ndm.utils import safe_torch_load
    record = safe_torch_load(ckpt, map_location='cpu').get('meta', {}).get('pruning')
    kept = record and record.get('history')
    if record and record.get('depth'):  # width-only records hash as they always have
        kept = [kept, record['depth']]
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] -> uint8 [0, 255]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class Evaluator:
    """Fixed inputs shared by every model: noise, noised test images, FTLE directions.

    The first ``curve_samples`` of the ``num_samples`` sampling noises are the recovery
    curve's, so a final checkpoint's curve point is a prefix of its full evaluation.

    Args:
        preset (dict): The study's preset (sample counts, DDIM steps, FTLE timesteps).
        feature_net (str): TorchScript file of the proxy feature network.
        image_size (int): Side of the images. Defaults to 16.
        dataset (str): The data set (``feature_net.STUDY_DATASETS``) whose test images
            are noised and whose train images are FID's reference. Defaults to 'digits'.
    """

    def __init__(self, preset: dict, feature_net: str, image_size: int = 16,
                 dataset: str = 'digits') -> None:
        from mmagic.evaluation.metrics import FrechetInceptionDistance
        gen = torch.Generator().manual_seed(1234)
        self.preset = preset
        self.noise = torch.randn(preset['num_samples'], 3, image_size, image_size,
                                 generator=gen)
        test_images, test_labels = load_images(image_size, 'test', dataset)
        self.x_0 = test_images[:preset['eval_images']].float() / 127.5 - 1.0
        self.labels = test_labels[:preset['eval_images']]  # the x_0's, for conditional models
        self.eps = torch.randn(self.x_0.shape, generator=gen)
        self.v = torch.randn(self.x_0.shape, generator=gen)
        self.v = self.v / self.v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        self.fid = FrechetInceptionDistance(fake_nums=preset['num_samples'],
                                            inception_style='StyleGAN',
                                            inception_path=feature_net)
        real, _ = load_images(image_size, 'train', dataset)
        with torch.no_grad():
            real_feats = self.fid.forward_inception(real).numpy()
        self.fid.real_mean = real_feats.mean(0)
        self.fid.real_cov = np.cov(real_feats, rowvar=False)
        self.teacher_samples: Optional[Tensor] = None

    @staticmethod
    def condition(distiller, labels: Tensor) -> Optional[Tensor]:
        """The denoiser's condition for class ``labels``: None for an unconditional model
        (the labels are then ignored)."""
        if distiller.conditioner.num_classes is None:
            return None
        return distiller.conditioner.embed_labels(labels)

    @staticmethod
    def sample_labels(distiller, num: int) -> Tensor:
        """Classes of the first ``num`` fixed noises for a class-conditional model: noise
        i draws class i mod the number of classes (every class as often, the same for
        every model, without guidance)."""
        classes = distiller.conditioner.num_classes or 1
        return torch.arange(num) % classes

    def samples(self, distiller, net: nn.Module, num: int) -> Tensor:
        """uint8 samples (num, 3, H, W) from the first ``num`` fixed noises with DDIM
        (class-conditional models: :meth:`sample_labels`)."""
        out = []
        labels = self.sample_labels(distiller, num).split(128)
        with progress(total=num, desc='sampling', unit='img') as bar:
            for noise, label in zip(self.noise[:num].split(128), labels):
                out.append(to_uint8(distiller.sample(net, noise,
                                                     self.condition(distiller, label), None,
                                                     self.preset['sample_steps'])))
                bar.update(noise.shape[0])
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
        cond = self.condition(distiller, self.labels)
        for steps in (t, t_small):
            x_t = distiller.noise_scheduler.add_noise(self.x_0, self.eps, steps)
            diff = (run_denoiser(net, x_t, steps, cond)
                    - run_denoiser(distiller.teacher, x_t, steps, cond))
            errs.append(diff.pow(2).mean().item())
        return errs[0], errs[1]

    def ftle(self, distiller, net: nn.Module) -> List[float]:
        """Mean ||J v||^2 of the denoiser per timestep of ``ftle_timesteps``."""
        from mmdiff_2ndm.models.denoisers import run_denoiser
        from mmdiff_2ndm.models.losses.jacobian_products import jacobian_vector_product
        values = []
        cond = self.condition(distiller, self.labels)
        for step in progress(self.preset['ftle_timesteps'], desc='FTLE', unit='t'):
            t = torch.full((self.x_0.shape[0],), int(step), dtype=torch.long)
            x_t = distiller.noise_scheduler.add_noise(self.x_0, self.eps, t)
            _, jv = jacobian_vector_product(lambda x: run_denoiser(net, x, t, cond), x_t,
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


def fingerprint(preset: dict) -> str:
    """What a cached evaluation depends on besides the checkpoint."""
    keys = ('teacher_iters', 'finetune_iters', 'num_samples', 'curve_samples',
            'sample_steps', 'eval_images', 'ftle_timesteps', 'bootstrap', 'checkpoints')
    return json.dumps({k: preset[k] for k in keys}, sort_keys=True, default=list)


def _load_cache(path: str, key: str) -> dict:
    """The cached scores in ``path`` if they were computed under ``key``, else a new cache."""
    data = read_json(path)
    if data is not None and data.get('fingerprint') == key:
        return data
    return dict(fingerprint=key)


def evaluate_teacher(evaluator: Evaluator, distiller, work_dir: str, preset: dict) -> dict:
    """The dense teacher's scores (cached with its samples, which SSIM compares against)."""
    path, samples_path = osp.join(work_dir, 'teacher_eval.json'), osp.join(
        work_dir, 'teacher_samples.pt')
    data = _load_cache(path, fingerprint(preset))
    if 'final' in data and osp.exists(samples_path):
        evaluator.teacher_samples = torch.load(samples_path)
        return data
    scores, samples = evaluator.evaluate(distiller, distiller.teacher, full=True)
    torch.save(samples, samples_path)
    data.update(scores)
    write_json(data, path)
    return data


def evaluate_run(evaluator: Evaluator, arm: str, run_dir: str, options: List[str],
                 preset: dict) -> dict:
    """Raw student and EMA of one run at every checkpoint (cached in ``eval.json``)."""
    path = osp.join(run_dir, 'eval.json')
    data = _load_cache(path, fingerprint(preset))
    data.setdefault('curve', {})
    last = preset['finetune_iters']
    for step in progress(checkpoint_iters(preset), desc=osp.basename(run_dir),
                         unit='ckpt'):
        full = step == last
        if str(step) in data['curve'] and (not full or 'final' in data):
            continue
        ckpt = osp.join(run_dir, f'iter_{step}.pth')
        distiller = load_distiller(ARMS[arm][0], options, ckpt, osp.join(run_dir, 'eval'))
        for model in MODELS:
            net = (distiller.student if model == STUDY_NAMES['orig']
                   else distiller.student_ema.module)
            scores, samples = evaluator.evaluate(distiller, net, full)
            data['curve'].setdefault(str(step), {})[model] = scores['curve']
            if full:
                data.setdefault('final', {})[model] = scores['final']
                torch.save(samples[:64].clone(), osp.join(run_dir, f'samples_{model}.pt'))
        if full:
            data['record'] = record_hash(ckpt)
        write_json(data, path)
    with open(osp.join(run_dir, 'wall.json')) as f:
        data['wall'] = float(json.load(f)['wall_s'])
    data['s_per_iter'] = seconds_per_iter(run_dir)
    return data
