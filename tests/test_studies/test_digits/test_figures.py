"""The study's pictures: upscaled grids and the labelled teacher | arms figure, written from
saved samples and scores (no training)."""
import os.path as osp

import mmcv
import numpy as np
import torch

from mmdiff_2ndm.studies.digits.figures import (FIGURE_SAMPLES, _grid, arm_title,
                                                comparison_figure)
from mmdiff_2ndm.utils.image_grid import (LINE_HEIGHT, PAD, PANEL_GAP, labelled_panels,
                                          text_block, text_width)

PRESET = dict(finetune_iters=300, sample_steps=20, num_samples=256)


def _samples(seed: int, n: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    grey = torch.randint(0, 256, (n, 1, 16, 16), generator=gen).to(torch.uint8)
    return torch.cat([grey, grey // 2, 255 - grey], dim=1)  # channels told apart


def _study(tmp_path) -> dict:
    torch.save(_samples(0), str(tmp_path / 'teacher_samples.pt'))
    runs = []
    for i, (arm, seed) in enumerate([('dsm_kd', 1), ('dsm_kd', 0), ('2ndm', 0)]):
        run_dir = tmp_path / f'{arm}_seed{seed}'
        run_dir.mkdir()
        torch.save(_samples(i + 1), str(run_dir / 'samples_raw.pt'))
        runs.append(dict(arm=arm, seed=seed, dir=str(run_dir),
                         final=dict(raw=dict(fid=100.0 + i + 0.04, ssim=0.9 + i / 100))))
    return dict(dense=dict(final=dict(fid=89.34)), runs=runs)


def _rgb(path: str) -> np.ndarray:
    return mmcv.imread(path, channel_order='rgb')


def test_grid_png_has_64_px_tiles_in_rgb(tmp_path):
    samples = _samples(5, n=9)
    path = str(tmp_path / 'grid.png')
    _grid(samples, path)
    grid = _rgb(path)
    assert grid.shape == (3 * (64 + PAD) + PAD, 3 * (64 + PAD) + PAD, 3)
    tile = grid[PAD + 66:PAD + 66 + 64, PAD:PAD + 64]  # sample 3: row 1, column 0
    expected = samples[3].permute(1, 2, 0).numpy().repeat(4, 0).repeat(4, 1)
    np.testing.assert_array_equal(tile, expected)


def test_comparison_figure_is_teacher_then_each_arms_raw_student_with_scores(tmp_path):
    study = _study(tmp_path)
    path = str(tmp_path / 'figure.png')
    comparison_figure(study, PRESET, path)
    figure = _rgb(path)

    # the panels in order: teacher, then each arm's lowest seed, with its own scores
    captions = [['dense teacher', 'proxy FID 89.3', 'SSIM 1'],
                ['DSM+KD (raw)', 'proxy FID 101.0', 'SSIM 0.910'],
                ['2ndM sigma_t-scaled (raw)', 'proxy FID 102.0', 'SSIM 0.920']]
    samples = [_samples(0), _samples(2), _samples(3)]
    assert arm_title('dsm_kd') == 'DSM+KD' and arm_title('new_arm') == 'new_arm'
    side = int(np.sqrt(FIGURE_SAMPLES))
    grid = side * (64 + PAD) + PAD
    width = max(grid, text_width([line for c in captions for line in c])) + PANEL_GAP
    title_h = 2 * LINE_HEIGHT
    assert figure.shape[0] == title_h + grid + 3 * LINE_HEIGHT
    assert figure.shape[1] >= 3 * width
    for p, (caption, panel) in enumerate(zip(captions, samples)):
        left = p * width + (width - grid) // 2
        for i in (0, FIGURE_SAMPLES - 1):
            r, c = divmod(i, side)
            top, col = title_h + PAD + r * (64 + PAD), left + PAD + c * (64 + PAD)
            np.testing.assert_array_equal(
                figure[top:top + 64, col:col + 64],
                panel[i].permute(1, 2, 0).numpy().repeat(4, 0).repeat(4, 1))
        np.testing.assert_array_equal(
            figure[title_h + grid:, p * width:(p + 1) * width], text_block(caption, width))
    # the same picture as the generic panels with these captions (title included)
    expected = labelled_panels([(s[:FIGURE_SAMPLES], c) for s, c in zip(samples, captions)],
                               side, ['x'])[LINE_HEIGHT:]
    np.testing.assert_array_equal(figure[title_h:, :expected.shape[1]], expected)
    assert osp.getsize(path) > 0
