"""What the evaluated runs allow one to say: paired differences to DSM+KD with Student-t
intervals over seeds and their verdicts, the recovery criteria, equal wall-clock."""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .presets import REFERENCE_ARM, checkpoint_iters

# an interval over fewer paired seeds says nothing
CI_MIN_SEEDS = 3
# "recovered": proxy FID within this factor of the teacher's and SSIM to it at least this
RECOVERED_FID_FACTOR, RECOVERED_SSIM = 1.5, 0.8
METRICS = (  # key, column name, lower is better
    ('fid', 'proxy FID', True), ('eps_mse', 'eps-MSE to teacher', True),
    ('eps_mse_t50', 'eps-MSE t<50', True), ('sample_mse', 'sample MSE to teacher', True),
    ('ssim', 'SSIM to teacher', False))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float, float]:
    """Mean and Student-t interval of the mean (n - 1 degrees of freedom; nan with fewer
    than ``CI_MIN_SEEDS`` values). The interval for a few paired seeds: a percentile
    bootstrap over 3 seeds is about the range of the values, and all 3 differences fall on
    one side of a zero mean one time in four."""
    from scipy import stats
    values = np.asarray(values, dtype=float)
    if values.size < CI_MIN_SEEDS:
        return float(values.mean()) if values.size else float('nan'), np.nan, np.nan
    mean = float(values.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1)
                 * values.std(ddof=1) / np.sqrt(values.size))
    return mean, mean - half, mean + half


def t_test_p(values: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t test that the values' mean is 0: the test
    whose 95 % interval :func:`t_interval` gives (p < 0.05 exactly where that interval
    excludes 0); nan with fewer than ``CI_MIN_SEEDS`` values.

    Values that do not vary have p = 0 unless they are all 0 (p = 1), as the interval of
    such values is their mean alone."""
    from scipy import stats
    values = np.asarray(values, dtype=float)
    if values.size < CI_MIN_SEEDS:
        return float('nan')
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / np.sqrt(values.size))
    return float(2.0 * stats.t.sf(abs(t), values.size - 1))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (family-wise error rate).

    The i-th smallest of m p-values becomes ``max over j <= i of min(1, (m - j + 1) p_(j))``;
    rejecting where the adjusted p-value is below alpha keeps the chance of any false
    verdict in the family at alpha or less, whatever the tests' dependence.

    Args:
        p_values (Sequence[float]): The family's p-values; nan marks a comparison without
            a test (under ``CI_MIN_SEEDS`` seeds): it stays nan and is not counted in m.

    Returns:
        np.ndarray: The adjusted p-values, in the input's order.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind='stable')]):
        running = max(running, min(1.0, (tested.size - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def format_p(p_value: float) -> str:
    """A p-value as the reports print it: 3 decimals, '<0.001' below that, '-' where there
    is no test (nan)."""
    if not np.isfinite(p_value):
        return '-'
    return f'{p_value:.3f}' if p_value >= 0.001 else '<0.001'


def verdict(low: float, high: float, lower_is_better: bool = True) -> str:
    """What a 95 % interval of (arm - reference) allows one to say."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f'under {CI_MIN_SEEDS} seeds: no interval'
    if high < 0:
        return 'better' if lower_is_better else 'worse'
    if low > 0:
        return 'worse' if lower_is_better else 'better'
    return 'no difference shown'


def by_arm(runs: List[dict]) -> Dict[str, Dict[int, dict]]:
    """arm -> seed -> run, in the order the arms first appear."""
    arms: Dict[str, Dict[int, dict]] = {}
    for run in runs:
        arms.setdefault(run['arm'], {})[run['seed']] = run
    return arms


def gap_closed(dsm_fid: float, arm_fid: float, dense_fid: float) -> float:
    """Share of the DSM -> dense proxy-FID gap that an arm closes (1: at the teacher)."""
    return (dsm_fid - arm_fid) / (dsm_fid - dense_fid)


def paired_differences(arms: dict, arm: str, model: str, dense_fid: float) -> dict:
    """Per metric: (mean, low, high) of arm - DSM+KD over the seeds both ran and the
    p-value of its t test (``<metric>_p``, not adjusted: see :func:`holm`), and the gap to
    the dense teacher's proxy FID closed relative to DSM (where DSM ran)."""
    ref = arms[REFERENCE_ARM]
    seeds = sorted(set(arms[arm]) & set(ref))
    out = dict(seeds=seeds)
    for key, _, _ in METRICS:
        diffs = [arms[arm][s]['final'][model][key] - ref[s]['final'][model][key]
                 for s in seeds]
        out[key] = t_interval(diffs)
        out[f'{key}_p'] = t_test_p(diffs)
        if key == 'fid':
            out['fid_lower_in'] = sum(d < 0 for d in diffs)
    dsm = arms.get('dsm', {})
    gap_seeds = [s for s in arms[arm] if s in dsm]
    out['gap_closed'] = t_interval([gap_closed(dsm[s]['final'][model]['fid'],
                                               arms[arm][s]['final'][model]['fid'],
                                               dense_fid) for s in gap_seeds])
    return out


def recovery_summary(arms: dict, dense: dict) -> dict:
    """Whether DSM+KD (raw) recovered and whether DSM leaves a gap above the seed spread."""
    out = dict(teacher_fid=dense['final']['fid'])
    for arm in (REFERENCE_ARM, 'dsm'):
        if arm not in arms:
            continue
        finals = [r['final']['raw'] for r in arms[arm].values()]
        out[arm] = dict(fid=float(np.mean([f['fid'] for f in finals])),
                        fid_std=float(np.std([f['fid'] for f in finals])),
                        ssim=float(np.mean([f['ssim'] for f in finals])))
    if REFERENCE_ARM in out:
        ref = out[REFERENCE_ARM]
        out['recovered'] = bool(ref['fid'] <= RECOVERED_FID_FACTOR * out['teacher_fid']
                                and ref['ssim'] >= RECOVERED_SSIM)
    if 'dsm' in out:
        out['dsm_gap'] = out['dsm']['fid'] - out['teacher_fid']
    return out


def equal_wallclock(arms: dict, dense: dict, preset: dict) -> Tuple[float, List[dict]]:
    """Each arm's raw student at its last checkpoint within the cheapest arm's training
    time, scored on the curve's samples, with whether it is recovered there."""
    speeds = {arm: np.mean([r['s_per_iter'] for r in seeds.values()])
              for arm, seeds in arms.items()}
    budget = min(speeds.values()) * preset['finetune_iters']
    teacher_fid = dense['curve']['fid']
    rows = []
    for arm, seeds in arms.items():
        steps = [s for s in checkpoint_iters(preset) if s * speeds[arm] <= budget * 1.0001]
        if not steps:
            rows.append(dict(arm=arm, iter=0, recovered=False))
            continue
        scores = [r['curve'][str(steps[-1])]['raw'] for r in seeds.values()]
        fid, ssim = np.mean([s['fid'] for s in scores]), np.mean([s['ssim'] for s in scores])
        rows.append(dict(arm=arm, iter=steps[-1], fid=float(fid), ssim=float(ssim),
                         eps_mse=float(np.mean([s['eps_mse'] for s in scores])),
                         recovered=bool(fid <= RECOVERED_FID_FACTOR * teacher_fid
                                        and ssim >= RECOVERED_SSIM)))
    return float(budget), rows
