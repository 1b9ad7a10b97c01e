"""Scoring a checkpoint of the regime map with every sampler, through the digits study's
:class:`~mmdiff_2ndm.studies.digits.evaluation.Evaluator`.

Every sampler draws from the same fixed noise (the Evaluator's seed), and its fidelity
scores compare the student's samples with the *teacher's under the same sampler*: DDIM-10
student vs DDIM-10 teacher. eps-MSE to the teacher and the Jacobian statistics do not
depend on the sampler and are computed once.

Jacobian statistics (the mechanism, per timestep of ``ftle_timesteps``): on the
Evaluator's fixed noised test images x_t and unit directions v, the student's and the
teacher's ``||J v||^2`` per image; ``jv_rel_err`` = mean over images of
``| ||J_S v||^2 - ||J_D v||^2 | / ||J_D v||^2``, ``jv_log_ratio`` = mean of
``log ||J_S v||^2 - log ||J_D v||^2``.
"""
import copy
import os.path as osp
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..digits.evaluation import Evaluator
from ..digits.progress import progress

GRID_SAMPLES = 32  # samples kept per scored model for the figures
TEACHER_JV = 'teacher_jv.pt'  # the teacher's ||J v||^2, cached beside its samples


def sampler_preset(preset: dict, steps: int) -> dict:
    """The digits Evaluator's settings for one sampler of a regime-map preset."""
    return dict(num_samples=preset['num_samples'], curve_samples=preset['num_samples'],
                sample_steps=steps, eval_images=preset['eval_images'],
                ftle_timesteps=tuple(preset['ftle_timesteps']),
                bootstrap=preset['bootstrap'])


class MapScorer:
    """Scores the teacher once, then any student net, with every sampler.

    Args:
        preset (dict): A regime-map preset (``samplers``: name -> DDIM steps).
        feature_net (str): TorchScript file of the proxy feature network.
        cache_dir (str): Where the teacher's samples and Jacobian norms are cached.
        dataset (str): The data set of the fixed test images and of FID's reference
            (``digits.feature_net.STUDY_DATASETS``). Defaults to 'digits'.
    """

    def __init__(self, preset: dict, feature_net: str, cache_dir: str,
                 dataset: str = 'digits') -> None:
        self.preset = preset
        self.cache_dir = cache_dir
        self.evaluators = {name: Evaluator(sampler_preset(preset, steps), feature_net,
                                           dataset=dataset)
                           for name, steps in preset['samplers'].items()}
        self.first = next(iter(self.evaluators.values()))  # fixed inputs of eps-MSE / J v
        self.teacher_jv: Optional[Tensor] = None  # (T, N) ||J_D v||^2
        self.last_samples: Dict[str, Tensor] = {}  # sampler -> first samples of score()

    # ----------------------------------------------------------------- teacher
    def score_teacher(self, distiller, net: Optional[nn.Module] = None) -> dict:
        """The teacher's proxy FID per sampler and its ||J v||^2; its samples become the
        fidelity reference of each sampler (cached in ``cache_dir``).

        Args:
            distiller: The model whose sampler draws the samples.
            net (nn.Module, optional): The teacher. Defaults to None:
                ``distiller.teacher``.
        """
        net = distiller.teacher if net is None else net
        out: Dict[str, dict] = {}
        for name, ev in self.evaluators.items():
            path = osp.join(self.cache_dir, f'teacher_samples_{name}.pt')
            if osp.exists(path):
                samples = torch.load(path)
            else:
                samples = ev.samples(distiller, net, ev.preset['num_samples'])
                torch.save(samples, path)
            ev.teacher_samples = samples
            self.last_samples[name] = samples[:GRID_SAMPLES].clone()
            fid, boot = ev.proxy_fid(samples, self.preset['bootstrap'])
            out[name] = dict(fid=fid, fid_boot=boot, steps=ev.preset['sample_steps'])
        path = osp.join(self.cache_dir, TEACHER_JV)
        if osp.exists(path):
            self.teacher_jv = torch.load(path)
        else:
            self.teacher_jv = self.jv_norms(distiller, net)
            torch.save(self.teacher_jv, path)
        return dict(samplers=out, jv=self.teacher_jv.mean(1).tolist(),
                    params=sum(p.numel() for p in net.parameters()))

    # ----------------------------------------------------------------- students
    def jv_norms(self, distiller, net: nn.Module) -> Tensor:
        """||J v||^2 per timestep and image, (T, N), on the fixed x_t and v."""
        from mmdiff_2ndm.models.denoisers import run_denoiser
        from mmdiff_2ndm.models.losses.jacobian_products import jacobian_vector_product
        ev = self.first
        cond = ev.condition(distiller, ev.labels)  # the test images' classes
        rows = []
        for step in progress(self.preset['ftle_timesteps'], desc='J v', unit='t'):
            t = torch.full((ev.x_0.shape[0],), int(step), dtype=torch.long)
            x_t = distiller.noise_scheduler.add_noise(ev.x_0, ev.eps, t)
            with torch.no_grad():
                _, jv = jacobian_vector_product(lambda x: run_denoiser(net, x, t, cond), x_t,
                                                ev.v, 'student')
            rows.append(jv.pow(2).flatten(1).sum(1))
        return torch.stack(rows)

    def jacobian_stats(self, distiller, net: nn.Module) -> dict:
        """Mean ||J_S v||^2, relative error and mean log ratio to the teacher's, per t."""
        if self.teacher_jv is None:
            raise RuntimeError('Score the teacher first.')
        student = self.jv_norms(distiller, net)
        teacher = self.teacher_jv
        return dict(jv=student.mean(1).tolist(),
                    jv_rel_err=((student - teacher).abs() / teacher).mean(1).tolist(),
                    jv_log_ratio=(student.log() - teacher.log()).mean(1).tolist())

    def _sample_fid(self, distiller, net: nn.Module, name: str) -> Tuple[Tensor, dict]:
        """One sampler's samples of ``net`` (the first kept for the figures) and their
        proxy FID with its bootstrap std."""
        ev = self.evaluators[name]
        samples = ev.samples(distiller, net, ev.preset['num_samples'])
        self.last_samples[name] = samples[:GRID_SAMPLES].clone()
        fid, boot = ev.proxy_fid(samples, self.preset['bootstrap'])
        return samples, dict(fid=fid, fid_boot=boot)

    def score_fid(self, distiller, net: nn.Module) -> dict:
        """Proxy FID (+ bootstrap std) of any net per sampler, with no teacher to compare
        with: the teacher run's checkpoints."""
        return dict(samplers={name: self._sample_fid(distiller, net, name)[1]
                              for name in self.evaluators})

    def score(self, distiller, net: nn.Module, with_jacobian: bool = True) -> dict:
        """Scores of a student net: per sampler proxy FID (+ bootstrap std), SSIM and MSE
        to the teacher's samples from the same noise; eps-MSE to the teacher; optionally
        the Jacobian statistics."""
        samplers: Dict[str, dict] = {}
        for name, ev in self.evaluators.items():
            if ev.teacher_samples is None:
                raise RuntimeError('Score the teacher first.')
            samples, samplers[name] = self._sample_fid(distiller, net, name)
            ssim, mse = ev.fidelity(samples)
            samplers[name].update(ssim=ssim, sample_mse=mse)
        eps_all, eps_small = self.first.eps_mse(distiller, net)
        out = dict(samplers=samplers, eps_mse=eps_all, eps_mse_t50=eps_small,
                   params=sum(p.numel() for p in net.parameters()))
        if with_jacobian:
            out['jacobian'] = self.jacobian_stats(distiller, net)
        return out

    def score_pruned(self, distiller, record: dict) -> dict:
        """The freshly pruned student before finetuning (the teacher's copy replayed
        through the run's pruning record): Jacobian statistics and eps-MSE."""
        from mmdiff_2ndm.pruning import rebuild_pruned
        # torch-pruning traces the graph through autograd: the frozen teacher's copy must
        # require grad to be traced
        net = copy.deepcopy(distiller.teacher).requires_grad_(True)
        net = rebuild_pruned(net, record).eval().requires_grad_(False)
        eps_all, eps_small = self.first.eps_mse(distiller, net)
        return dict(eps_mse=eps_all, eps_mse_t50=eps_small,
                    params=sum(p.numel() for p in net.parameters()),
                    jacobian=self.jacobian_stats(distiller, net))
