"""A map's cells: runs indexed by (level, recipe), and paired differences to a reference.

Shared by the report and the follow-up planner (:mod:`.followup`).
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..digits.statistics import holm, t_interval, t_test_p
from .axes import RECIPES, REFERENCE

# key, title, lower is better, relative (% of the reference's value, per seed)
HEATMAP_METRICS = (('fid', 'd proxy FID', True, False), ('ssim', 'd SSIM to teacher', False, False),
                   ('sample_mse', 'd sample MSE to teacher, %', True, True))


def index_runs(runs: List[dict]) -> Dict[Tuple[str, str], Dict[int, dict]]:
    """(level, recipe) -> seed -> run."""
    cells: Dict[Tuple[str, str], Dict[int, dict]] = {}
    for run in runs:
        cells.setdefault((run['level'], run['recipe']), {})[run['seed']] = run
    return cells


def reference_of(recipe: str) -> str:
    """The recipe a recipe is compared with."""
    return RECIPES[recipe].reference or REFERENCE


def with_references(recipes: Sequence[str]) -> List[str]:
    """The recipes and, before each, its chain of references down to :data:`REFERENCE`
    (``authors_b2`` -> ``dsm_kd_b2`` -> ``dsm_kd``), each once: what a timing must measure
    to state every recipe's ratio to its reference and to the map's reference."""
    ordered: List[str] = []
    for recipe in recipes:
        chain = [recipe]
        while chain[-1] != REFERENCE:
            chain.append(reference_of(chain[-1]))
        ordered += [name for name in reversed(chain) if name not in ordered]
    return ordered


def paired(cells: dict, level: str, recipe: str, sampler: str, key: str,
           relative: bool = False, model: str = 'raw') -> dict:
    """recipe - reference at one level and sampler, paired by seed: mean, 95 % t interval
    over the seeds (:func:`~..digits.statistics.t_interval`), the p-value of its t test
    (``p``, not adjusted for the other cells: see :func:`holm_adjusted`), the seeds, and
    whether every pair started from the same pruned channels."""
    ref = cells.get((level, reference_of(recipe)), {})
    arm = cells.get((level, recipe), {})
    seeds = sorted(set(ref) & set(arm))
    diffs = []
    for s in seeds:
        a, r = (x['final'][model]['samplers'][sampler][key] for x in (arm[s], ref[s]))
        diffs.append(100.0 * (a - r) / r if relative else a - r)
    mean, low, high = t_interval(diffs) if diffs else (np.nan, np.nan, np.nan)
    return dict(mean=mean, low=low, high=high, p=t_test_p(diffs), seeds=seeds, diffs=diffs,
                same_channels=all(arm[s]['record'] == ref[s]['record'] for s in seeds))


def holm_adjusted(cells: dict, levels: Sequence[str], recipes: Sequence[str], sampler: str,
                  key: str, relative: bool = False, model: str = 'raw'
                  ) -> Dict[Tuple[str, str], float]:
    """Holm-adjusted p-values of the paired differences of one heatmap panel.

    The family is what one panel shows: one metric under one sampler, every level and
    every recipe compared with its reference that has an interval (3 seeds or more). A
    95 % interval that excludes 0 is a verdict at 5 % for its own cell; over a panel of a
    dozen cells about one such verdict in twenty comparisons of equal recipes is expected
    by chance, and an adjusted p-value below 0.05 bounds the chance of any false verdict
    in the panel at 5 %. The family grows as cells land, so an adjusted p-value can rise.

    Args:
        cells (dict): :func:`index_runs` of the evaluated runs.
        levels (Sequence[str]): The panel's rows.
        recipes (Sequence[str]): The map's recipes (the reference, not compared with
            itself, is left out).
        sampler (str): The sampler.
        key (str): The metric (a key of :data:`HEATMAP_METRICS`).
        relative (bool): Whether the differences are in % of the reference's value.
            Defaults to False.
        model (str): ``'raw'`` or ``'ema'``. Defaults to ``'raw'``.

    Returns:
        Dict[Tuple[str, str], float]: (level, recipe) -> adjusted p-value; nan where the
        cell has no interval.
    """
    compared = [(level, recipe) for level in levels for recipe in recipes
                if reference_of(recipe) != recipe]
    p = [paired(cells, level, recipe, sampler, key, relative, model)['p']
         for level, recipe in compared]
    return dict(zip(compared, (float(x) for x in holm(p))))
