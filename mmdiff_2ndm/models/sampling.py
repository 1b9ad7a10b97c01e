"""Generic sampling pieces: the reverse-diffusion loop, the DDIM config of a training
scheduler, the latent codec of latent models, and the names of the models a run samples.

Used by the distiller's sampler, the pruning benchmark, the apis and the hooks alike.
"""
import inspect
from typing import Optional

import torch
from diffusers import SchedulerMixin
from torch import Tensor, nn

from .denoisers import run_denoiser, unwrap_denoiser

# MMagic's words for the raw student ('orig') and its EMA, and the teacher.
SAMPLE_MODELS = ('orig', 'ema', 'teacher')
STUDENT_MODELS = SAMPLE_MODELS[:2]  # what a student export or a metric may score
# The one mapping to the digits study's words: its reports, JSON keys and sample files
# (``final['raw']``, ``samples_raw.pt``) say 'raw' for 'orig'; committed results keep them.
STUDY_NAMES = dict(orig='raw', ema='ema')


def ddim_like(scheduler: SchedulerMixin) -> dict:
    """A DDIM scheduler config with ``scheduler``'s noise schedule."""
    from diffusers import DDIMScheduler
    accepted = inspect.signature(DDIMScheduler.__init__).parameters
    cfg = {k: v for k, v in dict(scheduler.config).items() if k in accepted}
    return dict(type='DDIMScheduler', **cfg)


@torch.no_grad()
def denoise(net: nn.Module, noise: Tensor, scheduler: SchedulerMixin, num_inference_steps: int,
            condition: Optional[Tensor] = None, uncondition: Optional[Tensor] = None,
            guidance_scale: float = 1.0) -> Tensor:
    """Runs a diffusers scheduler (e.g. DDIM) from ``noise`` to x_0.

    Args:
        net (nn.Module): Denoiser (possibly wrapped).
        noise (Tensor): Initial noise (B, C, H, W).
        scheduler (SchedulerMixin): A diffusers scheduler; its timesteps are set here.
        num_inference_steps (int): Sampling steps.
        condition (Tensor, optional): Labels (B,) or text states (B, L, D).
        uncondition (Tensor, optional): The null condition, for guidance.
        guidance_scale (float): Classifier-free guidance scale (1: off).

    Returns:
        Tensor: x_0 (B, C, H, W), in the denoiser's (pixel or latent) space.
    """
    scheduler.set_timesteps(num_inference_steps)
    x_t = noise * scheduler.init_noise_sigma
    guided = guidance_scale != 1.0 and uncondition is not None
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x_t, t)
        t_batch = t.to(noise.device).expand(x_t.shape[0])
        if guided:
            pred_c, pred_u = run_denoiser(
                net, torch.cat([x_in, x_in]), torch.cat([t_batch, t_batch]),
                torch.cat([condition, uncondition])).chunk(2)
            prediction = pred_u + guidance_scale * (pred_c - pred_u)
        else:
            prediction = run_denoiser(net, x_in, t_batch, condition)
        x_t = scheduler.step(prediction, t, x_t).prev_sample
    return x_t


class LatentCodec:
    """Images <-> the diffusion space: scaled latents of a frozen VAE, or the pixels.

    Args:
        vae (nn.Module, optional): ``AutoencoderKL`` or ``VQModel`` (possibly wrapped),
            owned by the distiller; None for pixel-space diffusion.
    """

    def __init__(self, vae: Optional[nn.Module] = None) -> None:
        self.vae = vae

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> latents (B, C, h, w) scaled by ``scaling_factor``."""
        if self.vae is None:
            return images
        vae = unwrap_denoiser(self.vae)
        encoded = vae.encode(images)
        if hasattr(encoded, 'latent_dist'):  # AutoencoderKL
            latents = encoded.latent_dist.sample()
        elif hasattr(encoded, 'latents'):
            # VQModel: the pre-quantisation latents, as LDM trains on (decode quantises).
            latents = encoded.latents
        else:
            raise TypeError(f'{type(vae).__name__}.encode returned {type(encoded).__name__}; '
                            'expected latent_dist (AutoencoderKL) or latents (VQModel).')
        return latents * vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents (B, C, h, w) -> images (B, 3, H, W)."""
        if self.vae is None:
            return latents
        vae = unwrap_denoiser(self.vae)
        return vae.decode(latents / vae.config.scaling_factor).sample
