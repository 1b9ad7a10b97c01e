"""The study's report, ``results.md``: recovery, every arm's scores, the paired
comparisons with DSM+KD and the equal wall-clock table."""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .presets import MODELS, REFERENCE_ARM
from .statistics import (METRICS, RECOVERED_FID_FACTOR, RECOVERED_SSIM, by_arm,
                         equal_wallclock, format_p, gap_closed, holm, paired_differences,
                         recovery_summary, verdict)


def _fmt(values: Sequence[float], digits: int = 4) -> str:
    """One value, or the mean +- std of several (over seeds)."""
    if len(values) == 1:
        return f'{values[0]:.{digits}g}'
    return f'{np.mean(values):.{digits}g} +- {np.std(values):.2g}'


def _ci(mean: float, low: float, high: float) -> str:
    """A signed difference with its interval where there is one."""
    if not np.isfinite(low):
        return f'{mean:+.3g}'
    return f'{mean:+.3g} [{low:+.3g}, {high:+.3g}]'


def _main_table(arms: dict, dense: dict) -> List[str]:
    """The teacher and every arm and model at the last iteration, over seeds."""
    ref = arms.get(REFERENCE_ARM, {})
    ref_speed = np.mean([r['s_per_iter'] for r in ref.values()]) if ref else np.nan
    lines = ['| arm | model | seeds | params | ' + ' | '.join(m[1] for m in METRICS) +
             ' | FID bootstrap std | gap closed | s/iter | s/iter / DSM+KD |',
             '|' + '---|' * (len(METRICS) + 8)]
    lines.append(f'| dense teacher | - | 1 | {dense["final"]["params"]} | ' + ' | '.join(
        f'{dense["final"][k]:.4g}' for k, _, _ in METRICS) +
        f' | {dense["final"]["fid_boot"]:.2g} | - | - | - |')
    for arm, seeds in arms.items():
        speed = [r['s_per_iter'] for r in seeds.values()]
        for model in MODELS:
            finals = [r['final'][model] for r in seeds.values()]
            gaps = [gap_closed(arms['dsm'][s]['final'][model]['fid'], r['final'][model]['fid'],
                               dense['final']['fid'])
                    for s, r in seeds.items() if s in arms.get('dsm', {})]
            lines.append(
                f'| {arm} | {model} | {len(finals)} | {finals[0]["params"]} | ' +
                ' | '.join(_fmt([f[k] for f in finals]) for k, _, _ in METRICS) +
                f' | {_fmt([f["fid_boot"] for f in finals], 2)} | '
                f'{_fmt(gaps, 3) if gaps and arm != "dsm" else "-"} | {_fmt(speed, 3)} | '
                f'{np.mean(speed) / ref_speed:.2f} |')
    return lines


def _paired_table(arms: dict, dense: dict) -> Tuple[List[str], dict]:
    """Each arm - DSM+KD, paired by seed; returns the lines and the differences.

    Every verdict's p-value is also given adjusted for all the table's verdicts (every
    arm, model and verdict metric: Holm's step-down), the family within which the chance
    of any false verdict stays at 5 % where the adjusted p-value is below 0.05."""
    header = ('| arm | model | paired seeds | '
              + ' | '.join(f'd {name}' for _, name, _ in METRICS)
              + ' | verdict (FID, eps-MSE, sample MSE, SSIM) | Holm p (same order) '
              '| seeds with lower FID | gap closed vs DSM |')
    lines = [header, '|' + '---|' * (len(METRICS) + 7)]
    keys = [(k, lower) for k, _, lower in METRICS if k != 'eps_mse_t50']
    paired = {f'{arm}/{model}': paired_differences(arms, arm, model, dense['final']['fid'])
              for arm in arms if arm != REFERENCE_ARM for model in MODELS}
    family = [(name, k) for name in paired for k, _ in keys]
    adjusted = dict(zip(family, holm([paired[name][f'{k}_p'] for name, k in family])))
    for name, diff in paired.items():
        arm, model = name.split('/')
        verdicts = ', '.join(verdict(*diff[k][1:], lower) for k, lower in keys)
        holm_p = ', '.join(format_p(adjusted[name, k]) for k, _ in keys)
        lines.append(f'| {arm} | {model} | {len(diff["seeds"])} | ' + ' | '.join(
            _ci(*diff[k]) for k, _, _ in METRICS) + f' | {verdicts} | {holm_p} | '
            f'{diff["fid_lower_in"]}/{len(diff["seeds"])} | '
            f'{_ci(*diff["gap_closed"]) if arm != "dsm" else "-"} |')
    return lines, paired


def _recovery_lines(summary: dict) -> List[str]:
    """The recovery criteria applied to DSM+KD, and the gap DSM alone leaves."""
    lines = [f'* Teacher proxy FID {summary["teacher_fid"]:.4g}.']
    ref = summary.get(REFERENCE_ARM)
    if ref:
        lines.append(
            f'* DSM+KD, raw student: proxy FID {ref["fid"]:.4g} '
            f'({ref["fid"] / summary["teacher_fid"]:.2f}x the teacher\'s; criterion '
            f'<= {RECOVERED_FID_FACTOR}x), SSIM to the teacher {ref["ssim"]:.3f} (criterion '
            f'>= {RECOVERED_SSIM}): **{"recovered" if summary["recovered"] else "not recovered"}'
            '**.')
    if 'dsm' in summary:
        dsm = summary['dsm']
        spread = (f'{summary["dsm_gap"] / dsm["fid_std"]:.1f}x the seed std'
                  if dsm['fid_std'] > 0 else 'one seed: no seed spread')
        lines.append(f'* DSM alone, raw student: proxy FID {dsm["fid"]:.4g} +- '
                     f'{dsm["fid_std"]:.2g} (seed std): gap to the teacher '
                     f'{summary["dsm_gap"]:.4g} ({spread}).')
    return lines


def _pairing_lines(arms: dict) -> List[str]:
    """Whether all arms of each seed started from the same pruned channels."""
    by_seed: Dict[int, set] = {}
    for seeds in arms.values():
        for seed, run in seeds.items():
            by_seed.setdefault(seed, set()).add(run.get('record'))
    same = [s for s, records in sorted(by_seed.items()) if len(records) == 1]
    differ = [s for s, records in sorted(by_seed.items()) if len(records) > 1]
    line = f'* Same pruned channels in every arm of seeds {same}'
    return [line + (f'; **different** in seeds {differ}' if differ else '') + '.']


def _wallclock_lines(budget: float, rows: List[dict], dense: dict,
                     preset: dict) -> List[str]:
    """The equal training wall-clock table."""
    lines = [f'## Equal training wall-clock ({budget:.0f} s, the cheapest arm\'s run; raw '
             f'students on the curve\'s {preset["curve_samples"]} samples, teacher '
             f'{dense["curve"]["fid"]:.4g})', '',
             '| arm | iteration | proxy FID | SSIM to teacher | eps-MSE | recovered |',
             '|---|---|---|---|---|---|']
    for row in rows:
        if row['iter'] == 0:
            lines.append(f'| {row["arm"]} | no checkpoint within budget | - | - | - | no |')
        else:
            lines.append(f'| {row["arm"]} | {row["iter"]} | {row["fid"]:.4g} | '
                         f'{row["ssim"]:.3f} | {row["eps_mse"]:.4g} | '
                         f'{"yes" if row["recovered"] else "no"} |')
    return lines + ['', 'Only rows marked recovered compare like with like.']


def write_report(study: dict, meta: dict, preset: dict, path: str) -> dict:
    """Writes results.md from the evaluated runs; returns the computed comparisons.

    Args:
        study (dict): ``dense`` (the teacher's scores) and ``runs`` (each run's scores
            with ``arm`` and ``seed``).
        meta (dict): The study's settings and wall time, as results.json holds them.
        preset (dict): The study's preset.
        path (str): Where to write results.md.

    Returns:
        dict: ``recovery``, ``paired`` (per ``<arm>/<model>``) and ``wallclock``.
    """
    dense, arms = study['dense'], by_arm(study['runs'])
    lines = [f'# Digits 16x16 study (preset `{meta["preset"]}`)', '',
             f'{meta["finetune_iters"]} finetuning iterations (teacher: '
             f'{meta["teacher_iters"]}); {meta["num_samples"]} samples (recovery curve: the '
             f'first {preset["curve_samples"]}), DDIM-{meta["sample_steps"]}. Proxy FID: '
             f'MMagic `FID` with a digit classifier (test accuracy '
             f'{meta["feature_accuracy"]:.3f}) as feature network. `raw` = the student as '
             'trained, `ema` = its WarmupExponentialMovingAverage. Runs finished: '
             f'{len(study["runs"])} of {meta["planned_runs"]} planned. Study wall time (this '
             f'invocation): {meta["wall_s"]:.0f} s.', '',
             '![The dense teacher and each arm\'s raw student from the same noise, with '
             'proxy FID and SSIM](figure.png)', '', '## Recovery', '']
    summary = recovery_summary(arms, dense)
    lines += _recovery_lines(summary) + _pairing_lines(arms)
    lines += ['', '## Every arm at the last iteration (mean +- std over seeds)', '']
    lines += _main_table(arms, dense)
    lines += ['', 'gap closed = (FID_dsm - FID_x) / (FID_dsm - FID_dense), per seed.', '']
    paired = {}
    if REFERENCE_ARM in arms:
        lines += [f'## Paired by seed: arm - {REFERENCE_ARM} (mean [95 % Student-t interval '
                  'over seeds])', '']
        table, paired = _paired_table(arms, dense)
        lines += table + ['', 'Verdicts: `better`/`worse` than DSM+KD where the interval '
                          'excludes 0, else `no difference shown`. Holm p: the verdict\'s '
                          'p-value (the t test the interval inverts) adjusted for every '
                          'verdict of the table (Holm\'s step-down); below 0.05 the chance of '
                          'any false verdict in the table stays at 5 %.', '']
    budget, wallclock = equal_wallclock(arms, dense, preset)
    lines += _wallclock_lines(budget, wallclock, dense, preset)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return dict(recovery=summary, paired=paired, wallclock=dict(budget_s=budget,
                                                                rows=wallclock))
