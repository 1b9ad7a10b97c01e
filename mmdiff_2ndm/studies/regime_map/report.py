"""The regime map's report: which runs are done, paired differences to DSM+KD, heatmaps.

Everything is read back from the results dir (``teacher.json``, ``plateau.json``,
``runs/<level>/<recipe>_seed<seed>.json``), so the report can be rewritten at any time, by
any sitting, from what is committed.
"""
import os
import os.path as osp
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..digits.statistics import CI_MIN_SEEDS, format_p, t_interval, verdict
from .axes import ARCHS, LEVELS, RECIPES, REFERENCE, map_preset, run_iters, run_name
from .cells import HEATMAP_METRICS, holm_adjusted, index_runs, paired, reference_of
from .combine import form_section
from .followup import (FOLLOW_UP_SEEDS, MAX_SEEDS, NEAR_MARGIN, SEED_STEP, flagged_cells,
                       follow_up_runs)
from .lengths import (LONGER_REFERENCE, MAX_LENGTH_FACTOR, NOISE_SDS, archived_runs,
                      checks_past_cap, deciding_seeds, length_cap, length_check,
                      lengths_section, undecided_check_runs)
from .parking import parked_runs
from .plateau import PLATEAU_TOL, plateau_iteration
from .schedule import recipe_ratios, s_per_iter, timed_ratio

JACOBIAN_T = (0, 10, 50, 250, 999)  # timesteps shown in the mechanism table
# results made against the previous teacher (the shipped 6000-iteration checkpoint, which
# the students beat), kept apart from the map's runs
ARCHIVE = 'archive_teacher6000'


#: How the report names each data set of ``digits.feature_net.STUDY_DATASETS``: its title
#: and the features of its proxy FID.
DATASET_TEXT = {
    'digits': ('digits 16x16', 'digit-classifier features, as the digits study'),
    'patches': ('scikit-image patches 16x16', 'features of a classifier of the picture a '
                'patch was cut from, trained on the train patches'),
}


def _excludes_zero(cell: dict) -> bool:
    return bool(np.isfinite(cell['low']) and (cell['low'] > 0 or cell['high'] < 0))


#: Opacity of a coloured cell whose interval holds 0: its colour still shows the mean
#: difference, paler, so that a large but uncertain difference does not outshine a verdict.
UNDECIDED_ALPHA = 0.35


def cell_colours(signed_means: np.ndarray, verdicts: np.ndarray, vmax: float) -> np.ndarray:
    """RGB colours of a heatmap panel's cells, composited on white.

    Args:
        signed_means (np.ndarray): Mean paired differences, positive = worse; NaN where a
            cell is not coloured (not run, or under 3 seeds).
        verdicts (np.ndarray): Where the cell's 95 % interval excludes 0.
        vmax (float): The difference drawn at full red or blue.

    Returns:
        np.ndarray: ``(rows, columns, 3)`` floats in [0, 1]: diverging red-blue at full
        strength for a verdict, at :data:`UNDECIDED_ALPHA` for a cell whose interval holds
        0, light grey where the mean is NaN.
    """
    import matplotlib
    cmap = matplotlib.colormaps['RdBu_r']
    finite = np.isfinite(signed_means)
    rgb = cmap(np.clip(0.5 + 0.5 * np.where(finite, signed_means, 0.0) / vmax, 0.0, 1.0))
    rgb = rgb[..., :3]
    alpha = np.where(verdicts, 1.0, UNDECIDED_ALPHA)[..., None]
    rgb = alpha * rgb + (1.0 - alpha) * 1.0
    rgb[~finite] = 0.88
    return rgb


def panel_cells(cells: dict, levels: Sequence[str], columns: Sequence[str], sampler: str,
                metric: tuple) -> Tuple[List[List[dict]], np.ndarray]:
    """The cells of one heatmap panel and the means that colour them.

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        levels (Sequence[str]): The rows.
        columns (Sequence[str]): The recipes, one a column (each against its reference).
        sampler (str): A key of :data:`SAMPLERS`.
        metric (tuple): An entry of :data:`HEATMAP_METRICS`.

    Returns:
        Tuple[List[List[dict]], np.ndarray]: :func:`paired` of every cell in the metric's
        own unit (the text and the verdict), and the mean difference that colours it: the
        same, except proxy FID in % of the reference's (its scale differs between levels:
        a 1-block DiT's is 3x a 2-block one's); NaN under 3 seeds, so that one seed's noise
        does not read as a verdict.
    """
    key, _, _, relative = metric
    table = [[paired(cells, lv, rc, sampler, key, relative) for rc in columns]
             for lv in levels]
    coloured_by = table if key != 'fid' else [
        [paired(cells, lv, rc, sampler, key, relative=True) for rc in columns]
        for lv in levels]
    means = np.array([[c['mean'] if len(c['seeds']) >= CI_MIN_SEEDS else np.nan
                       for c in row] for row in coloured_by], dtype=float)
    return table, means


def heatmap(cells: dict, teacher: dict, levels: Sequence[str], recipes: Sequence[str],
            sampler: str, path: str) -> None:
    """One PNG per sampler: a panel per metric of :data:`HEATMAP_METRICS`, rows = pruning
    levels, columns = recipes, colour = paired mean difference to the recipe's reference
    (:func:`panel_cells`; blue: better, red: worse), a paler colour where the 95 % interval
    holds 0 (:func:`cell_colours`), grey where no pair is done yet. Where it excludes 0 the
    cell gets '*' and a dashed frame, and '**' and a solid frame where it does so after
    Holm's adjustment for the panel's other cells too (:func:`~.cells.holm_adjusted`)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    columns = [r for r in recipes if r != REFERENCE]
    n = len(HEATMAP_METRICS)  # one panel per metric, stacked
    width = 2.8 + max(3.0, 1.4 * len(columns))
    fig, axes = plt.subplots(n, 1, figsize=(width, 1.0 + n * (1.0 + 0.85 * len(levels))),
                             squeeze=False)
    t_fid = teacher['samplers'][sampler]['fid'] if teacher else np.nan
    for k, (ax, metric) in enumerate(zip(axes[:, 0], HEATMAP_METRICS)):
        key, title, lower_better, relative = metric
        table, means = panel_cells(cells, levels, columns, sampler, metric)
        adjusted = holm_adjusted(cells, levels, columns, sampler, key, relative)
        sign = 1.0 if lower_better else -1.0  # colour: positive = worse
        vmax = 1.3 * np.nanmax(np.abs(means)) if np.isfinite(means).any() else 1.0
        vmax = vmax if vmax > 0 else 1.0
        verdicts = np.array([[_excludes_zero(c) for c in row] for row in table], dtype=bool)
        ax.imshow(cell_colours(sign * means, verdicts, vmax), aspect='auto')
        for i, row in enumerate(table):
            for j, c in enumerate(row):
                if not c['seeds']:
                    ax.text(j, i, 'not run', ha='center', va='center', fontsize=7,
                            color='0.35')
                    continue
                fmt = '{:+.1f}' if key == 'fid' or relative else '{:+.4f}'
                lines = [fmt.format(c['mean'])]
                if np.isfinite(c['low']):
                    lines.append('[' + fmt.format(c['low']) + ', ' + fmt.format(c['high']) + ']')
                lines.append(f'n={len(c["seeds"])}' + ('' if c['same_channels'] else ' (*ch)'))
                star = _excludes_zero(c)
                if len(c['seeds']) < CI_MIN_SEEDS:  # no interval yet: hatched
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1.0, 1.0, fill=False,
                                           hatch='///', edgecolor='0.55', linewidth=0))
                if star:
                    family_wise = adjusted[(levels[i], columns[j])] < 0.05
                    lines[0] += ' **' if family_wise else ' *'
                    ax.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False,
                                           edgecolor='black', linewidth=2.2,
                                           linestyle='solid' if family_wise else 'dashed'))
                dark = star and abs(means[i, j]) > 0.6 * vmax
                ax.text(j, i, '\n'.join(lines), ha='center', va='center', fontsize=7,
                        fontweight='bold' if star else 'normal',
                        color='white' if dark else 'black')
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels([_column_label(r) for r in columns] if k == n - 1 else [],
                           rotation=30, ha='right', fontsize=8)
        ax.set_yticks(range(len(levels)))
        ax.set_yticklabels(_level_labels(cells, levels, sampler, t_fid), fontsize=8)
        ax.set_title(title + (' (lower = better)' if lower_better else ' (higher = better)') +
                     ('; colour: % of the reference\'s' if key == 'fid' else ''), fontsize=9)
    legend = ' '.join([
        'Recipe minus its reference (DSM+KD unless the column names another), paired by seed;',
        f'raw students, {sampler}; teacher EMA proxy FID {t_fid:.1f}. Blue = better, red =',
        'worse; * and dashed frame: 95 % t interval over seeds excludes 0 (pale: it holds 0);',
        '** and solid frame: it does after Holm\'s adjustment over the panel\'s cells; (*ch):',
        'pruned channels differ; hatched grey: under 3 seeds (no interval, not coloured);',
        'grey: not run'])
    # wrapped to the figure's width (about 13 characters an inch at this size): a narrow
    # map (few recipes) would clip a longer line at both edges
    fig.suptitle(textwrap.fill(legend, int(13 * width)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _column_label(recipe: str) -> str:
    """A heatmap column's label: the recipe's, and its reference's where that is not
    DSM+KD."""
    label = RECIPES[recipe].label or recipe
    ref = reference_of(recipe)
    return label if ref == REFERENCE else f'{label}\n(- {RECIPES[ref].label or ref})'


def _level_labels(cells: dict, levels: Sequence[str], sampler: str,
                  t_fid: float) -> List[str]:
    """Row labels: the level, its parameter share and DSM+KD's proxy FID there."""
    labels = []
    for lv in levels:
        ref = cells.get((lv, REFERENCE), {})
        share = LEVELS[lv].params / ARCHS[LEVELS[lv].arch].params
        label = f'{lv}: {100.0 * share:.1f} % params'
        if ref:
            fid = np.mean([r['final']['raw']['samplers'][sampler]['fid'] for r in ref.values()])
            label += f'\nDSM+KD {fid:.1f} ({fid / t_fid:.2f}x teacher)'
        labels.append(label)
    return labels


def _fid_panel(ax, run: dict, label: str, references: Dict[str, Optional[dict]]) -> None:
    """A long run's proxy FID (every sampler) vs iteration, dotted lines at reference
    models' FID (label -> a ``teacher.json``), dashed at the run's plateau."""
    steps = sorted(int(s) for s in run['curve'])
    styles = iter((':', '-.', (0, (1, 3))))
    refs = [(name, ref, next(styles)) for name, ref in references.items() if ref]
    for sampler in run['curve'][str(steps[0])]['samplers']:
        fids = [run['curve'][str(s)]['samplers'][sampler]['fid'] for s in steps]
        line, = ax.plot(steps, fids, 'o-', label=f'{label}, {sampler}')
        for name, ref, style in refs:
            if sampler in ref['samplers']:
                ax.axhline(ref['samplers'][sampler]['fid'], color=line.get_color(), ls=style,
                           label=f'{name}, {sampler}')
    p = run['plateau']
    ax.axvline(p['iters'], color='black', ls='--',
               label=f'plateau: {p["iters"]} (tol {run["tol"]:.0%})'
               + ('' if p['reached'] else ', not reached'))
    ax.set_xlabel('iteration')
    ax.set_ylabel('proxy FID')
    ax.legend(fontsize=7)


def teacher_figure(curve: dict, archived: Optional[dict], path: str) -> None:
    """The map's teacher run: its EMA's proxy FID (every sampler) vs iteration, with the
    archived (previous) teacher's FID for comparison."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 1, figsize=(7, 3.8))
    _fid_panel(ax, curve, 'teacher EMA', {'previous teacher (6000 it, constant lr)': archived})
    ax.set_yscale('log')  # the late, small steps are what the plateau rule judges
    ax.set_title(f'Map\'s teacher: {curve["config"]}, seed {curve["seed"]}, cosine lr '
                 f'over {curve["iters"]} (EMA scored every {curve["interval"]})', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plateau_figure(plateau: dict, teacher: Optional[dict], path: str) -> None:
    """Proxy FID, SSIM to the teacher (every sampler) and eps-MSE of the plateau run vs
    iteration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    steps = sorted(int(s) for s in plateau['curve'])
    fig, (ax, ax3, ax2) = plt.subplots(1, 3, figsize=(14, 3.6))
    _fid_panel(ax, plateau, 'DSM+KD raw', {'teacher EMA': teacher})
    ax.set_title(f'{plateau["recipe"]} at {plateau["level"]}, seed {plateau["seed"]}, '
                 f'cosine lr over {plateau["iters"]}', fontsize=9)
    for name in plateau['curve'][str(steps[0])]['samplers']:
        ax3.plot(steps, [plateau['curve'][str(s)]['samplers'][name]['ssim'] for s in steps],
                 'o-', label=name)
    ax3.set_xlabel('iteration')
    ax3.set_ylabel('SSIM to the teacher (same noise, same sampler)')
    ax3.legend(fontsize=7)
    ax2.plot(steps, [plateau['curve'][str(s)]['eps_mse'] for s in steps], 'o-')
    ax2.axvline(plateau['eps_plateau']['iters'], color='black', ls='--',
                label=f'eps-MSE plateau: {plateau["eps_plateau"]["iters"]}')
    ax2.set_xlabel('iteration')
    ax2.set_ylabel('eps-MSE to the teacher')
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(mean: float, low: float, high: float, digits: int) -> str:
    if not np.isfinite(mean):
        return '-'
    text = f'{mean:+.{digits}f}'
    if np.isfinite(low):
        text += f' [{low:+.{digits}f}, {high:+.{digits}f}]'
    return text


def _mean_std(values: List[float], digits: int) -> str:
    if not values:
        return '-'
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return f'{np.mean(values):.{digits}f} +- {np.std(values):.{digits}f}'


def teacher_section(curve: Optional[dict], teacher: Optional[dict],
                    archived: Optional[dict], num_samples: int) -> List[str]:
    """The report's 'Teacher length' section: how the map's teacher was trained, its
    curve, whether the plateau rule was met inside the run."""
    lines = ['## Teacher length', '']
    if not curve:
        return lines + ['Not measured yet (the teacher run is trained and scored first).', '']
    p, steps = curve['plateau'], sorted(int(s) for s in curve['curve'])
    samplers = list(curve['curve'][str(steps[0])]['samplers'])
    lines += [
        'The map needs a teacher its students do not beat, so that the gap to it measures '
        f'recovery. One run of `{curve["config"]}` (seed {curve["seed"]}, batch '
        f'{curve["batch_size"]}, the config\'s lr 1e-3 cosine-annealed to {curve["lr_min"]:g} '
        'over the whole '
        f'{curve["iters"]} iterations), its EMA scored every {curve["interval"]} iterations '
        f'(proxy FID, {num_samples} samples, the map\'s fixed noises). Rule (as the student '
        f'plateau\'s): the first checkpoint after which the EMA\'s {curve["sampler"]} proxy '
        f'FID never falls more than {curve["tol"]:.0%} below its value there. Trained in '
        f'{curve["wall_s"] / 60:.1f} min ({curve["s_per_iter"]:.3f} s/iter).', '']
    if p['reached']:
        lines.append(f'**Plateau: {p["iters"]} iterations** (EMA proxy FID {p["fid"]:.1f}, '
                     f'lowest later {p["best"]:.1f}): the plateau is reached inside the run.')
    else:
        fids = [curve['curve'][str(s)]['samplers'][curve['sampler']]['fid'] for s in steps]
        drop = (f': the last {curve["interval"]} iterations still lowered it by '
                f'{1 - fids[-1] / fids[-2]:.0%} ({fids[-2]:.1f} -> {fids[-1]:.1f})'
                if len(fids) > 1 else '')
        lines.append(f'**Not plateaued inside the run**: only its last checkpoint '
                     f'({p["iters"]}) meets the rule{drop}, so the teacher may still improve '
                     'with a longer run; the map uses it as it is.')
    for name in samplers:
        if name == curve['sampler']:
            continue
        other = plateau_iteration(steps, [curve['curve'][str(s)]['samplers'][name]['fid']
                                          for s in steps], curve['tol'])
        lines.append(f'By the same rule on {name}: {other["iters"]} iterations (reached inside '
                     f'the run: {other["reached"]}).')
    lines += ['Mid-run checkpoints are at a higher lr than a run of their length would end '
              'with (the last steps include the lr\'s annealing), so the curve, if anything, '
              'overstates the length needed.', '']
    if teacher:
        fids = ' / '.join(f'{teacher["samplers"][n]["fid"]:.1f}' for n in samplers)
        text = (f'The map\'s teacher is the final (annealed) checkpoint, '
                f'{curve["iters"]} iterations: EMA proxy FID {fids} ({" / ".join(samplers)})')
        if archived:
            old = ' / '.join(f'{archived["samplers"][n]["fid"]:.1f}' for n in samplers)
            text += f' against the previous teacher\'s {old} (shipped, 6000 iterations)'
        lines += [text + '.', '']
    lines += ['| iteration | ' + ' | '.join(f'EMA proxy FID {n}' for n in samplers) + ' |',
              '|---|' + '---|' * len(samplers)]
    for step in steps:
        row = curve['curve'][str(step)]['samplers']
        lines.append(f'| {step} | ' + ' | '.join(
            f'{row[n]["fid"]:.1f} +- {row[n]["fid_boot"]:.1f}' for n in samplers) + ' |')
    return lines + ['', '(+- : bootstrap std over the samples.)', '',
                    '![teacher curve](teacher_curve.png)', '']


def gap_section(cells: dict, teacher: dict, levels: Sequence[str],
                samplers: Sequence[str]) -> List[str]:
    """The report's 'Gap' section: per level and sampler, whether DSM+KD at its plateau
    leaves a proxy-FID gap to the teacher (only there can a recipe show a gain in FID)."""
    lines = ['## Where the plateau leaves a gap to the teacher', '',
             'DSM+KD (raw, mean over its seeds) against the teacher\'s EMA. A gap: DSM+KD\'s '
             'proxy FID above the teacher\'s by more than twice the teacher\'s bootstrap std '
             '(the spread of its FID over resampled samples). Only cells with a gap can show a '
             'recipe closing it; in cells without one a recipe can still change fidelity to '
             'the teacher (SSIM).', '',
             '| level | sampler | DSM+KD proxy FID | teacher | x teacher | gap |',
             '|---|---|---|---|---|---|']
    rows = 0
    for lv in levels:
        ref = cells.get((lv, REFERENCE), {})
        if not ref:
            continue
        for name in samplers:
            fid = float(np.mean([r['final']['raw']['samplers'][name]['fid']
                                 for r in ref.values()]))
            t = teacher['samplers'][name]
            gap = fid - t['fid'] > 2 * t.get('fid_boot', 0.0)
            lines.append(f'| {lv} | {name} | {fid:.1f} ({len(ref)} seeds) | {t["fid"]:.1f} '
                         f'+- {t.get("fid_boot", float("nan")):.1f} | {fid / t["fid"]:.2f} | '
                         f'{"yes" if gap else "no"} |')
            rows += 1
    if not rows:
        lines = lines[:2] + ['No DSM+KD run is scored yet.']
    return lines + ['']


def at_reference_wall_clock(run: dict, ref: dict, sampler: str,
                            ratio: Optional[float] = None) -> Optional[dict]:
    """A run's raw scores at the last of its scored checkpoints (halfway, final) that it
    reaches within its reference's whole wall-clock (5 % slack for timing noise), with
    that checkpoint's iterations and whether it is the final one (its lr annealed); None
    when neither fits. Time per iteration: ``ratio`` times the reference's (measured back
    to back, :mod:`.timing`), or without it each run's own training log."""
    if ratio is None:
        budget, per_iter = 1.05 * ref['iters'] * ref['s_per_iter'], run['s_per_iter']
    else:
        budget, per_iter = 1.05 * ref['iters'], ratio
    points = [(run['iters'], run['final']['raw'], True)]
    if run.get('halfway'):
        points.append((run['halfway']['iters'], run['halfway']['raw'], False))
    for iters, scores, final in points:  # latest first
        if iters * per_iter <= budget:
            return dict(iters=iters, final=final, **scores['samplers'][sampler])
    return None


def _timed_elsewhere(level: str, measurement: dict) -> str:
    """'; <recipes> timed on <run>'s pruned student' for the recipes a timing measured on
    another run's checkpoint, theirs not being in the work dir
    (:meth:`RegimeMap.timing_checkpoint`); else ''."""
    seed = measurement['seed']
    elsewhere: Dict[str, List[str]] = {}
    for recipe, source in measurement.get('timed_on', {}).items():
        if source != run_name(level, recipe, seed):
            elsewhere.setdefault(source, []).append(recipe)
    return ''.join(f'; {", ".join(recipes)} timed on {source}\'s pruned student'
                   for source, recipes in elsewhere.items())


def cost_section(cells: dict, levels: Sequence[str], recipes: Sequence[str],
                 samplers: Sequence[str], timing: Optional[dict] = None,
                 flag: str = '') -> List[str]:
    """The report's 'Cost' section: each recipe's time per iteration against its
    reference's, and its scores at the reference's wall-clock (paired by seed).

    Args:
        timing (dict, optional): ``timing.json`` (:meth:`RegimeMap.measure_timing`): its
            ratios, measured back to back, are used at the levels it has; elsewhere the
            training logs' (marked "log"). Defaults to None.
        flag (str): The map's command-line flags, for the command that measures timing.
    """
    measured = (timing or {}).get('levels', {})
    lines = ['## Cost at equal wall-clock', '',
             'Time per iteration relative to the reference: measured back to back in one '
             'process, the recipes\' training steps in blocks of a few iterations, round '
             'robin (median over blocks; `python tools/regime_map.py --timing' + flag +
             '`, `timing.json`), where that was done (levels: ' +
             (', '.join(f'{lv} ({m["rounds"]} blocks of {m["block"]}, {m["threads"]} thread'
                        f'{"s" if m["threads"] > 1 else ""}, seed {m["seed"]} runs'
                        f'{_timed_elsewhere(lv, m)})'
                        for lv, m in measured.items()) or 'none yet') + '); elsewhere '
             'from the runs\' training logs ("log": the runs shared the 2-core machine with '
             'one to three other trainings, so those ratios say more about what else ran '
             'than about the recipe); a recipe that only trains shorter or longer than '
             'another has that one\'s ratio. At equal wall-clock: the recipe\'s raw scores '
             'at the last of its scored checkpoints (halfway, final) it reached within the '
             'reference\'s whole run, minus the reference\'s final scores; the reference is '
             'at its plateau, so training it for longer would not have lowered its FID by '
             'more than the plateau rule\'s 5 %. A halfway checkpoint is a full run\'s '
             'midpoint, its cosine lr still at half its peak: no stand-in for a run of that '
             'length, whose lr is annealed (against the maps\' archived shorter runs, same '
             'seeds, DSM+KD\'s halfway checkpoints scored worse on the digits U-Net and the '
             'DiT, better with DDIM-50 on the patches). The half-length recipes (`--preset '
             'budget`) train half the run length with their own lr annealed, at about the '
             'reference\'s wall-clock: their final checkpoint is the fair point.', '',
             '| level | recipe - reference | time / iter | sampler | seeds | checkpoint | '
             'd proxy FID | d SSIM |', '|---|---|---|---|---|---|---|---|']
    rows = 0
    for lv in levels:
        for rc in recipes:
            ref_cell, cell = cells.get((lv, reference_of(rc)), {}), cells.get((lv, rc), {})
            seeds = sorted(set(ref_cell) & set(cell)) if rc != reference_of(rc) else []
            if not seeds:
                continue
            timed = timed_ratio(measured.get(lv, {}).get('ratios', {}), rc)
            if timed is None:
                ratio = np.mean([cell[s]['s_per_iter'] / ref_cell[s]['s_per_iter']
                                 for s in seeds])
                ratio_text = f'{ratio:.2f}x (log)'
            else:
                ratio = timed
                ratio_text = f'{timed:.2f}x'
            length = RECIPES[rc].length / RECIPES[reference_of(rc)].length
            if length != 1:
                ratio_text += f'; {length:g}x as long: {length * ratio:.2f}x the wall-clock'
            for name in samplers:
                points = {s: at_reference_wall_clock(cell[s], ref_cell[s], name, timed)
                          for s in seeds}
                fits = [s for s in seeds if points[s] is not None]
                if not fits:
                    lines.append(f'| {lv} | {rc} - {reference_of(rc)} | {ratio_text} | {name} '
                                 f'| {len(seeds)} | none within the reference\'s time | - | - |')
                    rows += 1
                    continue
                ref_final = {s: ref_cell[s]['final']['raw']['samplers'][name] for s in fits}
                d_fid = [points[s]['fid'] - ref_final[s]['fid'] for s in fits]
                d_ssim = [points[s]['ssim'] - ref_final[s]['ssim'] for s in fits]
                iters = sorted({(points[s]['iters'], points[s]['final']) for s in fits})
                where = '/'.join(f'{i} ({"final" if final else "halfway, lr not annealed"})'
                                 for i, final in iters)
                lines.append(f'| {lv} | {rc} - {reference_of(rc)} | {ratio_text} | {name} | '
                             f'{len(fits)} | {where} | '
                             f'{_mean_std(d_fid, 1)} | {_mean_std(d_ssim, 4)} |')
                rows += 1
    if not rows:
        lines = lines[:2] + ['No recipe and its reference share a seed yet.']
    return lines + ['']


def same_length_section(cells: dict, levels: Sequence[str], recipes: Sequence[str],
                        samplers: Sequence[str], archived: Dict[str, List[dict]]) -> List[str]:
    """The shorter-than-the-level recipes (``--preset budget``) against their reference
    trained as many iterations, where a level's archives keep such runs (the level ran that
    length before it was lengthened): paired by seed, with t intervals.

    The cost section compares a half-length run with its reference's full run (about equal
    wall-clock); this compares it with a reference run of its own length and lr schedule,
    which separates what the added term does from what the shorter run does.

    Args:
        cells (dict): ``cells.index_runs`` of the map's runs.
        levels, recipes, samplers: The map's axes.
        archived (Dict[str, List[dict]]): Per level, its archived runs
            (:func:`~.lengths.archived_runs`).
    """
    rows = []
    for lv in levels:
        for rc in recipes:
            ref = reference_of(rc)
            cell = cells.get((lv, rc), {})
            if RECIPES[rc].length >= 1 or not cell:
                continue
            # the reference at that length: its own run, or its longer run of a shorter level
            names = (ref, LONGER_REFERENCE) if ref == REFERENCE else (ref, )
            twins: Dict[int, dict] = {}
            for data in archived.get(lv, []):
                seed = data.get('seed')
                if (data.get('recipe') in names and seed in cell and seed not in twins
                        and data.get('iters') == cell[seed]['iters']):
                    twins[seed] = data
            seeds = sorted(twins)
            for name in samplers if seeds else ():
                mine = [cell[s]['final']['raw']['samplers'][name] for s in seeds]
                theirs = [twins[s]['final']['raw']['samplers'][name] for s in seeds]
                d_fid = t_interval([a['fid'] - b['fid'] for a, b in zip(mine, theirs)])
                d_ssim = t_interval([a['ssim'] - b['ssim'] for a, b in zip(mine, theirs)])
                rows.append(f'| {lv} | {rc} - {ref} | {cell[seeds[0]]["iters"]} | {name} | '
                            f'{len(seeds)} | {np.mean([a["fid"] for a in mine]):.1f} | '
                            f'{np.mean([b["fid"] for b in theirs]):.1f} | '
                            f'{_fmt(*d_fid, 1)} | {_fmt(*d_ssim, 4)} |')
    if not rows:
        return []
    return ['## Shorter recipes against their reference at the same length', '',
            'Each half-length run (`--preset budget`) against its reference trained as many '
            'iterations, its lr annealed over them too: the level\'s archived runs from when '
            'that was its length, paired by seed (raw students; mean [95 % t interval]). The '
            'cost table compares the same runs with the reference\'s full run, at about equal '
            'wall-clock; this one tells what the added term does from what the shorter run '
            'does.', '',
            '| level | recipe - reference | iterations | sampler | seeds | recipe proxy FID | '
            'reference proxy FID | d proxy FID | d SSIM |', '|---|---|---|---|---|---|---|---|---|',
            *rows, '']


def follow_up_section(cells: dict, levels: Sequence[str], recipes: Sequence[str],
                      samplers: Sequence[str], preset: dict, flag: str) -> List[str]:
    """The report's 'Follow-up' section: the cells that get more seeds and why
    (:mod:`.followup`), and the command that runs them."""
    flags = flagged_cells(cells, levels, recipes, samplers, len(preset['seeds']))
    lines = ['## Follow-up: cells that get more seeds', '',
             f'Rule: a cell screened with {len(preset["seeds"])} paired seeds whose 95 % '
             'interval (raw student, proxy FID or SSIM, any sampler) excludes 0, or holds 0 '
             f'within {NEAR_MARGIN:.0%} of its width from an end, gets seeds up to '
             f'{FOLLOW_UP_SEEDS}, then {SEED_STEP} more at a time while 0 stays near an end '
             f'(at most {MAX_SEEDS}); its reference gets the same seeds (paired).', '']
    if not flags:
        return lines + ['No cell is flagged by the runs so far.', '']
    todo = [run for run in follow_up_runs(flags, preset['seeds'])
            if run[2] not in cells.get(run[:2], {})]
    lines += ['| level | recipe - reference | flagged by | interval | excludes 0 | seeds | '
              'target |', '|---|---|---|---|---|---|---|']
    for f in flags:
        lines.append(f'| {f.level} | {f.recipe} - {reference_of(f.recipe)} | {f.sampler} '
                     f'{f.metric} | [{f.low:.4g}, {f.high:.4g}] | '
                     f'{"yes" if f.excludes_zero else "nearly"} | {f.seeds} | {f.target} |')
    lines += ['', f'{len(todo)} follow-up runs to go: `python tools/regime_map.py --follow-up '
              f'--jobs 1 --threads-per-run 1{flag}`.', '']
    return lines


#: the terms a recipe adds to DSM+KD (``loss_<name>`` in the training log)
ADDED_TERMS = ('loss_jacobian', 'loss_feat')


def loss_terms_section(cells: dict, levels: Sequence[str],
                       recipes: Sequence[str]) -> List[str]:
    """The report's 'Loss terms' section: each recipe's logged terms (weighted, as they
    enter the loss) at the end of its runs, and the share of the terms it adds to DSM+KD
    at the first log and at the end (mean over seeds; :func:`~..digits.runs.loss_terms`)."""
    rows = []
    for lv in levels:
        for rc in recipes:
            logged = [run['loss_terms'] for run in cells.get((lv, rc), {}).values()
                      if run.get('loss_terms')]
            if logged:
                rows.append((lv, rc, logged))
    lines = ['## Loss terms (training logs: weighted, as they enter the loss; mean over seeds)',
             '']
    if not rows:
        return lines + ['No run with its training log\'s loss terms yet.', '']
    names = sorted({k for *_, logged in rows for t in logged for k in t['last']
                    if k not in ('loss', 'grad_norm')},
                   key=lambda k: (k not in ('loss_dsm', 'loss_kd'), k))
    lines += ['Over the last 10 % of each run\'s logged iterations; "added share": the terms '
              'the recipe adds to DSM+KD (' + ', '.join(f'`{k}`' for k in ADDED_TERMS) +
              ') over the whole loss, at the first logged iteration -> at the end; "grad '
              'norm": the whole gradient\'s norm, first -> end. A small share of the loss '
              'can still carry a large gradient (a Jacobian term\'s gradient goes through '
              'the student\'s second derivatives): where the gradient norm stays that of '
              'DSM+KD, the added term steers little of the update.', '',
              '| level | recipe | seeds | loss | ' + ' | '.join(f'`{k}`' for k in names) +
              ' | added share | grad norm |', '|---|---|---|---|' + '---|' * len(names) +
              '---|---|']
    for lv, rc, logged in rows:
        def mean(key, when='last'):
            values = [t[when][key] for t in logged if key in t[when]]
            return float(np.mean(values)) if values else None

        cols = [mean(k) for k in names]
        added = [k for k in ADDED_TERMS if mean(k) is not None]
        share = '-' if not added else ' -> '.join(
            f'{100 * sum(mean(k, when) for k in added) / mean("loss", when):.2g} %'
            for when in ('first', 'last'))
        grad = '-' if mean('grad_norm') is None else \
            f'{mean("grad_norm", "first"):.3g} -> {mean("grad_norm"):.3g}'
        lines.append(f'| {lv} | {rc} | {len(logged)} | {mean("loss"):.4g} | ' +
                     ' | '.join('-' if c is None else f'{c:.3g}' for c in cols) +
                     f' | {share} | {grad} |')
    return lines + ['']


def mechanism_paired_section(cells: dict, levels: Sequence[str], recipes: Sequence[str],
                             timesteps: Sequence[int]) -> List[str]:
    """The report's lines: after finetuning, each recipe's relative error of
    ``||J_S v||^2`` against its reference's (% of the reference's, paired by seed: the
    errors shrink by orders of magnitude from t = 0 to t = 999), at the timesteps of
    :data:`JACOBIAN_T` that were measured (``timesteps``: the preset's ``ftle_timesteps``):
    whether a recipe moves the student's Jacobian beyond what the seeds spread."""
    shown = [t for t in JACOBIAN_T if t in timesteps]
    lines = ['## Mechanism, paired: relative error after finetuning, recipe vs reference', '',
             '(recipe - reference) / reference of the relative error above, in %, per seed. '
             'Negative: the recipe leaves the student\'s `||J_S v||^2` closer to the '
             'teacher\'s than its reference does (same seeds, so the same pruned student, '
             'x_t and v); mean [95 % t interval over seeds], none under 3 seeds.', '',
             '| level | recipe - reference | seeds | ' + ' | '.join(f't={t}' for t in shown) +
             ' |', '|---|---|---|' + '---|' * len(shown)]
    rows = 0
    for level in levels:
        for recipe in recipes:
            ref = reference_of(recipe)
            arm, base = cells.get((level, recipe), {}), cells.get((level, ref), {})
            seeds = sorted(set(arm) & set(base))
            if recipe == ref or not seeds:
                continue
            row = []
            for t in shown:
                i = list(timesteps).index(t)
                errors = [(arm[s]['final']['raw']['jacobian']['jv_rel_err'][i],
                           base[s]['final']['raw']['jacobian']['jv_rel_err'][i]) for s in seeds]
                row.append(_fmt(*t_interval([100.0 * (a - r) / r for a, r in errors]), 1))
            lines.append(f'| {level} | {recipe} - {ref} | {len(seeds)} | ' + ' | '.join(row) +
                         ' |')
            rows += 1
    return lines + ([''] if rows else ['', 'No paired runs yet.', ''])


def superseded_lines(results_dir: str) -> List[str]:
    """Links to the results dir's other archives (``archive_*/README.md``, kept out of
    the map: runs of a recipe since redefined), each with its README's title."""
    lines = []
    for name in sorted(os.listdir(results_dir)) if osp.isdir(results_dir) else []:
        readme = osp.join(results_dir, name, 'README.md')
        if name.startswith('archive_') and name != ARCHIVE and osp.exists(readme):
            with open(readme) as f:
                title = f.readline().strip().lstrip('# ')
            lines.append(f'* Superseded, kept out of the map: [`{name}/`]({name}/) - {title}')
    return lines + [''] if lines else []


def effective_options(options: Sequence[str]) -> List[str]:
    """``key=value`` cfg-options as they take effect: a later value of a key replaces an
    earlier one (as ``--cfg-options`` merges them), in the order the keys first appear.

    A recipe's feature options are followed by its architecture's (the DiT points the
    feature term at its own blocks), so its list names some keys twice.
    """
    merged: Dict[str, str] = {}
    for option in options:
        key, _, value = option.partition('=')
        merged[key] = value
    return [f'{key}={value}' for key, value in merged.items()]


def length_section(cells: dict, levels: Sequence[str], samplers: Sequence[str],
                   tol: float = PLATEAU_TOL, flag: str = '',
                   cap: Optional[int] = None) -> List[str]:
    """The report's "Is the run long enough?": per level and sampler, the length check
    (:func:`~.lengths.length_check`: DSM+KD trained :data:`~.lengths.LONGER_REFERENCE`'s
    times as long against DSM+KD, raw proxy FID on the seeds both have).

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        levels (Sequence[str]): The map's levels.
        samplers (Sequence[str]): The map's samplers.
        tol (float): The plateau rule's tolerance. Defaults to :data:`PLATEAU_TOL`.
        flag (str): The tool's options that name this map (``' --arch dit'``), repeated in
            the command the section gives. Defaults to ''.
        cap (int, optional): The map's longest run length (:func:`~.lengths.length_cap`).
            Defaults to None: no cap.

    Returns:
        List[str]: Markdown lines; none where no level has both runs.
    """
    length = RECIPES[LONGER_REFERENCE].length
    rows, short, undecided, capped = [], [], [], []
    commands = {}  # the seeds an undecided check asks for -> its levels (one command each)
    for lv in levels:
        for name in samplers:
            check = length_check(cells, lv, name, tol, cap)
            if check is None:
                continue
            if check['capped']:
                verdict = ('longer run needed' if check['longer_needed'] else 'undecided') + (
                    f', past the cap of {cap}: the level keeps its length')
            elif check['longer_needed']:
                verdict = (f'longer run needed (lower by more than {tol:.0%} and '
                           f'{NOISE_SDS:g} spreads)')
            elif check['undecided'] and deciding_seeds(check) == check['seeds']:
                verdict = (f'undecided at the check\'s limit of {MAX_SEEDS} seeds: the level '
                           'keeps its length')
            elif check['undecided']:
                verdict = (f'undecided (lower by more than {tol:.0%}, within {NOISE_SDS:g} '
                           'spreads: more seeds)')
            else:
                verdict = 'long enough'
            if name == samplers[0] and lv not in short + undecided + capped:
                if check['capped']:
                    capped.append(lv)
                elif check['longer_needed']:
                    short.append(lv)
                elif check['undecided'] and deciding_seeds(check) != check['seeds']:
                    undecided.append(lv)
                    commands.setdefault(' '.join(map(str, deciding_seeds(check))), []).append(lv)
            seeds_interval = ('-' if np.isnan(check['change_low']) else
                              f'[{100 * check["change_low"]:+.1f}, '
                              f'{100 * check["change_high"]:+.1f}] %')
            rows.append(f'| {lv} | {name} | {len(check["seeds"])} | {check["iters"]} | '
                        f'{check["fid"]:.1f} | {check["iters_long"]} | '
                        f'{check["fid_long"]:.1f} | {100 * check["change"]:+.1f} % | '
                        f'{seeds_interval} | {check["noise"]:.1f} | {verdict} |')
    if not rows:
        return []
    lines = ['## Is the run long enough?', '',
             'A plateau measured in one run whose cosine lr anneals over that run lies near the '
             'run\'s end by construction (the proxy FID falls most while the lr anneals), so '
             f'it is checked: `--preset length` trains DSM+KD {length}x as long (cosine lr '
             f'over the whole run) on seed 0 at every level. Raw proxy FID, mean over the '
             f'seeds both have; a level whose longer run lowers it by more than the plateau '
             f'rule\'s {tol:.0%} and by more than {NOISE_SDS:g} bootstrap spreads of the '
             'difference (the scores\' spreads combined as if independent; "spread") has not '
             'converged at its length, and its cells compare recipes before convergence. '
             '"Seeds" is the 95 % t interval of the per-seed changes (3 seeds or more): how '
             'far the seeds agree, shown beside the rule, not part of it (the rule was fixed '
             'before the checks ran).', '',
             '| level | sampler | seeds | iterations | DSM+KD proxy FID | iterations | '
             f'{length}x long proxy FID | change | seeds | spread | verdict |',
             '|---|---|---|---|---|---|---|---|---|---|---|', *rows, '']
    if short:
        lines += [f'Judged with {samplers[0]}, {", ".join(short)} need a longer run: '
                  f'`python tools/regime_map.py{flag} --lengthen --levels {" ".join(short)}` '
                  'makes the longer length theirs (their runs at the old length are archived, '
                  'the longer DSM+KD runs adopted), then the screen trains their cells again.',
                  '']
    if undecided:
        lines += [f'Judged with {samplers[0]}, {", ".join(undecided)} undecided: more seeds of '
                  'the check decide (' + ', '.join(
                      f'`python tools/regime_map.py{flag} --preset length --levels '
                      f'{" ".join(lvs)} --seeds {seeds}`' for seeds, lvs in commands.items())
                  + ').', '']
    if capped:
        lines += [f'Judged with {samplers[0]}, DSM+KD still falls by more than {tol:.0%} at '
                  f'{", ".join(capped)}, at a length past the map\'s cap of {cap} iterations '
                  f'({MAX_LENGTH_FACTOR}x the plateau): such a level keeps its length (more '
                  'seeds of the check could not change that), and its cells compare recipes at '
                  'that budget, maybe before convergence.', '']
    return lines


def remaining_section(cells: dict, planned: Sequence[Tuple[str, str, int]], preset: dict,
                      level_iters: Dict[str, int], timing: Optional[dict] = None,
                      parked: Optional[Dict[Tuple[str, str, int], int]] = None) -> List[str]:
    """The report's estimate of the training still to do: each planned run not evaluated
    yet, its iterations (:func:`~.axes.run_iters` at its level's length; less what a parked
    run holds) times a time per iteration: the median logged by the evaluated runs of its
    recipe at its level; else the reference's there times the recipe's ratio to it measured
    back to back (``timing``; a recipe that differs from a timed one or the reference only
    in length has that one's ratio); else its recipe's at any level.

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        planned (Sequence[Tuple[str, str, int]]): The planned runs (level, recipe, seed).
        preset (dict): The map's preset.
        level_iters (Dict[str, int]): Each planned level's run length.
        timing (dict, optional): ``timing.json``. Defaults to None.
        parked (dict, optional): :func:`~.parking.parked_runs`, the runs stopped partway
            and parked, with the iterations they hold. Defaults to None.

    Returns:
        List[str]: Markdown lines; none when every planned run is evaluated.
    """
    todo = [run for run in planned if run[2] not in cells.get(run[:2], {})]
    if not todo:
        return []
    ratios = recipe_ratios(timing)
    parked = {run: held for run, held in (parked or {}).items() if run in todo}
    hours, iterations, unknown = 0.0, 0, []
    for level, recipe, seed in todo:
        iters = run_iters(preset, recipe, level_iters[level])[1]
        iters -= min(iters, parked.get((level, recipe, seed), 0))
        iterations += iters
        per_iter = s_per_iter(cells, recipe, level, ratios)
        if per_iter is None:
            unknown.append(recipe)
            continue
        hours += iters * per_iter / 3600
    left_out = (f' (leaving out {len(unknown)} runs of recipes no evaluated run has logged '
                f'yet: {", ".join(sorted(set(unknown)))})' if unknown else '')
    return [f'To go: {len(todo)} runs, {iterations} iterations; about {hours:.1f} h of '
            f'training one run at a time{left_out}. Time per iteration: the median logged by '
            'the evaluated runs of the recipe at its level, else the reference\'s there times '
            'the recipe\'s ratio to it in `timing.json` (1 for the reference run longer), '
            'else the recipe\'s at any level; '
            'those runs shared the 2-core machine with other trainings, so this is a guide to '
            'plan sittings by, not a measurement.', ''] + ([
                'Parked (stopped partway, in `pending/`; the next screen resumes them): ' +
                ', '.join(f'{run_name(*run)} at {held}' for run, held in parked.items()) +
                ' iterations held, left out of the iterations to go.', ''] if parked else [])


def write_report(results_dir: str, teacher: Optional[dict], runs: List[dict],
                 planned: Sequence[Tuple[str, str, int]], preset: dict,
                 plateau: Optional[dict] = None, figures: bool = True,
                 teacher_curve: Optional[dict] = None,
                 archived_teacher: Optional[dict] = None,
                 timing: Optional[dict] = None,
                 lengths: Optional[Dict[str, dict]] = None) -> str:
    """Writes ``README.md`` (and the heatmaps, the plateau figure) into the results dir;
    returns the markdown's path.

    Args:
        results_dir (str): The results dir.
        teacher (dict, optional): ``teacher.json``.
        runs (List[dict]): Every evaluated run.
        planned (Sequence[tuple]): The planned (level, recipe, seed) runs.
        preset (dict): The map's preset (samplers, seeds).
        plateau (dict, optional): ``plateau.json``.
        figures (bool): Write the PNGs. Defaults to True.
        teacher_curve (dict, optional): ``teacher_curve.json``. Defaults to None.
        archived_teacher (dict, optional): The previous teacher's ``teacher.json``
            (:data:`ARCHIVE`). Defaults to None.
        timing (dict, optional): ``timing.json``, the recipes' time per iteration
            measured back to back (:func:`cost_section`). Defaults to None.
        lengths (dict, optional): ``lengths.json``'s levels: the levels that run longer
            than the plateau (:mod:`.lengths`). Defaults to None.
    """
    cells = index_runs(runs)
    base_iters = preset['finetune_iters'] or (plateau['plateau']['iters'] if plateau else None)
    cap = None if base_iters is None else length_cap(base_iters)
    level_iters = {lv: int((lengths or {}).get(lv, {}).get('iters', base_iters or 0))
                   for lv in dict.fromkeys(run[0] for run in planned)}
    past = checks_past_cap(planned, lambda run: run[2] in cells.get(run[:2], {}),
                           level_iters.get, cap)  # not trained: not planned
    planned = [run for run in planned if run not in past]
    samplers = list(preset['samplers'])
    done = {(r['level'], r['recipe'], r['seed']) for r in runs}
    # planned too: the seeds that decide an undecided length check, and every evaluated run
    # (some step asked for it: a preset, a follow-up, a length check's seeds)
    planned = list(dict.fromkeys(
        list(planned) + undecided_check_runs(cells, list(dict.fromkeys(p[0] for p in planned)),
                                             samplers[0], cap=cap) + sorted(done)))
    levels = [lv for lv in dict.fromkeys([p[0] for p in planned] + [r['level'] for r in runs])]
    recipes = [rc for rc in dict.fromkeys([p[1] for p in planned] + [r['recipe'] for r in runs])]
    dataset = (teacher or {}).get('dataset', 'digits')
    arch_name = preset.get('arch', 'unet')
    arch = ARCHS[arch_name]
    title, features = DATASET_TEXT[dataset]
    flag = '' if dataset == 'digits' else f' --dataset {dataset}'
    log_suffix = '' if dataset == 'digits' else f'_{dataset}'
    if arch_name != 'unet':
        title += f', {arch.label} teacher'
        flag += f' --arch {arch_name}'
        log_suffix += f'_{arch_name}'
    lines = [f'# Regime map of recovery recipes ({title}) - in progress', '',
             f'Runs done: **{len(done)} of {len(planned)} planned**. Regenerate: '
             '`python tools/regime_map.py '
             f'--report-only{flag}`. Every number below is read from the committed JSON in '
             '`runs/`; no conclusion is drawn here before the map is complete.', '',
             'Continue (resumes: runs whose JSON is here are skipped, an interrupted training '
             'continues from its last checkpoint, a scored teacher or plateau checkpoint is '
             'not scored again): `nohup python tools/regime_map.py --preset screen --jobs 1 '
             f'--threads-per-run 1{flag} > work_dirs/regime_map/map{log_suffix}.log 2>&1 &` '
             '(one training at a '
             'time while the 2-core machine is shared, `--jobs 2` when it is not; each run is '
             'scored in the driver\'s process as it finishes; in a sitting that ends, '
             '`--until HH:MM`, and `--overrun` to train the runs longer than the sitting up '
             'to then, resumed by a later one: their resume state is parked in `pending/` '
             'here, commit it; `--park` parks the runs a killed command left), then '
             '`--preset screen_b2` (runs of 16x the '
             'iterations: `--overrun`), '
             '`--preset dose` (the log-ratio term at 10x and 100x its weight, seed 0), '
             '`--preset combine` (feature KD + the better 2ndM form), `--preset budget` (both '
             '2ndM forms at half the run length: about DSM+KD\'s wall-clock) and '
             '`--preset length` '
             '(DSM+KD at twice the run length, seed 0 at every level).', '']
    if archived_teacher:
        lines += [f'Archive: the first runs and the student plateau run were made against the '
                  'previous teacher (the shipped `checkpoints/digits/teacher_digits16_ema.pth`, '
                  '6000 iterations at constant lr, EMA proxy FID '
                  f'{archived_teacher["samplers"]["ddim50"]["fid"]:.1f} with DDIM-50), which '
                  f'the students beat; they are kept in [`{ARCHIVE}/`]({ARCHIVE}/) and not '
                  'mixed with the results here.', '']
    lines += superseded_lines(results_dir)
    t_iters = teacher_curve['iters'] if teacher_curve else preset['teacher_iters']
    t_todo = '' if teacher_curve else ' (not trained yet)'
    lines += ['## Design', '',
              f'* Teacher: the map\'s own {arch.text}: {arch.params:,} parameters, seed 0, '
              f'{t_iters} iterations with a cosine lr annealed over the whole run{t_todo}; its '
              'final checkpoint (in the map\'s work dir, not the shipped one), scored as its '
              'EMA: every "teacher" number below is the '
              'teacher\'s EMA. Its length: "Teacher length" below.',
              '* Pruning levels (through `DiffusionPruningHook`; width: diff-pruning '
              'importance, rule: no GroupNorm group below 3 channels; depth: whole blocks):',
              '', '| level | params | share | fewest channels in a GroupNorm group | settings |',
              '|---|---|---|---|---|']
    for name, lv in LEVELS.items():
        if lv.arch == arch_name:
            group = lv.min_group if lv.depth is None else '- (depth)'
            lines.append(f'| {name} | {lv.params:,} | {100 * lv.params / arch.params:.1f} % | '
                         f'{group} | {lv.note} |')
    lines += ['', arch.levels_note]
    lines += ['', '* Recipes (each compared with its reference, paired by seed: same pruned '
              'channels or blocks, data order and per-sample noise):', '',
              '| recipe | config | changes | reference | batch | length |',
              '|---|---|---|---|---|---|']
    for name in recipes:
        rc = RECIPES[name]
        options = (*rc.options, *(arch.feature_options('<run length>') if rc.features else ()))
        changes = ', '.join(f'`{o}`' for o in effective_options(options)) or '-'
        lines.append(f'| {name} | `{rc.config}` | {changes} | {rc.reference or "-"} | '
                     f'{rc.batch_size or preset["batch_size"]} | {rc.length}x |')
    if arch.net is not None:
        lines += ['', f'Every run puts the teacher\'s {arch.label} in the configs\' '
                  'U-Net\'s place (`model.teacher`, options `' + ', '.join(
                      f'{k}={v}' for k, v in arch.net.items()) + '`) and sets the pruning '
                  'hook to its level (`custom_hooks.0.method=depth`, `depth_cfg`).']
    sampler_text = ', '.join(f'{k} (DDIM, {v} steps)' for k, v in preset['samplers'].items())
    later = [name for name in RECIPES if name not in recipes]
    if later:
        lines += ['', 'Defined, not planned yet: ' + ', '.join(f'`{n}`' for n in later) +
                  ' (feature KD + 2ndM: `--preset combine` plans the form the screen '
                  'names better, once it can; see "Feature KD + the better 2ndM form").']
    lines += ['', '* Samplers: ' + sampler_text +
              f', on the same checkpoint and the same {preset["num_samples"]} noises; fidelity '
              'compares with the teacher\'s samples from the same noise and sampler.',
              f'* Scores: proxy FID ({features}), SSIM / '
              'MSE to the teacher\'s samples, eps-MSE to the teacher; raw student (heatmaps) '
              'and its EMA (JSON); the Jacobian statistics before and after finetuning.', '']
    lines += teacher_section(teacher_curve, teacher, archived_teacher, preset['num_samples'])
    lines += ['## Run length', '']
    level_lengths = lengths_section(lengths or {}, levels, base_iters)
    if plateau:
        p = plateau['plateau']
        lines += [f'DSM+KD, raw, seed 0, level {plateau["level"]}: one run of '
                  f'{plateau["iters"]} iterations (cosine lr over the whole run), proxy FID '
                  f'({plateau["sampler"]}, {preset["num_samples"]} samples) every '
                  f'{plateau["interval"]} iterations. Rule: the first checkpoint after which '
                  f'the FID never falls more than {plateau["tol"]:.0%} below its value there. '
                  f'**Plateau: {p["iters"]} iterations** (FID {p["fid"]:.1f}, lowest later '
                  f'{p["best"]:.1f}; reached inside the run: {p["reached"]}); eps-MSE by the '
                  f'same rule: {plateau["eps_plateau"]["iters"]}. Every run of the map trains '
                  f'that many iterations at batch {preset["batch_size"]} (a recipe with a smaller '
                  'batch proportionally more: as many samples seen), cosine lr annealed over '
                  'its own length' + (', except at the levels listed below.'
                                      if level_lengths else '.'), '']
        if teacher:
            at = plateau['curve'][str(p['iters'])]['samplers'][plateau['sampler']]
            ratio = at['fid'] / teacher['samplers'][plateau['sampler']]['fid']
            gap = ('below the teacher\'s: at this level the plateau leaves no proxy-FID gap '
                   'to the teacher to close' if ratio < 1 else 'a proxy-FID gap to the teacher '
                   'remains')
            lines += [f'At the plateau this student\'s proxy FID is {ratio:.2f}x the '
                      f'teacher EMA\'s ({at["fid"]:.1f} vs '
                      f'{teacher["samplers"][plateau["sampler"]]["fid"]:.1f}), {gap}; its SSIM '
                      f'to the teacher\'s samples is {at["ssim"]:.3f} (one seed).', '']
        lines += ['![plateau](plateau.png)', '']
    else:
        lines += ['Not measured yet.', '']
    lines += level_lengths
    lines += length_section(cells, levels, list(preset['samplers']), flag=flag, cap=cap)
    lines += ['## Runs done', '', '| level | ' + ' | '.join(recipes) + ' |',
              '|---|' + '---|' * len(recipes)]
    for lv in levels:
        row = []
        for rc in recipes:
            want = sorted(s for (pl, pr, s) in planned if (pl, pr) == (lv, rc))
            have = sorted(cells.get((lv, rc), {}))
            seeds_text = f' (seeds {",".join(map(str, have))})' if have else ''
            row.append(f'{len(have)}/{len(want)}{seeds_text}')
        lines.append(f'| {lv} | ' + ' | '.join(row) + ' |')
    lines.append('')
    if base_iters is not None:
        lines += remaining_section(cells, planned, preset, level_iters, timing,
                                   parked_runs(results_dir))
    if teacher:
        lines += ['## Scores (raw students; the teacher\'s EMA; mean +- std over seeds)', '',
                  '| level | recipe | sampler | seeds | proxy FID | x teacher | SSIM | sample MSE '
                  '| eps-MSE t<50 | s/iter |', '|---|---|---|---|---|---|---|---|---|---|']
        for name in samplers:
            lines.append(f'| teacher (EMA) | - | {name} | 1 | '
                         f'{teacher["samplers"][name]["fid"]:.1f} | 1 | 1 | 0 | 0 | - |')
        for lv in levels:
            for rc in recipes:
                seeds = cells.get((lv, rc), {})
                if not seeds:
                    continue
                for name in samplers:
                    fin = [r['final']['raw'] for r in seeds.values()]
                    fids = [f['samplers'][name]['fid'] for f in fin]
                    ratio = np.mean(fids) / teacher['samplers'][name]['fid']
                    lines.append(
                        f'| {lv} | {rc} | {name} | {len(seeds)} | {_mean_std(fids, 1)} | '
                        f'{ratio:.2f} | '
                        f'{_mean_std([f["samplers"][name]["ssim"] for f in fin], 4)} | '
                        f'{_mean_std([f["samplers"][name]["sample_mse"] for f in fin], 5)} | '
                        f'{_mean_std([f["eps_mse_t50"] for f in fin], 5)} | '
                        f'{_mean_std([r["s_per_iter"] for r in seeds.values()], 3)} |')
        lines.append('')
        lines += gap_section(cells, teacher, levels, samplers)
        lines += ['## Paired differences to the reference (raw; mean [95 % t interval over '
                  f'seeds], none under {CI_MIN_SEEDS} seeds)', '',
                  'Student-t over the paired seeds (n - 1 degrees of freedom): over 3-5 seeds a '
                  'percentile bootstrap is too narrow (over 3 it is about their range, and all '
                  '3 differences fall on one side of a zero mean one time in four); the map '
                  'used it until the patches\' seeds 3-4 overturned two 3-4-seed verdicts.', '',
                  'The last column adjusts each p-value for the other cells of its heatmap '
                  'panel (one metric, one sampler, every level and recipe with an interval; '
                  'Holm): a verdict whose adjusted p-value is also below 0.05 holds with a '
                  '5 % chance of any false verdict in the panel, not in its cell alone. The '
                  'family grows as cells land.', '',
                  '| level | recipe - reference | sampler | seeds | d proxy FID | d SSIM | '
                  'd sample MSE % | verdict FID / SSIM | Holm p FID / SSIM |',
                  '|---|---|---|---|---|---|---|---|---|']
        adjusted = {(name, key): holm_adjusted(cells, levels, recipes, name, key)
                    for name in samplers for key in ('fid', 'ssim')}
        for lv in levels:
            for rc in recipes:
                if rc == REFERENCE or not cells.get((lv, rc)):
                    continue
                for name in samplers:
                    f, s, m = (paired(cells, lv, rc, name, k, rel)
                               for k, _, _, rel in HEATMAP_METRICS)
                    if not f['seeds']:
                        continue
                    note = '' if f['same_channels'] else ' (pruned channels differ)'
                    lines.append(
                        f'| {lv} | {rc} - {reference_of(rc)}{note} | {name} | '
                        f'{len(f["seeds"])} | {_fmt(f["mean"], f["low"], f["high"], 1)} | '
                        f'{_fmt(s["mean"], s["low"], s["high"], 4)} | '
                        f'{_fmt(m["mean"], m["low"], m["high"], 1)} | '
                        f'{verdict(f["low"], f["high"], True)} / '
                        f'{verdict(s["low"], s["high"], False)} | '
                        f'{format_p(adjusted[name, "fid"][lv, rc])} / '
                        f'{format_p(adjusted[name, "ssim"][lv, rc])} |')
        lines.append('')
        lines += cost_section(cells, levels, recipes, samplers, timing, flag)
        lines += same_length_section(
            cells, levels, recipes, samplers,
            {lv: [data for _, data in archived_runs(results_dir, lv)] for lv in levels})
        lines += follow_up_section(cells, levels, recipes, samplers, preset, flag)
        combine_levels = [lv for lv in map_preset('combine', arch_name, dataset)['levels']
                          if lv in levels]
        lines += form_section(cells, combine_levels, samplers, preset['seeds'])
        lines += loss_terms_section(cells, levels, recipes)
        lines += ['## Mechanism: ||J_S v||^2 vs the teacher\'s (relative error, mean over '
                  f'{preset["eval_images"]} fixed x_t and v; mean over seeds)', '',
                  '| level | recipe | ' + ' | '.join(f't={t} before -> after' for t in JACOBIAN_T)
                  + ' |', '|---|---|' + '---|' * len(JACOBIAN_T)]
        ts = list(preset['ftle_timesteps'])
        for lv in levels:
            for rc in recipes:
                seeds = cells.get((lv, rc), {})
                if not seeds:
                    continue
                row = []
                for t in JACOBIAN_T:
                    if t not in ts:
                        row.append('-')
                        continue
                    i = ts.index(t)
                    before = np.mean([r['pruned']['jacobian']['jv_rel_err'][i]
                                      for r in seeds.values()])
                    after = np.mean([r['final']['raw']['jacobian']['jv_rel_err'][i]
                                     for r in seeds.values()])
                    row.append(f'{before:.3f} -> {after:.3f}')
                lines.append(f'| {lv} | {rc} | ' + ' | '.join(row) + ' |')
        lines.append('')
        lines += mechanism_paired_section(cells, levels, recipes, ts)
    # a heatmap needs a column: a recipe other than the reference (a map of DSM+KD alone,
    # as the smoke test runs, has none)
    compared = any(recipe != REFERENCE for recipe in recipes)
    if teacher and runs:  # the figures below are drawn once both exist
        lines += ['## Figures', '', 'Samples of seed 0 (teacher\'s EMA and each recipe\'s raw '
                  'student, every sampler): ' + ', '.join(
                      f'[`samples_{lv}.png`](samples_{lv}.png)' for lv in levels
                      if any(r['level'] == lv for r in runs)) + '.', '']
        for name in samplers if compared else ():
            lines += [f'![{name}](heatmap_{name}.png)', '']
    path = osp.join(results_dir, 'README.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    if figures and teacher and runs and compared:
        for name in samplers:
            heatmap(cells, teacher, levels, recipes, name,
                    osp.join(results_dir, f'heatmap_{name}.png'))
    if figures and plateau:
        plateau_figure(plateau, teacher, osp.join(results_dir, 'plateau.png'))
    if figures and teacher_curve:
        teacher_figure(teacher_curve, archived_teacher,
                       osp.join(results_dir, 'teacher_curve.png'))
    return path


def _tile(samples, cols: int = 8) -> np.ndarray:
    """uint8 samples (N, 3, H, W) -> one (rows * H, cols * W, 3) picture, 1 px gaps."""
    images = np.asarray(samples).transpose(0, 2, 3, 1)
    n, h, w, c = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = image
    return out


def samples_figure(work_dir: str, results_dir: str, level: str, recipes: Sequence[str],
                   runs: List[dict], teacher: dict, seed: int = 0) -> Optional[str]:
    """``samples_<level>.png``: the teacher and every recipe's raw student (one seed),
    each sampler a column, from the same noise, with proxy FID and SSIM under each panel.
    Reads the samples kept in the work dir; returns None where none are there, and where
    the figure exists but the work dir lacks some evaluated run's samples (a fresh work dir
    continuing a map): a figure of fewer runs would replace the committed one."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import torch
    teacher_path = osp.join(work_dir, 'teacher_grid.pt')
    path = osp.join(results_dir, f'samples_{level}.png')
    cells = index_runs(runs)
    rows = [(name, osp.join(work_dir, level, f'{name}_seed{seed}', 'grid_raw.pt'))
            for name in recipes if seed in cells.get((level, name), {})]
    kept = [(n, p) for n, p in rows if osp.exists(p)]
    partial = len(kept) < len(rows) and osp.exists(path)
    if not kept or not osp.exists(teacher_path) or partial:
        return None
    rows = kept
    samplers = list(teacher['samplers'])
    fig, axes = plt.subplots(len(rows) + 1, len(samplers),
                             figsize=(3.6 * len(samplers), 2.35 * (len(rows) + 1)),
                             squeeze=False, gridspec_kw=dict(hspace=0.35))
    panels = [('teacher', torch.load(teacher_path), None)]
    panels += [(name, torch.load(path), cells[(level, name)][seed]) for name, path in rows]
    for i, (name, grids, run) in enumerate(panels):
        for j, sampler in enumerate(samplers):
            ax = axes[i][j]
            ax.imshow(_tile(grids[sampler].numpy()), interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if run is None:
                caption = f'teacher EMA, {sampler}: FID {teacher["samplers"][sampler]["fid"]:.1f}'
            else:
                s = run['final']['raw']['samplers'][sampler]
                caption = (f'{RECIPES[name].label or name}, {sampler}: FID {s["fid"]:.1f}, '
                           f'SSIM {s["ssim"]:.3f}')
            ax.set_title(caption, fontsize=8)
    fig.suptitle(f'{level}: raw students of seed {seed}, the same noise in every panel',
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
