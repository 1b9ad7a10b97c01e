"""Sample grids a person can read: tiles upscaled by an integer factor (nearest, so every
pixel stays a sharp square of one value) to at least ``MIN_TILE`` pixels, with labels.

Used by the training grid of ``DistillerVisualizationHook`` (a row per model, labelled,
titled with the iteration) and the digits study's figures (a panel per model with its
scores under it). Images are RGB uint8; text is drawn with OpenCV.
"""
import math
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

MIN_TILE = 64  # pixels per tile side on screen
PAD = 2  # pixels between tiles
PANEL_GAP = 16  # pixels between the panels of a figure
BACKGROUND = 255  # white around tiles and text
TEXT_COLOUR = (0, 0, 0)
FONT_SCALE = 0.5
LINE_HEIGHT = 20  # pixels per line of text at FONT_SCALE
Images = Union[np.ndarray, torch.Tensor, Sequence[Union[np.ndarray, torch.Tensor]]]


def to_hwc_uint8(images: Images) -> np.ndarray:
    """Images as one uint8 array (N, H, W, C).

    Args:
        images (Tensor | np.ndarray | Sequence): (N, C, H, W) or a sequence of (C, H, W)
            tensors / arrays, values in [0, 255] (rounded and clipped here).

    Returns:
        np.ndarray: (N, H, W, C) uint8.
    """
    if isinstance(images, (list, tuple)):
        images = torch.stack([torch.as_tensor(np.asarray(i)) if not torch.is_tensor(i) else i
                              for i in images])
    images = torch.as_tensor(images)
    if images.ndim != 4:
        raise ValueError(f'Expected images (N, C, H, W), got shape {tuple(images.shape)}.')
    images = images.detach().cpu().float().round().clamp(0, 255).to(torch.uint8)
    return images.permute(0, 2, 3, 1).numpy()


def upscale_factor(tile_size: int, min_tile: int = MIN_TILE) -> int:
    """The smallest integer factor that makes a ``tile_size`` tile at least ``min_tile``
    pixels (1 for tiles already that large)."""
    return max(1, math.ceil(min_tile / max(1, tile_size)))


def tile_grid(images: Images, n_cols: int, min_tile: int = MIN_TILE,
              pad: int = PAD) -> np.ndarray:
    """Tiles images row by row, each upscaled (nearest) to at least ``min_tile`` pixels.

    Args:
        images (Images): (N, C, H, W) in [0, 255].
        n_cols (int): Tiles per row.
        min_tile (int): Minimum tile side in pixels. Defaults to ``MIN_TILE``.
        pad (int): Pixels of background between and around tiles. Defaults to ``PAD``.

    Returns:
        np.ndarray: (rows * (h + pad) + pad, n_cols * (w + pad) + pad, C) uint8, where
        ``h, w`` are the upscaled tile sizes.
    """
    tiles = to_hwc_uint8(images)
    n, h, w, c = tiles.shape
    scale = upscale_factor(min(h, w), min_tile)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    n_rows = math.ceil(n / n_cols)
    canvas = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, c), BACKGROUND,
                     dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, n_cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top:top + h, left:left + w] = tile
    return canvas


def text_block(lines: Sequence[str], width: int, align: str = 'center') -> np.ndarray:
    """White (len(lines) * LINE_HEIGHT, width, 3) uint8 with each line written in black."""
    import cv2
    block = np.full((len(lines) * LINE_HEIGHT, width, 3), BACKGROUND, dtype=np.uint8)
    for i, line in enumerate(lines):
        (text_w, _), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)
        x = max(0, (width - text_w) // 2) if align == 'center' else 4
        cv2.putText(block, line, (x, (i + 1) * LINE_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX,
                    FONT_SCALE, TEXT_COLOUR, 1, cv2.LINE_AA)
    return block


def text_width(lines: Sequence[str]) -> int:
    """Pixels the widest of ``lines`` needs, with a margin."""
    import cv2
    return max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)[0][0]
               for line in lines) + 8


def labelled_rows(rows: Sequence[Tuple[str, Images]], title: str,
                  min_tile: int = MIN_TILE) -> np.ndarray:
    """One row of tiles per entry, its label on the left, ``title`` on top.

    Args:
        rows (Sequence[tuple[str, Images]]): (label, images (N, C, H, W)), the same
            image size in every row (a shorter row is left blank at its end).
        title (str): The line above the grid (e.g. the iteration).
        min_tile (int): Minimum tile side in pixels. Defaults to ``MIN_TILE``.

    Returns:
        np.ndarray: The picture, (H, W, C) uint8.
    """
    if not rows:
        raise ValueError('labelled_rows needs at least one row.')
    n_cols = max(len(images) for _, images in rows)
    grids = [tile_grid(images, n_cols, min_tile) for _, images in rows]
    label_w = text_width([label for label, _ in rows])
    lines = []
    for (label, _), grid in zip(rows, grids):
        # the label centred on the row's tiles (grid rows carry PAD above and below)
        label_block = np.full((grid.shape[0], label_w, grid.shape[2]), BACKGROUND, np.uint8)
        text = text_block([label], label_w, align='left')
        top = max(0, (grid.shape[0] - text.shape[0]) // 2)
        label_block[top:top + text.shape[0]] = text[:grid.shape[0] - top, :, :grid.shape[2]]
        lines.append(np.concatenate([label_block, grid], axis=1))
    return _with_title(np.concatenate(lines, axis=0), [title])


def _with_title(body: np.ndarray, title: Sequence[str]) -> np.ndarray:
    """``body`` under the ``title`` lines (left-aligned), widened to fit them."""
    if not title:
        return body
    width = max(body.shape[1], text_width(title))
    if width > body.shape[1]:
        margin = np.full((body.shape[0], width - body.shape[1], body.shape[2]), BACKGROUND,
                         np.uint8)
        body = np.concatenate([body, margin], axis=1)
    head = text_block(title, width, align='left')[:, :, :body.shape[2]]
    return np.concatenate([head, body], axis=0)


def labelled_panels(panels: Sequence[Tuple[Images, Sequence[str]]], n_cols: int,
                    title: Sequence[str] = (), max_panels_per_row: int = 6,
                    min_tile: int = MIN_TILE) -> np.ndarray:
    """Panels side by side, each a grid of tiles with caption lines under it.

    Args:
        panels (Sequence[tuple[Images, Sequence[str]]]): (images (N, C, H, W), caption
            lines); every panel the same N and image size.
        n_cols (int): Tiles per row inside a panel.
        title (Sequence[str]): Lines above everything. Defaults to none.
        max_panels_per_row (int): Panels per row of the figure before wrapping.
            Defaults to 6.
        min_tile (int): Minimum tile side in pixels. Defaults to ``MIN_TILE``.

    Returns:
        np.ndarray: The picture, (H, W, C) uint8.
    """
    if not panels:
        raise ValueError('labelled_panels needs at least one panel.')
    grids = [tile_grid(images, n_cols, min_tile) for images, _ in panels]
    n_lines = max(len(caption) for _, caption in panels)
    width = max(max(g.shape[1] for g in grids), text_width(
        [line for _, caption in panels for line in caption])) + PANEL_GAP
    cells = []
    for grid, (_, caption) in zip(grids, panels):
        cell = np.full((grid.shape[0] + n_lines * LINE_HEIGHT, width, grid.shape[2]),
                       BACKGROUND, np.uint8)
        left = (width - grid.shape[1]) // 2
        cell[:grid.shape[0], left:left + grid.shape[1]] = grid
        cell[grid.shape[0]:grid.shape[0] + len(caption) * LINE_HEIGHT] = text_block(
            caption, width)[:, :, :grid.shape[2]]
        cells.append(cell)
    blank = np.full_like(cells[0], BACKGROUND)
    rows: List[np.ndarray] = []
    for start in range(0, len(cells), max_panels_per_row):
        row = cells[start:start + max_panels_per_row]
        row += [blank] * (min(len(cells), max_panels_per_row) - len(row))
        rows.append(np.concatenate(row, axis=1))
    return _with_title(np.concatenate(rows, axis=0), title)
