"""The screen's second stage: which cells get more seeds, and the runs that adds.

Design (issue 24): every cell is screened with 3 paired seeds; a cell whose paired
difference to its reference has a 95 % interval that excludes 0, or nearly does, gets
seeds until it has at least :data:`FOLLOW_UP_SEEDS`, and more while 0 stays near an end of
the interval. "Nearly" is measured against the interval's width: 0 lies inside it, within
``margin`` of its width from the nearer end.
"""
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from .axes import REFERENCE
from .cells import HEATMAP_METRICS, paired, reference_of

FOLLOW_UP_SEEDS = 5  # seeds of a flagged cell after its first follow-up
MAX_SEEDS = 10  # no cell gets more
NEAR_MARGIN = 0.25  # 0 within this share of the interval's width from an end: "nearly"
SEED_STEP = 3  # seeds added to a flagged cell that already has FOLLOW_UP_SEEDS or more
# the metrics a cell is flagged on: proxy FID and SSIM to the teacher (sample MSE follows
# SSIM closely and would only flag the same cells)
FLAG_METRICS = ('fid', 'ssim')


class Flag(NamedTuple):
    """Why a cell gets more seeds.

    Attributes:
        level (str): The pruning level.
        recipe (str): The recipe (compared with its reference).
        sampler (str): The sampler whose interval flagged it (the first that did).
        metric (str): ``'fid'`` or ``'ssim'``.
        low (float): The interval's lower end.
        high (float): Its upper end.
        excludes_zero (bool): True when the interval excludes 0, False when it nearly does.
        seeds (int): Paired seeds so far.
        target (int): Seeds the cell is planned to have.
    """
    level: str
    recipe: str
    sampler: str
    metric: str
    low: float
    high: float
    excludes_zero: bool
    seeds: int
    target: int


def interval_flag(low: float, high: float, margin: float = NEAR_MARGIN) -> str:
    """``'excludes'`` when [low, high] excludes 0, ``'near'`` when 0 lies inside it within
    ``margin`` of its width from an end, else ``''`` (also for no interval)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return ''
    if low > 0 or high < 0:
        return 'excludes'
    if high > low and min(-low, high) <= margin * (high - low):
        return 'near'
    return ''


def target_seeds(seeds: int, flag: str) -> int:
    """Seeds a flagged cell should have: :data:`FOLLOW_UP_SEEDS` at its first follow-up;
    after that, :data:`SEED_STEP` more while 0 is still near the interval's end (an
    interval that excludes 0 with enough seeds is settled); never above
    :data:`MAX_SEEDS`."""
    if not flag:
        return seeds
    if seeds < FOLLOW_UP_SEEDS:
        return FOLLOW_UP_SEEDS
    if flag == 'near':
        return min(MAX_SEEDS, seeds + SEED_STEP)
    return seeds


def flagged_cells(cells: dict, levels: Sequence[str], recipes: Sequence[str],
                  samplers: Sequence[str], min_seeds: int = 3,
                  margin: float = NEAR_MARGIN) -> List[Flag]:
    """Cells whose paired difference (raw student, any sampler, proxy FID or SSIM) has an
    interval that excludes 0 or nearly does, with the seeds each should have.

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        levels, recipes, samplers: The map's axes.
        min_seeds (int): Paired seeds a cell needs before it is judged (the screen's).
            Defaults to 3.
        margin (float): "Nearly": see :func:`interval_flag`. Defaults to
            :data:`NEAR_MARGIN`.
    """
    relative = {key: rel for key, _, _, rel in HEATMAP_METRICS}
    flags = []
    for level in levels:
        for recipe in recipes:
            if reference_of(recipe) == recipe:  # the reference itself
                continue
            found, kinds = None, []
            for sampler in samplers:
                for metric in FLAG_METRICS:
                    cell = paired(cells, level, recipe, sampler, metric, relative[metric])
                    if len(cell['seeds']) < min_seeds:
                        continue
                    kind = interval_flag(cell['low'], cell['high'], margin)
                    kinds.append(kind)
                    # an interval that excludes 0 outranks one that nearly does
                    if kind and (found is None or (kind == 'excludes'
                                                   and not found.excludes_zero)):
                        n = len(cell['seeds'])
                        found = Flag(level, recipe, sampler, metric, cell['low'],
                                     cell['high'], kind == 'excludes', n, n)
            if found is not None:
                # the cell needs more seeds while any of its intervals is still near 0
                kind = 'near' if 'near' in kinds else 'excludes'
                flags.append(found._replace(target=target_seeds(found.seeds, kind)))
    return flags


def follow_up_runs(flags: Sequence[Flag], planned_seeds: Sequence[int]
                   ) -> List[Tuple[str, str, int]]:
    """(level, recipe, seed) runs that bring each flagged cell, and its reference at the
    same level (paired by seed), to its target; new seeds continue after the screen's.

    Args:
        flags (Sequence[Flag]): :func:`flagged_cells`.
        planned_seeds (Sequence[int]): The screen's seeds (new ones follow the largest).
    """
    first_new = max(planned_seeds) + 1
    runs: Dict[Tuple[str, str, int], None] = {}
    for flag in flags:
        extra = range(first_new, first_new + flag.target - len(planned_seeds))
        for seed in extra:
            runs[(flag.level, reference_of(flag.recipe), seed)] = None
            runs[(flag.level, flag.recipe, seed)] = None
    return sorted(runs, key=lambda run: (run[2], run[0], run[1] != REFERENCE))
