"""The study's figures: sample grids, the recovery curve and the FTLE statistic."""
import os.path as osp
from typing import Dict, Sequence

import numpy as np
import torch
from torch import Tensor

from ...utils.image_grid import labelled_panels, tile_grid
from .presets import ARMS, MODELS
from .statistics import RECOVERED_FID_FACTOR, by_arm

LINE_STYLES = dict(raw='-', ema='--')  # how each scored model is drawn in the plots
FIGURE_SAMPLES = 16  # samples per panel of the comparison figure (a 4 x 4 grid)
ARM_TITLES = {'dsm': 'DSM', 'dsm_kd': 'DSM+KD', 'dsm_kd_feat': 'DSM+KD+feature KD',
              'first_order': 'first-order',
              '2ndm_unscaled': '2ndM paper form', '2ndm': '2ndM sigma_t-scaled',
              '2ndm_k4': '2ndM K=4', '2ndm_full_batch': '2ndM whole batch',
              '2ndm_w1': '2ndM weight 1', '2ndm_w100': '2ndM weight 100',
              '2ndm_small_t': '2ndM t<100', '2ndm_unscaled_small_t': '2ndM paper, t<100'}


def _grid(samples: Tensor, path: str) -> None:
    """Saves uint8 samples (N, 3, H, W) as one square PNG grid, tiles upscaled (nearest)
    to at least 64 px."""
    n = int(np.ceil(np.sqrt(samples.shape[0])))
    _write_rgb(tile_grid(samples, n), path)


def _write_rgb(image: np.ndarray, path: str) -> None:
    """Writes an RGB uint8 (H, W, 3) picture as PNG (OpenCV writes BGR)."""
    import mmcv
    mmcv.imwrite(np.ascontiguousarray(image[..., ::-1]), path, auto_mkdir=True)


def arm_title(arm: str) -> str:
    """The arm's name as the README writes it (the key itself for unnamed arms)."""
    return ARM_TITLES.get(arm, arm)


def comparison_figure(study: dict, preset: dict, path: str, num: int = FIGURE_SAMPLES) -> None:
    """The study's figure: the teacher | each arm's raw student, from the same noise.

    Each panel is the first ``num`` samples of the arm's lowest seed (the teacher's from
    the same noises), with the arm's name, proxy FID and SSIM to the teacher under it;
    arms in the order of :data:`~.presets.ARMS`.

    Args:
        study (dict): ``dense`` and ``runs`` (each with ``arm``, ``seed``, ``dir``, and
            ``final['raw']`` scores), as :class:`~.study.Study` evaluates them; samples
            are read from ``teacher_samples.pt`` next to ``path`` and each run's
            ``samples_raw.pt``.
        preset (dict): The study's preset (iterations and DDIM steps for the title).
        path (str): The PNG to write.
        num (int): Samples per panel. Defaults to ``FIGURE_SAMPLES``.
    """
    dense = study['dense']['final']
    teacher = torch.load(osp.join(osp.dirname(path), 'teacher_samples.pt'))[:num]
    panels = [(teacher, ['dense teacher', f'proxy FID {dense["fid"]:.1f}', 'SSIM 1'])]
    seeds_used = set()
    arms = by_arm(study['runs'])
    order = list(ARMS)  # DSM, DSM+KD, first-order, both 2ndM forms, then the levers
    for arm in sorted(arms, key=lambda a: order.index(a) if a in order else len(order)):
        seeds = arms[arm]
        seed = min(seeds)
        seeds_used.add(seed)
        final = seeds[seed]['final']['raw']
        samples = torch.load(osp.join(seeds[seed]['dir'], 'samples_raw.pt'))[:num]
        panels.append((samples, [f'{arm_title(arm)} (raw)', f'proxy FID {final["fid"]:.1f}',
                                 f'SSIM {final["ssim"]:.3f}']))
    seed_text = ', '.join(str(s) for s in sorted(seeds_used))
    title = [f'The dense teacher and each arm\'s raw student after '
             f'{preset["finetune_iters"]} finetuning iterations (seed {seed_text}), '
             f'DDIM-{preset["sample_steps"]} from the same noise.',
             f'Proxy FID over all {preset["num_samples"]} samples; SSIM to the teacher\'s '
             'samples from the same noise.']
    n_cols = int(np.ceil(np.sqrt(num)))
    _write_rgb(labelled_panels(panels, n_cols, title), path)


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
    """``figure.png`` (:func:`comparison_figure`), ``grid_dense.png``,
    ``grid_<arm>_<raw|ema>.png`` (each arm's lowest seed), ``recovery.png`` and
    ``ftle.png`` in ``work_dir``."""
    arms = by_arm(study['runs'])
    comparison_figure(study, preset, osp.join(work_dir, 'figure.png'))
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
