"""Feature KD + the better 2ndM form: which form the screen names, and the runs it adds.

Issue 24 asks for "feature KD + the better 2ndM form" as a recipe of the map. The form is
named from the map's own screen at the level the combination runs at, by a rule fixed
before the runs it decides on are made:

1. only the screen's seeds count (follow-up seeds, added later, cannot change a form
   already named), and both forms (:data:`FORM_RECIPES`) need all of them, paired with
   DSM+KD, at the level, else no form is named;
2. each form scores, over every sampler and both flagged metrics (proxy FID, SSIM to the
   teacher), +1 for each 95 % interval that excludes 0 on the better side and -1 for each
   that excludes 0 on the worse side; the higher score is the better form;
3. on equal scores, the lower mean paired proxy-FID difference, in % of DSM+KD's and
   averaged over the samplers (DSM+KD's FIDs differ in scale between samplers), names it.

The combination is compared with feature KD alone (its reference): what the Jacobian
term adds on top of the feature term, paired by seed.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .axes import planned_runs
from .cells import HEATMAP_METRICS, paired
from .followup import FLAG_METRICS, interval_flag

# a 2ndM form (a recipe of the screen) -> the recipe adding it to feature KD
FORM_RECIPES: Dict[str, str] = {'2ndm': 'feat_2ndm', '2ndm_log': 'feat_2ndm_log'}


class FormScore(NamedTuple):
    """How one 2ndM form did against DSM+KD at one level.

    Attributes:
        recipe (str): The form's recipe (a key of :data:`FORM_RECIPES`).
        seeds (int): Paired seeds with DSM+KD.
        better (List[str]): ``'<sampler> <metric>'`` whose interval excludes 0 on the
            better side.
        worse (List[str]): The same on the worse side.
        fid_pct (float): Mean paired proxy-FID difference, % of DSM+KD's, averaged over
            the samplers (the tie-break; lower is better).
    """
    recipe: str
    seeds: int
    better: List[str]
    worse: List[str]
    fid_pct: float

    @property
    def score(self) -> int:
        """Better verdicts minus worse ones."""
        return len(self.better) - len(self.worse)


def score_form(cells: dict, level: str, recipe: str, samplers: Sequence[str]) -> FormScore:
    """The verdicts of one 2ndM form against DSM+KD at ``level`` (see the module
    docstring); ``cells`` is ``cells.index_runs`` of the evaluated runs."""
    lower_better = {key: low for key, _, low, _ in HEATMAP_METRICS}
    better, worse, fid_pct, seeds = [], [], [], None
    for sampler in samplers:
        for metric in FLAG_METRICS:
            cell = paired(cells, level, recipe, sampler, metric)
            seeds = len(cell['seeds']) if seeds is None else min(seeds, len(cell['seeds']))
            if interval_flag(cell['low'], cell['high']) == 'excludes':
                good = (cell['high'] < 0) == lower_better[metric]
                (better if good else worse).append(f'{sampler} {metric}')
        fid_pct.append(paired(cells, level, recipe, sampler, 'fid', relative=True)['mean'])
    return FormScore(recipe, seeds or 0, better, worse,
                     float(np.mean(fid_pct)) if fid_pct else float('nan'))


def better_form(cells: dict, level: str, samplers: Sequence[str], seeds: Sequence[int]
                ) -> Tuple[Optional[str], List[FormScore], str]:
    """Names the better 2ndM form at ``level`` by the module's rule.

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        level (str): The level the combination runs at.
        samplers (Sequence[str]): The map's samplers.
        seeds (Sequence[int]): The screen's seeds: only these count, and each form needs
            all of them.

    Returns:
        Tuple[Optional[str], List[FormScore], str]: The better form's recipe (None while
        it cannot be named), every form's score, and why that form (or, for None, which
        seeds are missing) in words.
    """
    screened = {key: {s: run for s, run in by_seed.items() if s in seeds}
                for key, by_seed in cells.items()}
    scores = [score_form(screened, level, recipe, samplers) for recipe in FORM_RECIPES]
    short = [s for s in scores if s.seeds < len(seeds)]
    if short:
        return None, scores, (', '.join(
            f'{s.recipe} has {s.seeds} of the screen\'s {len(seeds)} paired seeds'
            for s in short) + f' at {level}')
    top = max(s.score for s in scores)
    tied = [s for s in scores if s.score == top]
    if len(tied) == 1:
        return tied[0].recipe, scores, (f'{tied[0].recipe}: score {top:+d} (verdicts better '
                                        'minus worse), the highest')
    best = min(tied, key=lambda s: s.fid_pct)
    return best.recipe, scores, (
        f'{best.recipe}: scores tied at {top:+d}; the lower mean proxy-FID difference '
        f'({best.fid_pct:+.1f} % of DSM+KD\'s against ' +
        ', '.join(f'{s.fid_pct:+.1f} % for {s.recipe}' for s in tied if s is not best) + ')')


def plan_runs(preset: dict, cells: dict, levels: Optional[Sequence[str]] = None,
              recipes: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None
              ) -> Tuple[List[Tuple[str, str, int]], Dict[str, str]]:
    """A preset's runs (:func:`~.axes.planned_runs`) and, for a preset that combines
    (``'combine': True``) without recipes given, feature KD + the better 2ndM form at each
    of its levels where the screen names one.

    Args:
        preset (dict): A map preset (:func:`~.axes.map_preset`).
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        levels, recipes, seeds: Override the preset's (as ``planned_runs``). Defaults to
            None.

    Returns:
        Tuple[list, Dict[str, str]]: The (level, recipe, seed) runs, and for each level of
        a combining preset where no form is named yet, the reason.
    """
    runs = planned_runs(preset, levels, recipes, seeds)
    pending: Dict[str, str] = {}
    if preset.get('combine') and not recipes:
        for level in levels or preset['levels']:
            form, _, reason = better_form(cells, level, list(preset['samplers']),
                                          preset['seeds'])
            if form is None:
                pending[level] = reason
                continue
            runs += [(level, FORM_RECIPES[form], seed) for seed in seeds or preset['seeds']]
    return list(dict.fromkeys(runs)), pending


def form_section(cells: dict, levels: Sequence[str], samplers: Sequence[str],
                 seeds: Sequence[int]) -> List[str]:
    """The report's lines: each level's form scores on the screen's ``seeds`` and the
    form named (markdown)."""
    lines = ['## Feature KD + the better 2ndM form', '',
             'The form is named from the screen (its seeds only) at the level the '
             'combination runs at: each '
             'form scores +1 for every 95 % interval against DSM+KD (proxy FID and SSIM, '
             'every sampler) that excludes 0 on the better side, -1 on the worse side; equal '
             'scores go to the lower mean proxy-FID difference (% of DSM+KD\'s, averaged over '
             'the samplers). The combination is compared with feature KD alone, paired by '
             'seed (`--preset combine`).', '',
             '| level | form | seeds | better | worse | score | d proxy FID % | named |',
             '|---|---|---|---|---|---|---|---|']
    for level in levels:
        form, scores, reason = better_form(cells, level, samplers, seeds)
        for s in scores:
            lines.append(f'| {level} | {s.recipe} | {s.seeds} | {", ".join(s.better) or "-"} '
                         f'| {", ".join(s.worse) or "-"} | {s.score:+d} | {s.fid_pct:+.1f} | '
                         f'{"**yes**" if s.recipe == form else "-"} |')
        lines.append(f'| {level} | | | | | | | '
                     f'{reason if form else "not named yet: " + reason} |')
    return lines + ['']
