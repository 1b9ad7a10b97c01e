"""What the training scheduler defines besides ``add_noise``: the regression target of
its parametrisation and the noise level of each timestep."""
from diffusers import SchedulerMixin
from torch import Tensor


def dsm_target(scheduler: SchedulerMixin, x_0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """The denoising target (B, C, H, W) of the scheduler's ``prediction_type``.

    Args:
        scheduler (SchedulerMixin): A diffusers training scheduler.
        x_0 (Tensor): Clean inputs (B, C, H, W).
        noise (Tensor): The noise added to them (B, C, H, W).
        timesteps (Tensor): (B,).

    Returns:
        Tensor: The noise (epsilon), the velocity (v_prediction) or x_0 (sample).
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type == 'epsilon':
        return noise
    if prediction_type == 'v_prediction':
        return scheduler.get_velocity(x_0, noise, timesteps)
    if prediction_type == 'sample':
        return x_0
    raise ValueError(f'Unknown prediction_type {prediction_type!r} of the noise '
                     "scheduler; use 'epsilon', 'v_prediction' or 'sample'.")


def noise_sigmas(scheduler: SchedulerMixin, timesteps: Tensor) -> Tensor:
    """sigma_t = sqrt(1 - alpha_bar_t) per sample, (B,) float32."""
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)
    return (1.0 - alphas_cumprod[timesteps]).sqrt().float()
