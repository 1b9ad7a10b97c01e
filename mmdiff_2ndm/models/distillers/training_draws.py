"""The random draws of a training iteration: timesteps, noise, projection directions and
the label-dropout uniforms, from the global RNG or tied to each dataset item."""
from typing import List, NamedTuple, Optional

import torch
from torch import Tensor

from ..losses import unit_directions


class Draws(NamedTuple):
    """One iteration's draws for a batch of B.

    Attributes:
        timesteps (Tensor): (B,) long.
        noise (Tensor): (B, C, H, W), like x_0.
        directions (Tensor | None): Jacobian projection directions (K, B, C, H, W);
            None lets the loss draw them.
        drop_u (Tensor | None): Uniforms (B,) that decide label / prompt dropout; None
            lets the conditioner draw them.
    """
    timesteps: Tensor
    noise: Tensor
    directions: Optional[Tensor]
    drop_u: Optional[Tensor]


def mix_seed(seed: int, step: int, index: int, salt: int = 0) -> int:
    """A 63-bit generator seed from (seed, step, index, salt), well spread (SplitMix64)."""
    value = 0
    for part in (seed, step, index, salt):
        value = (value ^ (int(part) + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) \
            & 0xFFFFFFFFFFFFFFFF
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def antithetic(pair_timesteps: Tensor, is_second: Tensor, num_t: int) -> Tensor:
    """Antithetic timesteps: the first of a pair keeps its draw t, the second gets T-1-t.

    Pairing t with T-1-t gives every batch both ends of the schedule, which lowers the
    variance of the loss over timesteps.

    Args:
        pair_timesteps (Tensor): The draw of each sample's pair (B,), long.
        is_second (Tensor): Whether the sample is its pair's second (B,), bool.
        num_t (int): T, the number of training timesteps.

    Returns:
        Tensor: Timesteps (B,).
    """
    return torch.where(is_second, num_t - 1 - pair_timesteps, pair_timesteps)


class TrainingDraws:
    """Draws timesteps, noise and directions for the distiller's training batches.

    Args:
        num_train_timesteps (int): T of the training scheduler.
        antithetic_timesteps (bool): Pair samples as (t, T-1-t) (see :func:`antithetic`).
    """

    def __init__(self, num_train_timesteps: int, antithetic_timesteps: bool = True) -> None:
        self.num_t = int(num_train_timesteps)
        self.antithetic_timesteps = antithetic_timesteps

    def timesteps(self, batch: int, device) -> Tensor:
        """Uniform timesteps (B,) from the global RNG; pairs are batch halves (k, B/2 + k)."""
        if not self.antithetic_timesteps:
            return torch.randint(0, self.num_t, (batch,), device=device)
        num_pairs = (batch + 1) // 2
        pair_timesteps = torch.randint(0, self.num_t, (num_pairs,), device=device)
        position = torch.arange(batch, device=device)
        return antithetic(pair_timesteps[position % num_pairs], position >= num_pairs,
                          self.num_t)

    def per_sample(self, x_0: Tensor, sample_indices: List[int], seed: int, iteration: int,
                   num_projections: Optional[int] = None) -> Draws:
        """Draws tied to the dataset item: from a generator seeded by
        ``(seed, iteration, sample_idx)``, whatever the batch or rank holding the item.

        Antithetic pairs are items ``2k`` and ``2k + 1``, which share a draw.

        Args:
            x_0 (Tensor): The clean batch (B, C, H, W) (shape, device, dtype).
            sample_indices (list[int]): Dataset index of each sample (B).
            seed (int): ``per_sample_noise_seed``.
            iteration (int): The training iteration.
            num_projections (int, optional): K directions per sample, None for none.

        Returns:
            Draws: All four draws.
        """
        pair_timesteps, noises, directions, drop_u = [], [], [], []
        for idx in sample_indices:
            gen = torch.Generator().manual_seed(mix_seed(seed, iteration, idx))
            pair_gen = gen
            if self.antithetic_timesteps:
                pair_gen = torch.Generator().manual_seed(
                    mix_seed(seed, iteration, idx // 2, salt=1))
            pair_timesteps.append(int(torch.randint(0, self.num_t, (1, ),
                                                    generator=pair_gen)))
            drop_u.append(torch.rand((), generator=gen))
            noises.append(torch.randn(x_0.shape[1:], generator=gen))
            if num_projections is not None:  # float32 on the generator's device, like noise
                directions.append(
                    unit_directions((num_projections, *x_0.shape[1:]), noises[-1], gen))
        device = x_0.device
        timesteps = torch.tensor(pair_timesteps, device=device, dtype=torch.long)
        if self.antithetic_timesteps:
            is_second = torch.tensor([idx % 2 == 1 for idx in sample_indices], device=device)
            timesteps = antithetic(timesteps, is_second, self.num_t)
        return Draws(timesteps=timesteps,
                     noise=torch.stack(noises).to(device=device, dtype=x_0.dtype),
                     directions=torch.stack(directions, dim=1).to(device) if directions
                     else None,
                     drop_u=torch.stack(drop_u))
