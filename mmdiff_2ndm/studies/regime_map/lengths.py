"""Per-level run lengths: the length check's verdict, and lengthening a level that fails it.

The map's run length is DSM+KD's plateau, measured at one level in one run whose cosine lr
is annealed over that run (``plateau.json``). Such a run's proxy FID falls most while its lr
anneals, so its plateau lies near the run's own end by construction, and says little about
whether a longer run would end lower. The length check says it: DSM+KD trained
:data:`LONGER_REFERENCE`'s times as long (its own cosine lr over the whole run) against
DSM+KD, paired by seed. A level whose longer run lowers the raw proxy FID by more than the
plateau rule's tolerance, and by more than the proxy FID's own noise, has not converged at its
length. The noise is each score's bootstrap spread (``fid_boot``, over the scored samples),
combined as if the two scores were independent: the paired runs share their pruned channels,
data order and sampling noise, so the spread of their difference is smaller, and the rule
errs towards calling a level converged. A drop past the tolerance but within
:data:`NOISE_SDS` spreads is undecided: the check needs more seeds before it can lengthen the
level.

Lengthening such a level (:func:`lengthen_level`, ``tools/regime_map.py --lengthen``) makes
the longer length the level's own (``lengths.json`` in the results dir), moves the level's
runs at the old length to an archive beside the map (``archive_<level>_<iters>/``: kept,
linked from the report, out of the map's cells), and adopts the longer DSM+KD runs as the
level's DSM+KD runs at the new length: they are those runs, trained with the same options.
Every other cell of the level is then trained again at the new length, and the check can be
repeated there (DSM+KD at twice the new length), until a level passes.

Lengthening stops at the map's cap, :data:`MAX_LENGTH_FACTOR` times the plateau's length.
Each doubling doubles the cost of the level's whole screen (a dozen recipes x seeds), and a
slowly recovering level (a DiT student with one block left) may need many: past the cap the
map compares recipes at a fixed budget, and says so. A check whose longer run would pass the
cap is not trained by ``--converge``; one that was trained anyway and falls past the
tolerance is ``capped``, whether or not past the noise: the level keeps its length (more
seeds could only confirm a longer length it may not get), and its cells compare recipes at
that budget, maybe before convergence.
"""
import glob
import json
import os
import os.path as osp
import shutil
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..digits.statistics import t_interval
from ..json_files import read_json, read_json_folder, write_json
from .axes import RECIPES, REFERENCE, run_name
from .followup import MAX_SEEDS
from .plateau import PLATEAU_TOL

#: The recipe that trains DSM+KD for longer than the map's runs (``--preset length``).
LONGER_REFERENCE = 'dsm_kd_x2'
#: Per-level run lengths of a results dir: level -> the length and the check that set it.
LENGTHS_FILE = 'lengths.json'
#: A longer run's drop in proxy FID counts only beyond this many bootstrap spreads.
NOISE_SDS = 2.0
#: The longest run length of a level, in multiples of the map's plateau length (two doublings).
MAX_LENGTH_FACTOR = 4


def length_cap(base_iters: int) -> int:
    """The longest run length a level of a map may get (:data:`MAX_LENGTH_FACTOR` times the
    map's plateau length ``base_iters``)."""
    return MAX_LENGTH_FACTOR * int(base_iters)


def check_past_cap(level_iters: int, cap: Optional[int]) -> bool:
    """Whether the length check of a level that runs ``level_iters`` would train past the
    map's cap (whatever it showed, the level would keep its length)."""
    return cap is not None and RECIPES[LONGER_REFERENCE].length * int(level_iters) > cap


def checks_past_cap(runs: Sequence[Tuple[str, str, int]], is_done: Callable[[tuple], bool],
                    level_iters: Callable[[str], int],
                    cap: Optional[int]) -> List[Tuple[str, str, int]]:
    """The planned length checks (:data:`LONGER_REFERENCE` runs) not done yet that would
    train past the map's cap (:func:`check_past_cap`): neither trained nor counted as to go.

    Args:
        runs (Sequence[Tuple[str, str, int]]): Planned runs (level, recipe, seed).
        is_done (Callable): Whether a run is evaluated.
        level_iters (Callable): A level's run length.
        cap (int, optional): The map's cap (:func:`length_cap`); None: no cap.
    """
    return [run for run in runs if run[1] == LONGER_REFERENCE and not is_done(run)
            and check_past_cap(level_iters(run[0]), cap)]


def length_check(cells: dict, level: str, sampler: str, tol: float = PLATEAU_TOL,
                 cap: Optional[int] = None) -> Optional[dict]:
    """The length check at one level and sampler: DSM+KD trained longer against DSM+KD, raw
    proxy FID, mean over the seeds both have.

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        level (str): The level.
        sampler (str): A sampler of the runs' scores.
        tol (float): A longer run that lowers the proxy FID by more than this (relative,
            mean of the per-seed changes) says the level needs a longer run. Defaults to
            :data:`~.plateau.PLATEAU_TOL`.
        cap (int, optional): The map's longest run length (:func:`length_cap`). Defaults
            to None: no cap.

    Returns:
        dict, optional: ``seeds``, ``iters`` and ``iters_long`` (the runs' lengths),
        ``fid`` and ``fid_long`` (means), ``change`` (mean relative change, negative =
        the longer run is better), ``noise`` (the bootstrap spread of the mean difference,
        FID units), ``tol``, ``longer_needed`` (the drop exceeds the tolerance and
        :data:`NOISE_SDS` spreads), ``undecided`` (it exceeds the tolerance only),
        ``capped`` (a longer run is needed or undecided, but its length passes ``cap``: the
        level keeps its length, maybe unconverged, and more seeds would not change it), and
        ``change_low``/``change_high``: the 95 % Student-t interval of the per-seed changes
        (nan under 3 seeds), which shows how far the seeds agree and is not part of the rule
        (fixed before the checks ran); ``pending``: the seeds that have one of the two
        runs only (a check in progress, or DSM+KD seeds of the screen); None where the level
        lacks a seed with both runs.
    """
    ref = cells.get((level, REFERENCE), {})
    long = cells.get((level, LONGER_REFERENCE), {})
    seeds = sorted(set(ref) & set(long))
    pending = sorted(set(ref) ^ set(long))
    if not seeds:
        return None
    scores = [(ref[s]['final']['raw']['samplers'][sampler],
               long[s]['final']['raw']['samplers'][sampler]) for s in seeds]
    fid = [a['fid'] for a, _ in scores]
    fid_long = [b['fid'] for _, b in scores]
    change, change_low, change_high = t_interval([b / a - 1.0 for a, b in zip(fid, fid_long)])
    noise = float(np.sqrt(sum(a['fid_boot'] ** 2 + b['fid_boot'] ** 2 for a, b in scores))
                  / len(seeds))
    drop = float(np.mean(fid) - np.mean(fid_long))
    past_tol = change < -tol
    iters_long = int(long[seeds[0]]['iters'])
    longer_needed = past_tol and drop > NOISE_SDS * noise
    return dict(seeds=seeds, iters=int(ref[seeds[0]]['iters']), iters_long=iters_long,
                fid=float(np.mean(fid)), fid_long=float(np.mean(fid_long)), change=change,
                change_low=change_low, change_high=change_high, noise=noise, tol=tol,
                pending=pending,
                longer_needed=longer_needed,
                undecided=past_tol and drop <= NOISE_SDS * noise,
                capped=past_tol and cap is not None and iters_long > cap)


def deciding_seeds(check: dict) -> List[int]:
    """The seeds an undecided length check (:func:`length_check`) asks for.

    Its pending seeds first (those with one of the two runs): a check whose seeds are still
    being trained is judged on them before it asks for more, so that its request does not
    move with every interim result. Once every seed has both runs, two more, from 0, up to
    :data:`~.followup.MAX_SEEDS` (the follow-up's cap): a check still undecided there asks
    for nothing more, and its level keeps its length.
    """
    if check['pending']:
        return sorted(check['seeds'] + check['pending'])
    return list(range(max(len(check['seeds']), min(MAX_SEEDS, len(check['seeds']) + 2))))


def undecided_check_runs(cells: dict, levels: Sequence[str], sampler: str,
                         tol: float = PLATEAU_TOL, cap: Optional[int] = None
                         ) -> List[Tuple[str, str, int]]:
    """The runs that decide the undecided length checks: at each level whose check
    (:func:`length_check` with ``sampler``) is undecided and not capped, DSM+KD and
    :data:`LONGER_REFERENCE` on the seeds it asks for (:func:`deciding_seeds`).

    Args:
        cells (dict): ``cells.index_runs`` of the evaluated runs.
        levels (Sequence[str]): The map's levels.
        sampler (str): The sampler that judges the check (the map's first).
        tol (float): As :func:`length_check`. Defaults to :data:`~.plateau.PLATEAU_TOL`.
        cap (int, optional): As :func:`length_check`. Defaults to None: no cap.

    Returns:
        List[Tuple[str, str, int]]: (level, recipe, seed), done or not.
    """
    runs = []
    for level in levels:
        check = length_check(cells, level, sampler, tol, cap)
        if check is None or not check['undecided'] or check['capped']:
            continue
        runs += [(level, recipe, seed) for seed in deciding_seeds(check)
                 for recipe in (REFERENCE, LONGER_REFERENCE)]
    return runs


def read_lengths(results_dir: str) -> Dict[str, dict]:
    """The results dir's per-level lengths (level -> entry; empty where none is set)."""
    recorded = read_json(osp.join(results_dir, LENGTHS_FILE))
    return {} if recorded is None else recorded['levels']


def archive_name(level: str, iters: Union[int, str]) -> str:
    """The folder (in the results dir and in the work dir) of a level's runs superseded
    when its length grew from ``iters`` (``'*'``: a glob pattern of every length's)."""
    return f'archive_{level}_{iters}'


def archived_runs(results_dir: str, level: str) -> List[Tuple[str, dict]]:
    """The runs of a level kept in its archives (:func:`archive_name`, from every earlier
    length), each with the path of its JSON, in path order."""
    pattern = osp.join(results_dir, archive_name(level, '*'), 'runs', level, '*.json')
    return [(path, read_json(path)) for path in sorted(glob.glob(pattern))]


def _archive_readme(level: str, check: dict, sampler: str, runs: List[dict],
                    new_iters: int) -> List[str]:
    rows = []
    for run in sorted(runs, key=lambda r: (r['recipe'], r['seed'])):
        scores = run['final']['raw']['samplers']
        rows.append(f'| {run["recipe"]} | {run["seed"]} | {run["iters"]} | ' + ' | '.join(
            f'{s["fid"]:.1f} / {s["ssim"]:.4f}' for s in scores.values()) + ' |')
    samplers = list(runs[0]['final']['raw']['samplers']) if runs else []
    return [f'# {level} at {check["iters"]} iterations: too short, superseded by '
            f'{new_iters}', '',
            f'The length check at {level} ({LONGER_REFERENCE} against {REFERENCE}, seeds '
            f'{", ".join(map(str, check["seeds"]))}, raw proxy FID with {sampler}): '
            f'{check["fid"]:.1f} at {check["iters"]} iterations, {check["fid_long"]:.1f} at '
            f'{check["iters_long"]} ({100 * check["change"]:+.1f} %, more than the plateau '
            f'rule\'s {check["tol"]:.0%} and than {NOISE_SDS:g} bootstrap spreads of the '
            f'difference, {NOISE_SDS:g} x {check["noise"]:.1f}). The level\'s runs at '
            f'{check["iters"]} iterations compare recipes before convergence; they are kept '
            f'here, out of the map, and its cells are trained again at {new_iters}. The '
            f'longer {REFERENCE} runs are the map\'s {REFERENCE} runs at {new_iters} (same '
            'options, adopted).', '',
            'Raw students, proxy FID / SSIM to the teacher\'s samples:', '',
            '| recipe | seed | iterations | ' + ' | '.join(samplers) + ' |',
            '|---|---|---|' + '---|' * len(samplers), *rows, '']


def lengthen_level(results_dir: str, work_dir: str, level: str, check: dict,
                   sampler: str) -> dict:
    """Makes the length check's longer length a level's own.

    Moves ``runs/<level>/`` of the results dir and ``<level>/`` of the work dir into
    :func:`archive_name` (with a README and the level's samples figure), adopts the
    longer DSM+KD runs as the level's DSM+KD runs at the new length (JSON and run folder)
    and records the length in :data:`LENGTHS_FILE`.

    Args:
        results_dir (str): The map's results dir.
        work_dir (str): The map's work dir.
        level (str): The level.
        check (dict): :func:`length_check` at the level, with ``longer_needed``.
        sampler (str): The sampler the check judged.

    Returns:
        dict: The level's new entry of :data:`LENGTHS_FILE` (its earlier lengthenings under
        ``history``, oldest first).

    Raises:
        ValueError: If the check does not call for a longer run, its longer run passes the
            map's cap, or the archive exists.
    """
    if check.get('capped'):
        raise ValueError(
            f'{level}: the length check asks about {check["iters_long"]} iterations, past the '
            f'map\'s cap ({MAX_LENGTH_FACTOR}x its plateau length); its length stays '
            f'{check["iters"]} and its cells compare recipes at that budget.')
    if not check['longer_needed']:
        raise ValueError(
            f'{level}: the length check does not call for a longer run ({sampler} proxy FID '
            f'{100 * check["change"]:+.1f} % at {check["iters_long"]} iterations against '
            f'{check["iters"]}, tolerance {check["tol"]:.0%}, noise '
            f'{NOISE_SDS:g} x {check["noise"]:.1f}); its length stays {check["iters"]}.')
    name = archive_name(level, check['iters'])
    archive, work_archive = osp.join(results_dir, name), osp.join(work_dir, name)
    if osp.exists(archive) or osp.exists(osp.join(work_archive, level)):
        raise ValueError(f'{level}: {archive} or {work_archive}/{level} exists already; a '
                         'level is lengthened once from each length. Move it away to redo '
                         'this step.')
    new_iters = check['iters_long']
    runs_dir = osp.join(results_dir, 'runs', level)
    runs = read_json_folder(runs_dir)
    os.makedirs(osp.join(archive, 'runs'))
    shutil.move(runs_dir, osp.join(archive, 'runs', level))
    figure = osp.join(results_dir, f'samples_{level}.png')
    if osp.exists(figure):
        shutil.move(figure, osp.join(archive, f'samples_{level}.png'))
    with open(osp.join(archive, 'README.md'), 'w') as f:
        f.write('\n'.join(_archive_readme(level, check, sampler, runs, new_iters)))
    if osp.isdir(osp.join(work_dir, level)):
        os.makedirs(work_archive, exist_ok=True)
        shutil.move(osp.join(work_dir, level), osp.join(work_archive, level))
    os.makedirs(runs_dir)
    for seed in check['seeds']:
        longer = run_name(level, LONGER_REFERENCE, seed)
        with open(osp.join(archive, 'runs', longer + '.json')) as f:
            data = json.load(f)
        data.update(recipe=REFERENCE, finetune_iters=new_iters, adopted_from=longer)
        write_json(data, osp.join(results_dir, 'runs', run_name(level, REFERENCE, seed) + '.json'))
        if osp.isdir(osp.join(work_archive, longer)):
            shutil.copytree(osp.join(work_archive, longer),
                            osp.join(work_dir, run_name(level, REFERENCE, seed)))
    lengths = read_lengths(results_dir)
    earlier = lengths.get(level)
    history = [] if earlier is None else [
        *earlier.get('history', []), {k: v for k, v in earlier.items() if k != 'history'}]
    entry = dict(iters=new_iters, previous=check['iters'], sampler=sampler,
                 check={k: v for k, v in check.items()
                        if k not in ('longer_needed', 'undecided', 'capped', 'change_low',
                                     'change_high')},
                 archive=name, history=history)
    lengths[level] = entry
    write_json(dict(levels=lengths), osp.join(results_dir, LENGTHS_FILE))
    return entry


def lengths_section(lengths: Dict[str, dict], levels: Sequence[str],
                    base_iters: Optional[int]) -> List[str]:
    """Markdown lines of the report's per-level run lengths (none where every level runs
    the plateau's length), with the levels that have reached the map's cap
    (:func:`length_cap`)."""
    rows, at_cap = [], []
    for lv in levels:
        if lv not in lengths:
            continue
        if base_iters is not None and check_past_cap(lengths[lv]['iters'],
                                                     length_cap(base_iters)):
            at_cap.append(f'{lv} ({100 * lengths[lv]["check"]["change"]:+.1f} %)')
        for e in [*lengths[lv].get('history', []), lengths[lv]]:  # oldest first
            c = e['check']
            rows.append(f'| {lv} | {e["iters"]} | {e["previous"]}: {REFERENCE} '
                        f'{c["fid"]:.1f} -> {c["fid_long"]:.1f} at {c["iters_long"]} '
                        f'({100 * c["change"]:+.1f} %, {e["sampler"]}, seeds '
                        f'{",".join(map(str, c["seeds"]))}) | [`{e["archive"]}/`]'
                        f'({e["archive"]}/) |')
    if not rows:
        return []
    lines = [f'Levels whose length check failed run longer than the plateau\'s '
             f'{base_iters} iterations (`--lengthen`; `{LENGTHS_FILE}`):', '',
             '| level | run length | was, and the check that failed | runs at the old length |',
             '|---|---|---|---|', *rows, '']
    if at_cap:
        lines += [f'At the map\'s cap of {length_cap(base_iters)} iterations '
                  f'({MAX_LENGTH_FACTOR}x the plateau; each doubling doubles the cost of a '
                  f'level\'s screen): {", ".join(at_cap)}, the last doubling\'s change in '
                  f'{REFERENCE}\'s proxy FID. `--converge` trains no check past the cap, so '
                  'these levels\' cells compare recipes at that budget, not necessarily at '
                  'convergence.', '']
    return lines
