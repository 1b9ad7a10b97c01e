"""How long the map's planned runs take, and whether one ends before a sitting does.

A map grows over sittings, and a sitting's work dir does not always outlive it: a run
still training when the sitting ends may be lost with its checkpoints. ``--until``
therefore starts only the runs whose estimated training and scoring end before a given
time, and leaves the others planned for a later sitting. The report's "To go" uses the
same estimate of a run's training.

A run's time per iteration is estimated from what the map has logged: the median logged
by the evaluated runs of its recipe at its level; else the reference's there (or at any
level) times the recipe's ratio to it measured back to back (``timing.json``; a recipe that
differs from a timed one only in length has that one's ratio, the reference's own is 1);
else its recipe's at any level. Scoring a run takes the median ``score_s`` its map's
evaluated runs logged, else :data:`SCORE_S_UNLOGGED`. The logged times were taken on a
machine shared with other trainings: a guide to plan sittings by, not a measurement.
"""
import datetime
from typing import Dict, List, Optional, Tuple

import numpy as np

from .axes import RECIPES, REFERENCE, run_iters

#: Seconds allowed for scoring a run where no evaluated run of the map has logged its
#: scoring time (``score_s``; runs scored before it was recorded have none). Meant to be
#: generous, so that ``--until`` errs toward leaving a run for a later sitting; once one
#: run of the map is scored, its logged time replaces it.
SCORE_S_UNLOGGED = 600.0


def training_step(recipe) -> tuple:
    """What one training iteration of a recipe does (not how many it trains)."""
    return recipe.config, recipe.options, recipe.batch_size, recipe.features


def timed_ratio(ratios: Dict[str, float], recipe: str) -> Optional[float]:
    """A recipe's time per iteration over its reference's, measured back to back
    (``ratios``: one level of ``timing.json``), or that of a timed recipe whose training
    iteration is the same (it differs only in length): None when neither was timed."""
    if recipe in ratios:
        return ratios[recipe]
    step = training_step(RECIPES[recipe])
    return next((ratio for name, ratio in ratios.items()
                 if name in RECIPES and training_step(RECIPES[name]) == step), None)


def recipe_ratios(timing: Optional[dict]) -> Dict[str, float]:
    """Each recipe's time per iteration over the reference's: measured back to back
    (``timing.json``, the first level that timed it), or a timed recipe's with the same
    training iteration; the reference's own is 1 without timing it."""
    ratios = {REFERENCE: 1.0}
    for measured in (timing or {}).get('levels', {}).values():
        times = measured['times']
        for recipe, t in times.items():
            ratios.setdefault(recipe, t['median'] / times[REFERENCE]['median'])
    for name in RECIPES:
        ratio = timed_ratio(ratios, name)
        if ratio is not None:
            ratios.setdefault(name, ratio)
    return ratios


def logged_s_per_iter(cells: dict, recipe: str, level: Optional[str] = None) -> List[float]:
    """The seconds per iteration logged by the evaluated runs of a recipe (at a level, or
    at any level when None)."""
    return [r['s_per_iter'] for (lv, rc), seeds in cells.items()
            if rc == recipe and level in (None, lv) for r in seeds.values()]


def s_per_iter(cells: dict, recipe: str, level: str,
               ratios: Dict[str, float]) -> Optional[float]:
    """A run's estimated seconds per training iteration (the module's rule); None when no
    evaluated run has logged its recipe's time and no timed ratio gives it.

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        recipe (str): The run's recipe.
        level (str): The run's level.
        ratios (Dict[str, float]): :func:`recipe_ratios`.
    """
    logged = logged_s_per_iter(cells, recipe, level)
    if logged:
        return float(np.median(logged))
    reference = (logged_s_per_iter(cells, REFERENCE, level)
                 or logged_s_per_iter(cells, REFERENCE))
    if recipe in ratios and reference:
        return float(np.median(reference)) * ratios[recipe]
    anywhere = logged_s_per_iter(cells, recipe)
    return float(np.median(anywhere)) if anywhere else None


def score_seconds(cells: dict) -> float:
    """Estimated seconds to score a run: the median ``score_s`` logged by the evaluated
    runs, else :data:`SCORE_S_UNLOGGED` (runs scored before it was logged have none)."""
    logged = [r['score_s'] for seeds in cells.values() for r in seeds.values()
              if 'score_s' in r]
    return float(np.median(logged)) if logged else SCORE_S_UNLOGGED


def run_seconds(cells: dict, run: Tuple[str, str, int], preset: dict, level_iters: int,
                ratios: Dict[str, float], trained: int = 0) -> Optional[Tuple[float, float]]:
    """A planned run's estimated training and scoring seconds.

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        run (Tuple[str, str, int]): (level, recipe, seed).
        preset (dict): The map's preset (batch size: a batch-2 recipe trains more
            iterations).
        level_iters (int): The run's level's run length.
        ratios (Dict[str, float]): :func:`recipe_ratios`.
        trained (int): Iterations an interrupted run already holds (it resumes there).
            Defaults to 0.

    Returns:
        Optional[Tuple[float, float]]: (training, scoring) seconds; None when the
        training time cannot be estimated (:func:`s_per_iter`).
    """
    level, recipe, _ = run
    per_iter = s_per_iter(cells, recipe, level, ratios)
    if per_iter is None:
        return None
    iters = run_iters(preset, recipe, level_iters)[1]
    return max(iters - trained, 0) * per_iter, score_seconds(cells)


def parse_until(text: str, now: datetime.datetime) -> datetime.datetime:
    """The end of a sitting given on the command line: ``HH:MM`` (its next occurrence
    after ``now``, so a sitting may run past midnight) or an ISO date and time
    (``2026-12-06T21:30``, ``2026-12-06 21:30``), both in local time.

    Raises:
        ValueError: If ``text`` is neither, or names a time already past.
    """
    try:
        clock = datetime.datetime.strptime(text, '%H:%M').time()
    except ValueError:
        clock = None
    if clock is not None:
        until = datetime.datetime.combine(now.date(), clock)
        return until if until > now else until + datetime.timedelta(days=1)
    try:
        until = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f'--until {text!r} is neither HH:MM nor an ISO date and time '
                         '(e.g. 21:30 or 2026-12-06T21:30).') from None
    if until.tzinfo is not None:  # an explicit offset: the same instant in local time
        until = until.astimezone().replace(tzinfo=None)
    if until <= now:
        raise ValueError(f'--until {text!r} is already past (now {now:%Y-%m-%d %H:%M}): '
                         'give the time the sitting ends.')
    return until
