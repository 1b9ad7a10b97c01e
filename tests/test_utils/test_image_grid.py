"""Grids a person can read: nearest upscaling to >= 64 px tiles, labels and titles."""
import numpy as np
import pytest
import torch

from mmdiff_2ndm.utils.image_grid import (BACKGROUND, LINE_HEIGHT, PAD, PANEL_GAP,
                                          labelled_panels, labelled_rows, text_block,
                                          text_width, tile_grid, upscale_factor)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen).to(torch.uint8)


def _upscaled(image: torch.Tensor, scale: int) -> np.ndarray:
    """(C, H, W) -> (H * scale, W * scale, C), each pixel a scale x scale square."""
    return image.permute(1, 2, 0).numpy().repeat(scale, 0).repeat(scale, 1)


@pytest.mark.parametrize('size, scale', [(16, 4), (8, 8), (32, 2), (64, 1), (100, 1)])
def test_tiles_are_upscaled_to_at_least_64_px(size, scale):
    assert upscale_factor(size) == scale
    images = _images(5, size)
    grid = tile_grid(images, n_cols=3)
    tile = size * scale
    assert grid.shape == (2 * (tile + PAD) + PAD, 3 * (tile + PAD) + PAD, 3)
    for i, image in enumerate(images):
        r, c = divmod(i, 3)
        top, left = PAD + r * (tile + PAD), PAD + c * (tile + PAD)
        np.testing.assert_array_equal(grid[top:top + tile, left:left + tile],
                                      _upscaled(image, scale))
    assert (grid[PAD + tile + PAD:, PAD + 2 * (tile + PAD):] == BACKGROUND).all()  # 6th cell


def test_float_images_are_rounded_and_clipped():
    images = torch.tensor([-3.0, 0.4, 254.6, 300.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    grid = tile_grid(images, n_cols=1, min_tile=2, pad=0)
    assert grid[:, :, 0].tolist() == [[0, 0], [255, 255]]


def test_labelled_rows_label_each_row_and_title_the_picture():
    rows = [('student', _images(3, 16, 1)), ('EMA', _images(3, 16, 2)),
            ('teacher', _images(2, 16, 3))]
    picture = labelled_rows(rows, 'iteration 7')
    row_h, grid_w = 64 + 2 * PAD, 3 * (64 + PAD) + PAD
    label_w = text_width(['student', 'EMA', 'teacher'])
    assert picture.shape == (LINE_HEIGHT + 3 * row_h, label_w + grid_w, 3)
    np.testing.assert_array_equal(picture[:LINE_HEIGHT],
                                  text_block(['iteration 7'], picture.shape[1], 'left'))
    for r, (label, images) in enumerate(rows):
        top = LINE_HEIGHT + r * row_h
        expected = text_block([label], label_w, 'left')
        offset = (row_h - LINE_HEIGHT) // 2
        np.testing.assert_array_equal(picture[top + offset:top + offset + LINE_HEIGHT,
                                              :label_w], expected)
        for c, image in enumerate(images):
            left = label_w + PAD + c * (64 + PAD)
            np.testing.assert_array_equal(picture[top + PAD:top + PAD + 64, left:left + 64],
                                          _upscaled(image, 4))
    assert (picture[LINE_HEIGHT + 2 * row_h:, label_w + 2 * (64 + PAD) + PAD:] ==
            BACKGROUND).all()  # the shorter teacher row is blank at its end


def test_labelled_panels_caption_each_panel_and_wrap():
    panels = [(_images(4, 16, i), [f'arm {i}', f'proxy FID {i}.0']) for i in range(3)]
    picture = labelled_panels(panels, n_cols=2, title=['a title'], max_panels_per_row=2)
    grid = 2 * (64 + PAD) + PAD
    width = max(grid, text_width([line for _, c in panels for line in c])) + PANEL_GAP
    assert picture.shape == (LINE_HEIGHT + 2 * (grid + 2 * LINE_HEIGHT), 2 * width, 3)
    for i, (images, caption) in enumerate(panels):
        top = LINE_HEIGHT + (i // 2) * (grid + 2 * LINE_HEIGHT)
        left = (i % 2) * width + (width - grid) // 2
        np.testing.assert_array_equal(
            picture[top + PAD:top + PAD + 64, left + PAD:left + PAD + 64],
            _upscaled(images[0], 4))
        np.testing.assert_array_equal(
            picture[top + grid:top + grid + 2 * LINE_HEIGHT, (i % 2) * width:(i % 2 + 1) * width],
            text_block(caption, width))
    assert (picture[LINE_HEIGHT + grid + 2 * LINE_HEIGHT:, width:] == BACKGROUND).all()


def test_a_title_wider_than_the_panels_widens_the_picture():
    title = ['x' * 200]
    picture = labelled_panels([(_images(1, 16), ['a'])], n_cols=1, title=title)
    assert picture.shape[1] == text_width(title) > 64 + 2 * PAD
