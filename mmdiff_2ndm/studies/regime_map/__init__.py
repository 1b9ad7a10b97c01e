"""A regime map of recovery recipes on the download-free digits study (issue 24).

Axes: pruning level (width-pruned U-Nets, depth-pruned DiTs) x recipe x sampler, each
run trained to DSM+KD's plateau and scored with every sampler on the same checkpoint, 3
paired seeds per cell to screen, more where an interval excludes 0 or nearly does. Run by
``tools/regime_map.py``; reuses the digits study's training runs, evaluator and
statistics (:mod:`mmdiff_2ndm.studies.digits`).

Modules: :mod:`.axes` (levels, recipes, samplers, presets, run order), :mod:`.plateau`
(the run length), :mod:`.scoring` (every sampler on one checkpoint, Jacobian statistics),
:mod:`.driver` (teacher, plateau, screen; one JSON per scored run), :mod:`.cells` (paired
differences), :mod:`.followup` (the cells that get more seeds), :mod:`.timing` (the recipes'
cost per iteration, measured back to back), :mod:`.schedule` (how long a planned run takes;
which runs end before a sitting does), :mod:`.parking` (stopped runs carried to a fresh
clone), :mod:`.report` (README.md, heatmaps, plateau
figure).
"""
from .axes import (ARCHS, LEVELS, PRESETS, RECIPES, REFERENCE, SAMPLERS, level_options,
                   map_preset, planned_runs, run_iters)
from .driver import RegimeMap, load_results
from .plateau import plateau_iteration
from .report import heatmap, paired, write_report

__all__ = ['ARCHS', 'LEVELS', 'PRESETS', 'RECIPES', 'REFERENCE', 'SAMPLERS', 'RegimeMap',
           'heatmap', 'level_options', 'load_results', 'map_preset', 'paired', 'planned_runs',
           'plateau_iteration', 'run_iters', 'write_report']
