"""Dense vs pruned: parameters, MACs and sampling throughput measured side by side."""
import statistics
import time
from typing import Dict, List

import torch
from torch import nn

from mmdiff_2ndm.models.denoisers import example_denoiser_inputs
from mmdiff_2ndm.models.sampling import denoise
from .structural import count_params_macs


@torch.no_grad()
def sample_ddim(model: nn.Module, batch_size: int, num_steps: int, seed: int = 0) -> torch.Tensor:
    """Draws a batch with DDIM (eta 0) from pure noise; returns x_0 (B, C, H, W)."""
    from diffusers import DDIMScheduler
    inputs = example_denoiser_inputs(model, batch_size=batch_size, seed=seed)
    return denoise(model, inputs['x_t'], DDIMScheduler(num_train_timesteps=1000), num_steps,
                   inputs['condition'])


def benchmark_models(models: Dict[str, nn.Module],
                     batch_size: int = 16,
                     num_steps: int = 10,
                     repeats: int = 3,
                     with_macs: bool = True) -> Dict[str, dict]:
    """Params, MACs and DDIM sampling throughput of several denoisers in one run.

    Timed runs alternate between the models (dense, pruned, dense, ...) so that load
    changes on a shared machine hit all of them alike; the median is reported.

    Args:
        models (dict[str, nn.Module]): Name -> denoiser (e.g. ``dense``, ``pruned``).
        batch_size (int): Images per sampling run. Defaults to 16.
        num_steps (int): DDIM steps per run. Defaults to 10.
        repeats (int): Timed runs per model (after one warm-up). Defaults to 3.
        with_macs (bool): Count MACs (batch 1, one forward). Defaults to True.

    Returns:
        dict: Name -> ``params``, ``macs``, ``seconds`` (median per run),
        ``images_per_s``, and ``speedup`` relative to the first model.
    """
    for model in models.values():
        model.eval()
        sample_ddim(model, batch_size, 1)  # warm-up: allocator, kernels
    times: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            _synchronize(model)
            start = time.perf_counter()
            sample_ddim(model, batch_size, num_steps)
            _synchronize(model)  # CUDA launches are asynchronous
            times[name].append(time.perf_counter() - start)
    results = {}
    reference = None
    for name, model in models.items():
        seconds = statistics.median(times[name])
        reference = reference or seconds
        results[name] = dict(
            **count_params_macs(model, with_macs=with_macs), seconds=seconds,
            images_per_s=batch_size / seconds, speedup=reference / seconds)
    return results


def _synchronize(model: nn.Module) -> None:
    """Waits for queued GPU work of ``model``'s device."""
    device = next(model.parameters()).device
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def format_table(results: Dict[str, dict]) -> str:
    """A plain-text table of ``benchmark_models`` results."""
    lines = [f'{"model":10}{"params (M)":>12}{"MACs (G)":>10}{"s/run":>9}'
             f'{"img/s":>9}{"speedup":>9}']
    for name, row in results.items():
        macs = f'{row["macs"] / 1e9:10.3f}' if row['macs'] is not None else f'{"-":>10}'
        lines.append(f'{name:10}{row["params"] / 1e6:12.3f}{macs}{row["seconds"]:9.3f}'
                     f'{row["images_per_s"]:9.2f}{row["speedup"]:9.2f}')
    return '\n'.join(lines)
