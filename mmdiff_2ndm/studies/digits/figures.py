"""The study's figures: sample grids, the recovery curve and the FTLE statistic."""
import os.path as osp
from typing import Dict, Sequence

import numpy as np
import torch
from torch import Tensor

from .presets import MODELS
from .statistics import RECOVERED_FID_FACTOR, by_arm

LINE_STYLES = dict(raw='-', ema='--')  # how each scored model is drawn in the plots


def _grid(samples: Tensor, path: str) -> None:
    """Saves uint8 samples (N, 3, H, W) as one square PNG grid."""
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
    """A colour per arm, none used twice."""
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


def write_figures(study: dict, preset: dict, work_dir: str) -> None:
    """``grid_dense.png``, ``grid_<arm>_<raw|ema>.png`` (each arm's lowest seed),
    ``recovery.png`` and ``ftle.png`` in ``work_dir``."""
    arms = by_arm(study['runs'])
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
