"""A map's cells: runs indexed by (level, recipe), and paired differences to a reference.

Shared by the report and the follow-up planner (:mod:`.followup`).
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..digits.statistics import t_interval
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
    over the seeds (:func:`~..digits.statistics.t_interval`), the seeds, and whether every
    pair started from the same pruned channels."""
    ref = cells.get((level, reference_of(recipe)), {})
    arm = cells.get((level, recipe), {})
    seeds = sorted(set(ref) & set(arm))
    diffs = []
    for s in seeds:
        a, r = (x['final'][model]['samplers'][sampler][key] for x in (arm[s], ref[s]))
        diffs.append(100.0 * (a - r) / r if relative else a - r)
    mean, low, high = t_interval(diffs) if diffs else (np.nan, np.nan, np.nan)
    return dict(mean=mean, low=low, high=high, seeds=seeds, diffs=diffs,
                same_channels=all(arm[s]['record'] == ref[s]['record'] for s in seeds))
