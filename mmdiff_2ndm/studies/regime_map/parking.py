"""Stopped runs carried to a fresh checkout: their resume state, committed beside the results.

A run longer than a sitting (the batch-2 recipes: 6-30 hours) is stopped at ``--until``
with its checkpoints in the work dir, which is git-ignored: a later sitting on a fresh
clone would train it from the start again, and never finish it. Parking copies what
resuming and scoring the run need into the results dir
(``pending/<level>/<recipe>_seed<seed>/``, committed): its latest checkpoint, its halfway
checkpoint once written (weights and meta: what the scorer reads), its logged scalars (time
per iteration and loss terms of the JSON) and its training log, with ``pending.json`` saying
what was parked. Restoring copies them back into an empty or less advanced run folder and
points MMEngine's ``last_checkpoint`` at the checkpoint, so ``--resume`` continues the run
bitwise where it stopped (the checkpoint holds the weights, optimizer, EMA, schedulers, data
order and RNG states). A parked run whose length or options differ from the ones the map now
gives it (a level lengthened, a recipe changed) is refused.
"""
import contextlib
import os
import os.path as osp
import re
import shutil
from typing import Dict, List, Optional, Tuple

import torch

from mmdiff_2ndm.utils import safe_torch_load

from ..digits.runs import halfway_iter, saved_checkpoint_iters, trained_iters
from ..json_files import read_json, write_json

PENDING = 'pending'
RECORD = 'pending.json'
LOGS = ('train_stdout.log', )
SCALARS = osp.join('vis_data', 'scalars.json')
# what the scorer loads of the halfway checkpoint (weights, pruning record); the optimizer
# state and the message hub (a third of a checkpoint) only resume a run
SCORED_PARTS = ('meta', 'state_dict')


def parked_iters(pending_dir: str) -> int:
    """Iterations held by the run parked in ``pending_dir`` (0 where none is)."""
    record = read_json(osp.join(pending_dir, RECORD))
    return 0 if record is None else int(record['held'])


def parked_runs(results_dir: str) -> Dict[Tuple[str, str, int], int]:
    """Every run parked in a results dir: (level, recipe, seed) -> iterations held."""
    root, found = osp.join(results_dir, PENDING), {}
    for level in sorted(os.listdir(root)) if osp.isdir(root) else []:
        for name in sorted(os.listdir(osp.join(root, level))):
            match = re.fullmatch(r'(.+)_seed(\d+)', name)
            held = parked_iters(osp.join(root, level, name))
            if match and held:
                found[(level, match.group(1), int(match.group(2)))] = held
    return found


def park_run(run_dir: str, pending_dir: str, iters: int, options: List[str]) -> Optional[int]:
    """Copies a stopped run's resume state from its folder into ``pending_dir``.

    Nothing is parked where the run holds no checkpoint, holds all ``iters`` (finished:
    it is scored, not resumed) or holds no more than the copy already parked.

    Args:
        run_dir (str): The run's training folder.
        pending_dir (str): Where to park it (replaced).
        iters (int): The run's planned length.
        options (List[str]): The run's ``--cfg-options`` (the teacher's path left out),
            checked again before restoring.

    Returns:
        Optional[int]: The iterations parked, or None where nothing was.
    """
    held = trained_iters(run_dir)
    if held == 0 or held >= iters or held <= parked_iters(pending_dir):
        return None
    half = halfway_iter(iters)
    keep = [n for n in (half, held) if n in saved_checkpoint_iters(run_dir)]
    staging = pending_dir.rstrip(os.sep) + '.partial'
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    shutil.copy2(osp.join(run_dir, f'iter_{held}.pth'), staging)
    if half in keep and half != held:  # only scored: its weights, not its resume state
        ckpt = safe_torch_load(osp.join(run_dir, f'iter_{half}.pth'), map_location='cpu')
        torch.save({key: ckpt[key] for key in SCORED_PARTS if key in ckpt},
                   osp.join(staging, f'iter_{half}.pth'))
    for name in LOGS:
        if osp.exists(osp.join(run_dir, name)):
            shutil.copy2(osp.join(run_dir, name), staging)
    for sitting in sorted(os.listdir(run_dir)):  # <timestamp>/vis_data/scalars.json
        scalars = osp.join(run_dir, sitting, SCALARS)
        if osp.isfile(scalars):
            os.makedirs(osp.join(staging, sitting, osp.dirname(SCALARS)))
            shutil.copy2(scalars, osp.join(staging, sitting, SCALARS))
    write_json(dict(held=held, iters=iters, checkpoints=sorted(set(keep)), options=options),
               osp.join(staging, RECORD))
    # the old copy is replaced only once the new one is complete
    shutil.rmtree(pending_dir, ignore_errors=True)
    os.replace(staging, pending_dir)
    return held


def restore_run(pending_dir: str, run_dir: str, iters: int, options: List[str]) -> Optional[int]:
    """Copies a parked run into its training folder, to resume there.

    Nothing is restored where no run is parked, or where the folder already holds as many
    iterations as the parked copy.

    Args:
        pending_dir (str): The parked run.
        run_dir (str): The run's training folder.
        iters (int): The run's planned length now.
        options (List[str]): The run's ``--cfg-options`` now (the teacher's path left out).

    Returns:
        Optional[int]: The iterations restored, or None where nothing was.

    Raises:
        ValueError: If the parked run was trained with another length or other options
            than the map gives it now: resuming it would mix two trainings.
    """
    record = read_json(osp.join(pending_dir, RECORD))
    if record is None or int(record['held']) <= trained_iters(run_dir):
        return None
    if record['iters'] != iters or record['options'] != options:
        raise ValueError(
            f'The run parked in {pending_dir} was trained with other settings than the map '
            f'gives it now (length {record["iters"]} -> {iters}; options only parked: '
            f'{sorted(set(record["options"]) - set(options))}; only now: '
            f'{sorted(set(options) - set(record["options"]))}). Delete that folder to train '
            'the run again from the start, or restore the settings it was parked with.')
    os.makedirs(run_dir, exist_ok=True)
    for name in os.listdir(pending_dir):
        source = osp.join(pending_dir, name)
        if name == RECORD:
            continue
        if osp.isdir(source):
            shutil.copytree(source, osp.join(run_dir, name), dirs_exist_ok=True)
        else:
            shutil.copy2(source, run_dir)
    latest = osp.join(run_dir, f'iter_{record["held"]}.pth')
    with open(osp.join(run_dir, 'last_checkpoint'), 'w') as f:
        f.write(latest)  # what MMEngine's --resume reads
    return int(record['held'])


def unpark(pending_dir: str) -> None:
    """Deletes a parked run (once it is scored, its JSON is the record), and the level's
    and ``pending/`` folders where they are left empty."""
    shutil.rmtree(pending_dir, ignore_errors=True)
    level_dir = osp.dirname(pending_dir.rstrip(os.sep))
    for folder in (level_dir, osp.dirname(level_dir)):
        with contextlib.suppress(OSError):  # not empty, or gone
            os.rmdir(folder)
